"""The communication benchmark's report (:mod:`bench.communication`): paired accuracy differences, the
markdown tables and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import common
from .common import fmt, human_bytes, md_table

ARMS = ("float32", "float16", "int8", "none")


def paired(runs: list[dict]) -> dict:
    """Mean ± std of each arm's test metric and of its paired difference to float32 (same seed)."""
    by = {(r["arm"], r["seed"]): r["test"] for r in runs}
    run_of = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        vals = [by[(arm, s)] for s in seeds if (arm, s) in by]
        if not vals:
            continue
        out[arm] = {"mean": common.mean(vals), "std": common.std(vals), "n": len(vals)}
        if arm != "float32":
            diffs = [by[(arm, s)] - by[("float32", s)] for s in seeds if (arm, s) in by and ("float32", s) in by]
            out[arm]["diff_mean"] = common.mean(diffs)
            out[arm]["diff_std"] = common.std(diffs)
            out[arm]["diffs"] = diffs
            # How far the training trajectory moved: largest |change| of the validation loss over all
            # rounds, and the median relative change of the logged alignment loss, against float32.
            moved_val, moved_align = [], []
            for s in seeds:
                a, b = run_of.get((arm, s)), run_of.get(("float32", s))
                if a is None or b is None or "val_loss" not in a:
                    continue
                moved_val += [
                    abs(x - y)
                    for x, y in zip(a["val_loss"], b["val_loss"], strict=True)
                    if x is not None and y is not None
                ]
                moved_align += [
                    abs(x - y) / abs(y)
                    for x, y in zip(a["align_loss"], b["align_loss"], strict=True)
                    if x is not None and y
                ]
            out[arm]["val_loss_max_abs_change"] = max(moved_val) if moved_val else None
            out[arm]["align_loss_median_rel_change"] = common.median(moved_align) if moved_align else None
    return out


def _bytes_table(bytes_rows: list[dict]) -> str:
    """The bytes table: what a trainer sends and receives per round against weight sharing."""
    rows = []
    for r in bytes_rows:
        f32, f16 = r["float32"], r["float16"]
        rows.append(
            [
                r["label"],
                r["alignment_edges"],
                r["layers"],
                r["num_clients"],
                human_bytes(f32["trainer_sent_per_round"][0]),
                human_bytes(f32["trainer_received_per_round"][0]),
                human_bytes(f16["trainer_sent_per_round"][0]),
                human_bytes(f16["trainer_received_per_round"][0]),
                f"{r['parameters']:,}",
                human_bytes(r["weight_bytes"]),
                human_bytes(r["weight_sharing_per_round"]),
                fmt(r["stats_over_weight_sharing_float32"]),
                fmt(r["stats_over_weight_sharing_float16"]),
                "ok" if f32["matches_expected"] and f16["matches_expected"] else "MISMATCH",
            ]
        )
    return md_table(
        [
            "setting",
            "E (align edges)",
            "L",
            "K",
            "sent f32",
            "recv f32",
            "sent f16",
            "recv f16",
            "params P",
            "weights 4P",
            "weight sharing 2x4P",
            "stats/weights f32",
            "stats/weights f16",
            "check",
        ],
        rows,
    )


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Communication",
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s); start `{m['uptime_at_start']}`; "
        f"end `{res['uptime_at_end']}`.",
        "",
        "## Bytes per alternating round (from rounds.jsonl) vs weight sharing",
        "",
        "The trainer of a round sends its fresh statistics (L x E entries) and receives its K-1 peers' cached "
        "statistics; the other clients move nothing that round. Weight sharing (FedAvg-style) moves "
        "2 x 4P bytes per participating client per round (download + upload of P float32 parameters). "
        "`check` = every logged figure equals E x L x itemsize (received: x (K-1), or the peers' summed mass, "
        "8 E L + 16, where that is no larger) computed from the graph.",
        "",
    ]
    lines.append(_bytes_table(res["bytes"]))
    if res["accuracy"]:
        lines += _accuracy_section(res)
    lines += _codec_sections(res)
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["bytes"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.8))
    y = np.arange(len(rows))
    stats32 = [r["float32"]["trainer_sent_per_round"][0] + r["float32"]["trainer_received_per_round"][0] for r in rows]
    stats16 = [r["float16"]["trainer_sent_per_round"][0] + r["float16"]["trainer_received_per_round"][0] for r in rows]
    weights = [r["weight_sharing_per_round"] for r in rows]
    ax.barh(y - 0.27, stats32, 0.27, label="statistics, float32 (sent + received)")
    ax.barh(y, stats16, 0.27, label="statistics, float16")
    ax.barh(y + 0.27, weights, 0.27, label="weight sharing (2 x 4P)")
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes per participating client per round")
    ax.grid(alpha=0.3, axis="x", which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _paired_cell(diffs: list[float]) -> str:
    """``+0.10 ± 0.18, p = 0.61, no difference shown`` from the per-seed differences (fractions)."""
    from .reproduction_analysis import paired as paired_test

    result = paired_test(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0))
    se = "—" if result["se"] is None else f"{result['se'] * 100:.2f}"
    if result["p"] is None:
        return f"{result['mean'] * 100:+.2f} ± {se}"
    verdict = "differs (p < 0.05)" if result["p"] < 0.05 else "no difference shown"
    return f"{result['mean'] * 100:+.2f} ± {se}, p = {result['p']:.2f}, {verdict}"


def _per_run_table(accuracy: list[dict]) -> list[str]:
    """Every accuracy run (seed, statistics, test accuracy, bytes, seconds), folded."""
    per_seed = []
    for a in accuracy:
        for run in a["runs"]:
            per_seed.append(
                [
                    a["label"].split(",")[0],
                    run["seed"],
                    run["arm"],
                    f"{run['test']:.4f}",
                    ", ".join(str(b) for b in run.get("best_rounds", [])),
                    human_bytes(run["bytes_sent_total"]),
                    fmt(run["seconds"]),
                    run["load"],
                ]
            )
    return [
        "",
        "<details><summary>per run</summary>",
        "",
        md_table(["data", "seed", "statistics", "test", "best rounds", "bytes sent (run)", "s", "load"], per_seed),
        "",
        "</details>",
    ]


def _accuracy_section(res: dict) -> list[str]:
    """The accuracy tables (paired by seed, then per run)."""
    lines = [
        "",
        "## Accuracy with float16 (and int8) statistics, paired by seed",
        "",
        "Same seeds → same initial weights and splits (today's default formulation, no dropout); "
        "only the precision of the statistics "
        "on the wire differs. `int8` = the int8 log-ratio code below, applied to every release "
        "(benchmark-side transport wrapper, not a library option); `none` = no alignment at all "
        "(align.strategy none), the yardstick: how far alignment itself moves training. Test accuracy "
        "at best validation, mean of both students. 'Trajectory moved' compares each run with the "
        "float32 run of the same seed over all rounds.",
        "",
    ]
    rows = []
    for a in res["accuracy"]:
        for arm in ARMS:
            if arm not in a:
                continue
            s = a[arm]
            diff = "-" if arm == "float32" else _paired_cell(s["diffs"])
            moved = (
                "-"
                if arm == "float32"
                else (f"{fmt(s.get('val_loss_max_abs_change'), 2)} / {fmt(s.get('align_loss_median_rel_change'), 2)}")
            )
            rows.append([a["label"], arm, f"{s['mean']:.4f} ± {s['std']:.4f}", diff, moved, s["n"]])
    lines.append(
        md_table(
            [
                "setting",
                "statistics",
                "test accuracy (mean ± std)",
                "paired diff vs float32 (points ± SE, p, verdict)",
                "trajectory moved: max abs Δ val loss / median rel Δ align loss",
                "seeds",
            ],
            rows,
        )
    )
    return lines + _per_run_table(res["accuracy"])


def _codec_sections(res: dict) -> list[str]:
    """One table per codec analysis: bytes per entry and the errors of each code."""
    lines: list[str] = []
    for c in res["codecs"]:
        lines += [
            "",
            f"## Compression of trained statistics: {c['label']}",
            "",
            f"E = {c['edges']} edges x L = {c['layers']} layers; {c['nodes_with_in_edges']} nodes with in-edges, "
            f"{c['degree1_nodes']} of in-degree 1. Error columns compare decoded with float32 probabilities; "
            "`err / deviation` is the median of |error| / |p - 1/deg(v)| (how much of the signal beyond the "
            "public uniform distribution the code loses); KL is per node, nats (the alignment loss per "
            "layer pair is of order 1e-3 to 1e-1 nats).",
            "",
        ]
        rows = [
            [
                r["codec"],
                f"{r['bytes_per_entry']:.3f}",
                f"{r['vs_float32']:.3f}",
                f"{r['max_abs_err']:.1e}",
                f"{r['median_abs_err']:.1e}",
                f"{r['median_err_over_deviation']:.1e}",
                f"{r['kl_per_node_mean']:.1e}",
            ]
            for r in c["codecs"]
        ]
        lines.append(
            md_table(
                [
                    "code",
                    "bytes / entry",
                    "size vs float32",
                    "max |err|",
                    "median |err|",
                    "err / deviation",
                    "KL(p‖decoded)",
                ],
                rows,
            )
        )
    return lines
