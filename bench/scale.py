"""Scale: rounds per second and peak memory as clients and graphs grow (in-process engine).

    python -m bench.scale            # K = 2, 10, 50, 100 clients; graphs of 10k .. 2M edges
    python -m bench.scale --smoke    # K = 2, 3; graphs of ~2k and ~8k edges (seconds)

Every configuration runs in a fresh ``python -m bench.scale --worker``
subprocess, so its peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``)
is its own; the worker also reports its resident set after imports (the
fixed cost of torch + PyG) and after building the clients.

* **Clients**: one synthetic-csbm graph (default 20,000 nodes, average degree
  10, i.e. ~200k directed edges), partition ``iid`` with a 20 % public
  alignment share: each client holds a model, its optimiser, and the
  subgraph induced by its own nodes plus the public ones; the server caches
  K releases. Alternating schedule: one trainer per round, against K - 1
  cached peer releases.
* **Graph**: K = 2 students, ``replicate`` (the whole graph is training and
  alignment graph), synthetic-csbm graphs with E = 10k, 100k, 1M, 2M directed
  edges (``edge_index`` columns; average degree 10, so N = E / 10 nodes).

Both: GCN students, 4 hidden layers x 64, 1 local epoch per round; a round
is the library's ``Coordinator.run_round`` with the run writer (and
server-state save where the library has one), as ``fedalign run --engine
inprocess``. Growth is summarised by the least-squares slope of log(y) on
log(x) (y ~ x^slope).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common
from .common import fmt, md_table

NAME = "scale"


def client_series(smoke: bool) -> list[dict]:
    if smoke:
        return [dict(series="clients", num_clients=k, num_nodes=400, avg_degree=8, scheme="iid",
                     public_fraction=0.2, rounds=3, hidden_layers=2, hidden_dim=16) for k in (2, 3)]
    return [dict(series="clients", num_clients=k, num_nodes=20000, avg_degree=10, scheme="iid",
                 public_fraction=0.2, rounds=max(20, 2 * k), hidden_layers=4, hidden_dim=64)
            for k in (2, 10, 50, 100)]


def graph_series(smoke: bool) -> list[dict]:
    if smoke:
        return [dict(series="graph", num_clients=2, num_nodes=e // 8, avg_degree=8, scheme="replicate",
                     public_fraction=0.2, rounds=2, hidden_layers=2, hidden_dim=16) for e in (2000, 8000)]
    return [dict(series="graph", num_clients=2, num_nodes=e // 10, avg_degree=10, scheme="replicate",
                 public_fraction=0.2, rounds=4, hidden_layers=4, hidden_dim=64)
            for e in (10_000, 100_000, 1_000_000, 2_000_000)]


def raw_config(spec: dict) -> dict:
    return {
        "name": f"benchmark-scale-{spec['series']}", "seed": 0, "device": "cpu",
        "data": {"name": "synthetic-csbm",
                 "synthetic": {"num_nodes": spec["num_nodes"], "avg_degree": spec["avg_degree"]}},
        "partition": {"scheme": spec["scheme"], "public_fraction": spec["public_fraction"]},
        "federation": {"num_clients": spec["num_clients"], "rounds": spec["rounds"], "schedule": "alternating"},
        "model": {"arch": "gcn", "hidden_layers": spec["hidden_layers"], "hidden_dim": spec["hidden_dim"],
                  "dropout": 0.5},
        "align": {"strategy": "alignahead", "weight": 1.0, "tau": 100.0},
        "train": {"local_epochs": 1, "lr": 0.01, "weight_decay": 5e-4},
        "output": {"progress": False, "plot": False},
    }


# ---------------------------------------------------------------- the worker (one configuration)


def worker(spec: dict, threads: int) -> dict:
    common.set_threads(threads)
    from fedalign.config import config_from_dict
    from fedalign.inprocess import InProcessTransport
    from fedalign.data import load_partition

    from fedalign.runner import build_coordinator

    rss_imports = common.current_rss_mb()
    cfg = config_from_dict(raw_config(spec))
    start = time.perf_counter()
    transport = InProcessTransport.from_config(cfg)
    build_s = time.perf_counter() - start
    rss_built = common.current_rss_mb()
    timers = {i: common.instrument(c) for i, c in transport.clients.items()}
    c0 = transport.clients[0]
    dataset, _ = load_partition(cfg)
    with tempfile.TemporaryDirectory(prefix="fedalign-scale-") as tmp:
        coordinator, writer = build_coordinator(cfg, transport, Path(tmp), "inprocess")
        start = time.perf_counter()
        coordinator.initialise()
        init_s = time.perf_counter() - start
        rss_round0 = common.current_rss_mb()
        for t in timers.values():
            t["evaluate"].take(), t["release"].take()
        rounds = []
        for r in range(1, cfg.federation.rounds + 1):
            start = time.perf_counter()
            rec = coordinator.run_round(r)[0]
            seconds = time.perf_counter() - start
            ev, rel = timers[rec.client]["evaluate"].take(), timers[rec.client]["release"].take()
            rounds.append({"round": r, "seconds": seconds, "epoch_s": rec.seconds - ev - rel,
                           "evaluate_s": ev, "release_s": rel, "status": rec.status,
                           "rss_mb": round(common.current_rss_mb(), 1)})
        writer.finish()
    local_nodes = [c.train_split.graph.num_nodes for c in transport.clients.values()]
    local_edges = [int(c.train_split.graph.edge_index.size(1)) for c in transport.clients.values()]
    # Steady state: after every student's first training call (CSR of its graph, optimiser state), if any.
    steady = [r for r in rounds if r["round"] > cfg.federation.num_clients] or rounds[1:] or rounds
    params = sum(p.numel() for p in c0.model.parameters())
    return {
        **spec, "threads": threads,
        "graph_edges": int(dataset.train.graph.edge_index.size(1)), "graph_nodes": int(dataset.train.graph.num_nodes),
        "alignment_edges": int(c0.alignment.edge_index.size(1)), "alignment_nodes": int(c0.alignment.num_nodes),
        "local_nodes_mean": sum(local_nodes) / len(local_nodes), "local_edges_mean": sum(local_edges) / len(local_edges),
        "parameters_per_model": params,
        "build_s": build_s, "init_round0_s": init_s,
        "rounds": rounds, "steady_rounds": len(steady),
        "round_median_s": common.median([r["seconds"] for r in steady]),
        "round_mean_s": common.mean([r["seconds"] for r in steady]),
        "rounds_per_s": len(steady) / sum(r["seconds"] for r in steady),
        "epoch_median_s": common.median([r["epoch_s"] for r in steady]),
        "release_median_s": common.median([r["release_s"] for r in steady]),
        "evaluate_median_s": common.median([r["evaluate_s"] for r in steady]),
        "rss_after_imports_mb": rss_imports, "rss_after_build_mb": rss_built, "rss_after_round0_mb": rss_round0,
        "rss_end_mb": common.current_rss_mb(), "peak_rss_mb": common.peak_rss_mb(),
    }


def run_worker(spec: dict, threads: int, timeout: float) -> dict:
    load = common.load()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--worker", json.dumps(spec),
                           "--threads", str(threads)], cwd=common.REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr[-3000:], "load_before": load}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(load_before=load, load_after=common.load(), subprocess_wall_s=time.perf_counter() - start)
    return result


# ---------------------------------------------------------------- the driver


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--worker", default=None, help=argparse_suppress())
    p.add_argument("--series", choices=("clients", "graph", "both"), default="both")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker), args.threads)))
        return 0
    common.set_threads(args.threads)
    out = common.out_dir(args, NAME)
    info = common.machine(args.threads)
    print(f"[scale] {info['cpu']} x{info['cpu_count']}, torch threads {args.threads}, {info['uptime_at_start']}")
    specs = []
    if args.series in ("clients", "both"):
        specs += client_series(args.smoke)
    if args.series in ("graph", "both"):
        specs += graph_series(args.smoke)
    runs = []
    for spec in specs:
        result = run_worker(spec, args.threads, args.timeout)
        runs.append(result)
        if "error" in result:
            print(f"[scale] {spec}: FAILED\n{result['error']}", flush=True)
            continue
        print(f"[scale] {spec['series']}: K={result['num_clients']} E={result['graph_edges']} "
              f"(alignment {result['alignment_edges']}): {result['round_median_s']:.4f} s/round "
              f"({result['rounds_per_s']:.3g} rounds/s), epoch {result['epoch_median_s']:.4f} s, build "
              f"{result['build_s']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MiB (imports "
              f"{result['rss_after_imports_mb']:.0f}); load {result['load_before']} -> {result['load_after']}",
              flush=True)
    results = {"benchmark": NAME, "smoke": args.smoke, "machine": info, "runs": runs,
               "fits": fits(runs), "uptime_at_end": common.uptime()}
    md = markdown(results)
    common.write_outputs(out, results, md)
    plot(results, out / "plot.png")
    print(md)
    print(f"[scale] results in {out}")
    return 0


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def fits(runs: list[dict]) -> dict:
    """log-log slopes of each series."""
    ok = [r for r in runs if "error" not in r]
    clients = [r for r in ok if r["series"] == "clients"]
    graph = [r for r in ok if r["series"] == "graph"]
    k = [r["num_clients"] for r in clients]
    e = [r["graph_edges"] for r in graph]
    return {
        "clients": {
            "x": "num_clients",
            "round_s": common.loglog_slope(k, [r["round_median_s"] for r in clients]),
            "build_s": common.loglog_slope(k, [r["build_s"] for r in clients]),
            "peak_rss": common.loglog_slope(k, [r["peak_rss_mb"] for r in clients]),
            "peak_rss_above_imports": common.loglog_slope(
                k, [r["peak_rss_mb"] - r["rss_after_imports_mb"] for r in clients]),
        },
        "graph": {
            "x": "graph_edges",
            "round_s": common.loglog_slope(e, [r["round_median_s"] for r in graph]),
            "epoch_s": common.loglog_slope(e, [r["epoch_median_s"] for r in graph]),
            "peak_rss": common.loglog_slope(e, [r["peak_rss_mb"] for r in graph]),
            "peak_rss_above_imports": common.loglog_slope(
                e, [r["peak_rss_mb"] - r["rss_after_imports_mb"] for r in graph]),
        },
    }


def markdown(res: dict) -> str:
    m, f = res["machine"], res["fits"]
    ok = [r for r in res["runs"] if "error" not in r]
    lines = [
        "# Scale (in-process engine, one fresh subprocess per configuration)",
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s); start "
        f"`{m['uptime_at_start']}`; end `{res['uptime_at_end']}`. GPU: {m['gpu'] or 'none (not lent to this task)'}.",
        "",
        "## Number of clients (alternating: one trainer per round against K-1 cached releases)",
        "",
    ]
    rows = [[r["num_clients"], r["graph_edges"], r["alignment_edges"], f"{r['local_nodes_mean']:.0f}",
             fmt(r["build_s"]), fmt(r["init_round0_s"]), fmt(r["round_median_s"]), fmt(r["rounds_per_s"]),
             f"{r['rss_after_imports_mb']:.0f}", f"{r['rss_after_build_mb']:.0f}",
             f"{r.get('rss_after_round0_mb', float('nan')):.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['load_before']}"]
            for r in ok if r["series"] == "clients"]
    lines.append(md_table(["K", "graph E", "alignment E", "nodes per client", "build s", "round 0 s", "s / round",
                           "rounds / s", "RSS imports MiB", "RSS built MiB", "RSS after round 0 MiB",
                           "peak RSS MiB", "load"], rows))
    c = f["clients"]
    lines += ["", f"log-log slopes against K: s/round {fmt(c['round_s'])}, build {fmt(c['build_s'])}, "
                  f"peak RSS {fmt(c['peak_rss'])} (above the import baseline: {fmt(c['peak_rss_above_imports'])}).",
              "", "## Graph size (K = 2, replicate: the whole graph is training and alignment graph)", ""]
    rows = [[r["graph_edges"], r["graph_nodes"], fmt(r["build_s"]), fmt(r["init_round0_s"]), fmt(r["round_median_s"]),
             fmt(r["epoch_median_s"]), fmt(r["evaluate_median_s"]), fmt(r["release_median_s"]),
             f"{r['rss_after_imports_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['load_before']}"]
            for r in ok if r["series"] == "graph"]
    lines.append(md_table(["E (directed)", "N", "build s", "round 0 s", "s / round", "s / student-epoch",
                           "s evaluate", "s release", "RSS imports MiB", "peak RSS MiB", "load"], rows))
    g = f["graph"]
    lines += ["", f"log-log slopes against E: s/round {fmt(g['round_s'])}, s/epoch {fmt(g['epoch_s'])}, peak RSS "
                  f"{fmt(g['peak_rss'])} (above the import baseline: {fmt(g['peak_rss_above_imports'])})."]
    failed = [r for r in res["runs"] if "error" in r]
    if failed:
        lines += ["", "Failed configurations:"] + [f"* {r['series']} K={r['num_clients']} N={r['num_nodes']}: "
                                                   f"{r['error'].strip().splitlines()[-1]}" for r in failed]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in res["runs"] if "error" not in r]
    clients = [r for r in ok if r["series"] == "clients"]
    graph = [r for r in ok if r["series"] == "graph"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    if clients:
        k = [r["num_clients"] for r in clients]
        ax.plot(k, [r["round_median_s"] for r in clients], marker="o", label="s / round")
        ax2 = ax.twinx()
        ax2.plot(k, [r["peak_rss_mb"] for r in clients], marker="s", color="C1", label="peak RSS (MiB)")
        ax2.set_ylabel("peak RSS (MiB)", color="C1")
        ax2.set_xscale("log")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients K")
    ax.set_ylabel("seconds per round")
    ax.set_title("clients (iid, 20% public alignment graph)")
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    if graph:
        e = [r["graph_edges"] for r in graph]
        ax.plot(e, [r["round_median_s"] for r in graph], marker="o", label="s / round")
        ax.plot(e, [r["epoch_median_s"] for r in graph], marker="^", label="s / student-epoch")
        ax2 = ax.twinx()
        ax2.plot(e, [r["peak_rss_mb"] for r in graph], marker="s", color="C3", label="peak RSS (MiB)")
        ax2.set_ylabel("peak RSS (MiB)", color="C3")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("graph edges E (directed)")
    ax.set_ylabel("seconds")
    ax.set_title("graph size (K = 2, replicate)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
