"""What a cell is, read off its run config and summary: K, split, arm, privacy mode and epsilon.

* **K**: ``federation.num_clients``; **split**: ``partition.scheme`` (with alpha where it is not 0.5) and
  ``partition.label_rate``, e.g. ``Dirichlet, 2 %``, after the dataset where it is not the studies' Amazon
  Photo (``coauthor-cs: Dirichlet, 2 %``), so that no row pairs or averages cells of two datasets.
* **arm**: results.csv's ``arm`` column (the sweep's named arm), else ``align.strategy``.
* **mode** (from ``privacy.*``): ``label DP`` (``unit: labels``; epsilon = ``label_epsilon`` per label);
  ``no noise`` (a strategy that shares no statistics, ``mechanism: none``, ``target_epsilon: inf`` or
  sigma 0; epsilon = inf); ``noise control`` (``noise_control: true``: releases made from zeros, same
  sigma; epsilon = the target of the arm it controls); ``noise only (σ = s)`` (sigma given and at least
  :data:`NOISE_ONLY_SIGMA`: the study's first noise controls, sigma = 1000); otherwise ``alone`` or
  ``secure aggregation``. A noise control made with secure aggregation says so (``noise control, secure
  aggregation``); ``subtract_baseline`` and ``release_every: k`` add ``, baseline subtracted`` / ``, release
  every k-th turn``. ``dp-fedavg`` (noise on averaged weights) is ``central DP (weights)``.
* **epsilon**: ``target_epsilon`` (per client), ``label_epsilon``, or for sigma-given cells the epsilon the
  run's summary reports (rounded to 2 significant digits, so that seeds agree).
"""

from __future__ import annotations

import math
from typing import Any

from fedalign.alignment import shares_statistics

INF = math.inf
NOISE_ONLY_SIGMA = 100.0  # a sigma this large leaves nothing of the statistics: the first studies' noise control
SCHEMES = {"dirichlet": "Dirichlet"}
STUDY_DATASET = "amazon-photo"  # every study's dataset until Coauthor CS: its rows carry no dataset label


def split_label(partition: dict[str, Any], dataset: str = STUDY_DATASET) -> str:
    """``Dirichlet, 2 %``, ``community, 10 %``, ``Dirichlet α = 0.1, 2 %``, ``coauthor-cs: Dirichlet, 2 %``.

    Args:
        partition: the run config's ``partition`` section.
        dataset: the run config's ``data.name`` (named in the label unless it is :data:`STUDY_DATASET`).
    """
    data = dataset.lower().replace("_", "-")
    prefix = "" if data == STUDY_DATASET else f"{data}: "
    scheme = partition.get("scheme", "replicate")
    name = SCHEMES.get(scheme, scheme)
    if scheme == "dirichlet" and float(partition.get("alpha", 0.5)) != 0.5:
        name += f" α = {float(partition['alpha']):g}"
    return f"{prefix}{name}, {round(float(partition.get('label_rate', 1.0)) * 100, 6):g} %"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _options(p: dict[str, Any]) -> str:
    options = ["baseline subtracted"] if p.get("subtract_baseline") else []
    every = int(p.get("release_every") or 1)
    if every > 1:
        options.append(f"release every {_ordinal(every)} turn")
    if p.get("final_release") is False:
        options.append("no final release")
    return "".join(f", {o}" for o in options)


def _reported(summary: dict[str, Any]) -> float | None:
    eps = summary.get("epsilon")
    return None if eps is None else float(f"{float(eps):.2g}")


def _noise(p: dict[str, Any], strategy: str, summary: dict[str, Any]) -> tuple[str, float | None, Any]:
    """(kind, epsilon, level) of a cell: kind no-noise / dp / control / noise-only / label-dp / weights-dp;
    level: what a DP cell and its noise control share (the target epsilon, or ("σ", sigma))."""
    if p.get("unit") == "labels":
        return "label-dp", float(p["label_epsilon"]), ("label", float(p["label_epsilon"]))
    target, sigma = p.get("target_epsilon"), p.get("noise_multiplier")
    target = None if target is None else float(target)
    if strategy == "dp-fedavg":
        return "weights-dp", target if target is not None else _reported(summary), ("weights", target, sigma)
    if not shares_statistics(strategy) or p.get("mechanism", "none") != "gaussian":
        return "no-noise", INF, None
    if target is not None:
        if math.isinf(target):
            return "no-noise", INF, None
        return ("control" if p.get("noise_control") else "dp"), target, target
    if not sigma:
        return "no-noise", INF, None
    if p.get("noise_control"):
        return "control", None, ("σ", float(sigma))
    return ("noise-only" if float(sigma) >= NOISE_ONLY_SIGMA else "dp"), _reported(summary), ("σ", float(sigma))


def _mode_label(kind: str, secure: bool, options: str, sigma: Any) -> str:
    if kind == "label-dp":
        return "label DP"
    if kind == "no-noise":
        return "no noise"
    if kind == "weights-dp":
        return "central DP (weights)"
    if kind == "noise-only":
        return f"noise only (σ = {float(sigma):g})" + (", secure aggregation" if secure else "") + options
    if kind == "control":
        return "noise control" + (", secure aggregation" if secure else "") + options
    return ("secure aggregation" if secure else "alone") + options


def describe(cell: dict[str, Any]) -> dict[str, Any]:
    """The report's view of one cell (from :func:`bench.privacy_study.runs.read_cells`).

    Args:
        cell: a record with ``row``, ``config`` and ``summary``.

    Returns:
        K, split, arm, strategy, mode, epsilon, kind, secure, options, level, seed, test, validation,
        wall_seconds, sweep, run.
    """
    cfg, summary = cell["config"], cell["summary"]
    p, strategy = cfg.get("privacy") or {}, (cfg.get("align") or {}).get("strategy", "alignahead")
    kind, eps, level = _noise(p, strategy, summary)
    secure = bool(p.get("secure_aggregation")) and kind in ("dp", "control", "noise-only")
    options = _options(p) if kind in ("dp", "control", "noise-only") else ""
    vals = [c["best_val"] for c in summary.get("clients", {}).values() if c.get("best_val") is not None]
    split = split_label(cfg.get("partition") or {}, (cfg.get("data") or {}).get("name", STUDY_DATASET))
    return {
        "K": int(cfg["federation"]["num_clients"]),
        "split": split,
        "arm": cell["row"].get("arm") or strategy,
        "strategy": strategy,
        "mode": _mode_label(kind, secure, options, p.get("noise_multiplier")),
        "epsilon": eps,
        "kind": kind,
        "secure": secure,
        "options": options,
        "level": level,
        "seed": int(cfg["seed"]),
        "test": float(summary["mean_test_at_best_val"]),
        "validation": sum(vals) / len(vals) if vals else None,
        "wall_seconds": summary.get("wall_seconds"),
        "sweep": cell["sweep"],
        "run": cell["run"],
        "purpose": cell.get("purpose", "study"),
        "grid": cell.get("grid", {}),
        "vote_labelled": (cell.get("vote_labels") or {}).get("mean_labelled"),
        "vote_accuracy": (cell.get("vote_labels") or {}).get("mean_accuracy"),
    }
