"""The privacy study's report: accuracy against epsilon per strategy and mode, paired with `none`.

    FEDALIGN_DATA_ROOT=../shared/data fedalign sweep simulations/privacy-study/<sweep>.yaml --workers 2
    python -m bench.privacy_study          # -> results/privacy-study/{results.csv,table.md,plot.png}

The sweeps (``simulations/privacy-study/``): ``k20-reference`` (none, self, and the sharing arms without
noise), ``k20`` (logits and alignahead at epsilon 1 and 8, each client noising its own release or
secure aggregation), ``k20-eps`` (logits and alignahead at epsilon 2 and 4), ``k20-options`` (baseline
subtraction, releasing every 2nd turn), ``k20-noise`` and ``k100-noise`` (the sharing arms at sigma = 1000:
aligning with noise, the control for what the noise alone does), ``labels`` and ``labels-4`` (label-level
DP at epsilon 1 and 4 per label), ``k100`` (none and logits), ``k100-alignahead`` (the issue's target cell:
alignahead at epsilon 8 with secure aggregation) and ``k20-community`` (the issue's community split with
10 % labels: each sharing arm without noise, at epsilon 8 with secure aggregation, and its noise control).
Every row is paired by seed with `none` at the same K and split: the gain, its standard error, a paired
t-test, and at a finite epsilon the share of the arm's no-noise gain it keeps. Under label DP an arm is paired
with `none` under label DP, and `none` under label DP with `none` without it (the cost of the label noise).
Missing cells are left out (the table says how many seeds each row has).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from .reproduction_analysis import mean_std, paired

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "results" / "privacy-study"
SWEEPS = ("k20-reference", "k20", "k20-noise", "k20-eps", "k20-options", "labels", "k100", "k100-alignahead",
          "k100-noise", "k20-community", "labels-4")
LABEL_EPSILON = {"labels": 1.0, "labels-4": 4.0}  # privacy.label_epsilon of each label-DP sweep
STUDY_SPLIT, COMMUNITY_SPLIT = "Dirichlet, 2 %", "community, 10 %"  # partition, label rate (base.yaml; k20-community)
NOISE_CONTROL = "noise only (σ = 1000)"
INF = math.inf


def _float(value: str) -> float:
    return INF if value in ("inf", ".inf") else float(value)


def _mode(sweep: str, row: dict) -> tuple[str, float]:
    """(mode, epsilon) of a results.csv row."""
    if sweep in LABEL_EPSILON:
        return "label DP", LABEL_EPSILON[sweep]
    if sweep in ("k20-noise", "k100-noise") or row.get("privacy.noise_multiplier") == "1000.0":
        return NOISE_CONTROL, 0.1  # sigma = 1000: epsilon 0.10 per client (RDP), all noise
    if sweep == "k20-options":
        option = "baseline subtracted" if row["privacy.subtract_baseline"] == "True" else "release every 2nd turn"
        return f"alone, {option}", 8.0
    eps = _float(row.get("privacy.target_epsilon") or "inf")
    if row["arm"] in ("none", "self") or eps == INF:
        return "no noise", INF
    return ("secure aggregation" if row.get("privacy.secure_aggregation") == "True" else "alone"), eps


def load_rows(out: Path) -> list[dict]:
    rows = []
    for sweep in SWEEPS:
        path = out / sweep / "results.csv"
        if not path.is_file():
            continue
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if not row.get("test"):
                    continue
                mode, eps = _mode(sweep, row)
                k = 100 if sweep.startswith("k100") else 20
                split = COMMUNITY_SPLIT if sweep == "k20-community" else STUDY_SPLIT
                rows.append({"K": k, "split": split, "arm": row["arm"], "mode": mode, "epsilon": eps,
                             "seed": int(row["seed"]), "test": float(row["test"]), "sweep": sweep,
                             "wall_seconds": float(row["wall_seconds"]) if row.get("wall_seconds") else None})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["K"], r["split"], r["arm"], r["mode"], r["epsilon"]), []).append(r)
    groups = {key: {r["seed"]: r["test"] for r in group} for key, group in cells.items()}
    table = []
    order = sorted(groups, key=lambda g: (g[0], g[1] != STUDY_SPLIT, *g[1:4], -g[4]))  # the study's split first
    for (k, split, arm, mode, eps) in order:
        by_seed = groups[(k, split, arm, mode, eps)]
        wall = mean_std([r["wall_seconds"] for r in cells[(k, split, arm, mode, eps)]])["mean"]
        none = groups.get((k, split, "none", "no noise", INF), {})
        clean = groups.get((k, split, arm, "no noise", INF), {})
        stats = mean_std(list(by_seed.values()))
        gain = paired(by_seed, none) if arm != "none" and mode != "label DP" else None
        if mode == "label DP":  # label DP changes every arm's labels: an arm is compared with none under label DP,
            # and none under label DP with none without it (what the label noise costs)
            gain = paired(by_seed, none if arm == "none" else groups.get((k, split, "none", mode, eps), {}))
        clean_gain = paired(clean, none) if arm != "none" else None
        kept = None
        if gain and clean_gain and eps != INF and mode != "label DP" and clean_gain["mean"]:
            kept = gain["mean"] / clean_gain["mean"]
        table.append({"K": k, "split": split, "arm": arm, "mode": mode, "epsilon": eps, "seeds": stats["n"],
                      "test_mean": stats["mean"], "test_std": stats["std"],
                      "gain_over_none": gain["mean"] if gain else None, "gain_se": gain["se"] if gain else None,
                      "gain_p": gain["p"] if gain else None, "kept_of_no_noise_gain": kept,
                      "wall_minutes_per_cell": None if wall is None else wall / 60})
    return table


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def write_table(table: list[dict], out: Path) -> None:
    lines = ["| K | split, labels | arm | mode | ε per client | seeds | test accuracy (%) | gain over none (points) "
             "± SE | p | share of the no-noise gain kept | minutes per cell |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        eps = "∞" if r["epsilon"] == INF else f"{r['epsilon']:g}" + (" per label" if r["mode"] == "label DP" else "")
        gain = "—" if r["gain_over_none"] is None else \
            f"{r['gain_over_none'] * 100:+.2f} ± {_fmt(r['gain_se'], '.2f', 100)}"
        lines.append(f"| {r['K']} | {r['split']} | {r['arm']} | {r['mode']} | {eps} | {r['seeds']} | "
                     f"{r['test_mean'] * 100:.2f} ± {_fmt(r['test_std'], '.2f', 100)} | {gain} | "
                     f"{_fmt(r['gain_p'], '.3f')} | {_fmt(r['kept_of_no_noise_gain'], '.2f')} | "
                     f"{_fmt(r['wall_minutes_per_cell'], '.1f')} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def _gain_bars(ax, rows: list[dict], title: str) -> None:
    """One horizontal bar per row: its paired gain over `none` (noise controls paler)."""
    colours = {"logits": "tab:blue", "alignahead": "tab:orange"}
    labels = []
    for i, r in enumerate(rows):
        eps = "" if r["epsilon"] == INF or r["mode"] == NOISE_CONTROL else f", ε = {r['epsilon']:g}"
        ax.barh(i, r["gain_over_none"] * 100, xerr=(r["gain_se"] or 0) * 100, capsize=3,
                color=colours.get(r["arm"], "grey"), alpha=0.5 if r["mode"] == NOISE_CONTROL else 0.9)
        labels.append(f"{r['arm']}, {r['mode']}{eps}\n({r['seeds']} seed{'s' if r['seeds'] > 1 else ''})")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("gain over none, points (± SE, paired by seed)")
    ax.set_title(title, fontsize=9)


def plot(table: list[dict], out: Path) -> None:
    """Left: test accuracy against epsilon at K = 20. Right: the paired gain over `none` of every K = 100 row
    and of every row on the community split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, k100, community) = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [3, 2, 2]})
    study = [r for r in table if r["split"] == STUDY_SPLIT]
    positions = {1.0: 0, 2.0: 1, 4.0: 2, 8.0: 3, INF: 4}
    for arm, colour in (("logits", "tab:blue"), ("alignahead", "tab:orange")):
        for mode, style in (("alone", ":"), ("secure aggregation", "-")):
            points = sorted((positions[r["epsilon"]], r) for r in study
                            if r["K"] == 20 and r["arm"] == arm and (r["mode"] == mode or r["mode"] == "no noise"))
            if len(points) < 2:
                continue
            ax.errorbar([x for x, _ in points], [r["test_mean"] * 100 for _, r in points],
                        yerr=[(r["test_std"] or 0) * 100 for _, r in points], linestyle=style, marker="o",
                        color=colour, capsize=3, label=f"{arm}, {mode}")
        noise = next((r for r in study if r["K"] == 20 and r["arm"] == arm and r["mode"] == NOISE_CONTROL), None)
        if noise:
            ax.axhline(noise["test_mean"] * 100, color=colour, linestyle="-.", alpha=0.6,
                       label=f"{arm}, aligning with noise only (σ = 1000)")
    for arm, colour in (("none", "black"), ("self", "grey")):
        ref = next((r for r in study if r["K"] == 20 and r["arm"] == arm and r["mode"] == "no noise"), None)
        if ref:
            ax.axhline(ref["test_mean"] * 100, color=colour, linestyle="--", label=f"{arm} (no sharing)")
    ax.set_xticks(list(positions.values()), ["1", "2", "4", "8", "∞"])
    ax.set_xlabel("ε per client (δ = 1e-5)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"K = 20, {STUDY_SPLIT} labels (bars: std over seeds; the paired gains in table.md are tighter)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    _gain_bars(k100, [r for r in study if r["K"] == 100 and r["gain_over_none"] is not None],
               f"K = 100, {STUDY_SPLIT} labels")
    _gain_bars(community, [r for r in table if r["split"] == COMMUNITY_SPLIT and r["gain_over_none"] is not None],
               f"K = 20, {COMMUNITY_SPLIT} labels (the issue's split)")
    fig.suptitle("Privacy study: Amazon Photo, public 20 %; Dirichlet split α = 0.5 unless said", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "plot.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the study's results folder (the sweeps write there)")
    args = parser.parse_args(argv)
    rows = load_rows(args.out)
    if not rows:
        print(f"no finished cells under {args.out}; run the sweeps first (see the module docstring)")
        return 1
    table = summarise(rows)
    write_table(table, args.out)
    plot(table, args.out)
    print((args.out / "table.md").read_text())
    hours = sum(r["wall_seconds"] for r in rows if r["wall_seconds"] is not None) / 3600
    print(f"{len(rows)} cells, {hours:.1f} h of cell time (sum of the cells' wall_seconds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
