"""Peak resident memory of a whole process tree, and a memory cap that stops a tree going past it.

:func:`run_measured` starts a command, samples the summed resident set of the process and all its
descendants (psutil where installed, else ``/proc``) every ``interval`` seconds, kills the whole tree
(its process group) when the sum passes ``cap_mib``, and reaps the child with ``os.wait4``, whose
``ru_maxrss`` is the largest resident set of the child or of any descendant it waited for. The peak
reported is the larger of the two: sampling sees every process of the tree at once (Ray's workers
included) but may miss a spike shorter than ``interval``; ``ru_maxrss`` sees every spike of the
largest single process, not the sum — and, on Linux, it also keeps the high-water mark of the memory
the child was forked with (exec does not reset it), so a child of a large parent reports at least the
parent's resident set at the fork: ``ru_maxrss`` is an upper bound, the sampled sum the measurement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # optional: the /proc fallback below measures the same thing
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


def tree_rss_mib(root: int) -> float:
    """Summed resident set of ``root`` and all its descendants, MiB (0 when ``root`` is gone).

    Args:
        root: the process id at the top of the tree.
    """
    if psutil is not None:
        try:
            top = psutil.Process(root)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20
    return _proc_tree_rss_mib(root)


def _proc_tree_rss_mib(root: int) -> float:
    """:func:`tree_rss_mib` from ``/proc/<pid>/stat`` (Linux), without psutil."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


@dataclass
class Measured:
    """What :func:`run_measured` saw.

    Attributes:
        returncode: the command's exit status (negative: killed by that signal).
        stdout, stderr: its output.
        wall_s: seconds from start to exit.
        peak_tree_mib: the largest sampled sum of the tree's resident sets.
        maxrss_mib: ``ru_maxrss`` of the reaped child (its largest process, spikes included).
        capped: the tree passed the cap and was killed.
        samples: how many times the tree was sampled.
    """

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_tree_mib: float
    maxrss_mib: float
    capped: bool = False
    samples: int = 0
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def peak_mib(self) -> float:
        """The peak of the tree: the larger of the sampled sum and the child's ``ru_maxrss``."""
        return max(self.peak_tree_mib, self.maxrss_mib)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _watch(
    proc: subprocess.Popen,
    state: dict[str, Any],
    done: threading.Event,
    started: float,
    cap_mib: float | None,
    timeout: float | None,
    interval: float,
) -> None:
    """Sample ``proc``'s tree every ``interval`` s into ``state`` (peak MiB, samples) until ``done``; kill the
    tree and say so in ``state`` (``capped``, ``timed_out``) past ``cap_mib`` or ``timeout`` s since ``started``."""
    while not done.is_set():
        rss = tree_rss_mib(proc.pid)
        state["peak"], state["samples"] = max(state["peak"], rss), state["samples"] + 1
        if cap_mib is not None and rss > cap_mib:
            state["capped"] = True
            _kill_group(proc)
            return
        if timeout is not None and time.perf_counter() - started > timeout:
            state["timed_out"] = True
            _kill_group(proc)
            return
        done.wait(interval)


def run_measured(
    cmd: list[str],
    cwd: Path,
    env: dict | None = None,
    cap_mib: float | None = None,
    timeout: float | None = None,
    interval: float = 0.1,
) -> Measured:
    """Run ``cmd`` in its own process group, measuring the tree's peak memory; kill it past ``cap_mib``.

    Args:
        cmd: the command line.
        cwd: its working folder.
        env: its environment (None: this process's).
        cap_mib: kill the whole tree when its summed resident set passes this many MiB (None: no cap).
        timeout: kill the tree after this many seconds (None: no limit).
        interval: seconds between samples of the tree.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    state: dict[str, Any] = {"peak": 0.0, "samples": 0, "capped": False, "timed_out": False}
    done = threading.Event()

    outputs: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda n=n, s=s: outputs.__setitem__(n, s.read()), daemon=True)
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    watcher = threading.Thread(
        target=_watch, args=(proc, state, done, started, cap_mib, timeout, interval), daemon=True
    )
    for thread in (*readers, watcher):
        thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for thread in (*readers, watcher):
        thread.join()
    _kill_group(proc)  # any grandchild left behind
    return Measured(
        proc.returncode,
        outputs.get("stdout", ""),
        outputs.get("stderr", ""),
        time.perf_counter() - started,
        state["peak"],
        usage.ru_maxrss / 1024,
        state["capped"],
        state["samples"],
        state["timed_out"],
    )
