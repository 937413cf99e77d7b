"""The README's main job, timed: wall seconds of ``fedalign run simulations/quickstart.yaml`` on each engine.

    python -m bench.quickstart                # 2 runs per engine -> results/benchmarks/quickstart/
    python -m bench.quickstart --smoke        # 1 in-process run of 1 round (a temporary folder)

Each run is a fresh process (``.venv``'s ``fedalign`` console script, as the README runs it), so the
time includes Python start-up and imports, and for ``--engine flower`` Flower's Simulation Runtime
(Ray) starting up; its run folder goes to a temporary ``output.dir`` and its exit status is checked.
The 1-minute load average is recorded before and after each run: the development machine is shared,
and a busy machine makes every figure larger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import common
from .common import REPO, fmt, md_table

NAME = "quickstart"
CONFIG = "simulations/quickstart.yaml"


def fedalign_command() -> list[str]:
    """The ``fedalign`` console script beside this interpreter (the README's ``.venv/bin/fedalign``), else
    ``python -m fedalign_flower.cli``."""
    script = Path(sys.executable).with_name("fedalign")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fedalign_flower.cli"]


def time_run(engine: str, extra: list[str], threads: int) -> dict[str, Any]:
    """One timed run of the quickstart on ``engine`` in a fresh process; raises if it fails.

    Args:
        engine: ``flower`` or ``inprocess``.
        extra: further ``--set`` overrides (the smoke run shortens the job).
        threads: OMP/MKL threads of the child (torch's intra-op threads follow them).
    """
    out = Path(tempfile.mkdtemp(prefix="fedalign-quickstart-"))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "FLWR_HOME": str(out / "flwr-home"),
    }
    command = fedalign_command() + ["run", CONFIG, "--engine", engine]
    for override in [f"output.dir={out}", *extra]:
        command += ["--set", override]
    before = common.load()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = common.load()
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return {"engine": engine, "seconds": seconds, "load_before": before, "load_after": after}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.quickstart [--smoke] [--out DIR] [--threads N] [--repeats R]``.

    Args:
        argv: the arguments (default: the process's).
    """
    parser = common.parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine (default 2)")
    args = parser.parse_args(argv)
    out = common.out_dir(args, NAME)
    engines = ["inprocess"] if args.smoke else ["inprocess", "flower"]
    extra = ["federation.rounds=1"] if args.smoke else []
    runs = [
        time_run(engine, extra, args.threads) for engine in engines for _ in range(1 if args.smoke else args.repeats)
    ]
    rows = []
    for engine in engines:
        mine = [r for r in runs if r["engine"] == engine]
        seconds = [r["seconds"] for r in mine]
        loads = [r["load_before"] for r in mine] + [r["load_after"] for r in mine]
        rows.append(
            [
                f"`fedalign run {CONFIG} --engine {engine}`",
                len(mine),
                fmt(min(seconds)),
                fmt(common.median(seconds)),
                f"{min(loads):.1f}–{max(loads):.1f}",
            ]
        )
    markdown = "\n".join(
        [
            "# The README's main job, timed",
            "",
            f"Written by `python -m bench.quickstart`. Machine: {common.cpu_model()}, {os.cpu_count()} cores, no GPU "
            f"used; {args.threads} thread(s) per run. Wall seconds of a fresh process each (start-up and imports "
            "included). The load column is the 1-minute load average before/after the runs: above the core count, "
            "other work shared the machine and the figures are slower than on a quiet one.",
            "",
            md_table(["command", "runs", "fastest s", "median s", "load"], rows),
        ]
    )
    common.write_outputs(
        out,
        {
            "benchmark": NAME,
            "smoke": args.smoke,
            "config": CONFIG,
            "runs": runs,
            "machine": common.machine(args.threads),
        },
        markdown,
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
