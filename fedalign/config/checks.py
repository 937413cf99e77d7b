"""Value checks that types alone cannot express: one function, used by every command and engine.

The checks of the ``privacy`` section are in :mod:`fedalign.config.privacy_checks`.
"""

from __future__ import annotations

import math

from ..alignment import NODE_STRATEGIES, STRATEGIES
from ..statistics import KERNELS
from .base import require as _check
from .privacy_checks import check_privacy
from .sections import ExperimentConfig
from .synthetic import GENERATOR_OPTIONS


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Value checks that types alone cannot express; raises :class:`ConfigError` naming the key. Returns ``cfg``.

    Args:
        cfg: the experiment config, as built from its file.
    """
    from ..data import DATASET_NAMES  # data imports torch_geometric; keep config import light

    dataset = cfg.data.name.lower().replace("_", "-")
    _check(
        dataset in DATASET_NAMES,
        "data.name",
        f"unknown dataset {cfg.data.name!r}; choose one of {', '.join(DATASET_NAMES)}",
    )
    _check_data(cfg, dataset)
    _check_federation(cfg)
    _check_model(cfg)
    _check_align_and_training(cfg)
    _check_queries(cfg)
    _check_public_layout(cfg)
    check_privacy(cfg, dataset)
    _check_mini_batch(cfg)
    _check_sparse_features(cfg)
    return cfg


def _check_federation(cfg: ExperimentConfig) -> None:
    """``federation`` and ``partition``: clients, rounds and the public share."""
    k = cfg.federation.num_clients
    _check(k >= 1, "federation.num_clients", f"must be >= 1, got {k}")
    _check(
        k >= 2 or cfg.align.strategy in ("none", "self"),
        "federation.num_clients",
        f"alignment strategy {cfg.align.strategy!r} needs at least 2 clients (peers), got {k}; "
        "use align.strategy: none for a single student",
    )
    _check(cfg.federation.rounds >= 1, "federation.rounds", f"must be >= 1, got {cfg.federation.rounds}")
    _check(cfg.federation.timeout > 0, "federation.timeout", f"must be > 0 seconds, got {cfg.federation.timeout}")
    _check(cfg.partition.alpha > 0, "partition.alpha", f"must be > 0, got {cfg.partition.alpha}")
    _check(
        0 <= cfg.partition.public_fraction < 1,
        "partition.public_fraction",
        f"must be in [0, 1), got {cfg.partition.public_fraction}",
    )
    _check(
        cfg.partition.scheme == "replicate" or cfg.partition.public_fraction > 0,
        "partition.public_fraction",
        f"scheme {cfg.partition.scheme!r} computes statistics on a public share: it must be > 0",
    )


def _check_model(cfg: ExperimentConfig) -> None:
    """``model``: per-client lists of K entries, and every student's values."""
    k = cfg.federation.num_clients
    for name in type(cfg.model).model_fields:
        value = getattr(cfg.model, name)
        if isinstance(value, list):
            _check(
                len(value) == k,
                f"model.{name}",
                f"a per-client list needs {k} entries (one per client), got {len(value)}",
            )
    for i in range(k):
        m = cfg.model.for_client(i)
        _check(m["hidden_layers"] >= 2, "model.hidden_layers", f"must be >= 2, got {m['hidden_layers']}")
        _check(m["hidden_dim"] >= 1, "model.hidden_dim", f"must be >= 1, got {m['hidden_dim']}")
        _check(0 <= m["dropout"] < 1, "model.dropout", f"must be in [0, 1), got {m['dropout']}")
        _check(m["heads"] >= 1, "model.heads", f"must be >= 1, got {m['heads']}")
        _check(
            m["arch"] != "gat" or m["hidden_dim"] % m["heads"] == 0,
            "model.hidden_dim",
            f"a GAT student needs hidden_dim divisible by heads, got {m['hidden_dim']} and {m['heads']}",
        )


def _check_align_and_training(cfg: ExperimentConfig) -> None:
    """``align``, ``partition.label_rate``, ``train`` and ``simulation``: ranges."""
    _check(cfg.align.strategy in STRATEGIES, "align.strategy", f"choose one of {STRATEGIES}")
    _check(cfg.align.kernel in KERNELS, "align.kernel", f"choose one of {sorted(KERNELS)}")
    _check(cfg.align.weight >= 0, "align.weight", f"the alignment weight a must be >= 0, got {cfg.align.weight}")
    _check(cfg.align.tau > 0, "align.tau", f"the temperature must be > 0, got {cfg.align.tau}")
    _check(
        cfg.align.logit_temperature > 0,
        "align.logit_temperature",
        f"the temperature must be > 0, got {cfg.align.logit_temperature}",
    )
    _check(
        0 < cfg.partition.label_rate <= 1,
        "partition.label_rate",
        f"the share of labelled training nodes must be in (0, 1], got {cfg.partition.label_rate}",
    )
    _check(cfg.train.local_epochs >= 1, "train.local_epochs", f"must be >= 1, got {cfg.train.local_epochs}")
    _check(cfg.train.lr > 0, "train.lr", f"must be > 0, got {cfg.train.lr}")
    _check(cfg.train.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {cfg.train.weight_decay}")
    _check(
        cfg.simulation.cpus_per_client > 0,
        "simulation.cpus_per_client",
        f"must be > 0, got {cfg.simulation.cpus_per_client}",
    )
    _check(
        cfg.simulation.gpus_per_client >= 0,
        "simulation.gpus_per_client",
        f"must be >= 0 (a fraction shares a GPU), got {cfg.simulation.gpus_per_client}",
    )


def _check_data(cfg: ExperimentConfig, dataset: str) -> None:
    """``data.synthetic`` (options of this generator only) and ``data.split``."""
    _check(
        not cfg.data.synthetic or dataset.startswith("synthetic-"),
        "data.synthetic",
        f"options of the synthetic generators are set, but data.name is {cfg.data.name!r}, a real dataset; "
        "remove data.synthetic or use a synthetic-* dataset",
    )
    for option in cfg.data.synthetic.options():
        _check(
            option in GENERATOR_OPTIONS.get(dataset, (option,)),
            f"data.synthetic.{option}",
            f"not an option of the {dataset} generator; its options: {', '.join(GENERATOR_OPTIONS.get(dataset, ()))}",
        )
    _check(
        len(cfg.data.split) == 3 and all(f > 0 for f in cfg.data.split) and sum(cfg.data.split) <= 1 + 1e-9,
        "data.split",
        f"three positive fractions (train, val, test) summing to at most 1, got {cfg.data.split}",
    )


def check_device(cfg: ExperimentConfig) -> ExperimentConfig:
    """``device: cuda`` needs a GPU torch can use on this machine (where the students train); returns ``cfg``.

    Called by the command line before anything runs (``fedalign check``, ``run``, ``sweep``, ``layout``); not
    by :func:`check_config`, since a deployment's server reads the config its clients train with on theirs.

    Args:
        cfg: the experiment config.
    """
    if cfg.device == "cuda":
        import torch

        _check(
            torch.cuda.is_available(),
            "device",
            "'cuda', but torch finds no CUDA GPU on this machine (torch.cuda.is_available() is false); use "
            "device: auto (the GPU when there is one, else the CPU) or device: cpu",
        )
    return cfg


def _check_mini_batch(cfg: ExperimentConfig) -> None:
    """``train.batch_size`` and ``train.num_neighbors``: mini-batch students (full batch when unset)."""
    t, k = cfg.train, cfg.federation.num_clients
    _check(
        t.batch_size is None or t.batch_size >= 1,
        "train.batch_size",
        f"nodes per mini-batch must be >= 1 (or leave it out for full-batch training), got {t.batch_size}",
    )
    if t.num_neighbors is not None:
        _check(
            t.batch_size is not None,
            "train.num_neighbors",
            "fan-outs apply to mini-batch training: set train.batch_size too, or remove the key",
        )
        _check(
            all(n >= 1 or n == -1 for n in t.num_neighbors),
            "train.num_neighbors",
            f"each fan-out must be >= 1, or -1 for every neighbour, got {t.num_neighbors}",
        )
        for i in range(k):
            layers = cfg.model.for_client(i)["hidden_layers"] + 1
            _check(
                len(t.num_neighbors) == layers,
                "train.num_neighbors",
                f"one fan-out per message-passing layer (model.hidden_layers + 1 output layer = {layers} for "
                f"client {i}), got {len(t.num_neighbors)}; students of different depths need it left out",
            )
    if t.batch_size is None:
        return
    _check(
        not cfg.privacy.dp_sgd.enabled,
        "train.batch_size",
        "mini-batch training is not combined with privacy.dp_sgd (per-graph Poisson batches); remove one",
    )
    _check(
        cfg.align.strategy not in ("votes", "fedavg", "dp-fedavg"),
        "train.batch_size",
        f"mini-batch training does not support align.strategy {cfg.align.strategy} yet; remove train.batch_size",
    )


def _check_sparse_features(cfg: ExperimentConfig) -> None:
    """``train.sparse_features``: the first layer of full-batch GCN students (no other forward reads it)."""
    if not cfg.train.sparse_features:
        return
    archs = {cfg.model.for_client(i)["arch"] for i in range(cfg.federation.num_clients)}
    _check(
        archs == {"gcn"},
        "train.sparse_features",
        f"a sparse first layer is built for GCN students only, got model.arch {sorted(archs)}; remove the key",
    )
    _check(
        cfg.train.batch_size is None and not cfg.privacy.dp_sgd.enabled,
        "train.sparse_features",
        "applies to full-batch training (a mini-batch or DP-SGD student builds dense batches); remove one",
    )


def _check_public_layout(cfg: ExperimentConfig) -> None:
    f = cfg.federation
    sha = f.public_layout_sha256
    _check(
        sha is None or (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)),
        "federation.public_layout_sha256",
        f"a SHA-256 fingerprint is 64 hex digits (as `fedalign layout` prints it), got {sha!r}",
    )
    _check(
        f.public_layout is None or str(f.public_layout).strip() != "",
        "federation.public_layout",
        "an empty path; name the artefact `fedalign layout` wrote, or remove the key",
    )


def _check_queries(cfg: ExperimentConfig) -> None:
    a = cfg.align
    _check(
        a.queries is None or a.strategy in NODE_STRATEGIES,
        "align.queries",
        f"a query set applies to strategies {' and '.join(NODE_STRATEGIES)}, not {a.strategy!r}; remove the key",
    )
    _check(
        a.queries is None or a.queries >= 1, "align.queries", f"the number of query nodes must be >= 1, got {a.queries}"
    )
    _check(
        a.vote_threshold == 0 or a.strategy == "votes",
        "align.vote_threshold",
        f"the consensus threshold applies to strategy votes, not {a.strategy!r}; remove the key",
    )
    _check(
        0 <= a.vote_threshold < math.inf,
        "align.vote_threshold",
        f"the consensus threshold T (a vote count) must be >= 0 and finite, got {a.vote_threshold}",
    )
    public = cfg.partition.scheme != "replicate"
    _check(
        public or (a.queries is None and a.strategy != "votes"),
        "align.queries" if a.queries else "align.strategy",
        "queries are nodes of a public alignment share, but partition.scheme replicate has none (the alignment "
        "graph is each client's private training graph); use scheme dirichlet, community or iid",
    )
