"""Scale: time per student-epoch and per round, and peak memory, on graphs of 1M, 10M and 50M edges.

    python -m bench.scale                 # the full benchmark (resumable: finished configurations are kept)
    python -m bench.scale --smoke         # graphs of ~2k and ~8k edges, K = 2, 3 (seconds; CI)
    python -m bench.scale --fresh         # measure every configuration again

Regenerates ``results/benchmarks/scale/`` (``results.json``, ``table.md``, ``plot.png``; each finished
configuration also in ``runs/<id>.json``, which a rerun reuses: ``--fresh`` discards them).

* **Graphs**: built-in synthetic-csbm (seeded, no download), average degree 10, so N = E / 10 nodes,
  32 features, 4 classes: E = 1M, 10M, 50M directed edges (``edge_index`` columns).
* **Federations**: K = 2 with ``replicate`` (every student holds the whole graph, which is also the
  alignment graph), K = 100 with ``dirichlet`` (alpha 0.5) and a 20 % public alignment graph.
* **Students**: GCN, 2 hidden layers x 16, alignahead (structure statistics on every alignment
  edge), alternating schedule: round 0 every client releases, then one trainer per round against
  its peers' summed mass; 1 local epoch. Mini-batch always (``train.batch_size`` 2048, fan-outs
  ``train.num_neighbors`` [2, 2, 2]), full batch where it fits under the memory cap.
* **Memory**: every configuration runs in a fresh ``python -m bench.scale_worker`` process;
  the peak is the resident set of the whole process tree (:mod:`bench.process_tree`: sampled sum
  and ``ru_maxrss`` from ``wait4``); a tree that passes ``--cap-gb`` (default 12 GB) is killed
  and reported as not fitting.
* **K = 1,000 on Flower's Simulation Runtime** (:func:`bench.many_clients.run_one`): time to
  round 0, per round, peak memory of the tree, and the bytes of each train request, against
  K = 2 on the same graph; plus :mod:`bench.request_size` at K = 2, 100, 1000.

Growth is the least-squares slope of log(time per epoch) on log(E) over 1M, 10M, 50M.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
from pathlib import Path

from . import common
from .process_tree import run_measured

NAME = "scale"
CAP_GB = 12.0
GRAPH_EDGES = (1_000_000, 10_000_000, 50_000_000)
FEDERATIONS = ((2, "replicate"), (100, "dirichlet"))
MODES = ("mini", "full")


def spec(edges: int, k: int, scheme: str, mode: str, smoke: bool) -> dict:
    """One configuration.

    Args:
        edges: the graph's directed edges (N = edges / avg degree).
        k: clients.
        scheme: the partition scheme.
        mode: ``mini`` (mini-batch students) or ``full`` (full batch).
        smoke: the tiny version."""
    degree = 8 if smoke else 10
    rounds = 2 if smoke or edges < 10_000_000 else 1  # one epoch of a 50M-edge graph takes many minutes
    return {
        "id": f"e{edges}-k{k}-{mode}",
        "edges": edges,
        "num_nodes": edges // degree,
        "avg_degree": degree,
        "num_features": 32,
        "num_clients": k,
        "scheme": scheme,
        "public_fraction": 0.2,
        "alpha": 0.5,
        "mode": mode,
        "batch_size": 64 if smoke else 2048,
        "num_neighbors": [2, 2, 2],
        "hidden_layers": 2,
        "hidden_dim": 16,
        "rounds": rounds,
    }


def specs(smoke: bool) -> list[dict]:
    """Every configuration, cheapest first; at the largest graph mini-batch before full batch.

    Args:
        smoke: the tiny version (E ~2k, ~8k; K = 2, 3)."""
    sizes = (2000, 8000) if smoke else GRAPH_EDGES
    federations = ((2, "replicate"), (3, "iid")) if smoke else FEDERATIONS
    out = [spec(e, k, s, m, smoke) for e in sizes[:-1] for k, s in federations for m in MODES]
    return out + [spec(sizes[-1], k, s, m, smoke) for k, s in federations for m in MODES]


def skip_reason(s: dict, done: dict[str, dict], cap_gb: float) -> str | None:
    """Why ``s`` is not run: its clients' copies of the public graph's features alone pass the cap; full batch
    where mini-batch passed it, or on a graph larger than one whose full-batch run passed it.

    Args:
        s: the configuration.
        done: the measured configurations by id.
        cap_gb: the memory cap."""
    features_gb = s["num_clients"] * s["public_fraction"] * s["num_nodes"] * s["num_features"] * 4 / 1e9
    if s["scheme"] != "replicate" and features_gb > cap_gb:
        return (
            f"the {s['num_clients']} local graphs alone hold K x {s['public_fraction']:.0%} x N x F x 4 B = "
            f"{features_gb:.1f} GB of public-node features (each client keeps its own copy), past the "
            f"{cap_gb:g} GB cap"
        )
    if s["mode"] != "full":
        return None
    mini = done.get(s["id"].replace("-full", "-mini"))
    if mini is not None and mini.get("capped"):
        return "the same graph and clients passed the cap in mini-batch mode"
    for r in done.values():
        if r["mode"] == "full" and r["num_clients"] == s["num_clients"] and r["edges"] < s["edges"] and r.get("capped"):
            return f"full batch already passed the cap at E = {r['edges']:,}"
    return None


def measure(s: dict, threads: int, cap_mib: float, timeout: float, smoke: bool = False) -> dict:
    """Run one configuration in a fresh worker process and measure its tree.

    Args:
        s: the configuration.
        threads: torch threads.
        cap_mib: kill the tree past this many MiB.
        timeout: kill it after this many seconds.
        smoke: eager structure kernels (no torch.compile: seconds saved on tiny graphs)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",  # inductor compiles in-process: no pool of compile workers
        **({"FEDALIGN_COMPILE": "0"} if smoke else {}),
    }
    load_before = os.getloadavg()
    m = run_measured(
        [sys.executable, "-m", "bench.scale_worker", json.dumps(s), str(threads)], common.REPO, env, cap_mib, timeout
    )
    tree = {
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": m.wall_s,
        "peak_tree_mib": m.peak_tree_mib,
        "maxrss_mib": m.maxrss_mib,
        "peak_mib": m.peak_mib,
        "capped": m.capped,
        "timed_out": m.timed_out,
        "cap_mib": cap_mib,
        "revision": common.git_revision(),
        "phases": [
            json.loads(line.split(" ", 1)[1]) for line in m.stderr.splitlines() if line.startswith("[scale-worker] ")
        ],
    }  # where a killed worker had got to
    if m.returncode != 0 or m.capped or m.timed_out:
        why = (
            f"passed the {cap_mib * 2**20 / 1e9:g} GB ({cap_mib / 1024:.1f} GiB) cap"
            if m.capped
            else f"timed out after {timeout:.0f} s"
            if m.timed_out
            else m.stderr.strip()[-3000:]
        )
        return {**s, **tree, "error": why}
    return {**json.loads(m.stdout.strip().splitlines()[-1]), **tree}


def graph_runs(args, out: Path) -> list[dict]:
    """Every graph configuration: reused from ``out/runs`` where finished, else measured and saved.

    Args:
        args: the parsed command line.
        out: the output folder."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    for s in specs(args.smoke):
        if args.device != "cpu":  # the same configurations on a GPU (host memory of the tree, not the GPU's)
            s = {**s, "device": args.device, "id": f"{s['id']}-{args.device}"}
        path = runs_dir / f"{s['id']}.json"
        if args.only and s["id"] not in args.only:
            if path.is_file():
                done[s["id"]] = json.loads(path.read_text())
            continue
        if path.is_file() and not args.fresh:
            done[s["id"]] = json.loads(path.read_text())
            print(f"[scale] {s['id']}: kept from {path}", flush=True)
            continue
        reason = skip_reason(s, done, args.cap_gb)
        result = (
            {**s, "skipped": reason}
            if reason
            else measure(s, args.threads, args.cap_gb * 1e9 / 2**20, args.timeout, args.smoke)
        )
        path.write_text(json.dumps(result, indent=1) + "\n")
        done[s["id"]] = result
        print(f"[scale] {summary_line(result)}", flush=True)
        write_report(args, out, list(done.values()))
    return list(done.values())


def summary_line(r: dict) -> str:
    """One line about a finished configuration.

    Args:
        r: its result."""
    head = f"{r['id']}"
    if r.get("skipped"):
        return f"{head}: skipped ({r['skipped']})"
    if "error" in r:
        return (
            f"{head}: did not finish ({r['error'].splitlines()[-1] if r['error'] else '?'}), peak "
            f"{r['peak_mib']:.0f} MiB"
        )
    return (
        f"{head}: E={r['graph_edges']:,} epoch {r['epoch_median_s']:.2f} s, round {r['round_median_s']:.2f} s, "
        f"round 0 {r['init_round0_s']:.1f} s, peak {r['peak_mib']:.0f} MiB, load {r['load_before'][0]} -> "
        f"{r['load_after'][0]}"
    )


def flower_runs(smoke: bool, rounds: int) -> dict:
    """K = 1,000 (smoke: 3) and K = 2 on Flower's Simulation Runtime, on the same graph, and the request sizes
    of :mod:`bench.request_size` at K = 2, 100, 1000 (smoke: 2, 3).

    Args:
        smoke: the tiny version.
        rounds: rounds per Flower run."""
    from .many_clients import run_one
    from .request_size import measure as request_measure

    clients = () if smoke else (2, 1000)  # smoke: no Flower run (seconds; bench.many_clients smokes Flower)
    nodes = 20 * 1000  # the graph of K = 1,000 in bench.many_clients, for every K here
    out: dict = {"graph_nodes": nodes, "public_fraction": 0.05, "runs": []}
    with tempfile.TemporaryDirectory(prefix="fedalign-scale-flower-") as tmp:
        for k in clients:
            load_before = common.load()
            result = run_one(k, "flower", rounds, Path(tmp), num_nodes=nodes)
            result.update(load_before=load_before, load_after=common.load(), **request_bytes(Path(tmp) / f"flower-{k}"))
            out["runs"].append(result)
            print(f"[scale] flower K={k}: {json.dumps(result)[:400]}", flush=True)
    out["request_size"] = [request_measure(k, 2, "float32") for k in ((2, 3) if smoke else (2, 100, 1000))]
    return out


def request_bytes(folder: Path) -> dict:
    """Bytes of the train requests (``bytes_received`` of training rounds) in a run's ``rounds.jsonl``.

    Args:
        folder: the run's output folder."""
    rows = []
    for path in glob.glob(str(folder / "**" / "rounds.jsonl"), recursive=True):
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    train = [r["bytes_received"] for r in rows if r.get("round", 0) >= 1]
    release = [r["bytes_sent"] for r in rows if r.get("round", 0) >= 1]
    return {
        "request_bytes": common.median(train) if train else None,
        "request_bytes_max": max(train) if train else None,
        "release_bytes": common.median(release) if release else None,
    }


def write_report(args, out: Path, runs: list[dict], flower: dict | None = None) -> dict:
    """``results.json``, ``table.md`` and ``plot.png`` from what is measured so far.

    Args:
        args: the parsed command line.
        out: the output folder.
        runs: the graph configurations' results.
        flower: the Flower part, or None (kept from an earlier ``results.json`` when there is one)."""
    from .scale_report import fits, markdown, plot

    previous = out / "results.json"
    if flower is None and previous.is_file():
        flower = json.loads(previous.read_text()).get("flower")
    results = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "machine": common.machine(args.threads),
        "cap_gb": args.cap_gb,
        "note": args.note,
        "runs": runs,
        "fits": fits(runs),
        "flower": flower,
        "uptime_at_end": common.uptime(),
    }
    common.write_outputs(out, results, markdown(results))
    plot(results, out / "plot.png")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (module docstring).

    Args:
        argv: the command line (None: ``sys.argv[1:]``)."""
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--cap-gb", type=float, default=CAP_GB, help="kill a configuration whose tree passes this (GB)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per configuration")
    p.add_argument("--fresh", action="store_true", help="measure again the configurations already in runs/")
    p.add_argument("--only", nargs="+", default=None, help="measure only these configuration ids")
    p.add_argument(
        "--skip-flower", action="store_true", help="keep the Flower part of an earlier run (runs/flower.json)"
    )
    p.add_argument("--flower-rounds", type=int, default=5)
    p.add_argument("--device", default="cpu", help="the students' device (cuda where a GPU is lent)")
    p.add_argument("--note", default=None, help="a sentence for table.md (e.g. how the figures were taken)")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    out = common.out_dir(args, NAME)
    print(f"[scale] torch threads {args.threads}, cap {args.cap_gb} GB, {common.uptime()}", flush=True)
    runs = graph_runs(args, out)
    flower_file = out / "runs" / "flower.json"
    if args.skip_flower:
        flower = json.loads(flower_file.read_text()) if flower_file.is_file() else None
    else:
        flower = flower_runs(args.smoke, 3 if args.smoke else args.flower_rounds)
        flower_file.write_text(json.dumps(flower, indent=1) + "\n")
    results = write_report(args, out, runs, flower)
    print((out / "table.md").read_text())
    print(f"[scale] results in {out}")
    return 0 if all("error" not in r or r.get("capped") for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
