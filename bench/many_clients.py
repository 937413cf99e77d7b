"""Many clients on one machine: time per round and peak memory at K = 100 and 1,000, both engines.

    python -m bench.many_clients                  # K = 100, 1000; in-process and Flower simulation
    python -m bench.many_clients --smoke          # K = 3, 5 rounds (seconds; CI)

Each configuration is one ``fedalign run`` in a subprocess: synthetic-csbm with 20 private
nodes per client (average degree 10), ``iid`` partition with a 5 % public alignment share, GCN
students 2 x 16, alternating schedule (one trainer per round, against K - 1 cached peers), 1
local epoch. Times come from the run's own progress lines (``[round r/R | elapsed]``): start-up
(from launch to round 0, where all K clients release, done) and the median time of a training
round. Memory is the peak, over the run, of the summed resident set of the run's process tree
(Flower: the driver, Ray's processes and its workers), sampled every 0.2 s from ``/proc``.
Writes ``results.json`` and ``table.md`` to ``--out`` (default ``results/benchmarks/many-clients``;
with ``--smoke`` a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from . import common
from .process_tree import tree_rss_mib

NAME = "many-clients"
PROGRESS = re.compile(r"^\[round (init|(\d+)/\d+) \|\s+([\d.]+)s\]")


def experiment(k: int, rounds: int, num_nodes: int | None = None) -> dict:
    """The experiment of K = ``k`` clients (``num_nodes``: the graph's size, default 20 per client)."""
    return {
        "name": f"many-clients-{k}",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": num_nodes or 20 * k, "avg_degree": 10}},
        "partition": {"scheme": "iid", "public_fraction": 0.05},
        "federation": {"num_clients": k, "rounds": rounds, "schedule": "alternating", "timeout": 600},
        "model": {"arch": "gcn", "hidden_layers": 2, "hidden_dim": 16},
        "train": {"local_epochs": 1, "lr": 0.01},
        "output": {"progress": True, "plot": False},
    }


def read_progress(proc: subprocess.Popen, started: float) -> tuple[dict[int, float], list[str]]:
    """Read a run's output to its end: when each round's progress line arrived (seconds since ``started``;
    round 0 for initialisation) and the last 30 lines.

    Args:
        proc: the run, started with ``stdout=PIPE`` in text mode.
        started: its ``time.perf_counter()`` at launch.
    """
    marks: dict[int, float] = {}
    tail: list[str] = []
    assert proc.stdout is not None  # started with stdout=PIPE
    for line in proc.stdout:
        tail = (tail + [line])[-30:]
        match = PROGRESS.match(line)
        if match:
            marks[0 if match.group(1) == "init" else int(match.group(2))] = time.perf_counter() - started
    return marks, tail


def run_one(k: int, engine: str, rounds: int, workdir: Path, num_nodes: int | None = None) -> dict:
    """One ``fedalign run`` of K = ``k`` on ``engine``, its output under ``workdir/<engine>-<k>``: its times
    and the peak resident set of its process tree (``num_nodes``: the graph's size, default 20 per client)."""
    config = workdir / f"k{k}.yaml"
    config.write_text(yaml.safe_dump(experiment(k, rounds, num_nodes)))
    cmd = [
        sys.executable,
        "-m",
        "fedalign_flower.cli",
        "run",
        str(config),
        "--engine",
        engine,
        "--set",
        f"output.dir={workdir / f'{engine}-{k}'}",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=common.REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    marks, tail = read_progress(proc, started)
    proc.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0 or 0 not in marks:
        return {"clients": k, "engine": engine, "error": "".join(tail)[-2000:]}
    steps = [marks[r] - marks[r - 1] for r in range(2, rounds + 1) if r in marks and r - 1 in marks]
    return {
        "clients": k,
        "engine": engine,
        "rounds": rounds,
        "wall_seconds": round(wall, 1),
        "startup_to_round0_seconds": round(marks[0], 1),
        "round_median_seconds": round(common.median(steps), 3) if steps else None,
        "round_max_seconds": round(max(steps), 3) if steps else None,
        "peak_rss_mib": round(peak[0]),
        "rounds_timed": len(steps),
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--engines", nargs="+", choices=("inprocess", "flower"), default=["inprocess", "flower"])
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    clients, rounds = ([3], 5) if args.smoke else (args.clients, args.rounds)
    out = common.out_dir(args, NAME)
    results: dict[str, Any] = {"machine": common.machine(1), "runs": []}
    with tempfile.TemporaryDirectory(prefix="fedalign-many-") as tmp:
        for k in clients:
            for engine in args.engines:
                result = run_one(k, engine, rounds, Path(tmp))
                results["runs"].append(result)
                print(
                    f"[many-clients] K={k} {engine}: "
                    + (
                        f"FAILED\n{result['error']}"
                        if "error" in result
                        else f"start-up to round 0 {result['startup_to_round0_seconds']} s, round median "
                        f"{result['round_median_seconds']} s (max {result['round_max_seconds']}), peak RSS "
                        f"{result['peak_rss_mib']} MiB, wall {result['wall_seconds']} s"
                    ),
                    flush=True,
                )
    rows = [
        [
            str(r["clients"]),
            r["engine"],
            *(
                ("failed", "", "", "")
                if "error" in r
                else (
                    f"{r['startup_to_round0_seconds']} s",
                    f"{r['round_median_seconds']} s",
                    f"{r['peak_rss_mib']} MiB",
                    f"{r['wall_seconds']} s",
                )
            ),
        ]
        for r in results["runs"]
    ]
    table = common.md_table(["K", "engine", "start-up to round 0", "round (median)", "peak RSS (tree)", "wall"], rows)
    (out / "results.json").write_text(json.dumps(common.with_provenance(results), indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}", file=sys.stderr)
    print(table)
    return 1 if any("error" in r for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
