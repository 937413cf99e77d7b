"""Helpers shared by the benchmark scripts: arguments, machine facts, timers, output files.

Every benchmark is ``python -m bench.<name> [--smoke] [--out DIR] [--threads N]``
and writes ``results.json`` and ``table.md`` (and ``plot.png`` where a plot
helps) into ``--out`` (default ``results/benchmarks/<name>/``; with ``--smoke`` a new
temporary folder, so that a smoke run never replaces the committed figures).
Every figure is stored with the 1-minute load average of the machine at the
time it was taken (the development machine is shared), so a reader can tell
a quiet measurement from a busy one. Every ``results.json`` holds ``provenance``
(:func:`fedalign.provenance.provenance`: revision, dirty flag, versions, machine,
command line; :func:`with_provenance`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedalign.outputs import json_safe
from fedalign.provenance import WRITTEN_FOLDERS, provenance

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "benchmarks"


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The common command line: ``--smoke``, ``--out``, ``--threads``."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    p.add_argument(
        "--smoke", action="store_true", help="tiny synthetic graphs, a few seconds: checks the benchmark runs (CI)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default results/benchmarks/{name}/; with --smoke a temporary folder)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the machine is shared; figures say which)",
    )
    return p


def out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else (``--smoke``) a new temporary folder, else ``results/benchmarks/<name>``: created."""
    return output_folder(args.out, args.smoke, RESULTS / name, name)


def output_folder(out: str | Path | None, smoke: bool, default: Path, name: str) -> Path:
    """Where a benchmark writes: ``out`` if given; a smoke run without it, a new temporary folder (never
    the committed results); else ``default``. Created."""
    if out is not None:
        path = Path(out)
    elif smoke:
        path = Path(tempfile.mkdtemp(prefix=f"fedalign-{name}-smoke-"))
    else:
        path = default
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_threads(threads: int) -> None:
    """Pin torch (and BLAS/OpenMP in child processes) to ``threads`` threads."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def load() -> float:
    """The 1-minute load average now."""
    return round(os.getloadavg()[0], 2)


def uptime() -> str:
    """``uptime``'s output (time, load averages over 1, 5, 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """The commit the benchmark ran on, with ``+dirty`` when the working tree had changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        written = [f":(exclude){folder}" for folder in WRITTEN_FOLDERS]  # what benchmarks write is not code
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *written],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(threads: int) -> dict[str, Any]:
    """Facts about where the figures were taken."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
        "gpu_note": None if gpu else "no GPU on this machine, and no GPU device was lent to this task: CPU only",
        "uptime_at_start": uptime(),
        "git": git_revision(),
        "command": " ".join([Path(sys.executable).name, "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class Timer:
    """Accumulates wall seconds of the calls it wraps (``timer.wrap(fn)``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed

    def take(self) -> float:
        """Seconds accumulated since the last ``take``; resets."""
        seconds, self.seconds, self.calls = self.seconds, 0.0, 0
        return seconds


def instrument(client) -> dict[str, Timer]:
    """Time a :class:`~fedalign.client.Student`'s ``evaluate`` and ``release``
    (wrapped on the instance, so ``train``'s own call to ``evaluate`` is timed too)."""
    timers = {"evaluate": Timer(), "release": Timer()}
    client.evaluate = timers["evaluate"].wrap(client.evaluate)
    client.release = timers["release"].wrap(client.release)
    return timers


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def median(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x) (the exponent b in y ~ x^b); None with < 2 points."""
    import numpy as np

    pts = [(a, b) for a, b in zip(x, y, strict=True) if a and b and a > 0 and b > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats are written as given (format them first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits ('-' for None/NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def with_provenance(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with ``provenance`` (this process's revision, versions, machine, command line) added last.

    Args:
        results: a benchmark's results (a ``provenance`` key of its own is kept)."""
    return {**results, "provenance": results.get("provenance") or provenance()}


def write_outputs(out: Path, results: dict[str, Any], markdown: str) -> None:
    """``results.json`` (with :func:`with_provenance`) and ``table.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(json_safe(with_provenance(results)), indent=2) + "\n")
    (out / "table.md").write_text(markdown.rstrip() + "\n")
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}", file=sys.stderr)


def data_root() -> str:
    """The real-data root: ``$FEDALIGN_DATA_ROOT``, else ``../shared/data`` beside the project."""
    return os.environ.get("FEDALIGN_DATA_ROOT", str(REPO.parent / "shared" / "data"))
