"""``conclusions.md``: the study's paired differences between its own rows, each with a verdict.

Four families, found from the rows' configs (not named one by one): every DP row minus its noise
control (does anything of the peers' statistics get through the noise?), secure aggregation minus each
client alone (same K, split, arm, epsilon and options), each option (baseline subtracted, release
every k-th turn) minus the same row without it, and every DP statistics row minus ``dp-fedavg`` (noise
on averaged weights, the field's reference) at the same K, split and epsilon. Each difference is paired by
seed: mean ± SE in points, the per-seed differences, the paired t-test's p, and the verdict:
``significant gain`` / ``significant loss`` at p < 0.05, else ``inconclusive``. The gains over ``none`` are in table.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.reproduction_analysis import paired

from .table import Key, by_seed, format_epsilon, group, noise_control_of, order

ALPHA = 0.05
FAMILIES = (
    "DP minus its noise control",
    "secure aggregation minus alone",
    "option minus the default",
    "statistics minus DP-FedAvg at the same ε",
)


def verdict(comparison: dict[str, Any]) -> str:
    """``significant gain`` / ``significant loss`` at p < 0.05, else ``inconclusive``.

    Args:
        comparison: :func:`bench.reproduction_analysis.paired`'s result.
    """
    if comparison.get("p") is None or comparison["p"] >= ALPHA:
        return "inconclusive"
    return "significant gain" if comparison["mean"] > 0 else "significant loss"


def _find(cells: dict[Key, list[dict]], first: dict, **want) -> Key | None:
    for key, group_cells in cells.items():
        c = group_cells[0]
        if (
            key[:3] == (first["K"], first["split"], first["arm"])
            and c["level"] == first["level"]
            and all(c[name] == value for name, value in want.items())
        ):
            return key
    return None


def _weights_dp(cells: dict[Key, list[dict]], first: dict) -> Key | None:
    """The ``dp-fedavg`` row at the DP row's K, split and epsilon (None if not run)."""
    for key, group_cells in cells.items():
        c = group_cells[0]
        if c["kind"] == "weights-dp" and key[:2] == (first["K"], first["split"]) and c["epsilon"] == first["epsilon"]:
            return key
    return None


def comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of rows the three families compare (see the module docstring), paired by seed.

    Args:
        records: :func:`bench.privacy_study.modes.describe` of every study cell.
    """
    cells = group(records)
    found = []
    for key in order(cells, records):
        first = cells[key][0]
        if first["kind"] != "dp":
            continue
        pairs = [(FAMILIES[0], noise_control_of(first, cells))]
        if first["secure"]:
            pairs.append((FAMILIES[1], _find(cells, first, kind="dp", secure=False, options=first["options"])))
        if first["options"]:
            pairs.append((FAMILIES[2], _find(cells, first, kind="dp", secure=first["secure"], options="")))
        pairs.append((FAMILIES[3], _weights_dp(cells, first)))
        for family, other in pairs:
            result = paired(by_seed(cells[key]), by_seed(cells[other])) if other else {"n": 0}
            if not result["n"]:
                continue
            found.append({"family": family, "row": key, "other": other, **result, "verdict": verdict(result)})
    return sorted(found, key=lambda f: FAMILIES.index(f["family"]))


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family's p-values (None stays None).

    Args:
        ps: the family's raw p-values.
    """
    known = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    adjusted: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def _describe(key: Key) -> str:
    k, split, arm, mode, eps = key
    return f"K = {k}, {split}, {arm}, {mode}, ε {format_epsilon({'epsilon': eps, 'mode': mode})}"


def write_conclusions(found: list[dict[str, Any]], out: Path) -> str:
    """Write ``conclusions.md`` in ``out``; returns its text.

    Args:
        found: :func:`comparisons`' results.
        out: the study's results folder.
    """
    lines = [
        "# Privacy study: paired differences between rows",
        "",
        "Written by `python -m bench.privacy_study`. Differences in test accuracy points, paired by seed "
        "(mean ± SE over seeds, the per-seed differences, two-sided paired t-test); verdict: significant "
        "gain / loss at p < 0.05, else inconclusive. Gains over `none` are in table.md.",
        "",
    ]
    for family in dict.fromkeys(f["family"] for f in found):
        members = [f for f in found if f["family"] == family]
        significant = sum(f["verdict"] != "inconclusive" for f in members)
        lines += [
            f"## {family}",
            "",
            f"{len(members)} comparisons, {significant} at p < 0.05 (about "
            f"{len(members) * ALPHA:.1f} expected by chance if none differed; Holm's adjustment for the "
            "family in the last column, the verdict reads the unadjusted p).",
            "",
            "| row | minus | difference (points) ± SE | per seed | p | seeds | verdict | Holm p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f, adjusted in zip(members, holm([f["p"] for f in members]), strict=True):
            se = "—" if f["se"] is None else f"{f['se'] * 100:.2f}"
            p = "—" if f["p"] is None else f"{f['p']:.2f}"
            seeds = ", ".join(f"{d * 100:+.1f}" for d in f["diffs"])
            other = f"{f['other'][3]}, ε {format_epsilon({'epsilon': f['other'][4], 'mode': f['other'][3]})}"
            lines.append(
                f"| {_describe(f['row'])} | {other} | {f['mean'] * 100:+.2f} ± {se} | {seeds} | {p} | "
                f"{f['n']} | {f['verdict']} | {'—' if adjusted is None else f'{adjusted:.2f}'} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (out / "conclusions.md").write_text(text)
    return text
