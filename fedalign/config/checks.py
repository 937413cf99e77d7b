"""Value checks that types alone cannot express: one function, used by every command and engine."""

from __future__ import annotations

import math

from ..alignment import NODE_STRATEGIES, STRATEGIES, WEIGHT_STRATEGIES
from ..statistics import KERNELS
from .sections import ConfigError, ExperimentConfig
from .synthetic import GENERATOR_OPTIONS


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Value checks that types alone cannot express; raises :class:`ConfigError` naming the key. Returns ``cfg``.

    Args:
        cfg: the experiment config, as built from its file.
    """
    from ..data import DATASET_NAMES  # data imports torch_geometric; keep config import light

    k = cfg.federation.num_clients
    dataset = cfg.data.name.lower().replace("_", "-")
    _check(dataset in DATASET_NAMES, "data.name",
           f"unknown dataset {cfg.data.name!r}; choose one of {', '.join(DATASET_NAMES)}")
    _check_data(cfg, dataset)
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
    for name in type(cfg.model).model_fields:
        value = getattr(cfg.model, name)
        if isinstance(value, list):
            _check(len(value) == k, f"model.{name}",
                   f"a per-client list needs {k} entries (one per client), got {len(value)}")
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
    _check(cfg.simulation.cpus_per_client > 0, "simulation.cpus_per_client",
           f"must be > 0, got {cfg.simulation.cpus_per_client}")
    _check(cfg.simulation.gpus_per_client >= 0, "simulation.gpus_per_client",
           f"must be >= 0 (a fraction shares a GPU), got {cfg.simulation.gpus_per_client}")
    _check_queries(cfg)
    _check_public_layout(cfg)
    _check_privacy(cfg, dataset)
    _check_mini_batch(cfg)
    return cfg


def _check_data(cfg: ExperimentConfig, dataset: str) -> None:
    """``data.synthetic`` (options of this generator only) and ``data.split``."""
    _check(not cfg.data.synthetic or dataset.startswith("synthetic-"), "data.synthetic",
           f"options of the synthetic generators are set, but data.name is {cfg.data.name!r}, a real dataset; "
           "remove data.synthetic or use a synthetic-* dataset")
    for option in cfg.data.synthetic.options():
        _check(option in GENERATOR_OPTIONS.get(dataset, (option,)), f"data.synthetic.{option}",
               f"not an option of the {dataset} generator; its options: "
               f"{', '.join(GENERATOR_OPTIONS.get(dataset, ()))}")
    _check(len(cfg.data.split) == 3 and all(f > 0 for f in cfg.data.split) and sum(cfg.data.split) <= 1 + 1e-9,
           "data.split", f"three positive fractions (train, val, test) summing to at most 1, got {cfg.data.split}")


def check_device(cfg: ExperimentConfig) -> ExperimentConfig:
    """``device: cuda`` needs a GPU torch can use on this machine (where the students train); returns ``cfg``.

    Called by the command line before anything runs (``fedalign check``, ``run``, ``sweep``, ``layout``); not
    by :func:`check_config`, since a deployment's server reads the config its clients train with on theirs.

    Args:
        cfg: the experiment config.
    """
    if cfg.device == "cuda":
        import torch

        _check(torch.cuda.is_available(), "device",
               "'cuda', but torch finds no CUDA GPU on this machine (torch.cuda.is_available() is false); use "
               "device: auto (the GPU when there is one, else the CPU) or device: cpu")
    return cfg


def _check_mini_batch(cfg: ExperimentConfig) -> None:
    """``train.batch_size`` and ``train.num_neighbors``: mini-batch students (full batch when unset)."""
    t, k = cfg.train, cfg.federation.num_clients
    _check(t.batch_size is None or t.batch_size >= 1, "train.batch_size",
           f"nodes per mini-batch must be >= 1 (or leave it out for full-batch training), got {t.batch_size}")
    if t.num_neighbors is not None:
        _check(t.batch_size is not None, "train.num_neighbors",
               "fan-outs apply to mini-batch training: set train.batch_size too, or remove the key")
        _check(all(n >= 1 or n == -1 for n in t.num_neighbors), "train.num_neighbors",
               f"each fan-out must be >= 1, or -1 for every neighbour, got {t.num_neighbors}")
        for i in range(k):
            layers = cfg.model.for_client(i)["hidden_layers"] + 1
            _check(len(t.num_neighbors) == layers, "train.num_neighbors",
                   f"one fan-out per message-passing layer (model.hidden_layers + 1 output layer = {layers} for "
                   f"client {i}), got {len(t.num_neighbors)}; students of different depths need it left out")
    if t.batch_size is None:
        return
    _check(not cfg.privacy.dp_sgd.enabled, "train.batch_size",
           "mini-batch training is not combined with privacy.dp_sgd (per-graph Poisson batches); remove one")
    _check(cfg.align.strategy not in ("votes", "fedavg", "dp-fedavg"), "train.batch_size",
           f"mini-batch training does not support align.strategy {cfg.align.strategy} yet; remove train.batch_size")


def _check_public_layout(cfg: ExperimentConfig) -> None:
    f = cfg.federation
    sha = f.public_layout_sha256
    _check(sha is None or (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)),
           "federation.public_layout_sha256",
           f"a SHA-256 fingerprint is 64 hex digits (as `fedalign layout` prints it), got {sha!r}")
    _check(f.public_layout is None or str(f.public_layout).strip() != "", "federation.public_layout",
           "an empty path; name the artefact `fedalign layout` wrote, or remove the key")


def _check_queries(cfg: ExperimentConfig) -> None:
    a = cfg.align
    _check(a.queries is None or a.strategy in NODE_STRATEGIES, "align.queries",
           f"a query set applies to strategies {' and '.join(NODE_STRATEGIES)}, not {a.strategy!r}; remove the key")
    _check(a.queries is None or a.queries >= 1, "align.queries",
           f"the number of query nodes must be >= 1, got {a.queries}")
    _check(a.vote_threshold == 0 or a.strategy == "votes", "align.vote_threshold",
           f"the consensus threshold applies to strategy votes, not {a.strategy!r}; remove the key")
    _check(0 <= a.vote_threshold < math.inf, "align.vote_threshold",
           f"the consensus threshold T (a vote count) must be >= 0 and finite, got {a.vote_threshold}")
    public = cfg.partition.scheme != "replicate"
    _check(public or (a.queries is None and a.strategy != "votes"), "align.queries" if a.queries else "align.strategy",
           "queries are nodes of a public alignment share, but partition.scheme replicate has none (the alignment "
           "graph is each client's private training graph); use scheme dirichlet, community or iid")


def _check_privacy(cfg: ExperimentConfig, dataset: str) -> None:
    from ..data import MULTI_GRAPH_DATASETS

    p = cfg.privacy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    _check(sigma is None or 0 <= sigma < math.inf, "privacy.noise_multiplier",
           f"must be >= 0 and finite (noise std = noise_multiplier * clip_norm), got {sigma}")
    _check(eps is None or eps > 0, "privacy.target_epsilon",
           f"must be > 0 (or .inf for clipping without noise), got {eps}")
    _check(0 < p.delta < 1, "privacy.delta", f"must be in (0, 1), e.g. 1e-5, got {p.delta}")
    _check(0 < p.clip_norm < math.inf, "privacy.clip_norm", f"must be > 0 and finite, got {p.clip_norm}")
    _check(p.release_every >= 1, "privacy.release_every", f"must be >= 1 (release after every k-th turn), got "
                                                           f"{p.release_every}")
    _check(p.max_epsilon is None or p.max_epsilon > 0, "privacy.max_epsilon",
           f"the privacy budget must be > 0, got {p.max_epsilon}")
    weights = cfg.align.strategy in WEIGHT_STRATEGIES
    if weights:
        _check_weight_strategy(cfg)
    elif p.mechanism == "gaussian":
        _check((sigma is None) != (eps is None), "privacy.noise_multiplier",
               "mechanism 'gaussian' needs exactly one of privacy.noise_multiplier (sigma) and "
               f"privacy.target_epsilon, got noise_multiplier={sigma}, target_epsilon={eps}")
    else:
        for key, value in (("noise_multiplier", sigma), ("target_epsilon", eps), ("max_epsilon", p.max_epsilon)):
            _check(value is None, f"privacy.{key}",
                   f"set to {value} but privacy.mechanism is 'none', so no statistics noise is added; "
                   "set privacy.mechanism: gaussian, or remove the key")
    _check(not p.noise_control or p.mechanism == "gaussian", "privacy.noise_control",
           "the noise control replaces the statistics of the Gaussian mechanism by zeros: set privacy.mechanism: "
           "gaussian (and the sigma or epsilon of the arm it controls)")
    _check(cfg.align.strategy != "votes" or p.mechanism != "gaussian" or p.secure_aggregation,
           "privacy.secure_aggregation", "votes with the Gaussian mechanism are summed with distributed noise: set "
           "privacy.secure_aggregation: true (and federation.schedule: simultaneous)")
    _check(cfg.align.strategy != "votes" or not p.subtract_baseline, "privacy.subtract_baseline",
           "votes are one-hot counts, not distributions around a uniform baseline; remove the key")
    _check_label_privacy(p)
    _check_secure_aggregation(cfg)
    _check_reproducible_noise(p)
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


def _check_weight_strategy(cfg: ExperimentConfig) -> None:
    """fedavg / dp-fedavg: weights leave the clients, so no statistics mechanism applies to them."""
    p, strategy = cfg.privacy, cfg.align.strategy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    _check(p.mechanism == "none" and not p.secure_aggregation and not p.noise_control, "privacy.mechanism",
           f"align.strategy {strategy} sends model weights, not statistics: the statistics mechanism "
           "(privacy.mechanism "
           "gaussian, secure_aggregation, noise_control) does not apply to it; set privacy.mechanism: none "
           "(dp-fedavg takes its noise from privacy.target_epsilon or privacy.noise_multiplier and privacy.clip_norm)")
    _check(p.unit == "client" and not p.dp_sgd.enabled, "privacy.unit",
           f"align.strategy {strategy} is a client-level reference arm: use privacy.unit: client without dp_sgd")
    _check(cfg.federation.schedule == "simultaneous", "federation.schedule",
           f"align.strategy {strategy} averages every client's weights every round: set federation.schedule: "
           "simultaneous")
    _check(p.max_epsilon is None, "privacy.max_epsilon",
           f"align.strategy {strategy} does not take a budget; remove the key")
    _check(all(not isinstance(getattr(cfg.model, name), list) for name in type(cfg.model).model_fields), "model",
           f"align.strategy {strategy} averages one model: give every model key one value, not a per-client list")
    if strategy == "fedavg":
        for key, value in (("noise_multiplier", sigma), ("target_epsilon", eps)):
            _check(value is None, f"privacy.{key}", f"set to {value}, but fedavg adds no noise; use align.strategy: "
                                                     "dp-fedavg for client-level DP, or remove the key")
    else:
        _check((sigma is None) != (eps is None), "privacy.noise_multiplier",
               "dp-fedavg needs exactly one of privacy.noise_multiplier (z: noise std z * clip_norm on the sum of "
               f"the clipped updates) and privacy.target_epsilon, got noise_multiplier={sigma}, target_epsilon={eps}")


def _check_label_privacy(p) -> None:
    if p.unit == "labels":
        _check(p.label_epsilon is not None and 0 < p.label_epsilon < math.inf, "privacy.label_epsilon",
               f"privacy.unit labels needs the epsilon of each label, > 0 and finite, got {p.label_epsilon}")
        _check(p.mechanism == "none" and not p.dp_sgd.enabled, "privacy.unit",
               "labels (randomised response) is a unit of its own: set privacy.mechanism: none and leave "
               "privacy.dp_sgd off, or use privacy.unit: client")
    else:
        _check(p.label_epsilon is None, "privacy.label_epsilon",
               f"set to {p.label_epsilon} but privacy.unit is 'client'; set privacy.unit: labels, or remove the key")


def _check_reproducible_noise(p) -> None:
    """Seeded noise is regenerable by whoever holds the config (the server does): no epsilon holds for it."""
    if not p.reproducible_noise or p.insecure_ok:
        return
    for key, value in (("target_epsilon", p.target_epsilon), ("max_epsilon", p.max_epsilon),
                       ("label_epsilon", p.label_epsilon)):
        _check(value is None or value == math.inf, "privacy.reproducible_noise",
               f"seeds the noise from the config, which the server holds, so it gives no privacy (every release "
               f"reports epsilon = inf), yet privacy.{key} = {value} asks for a guarantee; remove "
               "privacy.reproducible_noise (tests only), or set privacy.insecure_ok: true to run it anyway")


def _check_secure_aggregation(cfg: ExperimentConfig) -> None:
    from ..aggregation import honest_noise_shares

    p, k = cfg.privacy, cfg.federation.num_clients
    _check(0 <= p.max_dropout_share < 1, "privacy.max_dropout_share", f"must be in [0, 1), got {p.max_dropout_share}")
    _check(p.colluders >= 0, "privacy.colluders", f"must be >= 0, got {p.colluders}")
    if not p.secure_aggregation:
        return
    _check(p.colluders >= 1, "privacy.colluders",
           "secure aggregation needs privacy.colluders >= 1: every trainer knows its own noise share, so against a "
           f"peer at most n - 1 of the n honest shares are unknown (got {p.colluders}); set privacy.colluders: 1")
    needs = "privacy.secure_aggregation sums the clients' noisy statistics every round"
    _check(cfg.federation.schedule == "simultaneous", "privacy.secure_aggregation",
           f"{needs}, so it needs federation.schedule: simultaneous (got {cfg.federation.schedule!r})")
    _check(p.mechanism == "gaussian" and p.unit == "client" and not p.dp_sgd.enabled, "privacy.secure_aggregation",
           f"{needs} with distributed Gaussian noise: set privacy.mechanism: gaussian (unit client, no dp_sgd)")
    _check(p.release_every == 1, "privacy.release_every",
           "secure aggregation releases every round; privacy.release_every must be 1")
    _check(len({cfg.model.for_client(i)["hidden_layers"] for i in range(k)}) == 1, "model.hidden_layers",
           "secure aggregation sums layer by layer: every client needs the same number of hidden layers")
    _check(honest_noise_shares(k, p.max_dropout_share, p.colluders) >= 1, "privacy.colluders",
           f"with {k} clients, up to floor({p.max_dropout_share} * {k}) dropping out and {p.colluders} colluding, no "
           "honest client's noise is left in the sum; lower privacy.max_dropout_share or privacy.colluders")
