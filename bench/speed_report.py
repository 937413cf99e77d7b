"""The speed benchmark's report (:mod:`bench.speed`): the summaries of the timed rounds, the markdown tables
and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import common
from .common import fmt, md_table

if TYPE_CHECKING:
    from .speed import SpeedSetup
    from .speed_rounds import Rounds


def summary(rows: list[dict], k: int) -> dict:
    """Medians over the steady rounds (after each student's first), the warm-up rounds apart.

    Args:
        rows: the rounds of one implementation.
        k: the number of students (the first k rounds are warm-up).
    """
    steady = [row for row in rows if row["round"] > k]
    return {
        "first_rounds_s": [row["seconds"] for row in rows if row["round"] <= k],
        "round_median_s": common.median([row["seconds"] for row in steady]),
        "round_mean_s": common.mean([row["seconds"] for row in steady]),
        "round_std_s": common.std([row["seconds"] for row in steady]),
        "epoch_median_s": common.median([row["epoch_s"] for row in steady]),
        "evaluate_median_s": common.median([row["evaluate_s"] for row in steady]),
        "steady_rounds": len(steady),
        "load_mean": common.mean([row["load"] for row in rows]),
    }


def summarise(
    run: SpeedSetup, rounds: Rounds, init_s: float, flower_result: dict, after_rounds: list[dict]
) -> tuple[dict, dict, dict]:
    """fedalign's and the naive implementation's summaries, and their ratios (and Flower's to in-process).

    Args:
        run: the set-up.
        rounds: the timed rounds.
        init_s: fedalign's round 0, seconds.
        flower_result: the Flower run's figures (or why there are none).
        after_rounds: the in-process rounds timed right after the Flower run.
    """
    k = run.k
    fed_s, naive_s = summary(rounds.fed_rows, k), summary(rounds.naive_rows, k)
    fed_s["init_round0_s"] = init_s
    fed_s["release_median_s"] = common.median([row["release_s"] for row in rounds.fed_rows if row["round"] > k])
    ratios = {
        "naive_over_fedalign_round": naive_s["round_median_s"] / fed_s["round_median_s"],
        "naive_over_fedalign_epoch": naive_s["epoch_median_s"] / fed_s["epoch_median_s"],
    }
    if after_rounds:
        after = [row["seconds"] for row in after_rounds if row["round"] > run.rounds + k]
        fed_s["after_flower_round_median_s"] = common.median(after or [row["seconds"] for row in after_rounds])
        if flower_result.get("steady_round_median_s") is not None:
            ratios["flower_over_inprocess_round"] = (
                flower_result["steady_round_median_s"] / fed_s["after_flower_round_median_s"]
            )
    return fed_s, naive_s, ratios


def _round_rows(f: dict, n: dict, fl: dict) -> list[list]:
    """The per-round table's rows: fedalign in process, the naive implementation and, where it ran, Flower.

    Args:
        f, n, fl: the results of fedalign in process, the naive implementation and Flower."""
    rows = [
        [
            "fedalign, in process",
            fmt(f["round_median_s"]),
            fmt(f["round_std_s"], 2),
            fmt(f["epoch_median_s"]),
            fmt(f["evaluate_median_s"]),
            fmt(f["load_mean"]),
        ],
        [
            "naive (peers re-run every step)",
            fmt(n["round_median_s"]),
            fmt(n["round_std_s"], 2),
            fmt(n["epoch_median_s"]),
            fmt(n["evaluate_median_s"]),
            fmt(n["load_mean"]),
        ],
    ]
    if "steady_round_median_s" in fl:
        rows.append(
            [
                "fedalign on Flower (Ray), steady state",
                fmt(fl["steady_round_median_s"]),
                "-",
                "-",
                "-",
                f"{fl['load_before']} / {fl['load_after']}",
            ]
        )
    return rows


def markdown(res: dict) -> str:
    f, n, fl, g = res["fedalign_inprocess"], res["naive"], res["flower"], res["graph"]
    cfg = res["config"]
    m = cfg["model"]
    rows = _round_rows(f, n, fl)
    lines = [
        f"# Speed: {cfg['data']['name']}, {cfg['federation']['num_clients']} GCN students, "
        f"{m['hidden_layers']} hidden layers x {m['hidden_dim']}, alternating, "
        f"{cfg['train']['local_epochs']} local epochs per round",
        "",
        f"Graph: {g['nodes']} nodes, {g['edges']} edges, {g['features']} features. Machine: "
        f"{res['machine']['cpu']} x{res['machine']['cpu_count']}, torch {res['machine']['torch']}, "
        f"{res['machine']['torch_threads']} thread(s); start: `{res['machine']['uptime_at_start']}`; end: "
        f"`{res['uptime_at_end']}`. GPU: {res['gpu']}.",
        "",
        f"Median over the {f['steady_rounds']} rounds after each student's first (warm-up); "
        "fedalign and naive interleaved round by round in one process.",
        "",
        "Per student-epoch, one student, variants interleaved epoch by epoch (median of the timed epochs):",
        "",
        md_table(
            ["variant", "ms / student-epoch", "x plain training"],
            [
                [name, f"{1000 * e['median_s']:.1f}", f"{e['over_none']:.2f}"]
                for name, e in res["student_epoch"].items()
            ],
        ),
        "",
        "Per alternating round (fedalign's in-process engine against the naive implementation):",
        "",
        md_table(["implementation", "s / round", "std", "s / student-epoch", "s evaluate", "load avg (1 min)"], rows),
        "",
        f"* naive / fedalign: **{res['ratios']['naive_over_fedalign_round']:.2f}x** per round, "
        f"**{res['ratios']['naive_over_fedalign_epoch']:.2f}x** per student-epoch.",
        f"* fedalign round 0 (every student's initial statistics): {fmt(f['init_round0_s'])} s; "
        f"release (statistics) per round: {fmt(f['release_median_s'])} s.",
        f"* warm-up rounds (each student's first): fedalign {', '.join(fmt(x) for x in f['first_rounds_s'])} s; "
        f"naive {', '.join(fmt(x) for x in n['first_rounds_s'])} s.",
        f"* same weights, same data: alignment loss fedalign {res['equivalence']['fedalign_align_loss']:.8g} vs naive "
        f"{res['equivalence']['naive_align_loss']:.8g} (|diff| {res['equivalence']['align_loss_abs_diff']:.1e}); "
        f"task loss |diff| {res['equivalence']['task_loss_abs_diff']:.1e}; gradients max |diff| "
        f"{res['equivalence']['grad_max_abs_diff']:.1e} (max |grad| {res['equivalence']['grad_max_abs']:.1e}).",
    ]
    lines += _flower_lines(res)
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for key, label in (("fedalign_inprocess", "fedalign, in process"), ("naive", "naive (peers re-run)")):
        rows = res[key]["rounds"]
        ax.plot([r["round"] for r in rows], [r["seconds"] for r in rows], marker="o", label=label)
    fl = res["flower"]
    if fl.get("first_rounds_s") is not None:
        k = len(fl["first_rounds_s"])
        xs = list(range(1, k + len(fl["steady_rounds_s"]) + 1))
        ax.plot(xs, fl["first_rounds_s"] + fl["steady_rounds_s"], marker="s", label="fedalign on Flower (Ray)")
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("wall seconds per round")
    ax.set_title(f"{res['config']['data']['name']}: seconds per alternating round")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _flower_lines(res: dict) -> list[str]:
    """The Flower run's figures (or why there are none), as bullet lines."""
    f, fl = res["fedalign_inprocess"], res["flower"]
    if "steady_round_median_s" in fl:
        return [
            f"* Flower Simulation Runtime ({fl['rounds']} rounds): start-up until round 0 done "
            f"{fmt(fl['startup_to_round0_done_s'])} s, of which the round-0 exchange {fmt(fl['round0_exchange_s'])} s "
            f"(so Ray + workers + first client build before it: {fmt(fl['startup_before_round0_s'])} s); "
            f"first {len(fl['first_rounds_s'])} rounds {', '.join(fmt(x) for x in fl['first_rounds_s'])} s; "
            f"steady state {fmt(fl['steady_round_median_s'])} s / round (median of {len(fl['steady_rounds_s'])}); "
            f"shutdown {fmt(fl['shutdown_s'])} s; total {fmt(fl['total_s'])} s.",
            "* Flower / in process per steady round: "
            f"**{res['ratios'].get('flower_over_inprocess_round', float('nan')):.2f}x** "
            f"(in-process rounds re-timed right after the Flower run: {fmt(f.get('after_flower_round_median_s'))} s).",
        ]
    if "error" in fl:
        return [f"* Flower run failed: {fl['error']}"]
    return [f"* Flower: {fl.get('skipped')}"]
