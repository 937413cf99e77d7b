"""``plot.png``: test accuracy against epsilon, one panel per K and split.

Each arm has one colour (``none``: black, a horizontal line); each mode one line style, drawn from the
arm's epsilon points to its no-noise point at ∞. Noise controls are dashed in their arm's colour: a
noise control with an epsilon at that epsilon, a sigma-given one (the first studies' σ = 1000) as a
horizontal line. Label DP (epsilon per label, not per client) is dash-dotted. The legend has one entry
per arm and one per line style, so it stays readable with many arms. Bars: std over seeds (the paired
gains in table.md are tighter).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

INF = math.inf
STYLES = {"secure aggregation": ("-", "o"), "alone": (":", "s"), "label DP": ("-.", "x"), "noise control": ("--", "v")}
ON_AXIS = ("dp", "control", "label-dp", "weights-dp")  # kinds drawn at their epsilon (noise-only: a line)
OTHER_STYLE = ("none", "^")  # options (baseline subtracted, release every k-th turn), central DP: markers only
OFFSETS = {"secure aggregation": 0.07, "alone": -0.07}  # modes side by side at one epsilon (other options: +0.14)


def _offset(mode: str) -> float:
    if mode.startswith("noise") or mode == "label DP":
        return 0.0
    return OFFSETS.get(mode, 0.14)


def _style(mode: str) -> tuple[str, str]:
    if mode.startswith("noise control") or mode.startswith("noise only"):
        return STYLES["noise control"]
    return STYLES.get(mode, OTHER_STYLE)


def _colours(table: list[dict[str, Any]]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    arms = sorted({r["arm"] for r in table} - {"none"})
    tab10 = plt.get_cmap("tab10")
    palette = [tab10(i) for i in range(tab10.N)]
    return {"none": "black", **{arm: palette[i % len(palette)] for i, arm in enumerate(arms)}}


def _panel(ax, rows: list[dict[str, Any]], positions: dict[float, int], colours: dict[str, Any]) -> None:
    inf = positions[INF]
    clean = {r["arm"]: r for r in rows if r["mode"] == "no noise"}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        colour = colours[arm]
        if arm == "none" and arm in clean:
            ax.axhline(clean[arm]["test_mean"] * 100, color=colour, linewidth=1.2)
        modes = dict.fromkeys(r["mode"] for r in rows if r["arm"] == arm and r["mode"] != "no noise")
        for mode in modes:
            points = [r for r in rows if r["arm"] == arm and r["mode"] == mode]
            linestyle, marker = _style(mode)
            on_axis = sorted(
                (
                    (positions[r["epsilon"]] + _offset(mode), r)
                    for r in points
                    if r["kind"] in ON_AXIS and r["epsilon"] in positions
                ),
                key=lambda item: item[0],
            )
            if not on_axis:  # sigma-given noise control (epsilon 0.1 or none of its own): a horizontal line
                ax.axhline(points[0]["test_mean"] * 100, color=colour, linestyle=linestyle, alpha=0.7)
                continue
            if mode in ("alone", "secure aggregation") and arm in clean:
                on_axis.append((inf, clean[arm]))
            ax.errorbar(
                [x for x, _ in on_axis],
                [r["test_mean"] * 100 for _, r in on_axis],
                yerr=[(r["test_std"] or 0) * 100 for _, r in on_axis],
                color=colour,
                linestyle=linestyle,
                marker=marker,
                capsize=2,
                alpha=0.9,
            )
        if arm != "none" and arm in clean:
            r = clean[arm]
            ax.errorbar(
                [inf], [r["test_mean"] * 100], yerr=[(r["test_std"] or 0) * 100], color=colour, marker="D", capsize=2
            )


def plot(table: list[dict[str, Any]], out: Path) -> None:
    """Write ``out/plot.png``: test accuracy against epsilon per arm and mode, one panel per (K, split).

    Args:
        table: :func:`bench.privacy_study.table.summarise`'s rows.
        out: the study's results folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = sorted(
        dict.fromkeys((r["K"], r["split"], r["mode"] == "label DP") for r in table),
        key=lambda p: (p[2], [(r["K"], r["split"]) for r in table].index(p[:2])),
    )
    finite = sorted({r["epsilon"] for r in table if r["kind"] in ON_AXIS and r["epsilon"] not in (None, INF)})
    positions = {eps: i for i, eps in enumerate(finite + [INF])}
    colours = _colours(table)
    cols = 2 if len(panels) == 4 else min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6 * cols, 4.6 * rows_n), squeeze=False)
    for ax, (k, split, labels) in zip(axes.flat, panels, strict=False):  # the grid may have spare axes
        rows = [r for r in table if (r["K"], r["split"]) == (k, split) and (r["mode"] == "label DP") == labels]
        if labels:  # label DP beside the references it is paired with: none and each arm without any DP
            rows += [
                r
                for r in table
                if (r["K"], r["split"], r["mode"]) == (k, split, "no noise") and any(x["arm"] == r["arm"] for x in rows)
            ]
        _panel(ax, rows, positions, colours)
        ax.set_xticks(list(positions.values()), [f"{e:g}" for e in finite] + ["∞"])
        ax.set_xlabel("ε per label (randomised response)" if labels else "ε per client (δ = 1e-5)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"K = {k}, {split} labels" + (": label DP" if labels else ""), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, linewidth=2, label=a) for a, c in colours.items()]
    handles += [
        Line2D([], [], color="grey", linestyle=cast(Any, s), marker=m, label=label)
        for label, (s, m) in (
            ("secure aggregation", STYLES["secure aggregation"]),
            ("alone", STYLES["alone"]),
            ("noise control (σ = 1000: horizontal)", STYLES["noise control"]),
            ("label DP", STYLES["label DP"]),
            ("option (baseline subtracted, every k-th turn)", OTHER_STYLE),
            ("no noise (at ∞)", ("none", "D")),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Privacy study: test accuracy against ε (bars: std over seeds; paired gains in table.md)", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(out / "plot.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
