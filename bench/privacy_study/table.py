"""The study's table: one row per (K, split, arm, mode, epsilon), gains paired by seed.

Every row is paired by seed with ``none`` (no noise) at the same K and split: the gain, its standard
error and a paired t-test, and at a finite epsilon the share of the arm's no-noise gain it keeps. Under
label DP an arm is paired with ``none`` under the same label DP, and ``none`` under label DP with ``none``
without it (the cost of the label noise). A DP row (alone or secure aggregation, with its options) is also
paired with its **noise control**: the row of the same K, split, arm, epsilon (or sigma), aggregation and
options whose mode is noise control (``privacy.noise_control``); where there is none, the first studies'
control, the ``noise only (σ = 1000)`` row of the same K, split and arm.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

from bench.reproduction_analysis import mean_std, paired

INF = math.inf
Key = tuple  # (K, split, arm, mode, epsilon)


def _key(r: dict[str, Any]) -> Key:
    return (r["K"], r["split"], r["arm"], r["mode"], r["epsilon"])


def group(records: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    """The cells of each table row.

    Args:
        records: :func:`bench.privacy_study.modes.describe` of every cell.
    """
    cells: dict[Key, list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault(_key(r), []).append(r)
    return cells


def order(keys, records: list[dict[str, Any]]) -> list[Key]:
    """K, then the split with the most cells first, then arm, mode and epsilon (largest first).

    Args:
        keys: the row keys to order.
        records: every cell (to count the splits).
    """
    counts = Counter(r["split"] for r in records)
    return sorted(keys, key=lambda k: (k[0], -counts[k[1]], k[1], k[2], k[3], -(k[4] if k[4] is not None else 0)))


def by_seed(group_cells: list[dict[str, Any]]) -> dict[int, float]:
    """``{seed: test}`` of a row's cells; a seed run more than once (the same cell in two sweeps) counts once,
    with the mean of its runs (summed in sorted order, so any sweep order gives the same float).

    Args:
        group_cells: the cells of one row.
    """
    runs: dict[int, list[float]] = {}
    for r in group_cells:
        runs.setdefault(r["seed"], []).append(r["test"])
    return {seed: sum(sorted(tests)) / len(tests) for seed, tests in sorted(runs.items())}


def noise_control_of(first: dict[str, Any], cells: dict[Key, list[dict[str, Any]]]) -> Key | None:
    """The row key of a DP row's noise control (see the module docstring), or None.

    Args:
        first: one cell of the DP row.
        cells: every row's cells (:func:`group`).
    """
    if first["kind"] != "dp":
        return None
    for key, group_cells in cells.items():
        c = group_cells[0]
        if (
            c["kind"] == "control"
            and key[:3] == _key(first)[:3]
            and c["level"] == first["level"]
            and c["secure"] == first["secure"]
            and c["options"] == first["options"]
        ):
            return key
    old = [
        key
        for key, group_cells in cells.items()
        if group_cells[0]["kind"] == "noise-only"
        and key[:3] == _key(first)[:3]
        and not group_cells[0]["secure"]
        and not group_cells[0]["options"]
    ]
    return old[0] if old else None


def _row(key: Key, cells: dict[Key, list[dict[str, Any]]]) -> dict[str, Any]:
    k, split, arm, mode, eps = key
    group_cells = cells[key]
    first, tests = group_cells[0], by_seed(group_cells)
    none = by_seed(cells.get((k, split, "none", "no noise", INF), []))
    clean = by_seed(cells.get((k, split, arm, "no noise", INF), []))
    gain = paired(tests, none) if arm != "none" and first["kind"] != "label-dp" else None
    if first["kind"] == "label-dp":  # an arm against none under the same label DP; none against none without it
        gain = paired(tests, none if arm == "none" else by_seed(cells.get((k, split, "none", mode, eps), [])))
    control_key = noise_control_of(first, cells)
    control = paired(tests, by_seed(cells[control_key])) if control_key else None
    clean_gain = paired(clean, none) if arm != "none" else None
    kept = None
    finite = eps is not None and eps != INF
    if gain and clean_gain and finite and first["kind"] != "label-dp" and clean_gain["mean"]:
        kept = gain["mean"] / clean_gain["mean"]
    stats = mean_std(list(tests.values()))

    def mean_of(name: str) -> float | None:  # sorted: the same cells give the same float, in any sweep order
        return mean_std(sorted(r[name] for r in group_cells if r.get(name) is not None))["mean"]

    wall, labelled, accuracy = mean_of("wall_seconds"), mean_of("vote_labelled"), mean_of("vote_accuracy")
    return {
        "K": k,
        "split": split,
        "arm": arm,
        "mode": mode,
        "epsilon": eps,
        "kind": first["kind"],
        "seeds": stats["n"],
        "test_mean": stats["mean"],
        "test_std": stats["std"],
        "gain_over_none": gain["mean"] if gain else None,
        "gain_se": gain["se"] if gain else None,
        "gain_p": gain["p"] if gain else None,
        "noise_control": control_key[3] if control_key else None,
        "gain_over_noise_control": control["mean"] if control else None,
        "gain_over_noise_control_se": control["se"] if control else None,
        "gain_over_noise_control_p": control["p"] if control else None,
        "kept_of_no_noise_gain": kept,
        "wall_minutes_per_cell": None if wall is None else wall / 60,
        "queries_labelled": labelled,
        "label_accuracy": accuracy,
        "sweeps": " ".join(sorted({r["sweep"] for r in group_cells})),
    }


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per (K, split, arm, mode, epsilon), in :func:`order`.

    Args:
        records: :func:`bench.privacy_study.modes.describe` of every study cell.
    """
    cells = group(records)
    return [_row(key, cells) for key in order(cells, records)]


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def format_epsilon(r: dict[str, Any]) -> str:
    """``∞``, ``8``, ``0.1``, ``4 per label``; a sigma-given noise control (no epsilon of its own) ``—``.

    Args:
        r: a table row.
    """
    eps = r["epsilon"]
    if eps is None:
        return "—"
    if eps == INF:
        return "∞"
    text = f"{eps:g}" if eps == round(eps, 2) else f"{eps:.2g}"
    return text + (" per label" if r["mode"] == "label DP" else "")


def _gain(mean, se) -> str:
    return "—" if mean is None else f"{mean * 100:+.2f} ± {_fmt(se, '.2f', 100)}"


def _labels(r: dict[str, Any]) -> str:
    if r.get("queries_labelled") is None:
        return "—"
    return f"{r['queries_labelled']:.0f} ({_fmt(r.get('label_accuracy'), '.1f', 100)})"


def write_table(table: list[dict[str, Any]], out: Path) -> None:
    """``table.md`` and ``results.csv`` (the table's rows) in ``out``.

    Args:
        table: :func:`summarise`'s rows.
        out: the study's results folder.
    """
    lines = [
        "| K | split, labels | arm | mode | ε per client | seeds | test accuracy (%) | gain over none (points) "
        "± SE | p | gain over its noise control (points) ± SE | p | share of the no-noise gain kept | "
        "minutes per cell | votes: queries labelled (label accuracy %) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['K']} | {r['split']} | {r['arm']} | {r['mode']} | {format_epsilon(r)} | {r['seeds']} | "
            f"{r['test_mean'] * 100:.2f} ± {_fmt(r['test_std'], '.2f', 100)} | "
            f"{_gain(r['gain_over_none'], r['gain_se'])} | {_fmt(r['gain_p'], '.3f')} | "
            f"{_gain(r['gain_over_noise_control'], r['gain_over_noise_control_se'])} | "
            f"{_fmt(r['gain_over_noise_control_p'], '.3f')} | {_fmt(r['kept_of_no_noise_gain'], '.2f')} | "
            f"{_fmt(r['wall_minutes_per_cell'], '.1f')} | {_labels(r)} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
