"""The reproduction report's figures (:mod:`bench.reproduction_report` writes them beside results.md):
validation accuracy per epoch, the gain over ``none`` against K, and the federated map."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import reproduction_analysis as analysis

COLOURS = {
    "none": "tab:gray",
    "self": "tab:olive",
    "one-to-one": "tab:blue",
    "alignahead": "tab:red",
    "logits": "tab:green",
    "self-tuned": "gold",
    "alignahead-tuned": "darkred",
    "logits-tuned": "darkgreen",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(results: list[dict], path: Path) -> None:
    plt = _pyplot()
    cols = min(len(results), 2)
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):  # the grid may have spare axes
        for arm, curve in r["curves"].items():
            if curve:
                x, y, e = np.array(curve["epochs"]), np.array(curve["mean"]), np.array(curve["std"])
                ax.plot(x, y, color=COLOURS.get(arm), label=f"{arm} (n={curve['n']})")
                ax.fill_between(x, y - e, y + e, color=COLOURS.get(arm), alpha=0.12)
        best = r.get("none_best_val")
        if best:
            ax.set_ylim(max(0.0, best * 0.85), min(1.0, best * 1.02))
        ax.set(title=r["setting"], xlabel="student epoch", ylabel=f"validation {r['metric']} (mean over students)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gain(results: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        for arm in dict.fromkeys(row["arm"] for row in r["rows"]):
            pts = [
                (row["K"], row["mean"], row["se"] or 0.0)
                for row in r["rows"]
                if row["arm"] == arm and row["mean"] is not None
            ]
            ax.errorbar(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                yerr=[100 * p[2] for p in pts],
                marker="o",
                capsize=3,
                color=COLOURS.get(arm),
                label=f"{r['setting']}: {arm}",
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(xlabel="number of students K", ylabel="gain over none (points, paired, ± SE)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map(result: dict, path: Path) -> None:
    plt = _pyplot()
    labels = [f"{row['scheme']}\nK={row['K']}, {100 * row['label_rate']:g}% labels" for row in result["rows"]]
    comparisons = analysis.MAP_COMPARISONS
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.2))
    width = 0.8 / len(comparisons)
    for j, (a, b) in enumerate(comparisons):
        found = [next((c for c in row["comparisons"] if (c["a"], c["b"]) == (a, b)), None) for row in result["rows"]]
        xs = [i + (j - (len(comparisons) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(
            xs,
            [100 * (c["mean"] or 0) if c else 0 for c in found],
            width,
            yerr=[100 * (c["se"] or 0) if c else 0 for c in found],
            capsize=2,
            label=f"{a} − {b}",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(f"paired difference of test {result['metric']} (points, ± SE)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(report: dict[str, Any], out: Path) -> None:
    """Every figure the report has data for: convergence.png, gain_vs_k.png, map.png in ``out``.

    Args:
        report: the report (:func:`bench.reproduction_report.write`).
        out: the report's folder.
    """
    if report["strategies"]:
        plot_convergence(report["strategies"], out / "convergence.png")
    if report["students"]:
        plot_gain(report["students"], out / "gain_vs_k.png")
    if report["map"]:
        plot_map(report["map"][0], out / "map.png")
