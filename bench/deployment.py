"""Deployment speed: a real SuperLink and SuperNodes on loopback (TLS + SuperNode authentication).

``python -m bench.deployment`` starts ``python -m deploy local`` (2 SuperNodes), runs each case
as a real Flower run and reports, per case:

* the time per round: per training round, the longest time from the ServerApp sending a
  request to it holding the reply (``seconds`` in ``rounds.jsonl``); median and range;
* the start-up of each message in the ClientApp's fresh process, from the clients' own
  timing logs (``client-<i>-timing.jsonl`` in each node's state dir): ``before_handler``
  (process start, Python, Flower and fedalign imports, Flower's set-up), ``load`` (the
  client's data and student, its checkpoint), ``work`` (training and release), ``total``
  (the handler, from the request to the reply made, including the hand-over to the node's
  worker when there is one); the overhead per message is everything but the work,
  ``before_handler + total - work``.

Cases: ``quickstart`` (the built-in default), ``quickstart-simultaneous`` (every client
trains every round; the round is compared with its slowest client's time in its process,
``round_minus_slowest_client_seconds``) and ``photo`` (Amazon Photo, community split,
public share 0.2; needs ``FEDALIGN_DATA_ROOT``, skipped without it). ``--smoke`` runs the
quickstart for 3 rounds (CI). Writes ``results.json`` to ``--out`` (default
``results/benchmarks/deployment``; with ``--smoke`` a temporary folder, never the committed results).
Round times depend on Flower's fixed 3 s SuperNode poll
(``time.sleep(3)`` in ``flwr/supernode/start_client_internal.py`` when no message is waiting;
no setting changes it in flwr 1.41).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy import launch

from .common import RESULTS, machine, output_folder, with_provenance

CASES: dict[str, list[str]] = {
    "quickstart": [],
    "quickstart-simultaneous": ["federation.schedule=simultaneous"],
    "photo": [
        "data.name=amazon-photo",
        "data.synthetic={}",
        "partition.scheme=community",
        "partition.public_fraction=0.2",
    ],
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _median_range(values: list[float]) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def measure(deployment: launch.Deployment, case: str, rounds: int, out: Path) -> dict:
    """One Flower run of ``case`` on ``deployment``; its round times and per-message start-up."""
    run_out = out / "runs" / case
    overrides = [*CASES[case], f"federation.rounds={rounds}", f"output.dir={run_out.resolve()}", "output.plot=false"]
    started = time.monotonic()
    run_id = launch.submit(deployment.connection, deployment.env, overrides=overrides)
    run = launch.wait_for_run(deployment.connection, run_id, deployment.env, timeout=1800, poll=2.0)
    wall = time.monotonic() - started
    if run["status"] != "finished:completed":
        raise RuntimeError(f"case {case}: run {run_id} ended {run['status']} ({run.get('status-details')})")
    (run_dir,) = [p for p in run_out.iterdir() if p.is_dir()]
    rows = _rows(run_dir / "rounds.jsonl")
    per_round: dict[int, float] = {}
    for row in rows:
        if row["round"] > 0 and row["status"] == "ok":
            per_round[row["round"]] = max(per_round.get(row["round"], 0.0), row["seconds"])
    timings = [
        t
        for log in Path(deployment.workdir).glob(f"node-*/state/{run_dir.name}/client-*-timing.jsonl")
        for t in _rows(log)
        if t["type"] == "train"
    ]
    # everything but the work: process start and imports, loading, the hand-over to a worker, the reply
    overhead = [t["before_handler"] + t["total"] - t["work"] for t in timings if t["before_handler"] is not None]
    slowest: dict[int, float] = {}  # per round, the longest a client spent in its ClientApp process
    for t in timings:
        if t["before_handler"] is not None:
            slowest[t["round"]] = max(slowest.get(t["round"], 0.0), t["before_handler"] + t["total"])
    beyond = [per_round[r] - slowest[r] for r in per_round if r in slowest]
    return {
        "case": case,
        "rounds": rounds,
        "run_wall_seconds": round(wall, 1),
        "round_seconds": _median_range(list(per_round.values())),
        "message": {
            key: _median_range([t[key] for t in timings if t.get(key) is not None])
            for key in ("before_handler", "imports", "load", "work", "total")
        },
        "overhead_seconds": _median_range(overhead),
        "round_minus_slowest_client_seconds": _median_range(beyond),
        "fresh_process_per_message": all(t["fresh_process"] for t in timings) if timings else None,
        "answered_by_worker": sum(t["worker"] for t in timings),
        "messages": len(timings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.deployment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="quickstart only, 3 rounds (CI)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="SuperNodes without their warm worker: every message's process loads everything",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default results/benchmarks/deployment; with --smoke a temporary folder)",
    )
    a = parser.parse_args(argv)
    cases, rounds = (["quickstart"], 3) if a.smoke else (a.cases, a.rounds)
    if "photo" in cases and not os.environ.get("FEDALIGN_DATA_ROOT"):
        print("photo: skipped (set FEDALIGN_DATA_ROOT to the folder holding Amazon/Photo/raw)", file=sys.stderr)
        cases = [c for c in cases if c != "photo"]
    out = output_folder(a.out, a.smoke, RESULTS / "deployment", "deployment")
    out = out / ("without-worker" if a.no_worker else "")
    out.mkdir(parents=True, exist_ok=True)
    # torch_threads 0: the ClientApp processes keep torch's default
    results: dict[str, Any] = {
        "machine": machine(threads=0),
        "transport": "TLS + SuperNode authentication, 127.0.0.1",
        "clients": 2,
        "workers": not a.no_worker,
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="fedalign-deploy-bench-") as workdir:
        deployment = launch.start_local(
            workdir, 2, data_root=os.environ.get("FEDALIGN_DATA_ROOT"), workers=not a.no_worker
        )
        try:
            for case in cases:
                result = measure(deployment, case, rounds, Path(workdir))
                results["cases"].append(result)
                r, m, o = result["round_seconds"], result["message"], result["overhead_seconds"]
                print(
                    f"{case}: round median {r['median']} s [{r['min']}, {r['max']}] over {r['n']} rounds; "
                    f"per message: before handler {m['before_handler']['median']} s (imports "
                    f"{m['imports']['median']}), load {m['load']['median']}, work {m['work']['median']}, "
                    f"handler total {m['total']['median']}; overhead (all but work) {o['median']} s; "
                    f"{result['answered_by_worker']}/{result['messages']} answered by the node's worker; round minus "
                    f"slowest client {result['round_minus_slowest_client_seconds']['median']} s",
                    flush=True,
                )
        finally:
            deployment.stop(grace=10)
    (out / "results.json").write_text(json.dumps(with_provenance(results), indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
