"""``tuning.md``: the settings a tuning sweep chooses, on validation only.

A sweep is a tuning sweep when its sweep file says ``purpose: tuning`` (recorded in its folder's
``sweep.json`` by :mod:`fedalign.sweep`). Its cells stay out of the study's table. For each cell the
*validation* metric is the run summary's best validation metric of each student (``clients.*.best_val``),
averaged over the students and then over seeds; test metrics are never read here. Per arm (the cells'
``align.strategy``, at the same K, split, privacy mode and epsilon) the chosen setting is the one with the
highest mean validation metric; a setting is the cell's grid values other than the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.reproduction_analysis import mean_std

from .table import format_epsilon


def _setting(record: dict[str, Any]) -> str:
    values = [f"{k}={v}" for k, v in record["grid"].items() if k != "seed"]
    return ", ".join(values) or record["run"]


def choose(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (sweep, K, split, strategy, mode, epsilon): every setting's validation and the argmax.

    Args:
        records: :func:`bench.privacy_study.modes.describe` of the tuning cells.

    Returns:
        dicts with ``sweep``, ``K``, ``split``, ``arm`` (the strategy), ``mode``, ``epsilon``, ``settings``
        (setting -> mean/std/n of the validation metric) and ``chosen``.
    """
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in records:
        key = (r["sweep"], r["K"], r["split"], r["strategy"], r["mode"], r["epsilon"])
        groups.setdefault(key, {}).setdefault(_setting(r), []).append(r["validation"])
    chosen = []
    for (sweep, k, split, arm, mode, eps), settings in groups.items():
        stats = {name: mean_std(values) for name, values in settings.items()}
        scored = {name: s["mean"] for name, s in stats.items() if s["mean"] is not None}
        best = max(scored, key=lambda name: scored[name]) if scored else None
        chosen.append(
            {
                "sweep": sweep,
                "K": k,
                "split": split,
                "arm": arm,
                "mode": mode,
                "epsilon": eps,
                "settings": stats,
                "chosen": best,
            }
        )
    return chosen


def write_tuning(chosen: list[dict[str, Any]], out: Path) -> str:
    """Write ``tuning.md`` in ``out``; returns its text.

    Args:
        chosen: :func:`choose`'s entries.
        out: the study's results folder.
    """
    lines = [
        "# Privacy study: hyper-parameter choice (validation only)",
        "",
        "Written by `python -m bench.privacy_study` from the sweeps marked `purpose: tuning`. Validation "
        "metric: each student's best validation metric (run summary), mean over students, mean ± std over "
        "seeds. The chosen setting of each arm is the argmax of validation; test metrics are not read.",
        "",
    ]
    for c in chosen:
        eps = format_epsilon({"epsilon": c["epsilon"], "mode": c["mode"]})
        lines += [
            f"## {c['arm']}: K = {c['K']}, {c['split']}, {c['mode']}, ε {eps} (sweep {c['sweep']})",
            "",
            f"Chosen: **{c['chosen']}**",
            "",
            "| setting | validation (mean ± std) | seeds |",
            "|---|---|---|",
        ]
        for name, s in sorted(c["settings"].items(), key=lambda item: -(item[1]["mean"] or 0)):
            value = "—" if s["mean"] is None else f"{s['mean'] * 100:.2f} ± {(s['std'] or 0) * 100:.2f}"
            lines.append(f"| {name}{' (chosen)' if name == c['chosen'] else ''} | {value} | {s['n']} |")
        lines.append("")
    text = "\n".join(lines)
    (out / "tuning.md").write_text(text)
    return text
