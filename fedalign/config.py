"""Typed, validated experiment configuration.

An experiment is a YAML file (see ``simulations/``) with the sections below;
every key is optional and has a default. :func:`load_config` reads it with
pyyaml, applies ``key.path=value`` overrides, and checks it: unknown keys,
wrong types and impossible values raise :class:`ConfigError` naming the key,
before any data is loaded or any model trained.

Model keys may be given per student as a list of length
``federation.num_clients`` (e.g. ``hidden_layers: [2, 4]``).

The ``privacy`` section (:class:`PrivacyConfig`) turns on differential
privacy; see :mod:`fedalign.privacy` for what is protected and how it is
accounted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .alignment import STRATEGIES
from .statistics import KERNELS


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass
class DataConfig:
    name: str = "synthetic-csbm"
    root: str | None = None  # data root (else $FEDALIGN_DATA_ROOT)
    cache_dir: str | None = None  # where raw files are linked and processed (else $FEDALIGN_CACHE_DIR)
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # train/val/test fractions
    synthetic: dict[str, Any] = field(default_factory=dict)  # options of the synthetic generators


@dataclass
class PartitionConfig:
    scheme: Literal["replicate", "iid", "dirichlet", "community", "graphs"] = "replicate"
    alpha: float = 0.5  # Dirichlet concentration (label skew)
    public_fraction: float = 0.2  # share of nodes (or training graphs) forming the alignment graph
    # Share of each client's training nodes whose labels it uses (seeded, per class where possible); the
    # other training nodes stay in its graph unlabelled. 1.0 = every training label.
    label_rate: float = 1.0


@dataclass
class FederationConfig:
    num_clients: int = 2
    rounds: int = 40
    schedule: Literal["alternating", "simultaneous"] = "alternating"
    timeout: float = 600.0  # seconds the server waits for a round's replies


@dataclass
class ModelConfig:
    arch: Union[Literal["gcn", "gat", "sage"], list[Literal["gcn", "gat", "sage"]]] = "gcn"
    hidden_layers: Union[int, list[int]] = 4
    hidden_dim: Union[int, list[int]] = 64
    heads: Union[int, list[int]] = 4
    dropout: Union[float, list[float]] = 0.0  # the original uses none (feature and attention)
    residual: Union[bool, list[bool]] = False  # skips inside hidden layers 2..L and the output layer
    activation: Union[Literal["elu", "relu"], list[Literal["elu", "relu"]]] = "elu"
    # shared: every student starts from the same weights (one seed, as the original's deep copies);
    # independent: each student from its own seed
    init: Literal["shared", "independent"] = "shared"

    def for_client(self, client_id: int) -> dict[str, Any]:
        """This student's model keys, with per-client lists resolved."""
        return {
            f.name: (value[client_id] if isinstance(value, list) else value)
            for f in dataclasses.fields(self)
            for value in [getattr(self, f.name)]
        }


@dataclass
class AlignConfig:
    """How students align (:mod:`fedalign.alignment`, :mod:`fedalign.statistics`).

    The defaults are the original Alignahead code: ``lsp`` kernel (softmax over a node's in-edges of
    ``exp(-||h_u - h_v||_1 / tau)``), tau 100, pre-activation representations, the KL summed over
    in-edges and divided by all N nodes, weight a = 1.
    """

    strategy: Literal["alignahead", "one-to-one", "self", "logits", "none"] = "alignahead"
    weight: float = 1.0  # a: weight of the alignment loss
    tau: float = 100.0  # temperature of the structure kernel
    kernel: Literal["lsp", "l1-softmax", "l2sq", "cosine"] = "lsp"
    representation: Literal["pre-activation", "post-activation"] = "pre-activation"
    node_mean: Literal["all", "with-in-edges"] = "all"  # divide the per-node KL sum by N, or by nodes with in-edges
    logit_temperature: float = 1.0  # T of strategy logits: KL of softmax(z / T) between students
    # Wire precision of released statistics: float16 halves the bytes sent and received; receivers
    # compute in float32 (probabilities below ~6e-8 round to 0 and then add nothing to the KL).
    statistics_dtype: Literal["float32", "float16"] = "float32"


@dataclass
class TrainConfig:
    local_epochs: int = 1  # epochs a student trains each time it is scheduled
    lr: float = 0.005
    weight_decay: float = 0.0


@dataclass
class DPSGDConfig:
    """Per-graph DP-SGD for local training (multi-graph datasets with partition scheme ``graphs`` only).

    Each local epoch takes ``round(1 / sample_rate)`` steps; each step Poisson-samples the
    client's training graphs with probability ``sample_rate``, clips every graph's gradient
    of the task loss to ``max_grad_norm`` and adds ``N(0, (noise_multiplier * max_grad_norm)^2)``
    noise (:class:`fedalign.privacy.DPSGDTrainer`). Unit of privacy: one training graph.
    """

    enabled: bool = False
    noise_multiplier: float = 1.0  # sigma of DP-SGD; 0 = clipped SGD without noise (epsilon = inf)
    max_grad_norm: float = 1.0  # per-graph L2 clip bound, in gradient units
    sample_rate: float = 0.5  # q in (0, 1]: Poisson inclusion probability of a graph per step


@dataclass
class PrivacyConfig:
    """Differential privacy of what a client releases (:mod:`fedalign.privacy`).

    ``mechanism: gaussian`` clips each release of structure statistics (all layers) to L2 norm
    ``clip_norm`` and adds Gaussian noise of std ``noise_multiplier * clip_norm`` per coordinate;
    unit of privacy: the client's whole local dataset. Give exactly one of ``noise_multiplier``
    (sigma) and ``target_epsilon`` (sigma is then solved so that the client's planned releases,
    :func:`planned_releases`, spend exactly that epsilon at ``delta``; ``.inf`` = clip only, no
    noise, no privacy). ``max_epsilon`` is a hard budget: a release that would exceed it is
    withheld (the client still trains; peers keep its last statistics).
    """

    mechanism: Literal["none", "gaussian"] = "none"
    noise_multiplier: float | None = None  # sigma; noise std sigma * clip_norm per coordinate (0 = clip only)
    target_epsilon: float | None = None  # alternative to sigma: the epsilon of all planned releases
    clip_norm: float = 1.0  # C: L2 bound of one release (scope release) or of each layer (scope layer)
    clip_scope: Literal["release", "layer"] = "release"
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    max_epsilon: float | None = None  # budget of the statistics mechanism; None = unlimited
    # Noise from the experiment seed (reproducible, for tests and comparisons) or, by default, from
    # OS entropy: a seed the server knows would let it regenerate and subtract the noise.
    reproducible_noise: bool = False
    dp_sgd: DPSGDConfig = field(default_factory=DPSGDConfig)

    @property
    def enabled(self) -> bool:
        """True when any mechanism protects the releases (statistics noise or DP-SGD)."""
        return self.mechanism != "none" or self.dp_sgd.enabled


@dataclass
class OutputConfig:
    dir: str = "outputs"  # run folders are created below this
    progress: bool = True  # one line per round on stderr
    plot: bool = True  # write curves.png at the end


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp``; raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (valid keys here: {', '.join(names)})")
    kwargs = {
        name: _coerce(raw[name], hints[name], f"{prefix}.{name}" if prefix else name)
        for name in names
        if name in raw
    }
    return cls(**kwargs)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Value checks that types alone cannot express. Returns ``cfg``."""
    from .data import DATASET_NAMES  # data imports torch_geometric; keep config import light

    k = cfg.federation.num_clients
    dataset = cfg.data.name.lower().replace("_", "-")
    _check(dataset in DATASET_NAMES, "data.name", f"unknown dataset {cfg.data.name!r}; choose one of {', '.join(DATASET_NAMES)}")
    _check(len(cfg.data.split) == 3 and all(f > 0 for f in cfg.data.split) and sum(cfg.data.split) <= 1 + 1e-9,
           "data.split", f"three positive fractions (train, val, test) summing to at most 1, got {cfg.data.split}")
    _check(k >= 1, "federation.num_clients", f"must be >= 1, got {k}")
    _check(k >= 2 or cfg.align.strategy in ("none", "self"), "federation.num_clients",
           f"alignment strategy {cfg.align.strategy!r} needs at least 2 clients (peers), got {k}; "
           "use align.strategy: none for a single student")
    _check(cfg.federation.rounds >= 1, "federation.rounds", f"must be >= 1, got {cfg.federation.rounds}")
    _check(cfg.federation.timeout > 0, "federation.timeout", f"must be > 0 seconds, got {cfg.federation.timeout}")
    _check(cfg.partition.alpha > 0, "partition.alpha", f"must be > 0, got {cfg.partition.alpha}")
    _check(0 <= cfg.partition.public_fraction < 1, "partition.public_fraction",
           f"must be in [0, 1), got {cfg.partition.public_fraction}")
    _check(cfg.partition.scheme == "replicate" or cfg.partition.public_fraction > 0, "partition.public_fraction",
           f"scheme {cfg.partition.scheme!r} computes statistics on a public share: it must be > 0")
    for f in dataclasses.fields(cfg.model):
        value = getattr(cfg.model, f.name)
        if isinstance(value, list):
            _check(len(value) == k, f"model.{f.name}", f"a per-client list needs {k} entries (one per client), got {len(value)}")
    for i in range(k):
        m = cfg.model.for_client(i)
        _check(m["hidden_layers"] >= 2, "model.hidden_layers", f"must be >= 2, got {m['hidden_layers']}")
        _check(m["hidden_dim"] >= 1, "model.hidden_dim", f"must be >= 1, got {m['hidden_dim']}")
        _check(0 <= m["dropout"] < 1, "model.dropout", f"must be in [0, 1), got {m['dropout']}")
        _check(m["heads"] >= 1, "model.heads", f"must be >= 1, got {m['heads']}")
        _check(m["arch"] != "gat" or m["hidden_dim"] % m["heads"] == 0, "model.hidden_dim",
               f"a GAT student needs hidden_dim divisible by heads, got {m['hidden_dim']} and {m['heads']}")
    _check(cfg.align.strategy in STRATEGIES, "align.strategy", f"choose one of {STRATEGIES}")
    _check(cfg.align.kernel in KERNELS, "align.kernel", f"choose one of {sorted(KERNELS)}")
    _check(cfg.align.weight >= 0, "align.weight", f"the alignment weight a must be >= 0, got {cfg.align.weight}")
    _check(cfg.align.tau > 0, "align.tau", f"the temperature must be > 0, got {cfg.align.tau}")
    _check(cfg.align.logit_temperature > 0, "align.logit_temperature",
           f"the temperature must be > 0, got {cfg.align.logit_temperature}")
    _check(0 < cfg.partition.label_rate <= 1, "partition.label_rate",
           f"the share of labelled training nodes must be in (0, 1], got {cfg.partition.label_rate}")
    _check(cfg.train.local_epochs >= 1, "train.local_epochs", f"must be >= 1, got {cfg.train.local_epochs}")
    _check(cfg.train.lr > 0, "train.lr", f"must be > 0, got {cfg.train.lr}")
    _check(cfg.train.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {cfg.train.weight_decay}")
    _validate_privacy(cfg, dataset)
    return cfg


def _validate_privacy(cfg: ExperimentConfig, dataset: str) -> None:
    from .data import MULTI_GRAPH_DATASETS

    p = cfg.privacy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    _check(sigma is None or 0 <= sigma < math.inf, "privacy.noise_multiplier",
           f"must be >= 0 and finite (noise std = noise_multiplier * clip_norm), got {sigma}")
    _check(eps is None or eps > 0, "privacy.target_epsilon",
           f"must be > 0 (or .inf for clipping without noise), got {eps}")
    _check(0 < p.delta < 1, "privacy.delta", f"must be in (0, 1), e.g. 1e-5, got {p.delta}")
    _check(0 < p.clip_norm < math.inf, "privacy.clip_norm", f"must be > 0 and finite, got {p.clip_norm}")
    _check(p.max_epsilon is None or p.max_epsilon > 0, "privacy.max_epsilon",
           f"the privacy budget must be > 0, got {p.max_epsilon}")
    if p.mechanism == "gaussian":
        _check((sigma is None) != (eps is None), "privacy.noise_multiplier",
               "mechanism 'gaussian' needs exactly one of privacy.noise_multiplier (sigma) and "
               f"privacy.target_epsilon, got noise_multiplier={sigma}, target_epsilon={eps}")
    else:
        for key, value in (("noise_multiplier", sigma), ("target_epsilon", eps), ("max_epsilon", p.max_epsilon)):
            _check(value is None, f"privacy.{key}",
                   f"set to {value} but privacy.mechanism is 'none', so no statistics noise is added; "
                   "set privacy.mechanism: gaussian, or remove the key")
    d = p.dp_sgd
    _check(0 < d.sample_rate <= 1, "privacy.dp_sgd.sample_rate", f"must be in (0, 1], got {d.sample_rate}")
    _check(0 < d.max_grad_norm < math.inf, "privacy.dp_sgd.max_grad_norm",
           f"must be > 0 and finite, got {d.max_grad_norm}")
    _check(0 <= d.noise_multiplier < math.inf, "privacy.dp_sgd.noise_multiplier",
           f"must be >= 0 and finite, got {d.noise_multiplier}")
    if d.enabled:
        _check(dataset in MULTI_GRAPH_DATASETS, "privacy.dp_sgd",
               f"DP-SGD needs a multi-graph dataset ({', '.join(MULTI_GRAPH_DATASETS)}), where one graph is one "
               f"sample; {cfg.data.name!r} is a single graph, and per-node clipping gives no honest per-node "
               "guarantee there (a node's features and label reach its neighbours' gradients through message "
               "passing). Disable privacy.dp_sgd and use the statistics mechanism (privacy.mechanism: gaussian), "
               "or use a multi-graph dataset")
        _check(cfg.partition.scheme in ("graphs", "iid"), "privacy.dp_sgd",
               f"DP-SGD needs partition.scheme 'graphs' (or its alias 'iid'), got {cfg.partition.scheme!r}: the "
               "statistics are DP only as post-processing of the DP-SGD model on a public alignment graph, but in "
               "'replicate' they are computed on the private training graphs themselves")


def planned_releases(cfg: ExperimentConfig, client_id: int) -> int:
    """How many statistics releases client ``client_id`` makes in a full run.

    One in round 0 plus one per round it trains: ``federation.rounds`` under the
    ``simultaneous`` schedule; under ``alternating`` the rounds r in 1..R with
    ``(r - 1) mod K == client_id``, i.e. ``ceil((R - client_id) / K)`` (at most
    ``ceil(R / K)``). Used to plan the noise of ``privacy.target_epsilon``.
    """
    rounds, k = cfg.federation.rounds, cfg.federation.num_clients
    if not 0 <= client_id < k:
        raise ValueError(f"client id {client_id} out of range for federation.num_clients={k}")
    if cfg.federation.schedule == "simultaneous":
        return 1 + rounds
    return 1 + max(0, -(-(rounds - client_id) // k))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value, e.g. federation.rounds=10")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key.path=value`` set (missing sections are created)."""
    result = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and validate a config from plain data (e.g. a parsed YAML file)."""
    raw = apply_overrides(raw or {}, overrides or [])
    align = raw.get("align")
    if isinstance(align, dict) and align.get("kernel") == "l1":
        raise ConfigError("align.kernel: 'l1' is now called 'l1-softmax' (softmax of -||h_u - h_v||_1 / tau); the "
                          "default 'lsp' is the original Alignahead's softmax of exp(-||h_u - h_v||_1 / tau)")
    return validate(_build(ExperimentConfig, raw, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply ``key.path=value`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (experiment files live in simulations/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return config_from_dict(raw, overrides)
