"""The report of :mod:`bench.scale`: log-log fits, the markdown table and the plot."""

from __future__ import annotations

from pathlib import Path

from . import common
from .common import fmt, md_table


def measured(runs: list[dict]) -> list[dict]:
    """The configurations that finished.

    Args:
        runs: every configuration's result."""
    return [r for r in runs if "error" not in r and not r.get("skipped")]


def series(runs: list[dict]) -> dict[tuple[int, str], list[dict]]:
    """The finished configurations by (K, mode), in increasing graph size.

    Args:
        runs: every configuration's result."""
    out: dict[tuple[int, str], list[dict]] = {}
    for r in sorted(measured(runs), key=lambda r: r["graph_edges"]):
        out.setdefault((r["num_clients"], r["mode"]), []).append(r)
    return out


def fits(runs: list[dict]) -> dict:
    """Per (K, mode): least-squares slopes of log(time per epoch), log(time per round) and log(peak memory)
    on log(graph edges), over the graphs measured.

    Args:
        runs: every configuration's result."""
    out = {}
    for (k, mode), rows in series(runs).items():
        e = [r["graph_edges"] for r in rows]
        out[f"k{k}-{mode}"] = {
            "num_clients": k,
            "mode": mode,
            "graph_edges": e,
            "epoch_s": common.loglog_slope(e, [r["epoch_median_s"] for r in rows]),
            "epoch_s_between": [
                common.loglog_slope(e[i : i + 2], [r["epoch_median_s"] for r in rows[i : i + 2]])
                for i in range(len(rows) - 1)
            ],  # consecutive sizes
            "steps": common.loglog_slope(e, [r["steps_per_epoch"] or 1 for r in rows]),
            "round_s": common.loglog_slope(e, [r["round_median_s"] for r in rows]),
            "peak_mib": common.loglog_slope(e, [r["peak_mib"] for r in rows]),
            "round_cpu_s": common.loglog_slope(e, [common.median([x["cpu_s"] for x in r["rounds"]]) for r in rows])
            if all("cpu_s" in x for r in rows for x in r["rounds"])
            else None,
        }
    return out


def _row(r: dict) -> list:
    gb = f"{r['peak_mib'] * 2**20 / 1e9:.2f}" if r.get("peak_mib") else "-"
    if r.get("skipped"):
        return _unmeasured_row(r, "-", f"skipped: {r['skipped']}", "-")
    if "error" in r:
        return _unmeasured_row(r, gb, _failure(r), f"{r['load_before'][0]} / {r['load_after'][0]}")
    return [
        f"{r['graph_edges']:,}",
        r["num_clients"],
        r["mode"],
        f"{r['alignment_edges']:,}",
        f"{r['local_edges_mean']:,.0f}",
        r["steps_per_epoch"] or 1,
        fmt(r["build_s"]),
        fmt(r["init_round0_s"]),
        fmt(r["epoch_median_s"]),
        fmt(r["round_median_s"]),
        cpu_per_round(r),
        gb,
        round_status(r),
        f"{r['load_before'][0]} / {r['load_after'][0]}",
    ]


def _unmeasured_row(r: dict, peak: str, status: str, load: str) -> list:
    """A table row for a configuration with no timings (skipped, or killed or failed before its rounds)."""
    return [f"{r['edges']:,}", r["num_clients"], r["mode"], *["-"] * 8, peak, status, load]


def _failure(r: dict) -> str:
    """Why a configuration's run ended without results: past the memory cap (in which phase), or its last error line."""
    if r.get("capped"):
        last = (r.get("phases") or [{}])[-1]
        return (
            f"**does not fit**: killed past the {r['cap_mib'] * 2**20 / 1e9:.0f} GB cap in the phase after "
            f"'{last.get('phase', '-')}' (RSS then {last.get('rss_mb', 0) * 2**20 / 1e9:.1f} GB)"
        )
    error = r["error"].strip()
    return f"failed: {error.splitlines()[-1][:120] if error else '?'}"


def cpu_per_round(r: dict) -> str:
    """Median CPU seconds of the worker per round (what contention does not inflate), '-' where not recorded.

    Args:
        r: a finished configuration."""
    cpu = [x["cpu_s"] for x in r["rounds"] if "cpu_s" in x]
    return fmt(common.median(cpu)) if cpu else "-"


def round_status(r: dict) -> str:
    """``ok``, or which rounds' replies the coordinator rejected and why (timings still hold: the epoch ran).

    Args:
        r: a finished configuration."""
    rejected = [x for x in r["rounds"] if x["status"] != "ok"]
    if not rejected:
        return "ok"
    return (
        f"ok; round(s) {', '.join(str(x['round']) for x in rejected)} {rejected[0]['status']}: "
        f"{(rejected[0].get('error') or '')[:110]}"
    )


def flower_lines(flower: dict | None) -> list[str]:
    """The K = 1,000 section of the table.

    Args:
        flower: the Flower part of the results (None: not measured)."""
    if not flower:
        return ["", "K = 1,000 on Flower: not measured in this run."]
    lines = [
        "",
        f"## Many clients on Flower's Simulation Runtime (synthetic-csbm, {flower['graph_nodes']:,} nodes, "
        f"iid, {flower['public_fraction']:.0%} public; GCN 2 x 16; summed-mass requests)",
        "",
    ]
    rows = [
        [
            r["clients"],
            "failed" if "error" in r else f"{r['startup_to_round0_seconds']} s",
            r.get("round_median_seconds", "-"),
            f"{r.get('peak_rss_mib', '-')} MiB",
            f"{r.get('request_bytes') or 0:,.0f}",
            f"{r.get('release_bytes') or 0:,.0f}",
            f"{r['load_before']} / {r['load_after']}",
        ]
        for r in flower["runs"]
    ]
    lines.append(
        md_table(
            [
                "K",
                "time to round 0",
                "s / round (median)",
                "peak RSS (tree)",
                "bytes per train request",
                "bytes per release",
                "load before / after",
            ],
            rows,
        )
    )
    reqs = flower.get("request_size") or []
    if reqs:
        lines += ["", "Request sizes (`bench.request_size`: 120-node graph, 30 % public, L = 2, float32):", ""]
        lines.append(
            md_table(
                ["K", "alignment E", "request B", "Flower message B", "per-peer releases B"],
                [
                    [
                        q["clients"],
                        q["edges"],
                        f"{q['request_bytes']:,}",
                        f"{q['encoded_bytes']:,}",
                        f"{q['per_peer_bytes']:,}",
                    ]
                    for q in reqs
                ],
            )
        )
    return lines


def targets(res: dict) -> list[str]:
    """Whether each target of the issue holds on this machine.

    Args:
        res: the results."""
    runs, cap = res["runs"], res["cap_gb"]
    largest = max((r["edges"] for r in runs), default=0)
    mini = [r for r in measured(runs) if r["mode"] == "mini" and r["edges"] == largest and r["num_clients"] == 2]
    lines = ["", "## Targets", ""]
    if mini:
        gb = mini[0]["peak_mib"] * 2**20 / 1e9
        lines.append(
            f"* largest graph ({mini[0]['graph_edges']:,} edges), K = 2, mini-batch: peak {gb:.2f} GB "
            f"(target <= {cap:g} GB): **{'holds' if gb <= cap else 'fails'}**"
        )
    else:
        lines.append("* largest graph, K = 2, mini-batch: not measured")
    for f in res["fits"].values():
        if f["mode"] == "mini" and f["epoch_s"] is not None:
            lines.append(
                f"* slope of time per epoch on edges, K = {f['num_clients']} mini-batch: {f['epoch_s']:.2f} "
                f"over E = {', '.join(f'{e:,}' for e in f['graph_edges'])} (target <= 1.1): "
                f"**{'holds' if f['epoch_s'] <= 1.1 else 'fails'}**"
            )
    reqs = {q["clients"]: q["request_bytes"] for q in ((res.get("flower") or {}).get("request_size") or [])}
    flower = {r["clients"]: r.get("request_bytes") for r in ((res.get("flower") or {}).get("runs") or [])}
    for label, table in (("Flower runs", flower), ("bench.request_size", reqs)):
        if table.get(1000) and table.get(2):
            ratio = table[1000] / table[2]
            lines.append(
                f"* request bytes K = 1,000 / K = 2 ({label}): {ratio:.3f} (target <= 1.1): "
                f"**{'holds' if ratio <= 1.1 else 'fails'}**"
            )
    if reqs.get(1000) and reqs.get(100):
        lines.append(
            f"  (K = 2's request is its one peer's float32 release, L x E x 4 B; from K = 3 on it is the "
            f"peers' summed mass in float64, L x E x 8 B + 16 B, whatever K: K = 1,000 / K = 100 = "
            f"{reqs[1000] / reqs[100]:.3f}; per-peer releases would have been "
            f"{(res['flower']['request_size'][-1]['per_peer_bytes']) / reqs[1000]:.0f} x larger at K = 1,000)"
        )
    return lines


def markdown(res: dict) -> str:
    """The table (``table.md``).

    Args:
        res: the results."""
    m = res["machine"]
    lines = [
        "# Scale: graphs of 1M, 10M and 50M edges (in-process engine, one fresh process per configuration)",
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s), revision {m['git']}. "
        f"GPU: {m['gpu'] or 'none -- no GPU was lent to this task, CPU only'}. Timings were taken beside other "
        "work on 2 cores (a privacy study's workers and other engineers' tests): the 1-minute load average "
        f"before / after each configuration is in the last column. End: `{res['uptime_at_end']}`.",
        "",
        "synthetic-csbm, average degree 10, 32 features, 4 classes; GCN 2 x 16, alignahead; K = 2 replicate "
        "(the whole graph is the alignment graph), K = 100 dirichlet (alpha 0.5) with a 20 % public alignment "
        "graph. Mini-batch: batch 2048, fan-outs [2, 2, 2]; an epoch is one pass over the larger of the "
        "labelled training nodes and the alignment targets (steps per epoch). Round = the coordinator's "
        f"round (the trainer's epoch, its evaluation and release, the request). Peak: resident set of the "
        f"whole process tree (GB = 10^9 B); a tree past {res['cap_gb']:g} GB is killed.",
        "",
        *([f"Note: {res['note']}", ""] if res.get("note") else []),
    ]
    rows = [_row(r) for r in sorted(res["runs"], key=lambda r: (r["num_clients"], r["mode"], r["edges"]))]
    lines.append(
        md_table(
            [
                "E (directed)",
                "K",
                "mode",
                "alignment E",
                "local E (mean)",
                "steps / epoch",
                "build s",
                "round 0 s",
                "s / student-epoch",
                "s / round",
                "CPU s / round",
                "peak GB (tree)",
                "status",
                "load before / after",
            ],
            rows,
        )
    )
    lines += ["", "log-log slopes on E (time per epoch, per round, peak memory):", ""]
    lines += [
        f"* K = {f['num_clients']}, {f['mode']}: epoch {fmt(f['epoch_s'])}, round {fmt(f['round_s'])}, "
        f"CPU per round {fmt(f.get('round_cpu_s'))}, peak {fmt(f['peak_mib'])}; epoch between consecutive "
        f"sizes {', '.join(fmt(x) for x in f.get('epoch_s_between') or []) or '-'}; steps per epoch "
        f"{fmt(f.get('steps'))} "
        f"(E = {', '.join(f'{e:,}' for e in f['graph_edges'])})"
        for f in res["fits"].values()
    ]
    lines += flower_lines(res.get("flower"))
    lines += targets(res)
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """Log-log plot: time per epoch and peak memory against graph edges, per (K, mode).

    Args:
        res: the results.
        path: the png to write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (k, mode), rows in series(res["runs"]).items():
        e = [r["graph_edges"] for r in rows]
        style = "-" if mode == "mini" else "--"
        label = f"K = {k}, {'mini-batch' if mode == 'mini' else 'full batch'}"
        axes[0].plot(e, [r["epoch_median_s"] for r in rows], style, marker="o", label=label)
        axes[1].plot(e, [r["peak_mib"] * 2**20 / 1e9 for r in rows], style, marker="s", label=label)
    axes[1].axhline(res["cap_gb"], color="red", lw=0.8, label=f"cap {res['cap_gb']:g} GB")
    for ax, ylabel, title in (
        (axes[0], "seconds per student-epoch", "time per epoch"),
        (axes[1], "peak resident set of the tree (GB)", "peak memory"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("graph edges E (directed)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
