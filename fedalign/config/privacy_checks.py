"""Checks of the ``privacy`` section that types alone cannot express (part of :func:`fedalign.config.check_config`)."""

from __future__ import annotations

import math

from ..alignment import WEIGHT_STRATEGIES
from .base import require as _check
from .sections import ExperimentConfig


def check_privacy(cfg: ExperimentConfig, dataset: str) -> None:
    """The ``privacy`` keys: ranges, the mechanism and its parameters, the strategies and units they fit.

    Args:
        cfg: the experiment config.
        dataset: ``data.name``, normalised (lower case, dashes).
    """
    p = cfg.privacy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    _check(
        sigma is None or 0 <= sigma < math.inf,
        "privacy.noise_multiplier",
        f"must be >= 0 and finite (noise std = noise_multiplier * clip_norm), got {sigma}",
    )
    _check(
        eps is None or eps > 0, "privacy.target_epsilon", f"must be > 0 (or .inf for clipping without noise), got {eps}"
    )
    _check(0 < p.delta < 1, "privacy.delta", f"must be in (0, 1), e.g. 1e-5, got {p.delta}")
    _check(0 < p.clip_norm < math.inf, "privacy.clip_norm", f"must be > 0 and finite, got {p.clip_norm}")
    _check(
        p.release_every >= 1,
        "privacy.release_every",
        f"must be >= 1 (release after every k-th turn), got {p.release_every}",
    )
    _check(
        p.max_epsilon is None or p.max_epsilon > 0,
        "privacy.max_epsilon",
        f"the privacy budget must be > 0, got {p.max_epsilon}",
    )
    _check_mechanism(cfg)
    _check(
        not p.noise_control or p.mechanism == "gaussian",
        "privacy.noise_control",
        "the noise control replaces the statistics of the Gaussian mechanism by zeros: set privacy.mechanism: "
        "gaussian (and the sigma or epsilon of the arm it controls)",
    )
    _check(
        cfg.align.strategy != "votes" or p.mechanism != "gaussian" or p.secure_aggregation,
        "privacy.secure_aggregation",
        "votes with the Gaussian mechanism are summed with distributed noise: set "
        "privacy.secure_aggregation: true (and federation.schedule: simultaneous)",
    )
    _check(
        cfg.align.strategy != "votes" or not p.subtract_baseline,
        "privacy.subtract_baseline",
        "votes are one-hot counts, not distributions around a uniform baseline; remove the key",
    )
    _check_label_privacy(p)
    _check_secure_aggregation(cfg)
    _check_reproducible_noise(p)
    _check_dp_sgd(cfg, dataset)


def _check_mechanism(cfg: ExperimentConfig) -> None:
    """The statistics mechanism's parameters: as the strategy (weights or statistics) and mechanism need them."""
    p = cfg.privacy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    if cfg.align.strategy in WEIGHT_STRATEGIES:
        _check_weight_strategy(cfg)
    elif p.mechanism == "gaussian":
        _check(
            (sigma is None) != (eps is None),
            "privacy.noise_multiplier",
            "mechanism 'gaussian' needs exactly one of privacy.noise_multiplier (sigma) and "
            f"privacy.target_epsilon, got noise_multiplier={sigma}, target_epsilon={eps}",
        )
    else:
        for key, value in (("noise_multiplier", sigma), ("target_epsilon", eps), ("max_epsilon", p.max_epsilon)):
            _check(
                value is None,
                f"privacy.{key}",
                f"set to {value} but privacy.mechanism is 'none', so no statistics noise is added; "
                "set privacy.mechanism: gaussian, or remove the key",
            )


def _check_dp_sgd(cfg: ExperimentConfig, dataset: str) -> None:
    """``privacy.dp_sgd``: its ranges, and the data and partition it needs when enabled."""
    from ..data import MULTI_GRAPH_DATASETS

    d = cfg.privacy.dp_sgd
    _check(0 < d.sample_rate <= 1, "privacy.dp_sgd.sample_rate", f"must be in (0, 1], got {d.sample_rate}")
    _check(
        0 < d.max_grad_norm < math.inf, "privacy.dp_sgd.max_grad_norm", f"must be > 0 and finite, got {d.max_grad_norm}"
    )
    _check(
        0 <= d.noise_multiplier < math.inf,
        "privacy.dp_sgd.noise_multiplier",
        f"must be >= 0 and finite, got {d.noise_multiplier}",
    )
    if d.enabled:
        _check(
            dataset in MULTI_GRAPH_DATASETS,
            "privacy.dp_sgd",
            f"DP-SGD needs a multi-graph dataset ({', '.join(MULTI_GRAPH_DATASETS)}), where one graph is one "
            f"sample; {cfg.data.name!r} is a single graph, and per-node clipping gives no honest per-node "
            "guarantee there (a node's features and label reach its neighbours' gradients through message "
            "passing). Disable privacy.dp_sgd and use the statistics mechanism (privacy.mechanism: gaussian), "
            "or use a multi-graph dataset",
        )
        _check(
            cfg.partition.scheme in ("graphs", "iid"),
            "privacy.dp_sgd",
            f"DP-SGD needs partition.scheme 'graphs' (or its alias 'iid'), got {cfg.partition.scheme!r}: the "
            "statistics are DP only as post-processing of the DP-SGD model on a public alignment graph, but in "
            "'replicate' they are computed on the private training graphs themselves",
        )


def _check_weight_strategy(cfg: ExperimentConfig) -> None:
    """fedavg / dp-fedavg: weights leave the clients, so no statistics mechanism applies to them."""
    p, strategy = cfg.privacy, cfg.align.strategy
    sigma, eps = p.noise_multiplier, p.target_epsilon
    _check(
        p.mechanism == "none" and not p.secure_aggregation and not p.noise_control,
        "privacy.mechanism",
        f"align.strategy {strategy} sends model weights, not statistics: the statistics mechanism "
        "(privacy.mechanism "
        "gaussian, secure_aggregation, noise_control) does not apply to it; set privacy.mechanism: none "
        "(dp-fedavg takes its noise from privacy.target_epsilon or privacy.noise_multiplier and privacy.clip_norm)",
    )
    _check(
        p.unit == "client" and not p.dp_sgd.enabled,
        "privacy.unit",
        f"align.strategy {strategy} is a client-level reference arm: use privacy.unit: client without dp_sgd",
    )
    _check(
        cfg.federation.schedule == "simultaneous",
        "federation.schedule",
        f"align.strategy {strategy} averages every client's weights every round: set federation.schedule: simultaneous",
    )
    _check(
        p.max_epsilon is None,
        "privacy.max_epsilon",
        f"align.strategy {strategy} does not take a budget; remove the key",
    )
    _check(
        all(not isinstance(getattr(cfg.model, name), list) for name in type(cfg.model).model_fields),
        "model",
        f"align.strategy {strategy} averages one model: give every model key one value, not a per-client list",
    )
    if strategy == "fedavg":
        for key, value in (("noise_multiplier", sigma), ("target_epsilon", eps)):
            _check(
                value is None,
                f"privacy.{key}",
                f"set to {value}, but fedavg adds no noise; use align.strategy: "
                "dp-fedavg for client-level DP, or remove the key",
            )
    else:
        _check(
            (sigma is None) != (eps is None),
            "privacy.noise_multiplier",
            "dp-fedavg needs exactly one of privacy.noise_multiplier (z: noise std z * clip_norm on the sum of "
            f"the clipped updates) and privacy.target_epsilon, got noise_multiplier={sigma}, target_epsilon={eps}",
        )


def _check_label_privacy(p) -> None:
    if p.unit == "labels":
        _check(
            p.label_epsilon is not None and 0 < p.label_epsilon < math.inf,
            "privacy.label_epsilon",
            f"privacy.unit labels needs the epsilon of each label, > 0 and finite, got {p.label_epsilon}",
        )
        _check(
            p.mechanism == "none" and not p.dp_sgd.enabled,
            "privacy.unit",
            "labels (randomised response) is a unit of its own: set privacy.mechanism: none and leave "
            "privacy.dp_sgd off, or use privacy.unit: client",
        )
    else:
        _check(
            p.label_epsilon is None,
            "privacy.label_epsilon",
            f"set to {p.label_epsilon} but privacy.unit is 'client'; set privacy.unit: labels, or remove the key",
        )


def _check_reproducible_noise(p) -> None:
    """Seeded noise is regenerable by whoever holds the config (the server does): no epsilon holds for it."""
    if not p.reproducible_noise or p.insecure_ok:
        return
    for key, value in (
        ("target_epsilon", p.target_epsilon),
        ("max_epsilon", p.max_epsilon),
        ("label_epsilon", p.label_epsilon),
    ):
        _check(
            value is None or value == math.inf,
            "privacy.reproducible_noise",
            f"seeds the noise from the config, which the server holds, so it gives no privacy (every release "
            f"reports epsilon = inf), yet privacy.{key} = {value} asks for a guarantee; remove "
            "privacy.reproducible_noise (tests only), or set privacy.insecure_ok: true to run it anyway",
        )


def _check_secure_aggregation(cfg: ExperimentConfig) -> None:
    from ..aggregation import honest_noise_shares

    p, k = cfg.privacy, cfg.federation.num_clients
    _check(0 <= p.max_dropout_share < 1, "privacy.max_dropout_share", f"must be in [0, 1), got {p.max_dropout_share}")
    _check(p.colluders >= 0, "privacy.colluders", f"must be >= 0, got {p.colluders}")
    if not p.secure_aggregation:
        return
    _check(
        p.colluders >= 1,
        "privacy.colluders",
        "secure aggregation needs privacy.colluders >= 1: every trainer knows its own noise share, so against a "
        f"peer at most n - 1 of the n honest shares are unknown (got {p.colluders}); set privacy.colluders: 1",
    )
    needs = "privacy.secure_aggregation sums the clients' noisy statistics every round"
    _check(
        cfg.federation.schedule == "simultaneous",
        "privacy.secure_aggregation",
        f"{needs}, so it needs federation.schedule: simultaneous (got {cfg.federation.schedule!r})",
    )
    _check(
        p.mechanism == "gaussian" and p.unit == "client" and not p.dp_sgd.enabled,
        "privacy.secure_aggregation",
        f"{needs} with distributed Gaussian noise: set privacy.mechanism: gaussian (unit client, no dp_sgd)",
    )
    _check(
        p.release_every == 1,
        "privacy.release_every",
        "secure aggregation releases every round; privacy.release_every must be 1",
    )
    _check(
        len({cfg.model.for_client(i)["hidden_layers"] for i in range(k)}) == 1,
        "model.hidden_layers",
        "secure aggregation sums layer by layer: every client needs the same number of hidden layers",
    )
    _check(
        honest_noise_shares(k, p.max_dropout_share, p.colluders) >= 1,
        "privacy.colluders",
        f"with {k} clients, up to floor({p.max_dropout_share} * {k}) dropping out and {p.colluders} colluding, no "
        "honest client's noise is left in the sum; lower privacy.max_dropout_share or privacy.colluders",
    )
