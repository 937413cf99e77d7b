"""The sections of an experiment config: typed dataclasses with their defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union


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
    # A public layout artefact (`fedalign layout <experiment> --out <file>`, made where the data is): the server
    # checks releases against it and never opens the data root. None: the server derives it from the data, and
    # without the data checks shape, dtype and range only.
    public_layout: str | None = None
    # SHA-256 fingerprint of the public layout; every client checks its own data gives it. None: filled by the
    # server from public_layout when given (set it to pin a layout).
    public_layout_sha256: str | None = None


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
        """This student's model keys, with per-client lists resolved.

        Args:
            client_id: the client's index, 0..K-1 (into every per-client list).
        """
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

    # alignahead / one-to-one / self / logits / votes / none share statistics (or nothing); fedavg and dp-fedavg
    # are the weight-averaging reference arms: they send weights, so they must be named here explicitly
    strategy: Literal["alignahead", "one-to-one", "self", "logits", "votes", "none", "fedavg", "dp-fedavg"] = "alignahead"
    weight: float = 1.0  # a: weight of the alignment loss
    tau: float = 100.0  # temperature of the structure kernel
    kernel: Literal["lsp", "l1-softmax", "l2sq", "cosine"] = "lsp"
    representation: Literal["pre-activation", "post-activation"] = "pre-activation"
    node_mean: Literal["all", "with-in-edges"] = "all"  # divide the per-node KL sum by N, or by nodes with in-edges
    logit_temperature: float = 1.0  # T of strategy logits: KL of softmax(z / T) between students
    # Wire precision of released statistics: float16 halves the bytes sent and received; receivers
    # compute in float32 (probabilities below ~6e-8 round to 0 and then add nothing to the KL).
    statistics_dtype: Literal["float32", "float16"] = "float32"
    # Q: strategies logits and votes release only on a public sample of Q nodes of the alignment graph (the query
    # set: fixed for the whole run, drawn from the experiment seed, the same on every client and the server);
    # None = every node of the alignment graph.
    queries: int | None = None
    # T of strategy votes: a query is answered only where the peers' noisy top vote count is >= T (Confident-GNMax's
    # consensus check, on the same noisy histogram: post-processing); 0 answers every query.
    vote_threshold: float = 0.0


@dataclass
class TrainConfig:
    local_epochs: int = 1  # epochs a student trains each time it is scheduled
    lr: float = 0.005
    weight_decay: float = 0.0
    # Mini-batch students (fedalign.client.minibatch_training): None = full batch. Else each step takes
    # batch_size labelled training nodes (PyG NeighborLoader) and batch_size target nodes of the alignment
    # graph with all their in-edges (the alignment term's unbiased estimate: fedalign.client.minibatch).
    batch_size: int | None = None
    # Fan-out per message-passing layer (model.hidden_layers + 1 entries, PyG's order: the hop next to the
    # seeds, i.e. the output layer, first; -1 = every neighbour); None = all neighbours (exact representations).
    num_neighbors: list[int] | None = None


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

    # client: the statistics mechanism / DP-SGD protect a client's data; labels: randomised response on each
    # training label before training (privacy.label_epsilon per label; fedalign.privacy.labels)
    unit: Literal["client", "labels"] = "client"
    label_epsilon: float | None = None
    mechanism: Literal["none", "gaussian"] = "none"
    noise_multiplier: float | None = None  # sigma; noise std sigma * clip_norm per coordinate (0 = clip only)
    target_epsilon: float | None = None  # alternative to sigma: the epsilon of all planned releases
    clip_norm: float = 1.0  # C: L2 bound of one release (scope release) or of each layer (scope layer)
    clip_scope: Literal["release", "layer"] = "release"
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "prv"  # Opacus; = fedalign.privacy.accounting.DEFAULT_ACCOUNTANT (tested)
    max_epsilon: float | None = None  # budget of the statistics mechanism; None = unlimited
    # Subtract the public uniform baseline 1/in-degree(v) before clipping (signed: sensitivity 2C instead of
    # sqrt(2) C, but the clipped norm carries only how the distributions differ from uniform).
    subtract_baseline: bool = False
    release_every: int = 1  # release after every k-th turn only (fewer releases, less noise each)
    # false: no charged release in the final round (nobody trains after it), so target_epsilon is spread over one
    # release fewer; true (the default so far) releases there too
    final_release: bool = True
    # Round 0's release (before any training, on a public alignment graph) reads no private data: send it
    # exact and uncharged. Under partition.scheme replicate the alignment graph is private: always charged.
    free_initial_release: bool = True
    # Noise from the experiment seed (reproducible, for tests and comparisons) or, by default, from the OS
    # CSPRNG (fedalign.client.noise): a seed the server knows lets it regenerate and subtract the noise, so a
    # reproducible run reports epsilon = inf, and with target/max/label epsilon needs insecure_ok: true.
    reproducible_noise: bool = False
    insecure_ok: bool = False  # accept reproducible_noise together with an epsilon target (tests, comparisons)
    # The noise control of a DP arm: every charged release is made from zeros instead of the client's statistics
    # (same mechanism, same sigma: pure noise); it reads no private data and spends no epsilon.
    noise_control: bool = False
    # Secure aggregation with distributed noise (schedule simultaneous, mechanism gaussian): the server learns
    # only the sum of the clients' shares (Flower's SecAgg+ in the Flower engines), each client adds noise of std
    # sigma C / sqrt(n), n = K - floor(max_dropout_share K) - colluders (fedalign.aggregation).
    secure_aggregation: bool = False
    max_dropout_share: float = 0.1  # clients that may drop out of a round while the sum keeps noise sigma C
    colluders: int = 1  # clients whose noise shares the adversary may know (>= 1: any trainer knows its own)
    dp_sgd: DPSGDConfig = field(default_factory=DPSGDConfig)


@dataclass
class SimulationConfig:
    """How Flower's Simulation Runtime places the virtual clients (``fedalign run`` / ``sweep`` with the Flower engine).

    Each client asks Ray for ``cpus_per_client`` CPUs and ``gpus_per_client`` GPUs (a fraction shares a
    GPU among clients; ``device: auto`` then trains on the GPU Ray assigns). ``ray_address`` attaches to
    a running Ray cluster (``ray start --head`` on one machine, ``ray start --address`` on the others)
    instead of starting a local Ray instance.
    """

    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    ray_address: str | None = None


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
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain nested dicts (:func:`dataclasses.asdict`)."""
        return dataclasses.asdict(self)
