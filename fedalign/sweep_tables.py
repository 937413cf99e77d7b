"""What a sweep writes beside its runs: ``results.csv``, ``table.md``, ``plot.png`` and ``sweep.json``.

``sweep.json`` records what the sweep file said about the results as a whole: the sweep's name,
its ``purpose`` (``study`` by default; ``tuning``: its cells choose settings on validation, and
reports keep them out of the study's tables), whether it added ``noise_controls`` and the
``provenance`` of the sweep command that last wrote it (:func:`fedalign.provenance.provenance`:
revision, dirty flag, versions, machine, command line). Everything per cell lives in the cell's own
run folder (``config.yaml``, ``summary.json`` with the cell's own ``provenance``), which
``results.csv`` names in its ``run`` column.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .provenance import provenance

if TYPE_CHECKING:  # pragma: no cover
    from .sweep_spec import SweepSpec

NOISE_CONTROL = "privacy.noise_control"  # the cell key of a DP cell's noise-control twin
SWEEP_JSON = "sweep.json"


def aggregate(spec: SweepSpec, rows: list[dict]) -> list[dict]:
    """Mean and std (over seeds) of the test metric per combination of the other keys.

    Args:
        spec: the sweep (its ``group_keys`` define a table row).
        rows: result rows, one per cell (``test`` may be None for a cell without test nodes).
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in spec.group_keys), []).append(row["test"])
    table = []
    for key, values in groups.items():
        values = [v for v in values if v is not None]
        table.append(
            {
                **dict(zip(spec.group_keys, key, strict=True)),
                "n": len(values),
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            }
        )
    return table


def write_sweep_json(spec: SweepSpec) -> None:
    """Write ``<output>/sweep.json``: the sweep's name, purpose, whether it adds noise controls, and the
    provenance of this sweep command.

    Args:
        spec: the sweep.
    """
    body = {
        "name": spec.name or spec.output.name,
        "purpose": spec.purpose,
        "noise_controls": spec.noise_controls,
        "provenance": provenance(),
    }
    (spec.output / SWEEP_JSON).write_text(json.dumps(body, indent=2) + "\n")


def read_sweep_json(output: Path) -> dict[str, Any]:
    """What ``<output>/sweep.json`` says, or the defaults of a sweep that predates it (purpose ``study``;
    ``provenance`` None when it was not recorded).

    Args:
        output: a sweep's results folder.
    """
    path = Path(output) / SWEEP_JSON
    body = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "name": body.get("name", Path(output).name),
        "purpose": body.get("purpose") or "study",
        "noise_controls": bool(body.get("noise_controls", False)),
        "provenance": body.get("provenance"),
    }


def write_results(spec: SweepSpec, rows: list[dict]) -> None:
    """Rewrite ``results.csv``, ``table.md``, ``sweep.json`` and (with ``plot.x``) ``plot.png``.

    Args:
        spec: the sweep.
        rows: its result rows so far, one per finished cell.
    """
    spec.output.mkdir(parents=True, exist_ok=True)
    write_sweep_json(spec)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with (spec.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    table = aggregate(spec, rows)
    metric = rows[0]["metric"] if rows else "metric"
    header = spec.group_keys + [f"test {metric} (mean ± std)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in table:
        cells_text = [str(entry[k]) for k in spec.group_keys]
        value = "n/a" if entry["mean"] is None else f"{entry['mean']:.4f} ± {entry['std']:.4f}"
        lines.append("| " + " | ".join(cells_text + [value, str(entry["n"])]) + " |")
    (spec.output / "table.md").write_text("\n".join(lines) + "\n")
    if spec.plot.get("x"):
        plot_sweep(spec, table, metric, spec.output / "plot.png")


def _series(spec: SweepSpec, table: list[dict]) -> dict[tuple, list[dict]]:
    """Table entries per (``plot.line`` value, noise control or not)."""
    line_key = spec.plot.get("line")
    series: dict[tuple, list[dict]] = {}
    for entry in table:
        if entry["mean"] is not None:
            key = (entry.get(line_key) if line_key else "", bool(entry.get(NOISE_CONTROL)))
            series.setdefault(key, []).append(entry)
    return series


def plot_sweep(spec: SweepSpec, table: list[dict], metric: str, path: Path) -> None:
    """Test metric (mean +- std) against ``plot.x``, one line per ``plot.line`` value.

    An infinite x (e.g. epsilon = inf, no privacy) is drawn at the right edge
    and also as a dashed horizontal reference line per series; noise controls
    (``noise_controls: true``) are dashed lines of their arm's colour.

    Args:
        spec: the sweep (its ``plot`` keys).
        table: :func:`aggregate`'s entries.
        metric: the metric's name, for the y label.
        path: where to write the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, line_key = spec.plot["x"], spec.plot.get("line")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    numeric = all(isinstance(e[x_key], (int, float)) for e in table)
    finite = sorted({e[x_key] for e in table if numeric and math.isfinite(e[x_key])}) if numeric else []
    inf_pos = finite[-1] * 2 if finite else 1.0  # where infinity goes on a numeric axis
    labels = list(dict.fromkeys(str(v) for v in spec.values_of(x_key))) if not numeric else []  # grid order
    colours: dict[Any, str] = {}
    for (name, control), entries in sorted(_series(spec, table).items(), key=lambda item: item[0][1]):
        entries = sorted(entries, key=lambda e: e[x_key] if numeric else labels.index(str(e[x_key])))
        xs = [
            (inf_pos if numeric and math.isinf(e[x_key]) else e[x_key]) if numeric else labels.index(str(e[x_key]))
            for e in entries
        ]
        label = (f"{line_key}={name}" if line_key else "") + (" (noise control)" if control else "")
        line = ax.errorbar(
            xs,
            [e["mean"] for e in entries],
            yerr=[e["std"] for e in entries],
            marker="o",
            capsize=3,
            linestyle=("--" if control else "-") if numeric else "none",
            color=colours.get(name),
            label=label or None,
        )
        colours.setdefault(name, line[0].get_color())
        for e in entries:
            if numeric and math.isinf(e[x_key]):
                ax.axhline(e["mean"], linestyle="--", alpha=0.5, color=line[0].get_color())
    _x_ticks(ax, finite, inf_pos, any(math.isinf(e[x_key]) for e in table) if numeric else None, labels)
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"test {metric} at best validation")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _x_ticks(ax, finite: list, inf_pos: float, has_inf: bool | None, labels: list[str]) -> None:
    """The x ticks: the finite values (log scale when they span 8x or more) and infinity at ``inf_pos`` when
    ``has_inf``; ``has_inf`` None: a categorical axis of ``labels``."""
    if has_inf is None:
        ax.set_xticks(range(len(labels)), labels)
        return
    if finite and finite[0] > 0 and finite[-1] / finite[0] >= 8:
        ax.set_xscale("log")
    ticks = finite + ([inf_pos] if has_inf else [])
    ax.set_xticks(ticks, [f"{t:g}" for t in finite] + (["∞ (no DP)"] if len(ticks) > len(finite) else []))
