"""The processes a deployment starts: starting them tagged (``FEDALIGN_DEPLOY_TAG``), finding them again
by tag, command line or environment (Linux ``/proc``), and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from .environment import PROJECT_DIR, TAG_VAR, command_line, flower_env, flower_env_vars


@dataclass
class Process:
    """One process started by :func:`start` (a SuperLink or a SuperNode)."""

    role: str
    pid: int
    command: list[str]
    log: str
    env: dict[str, str] = field(default_factory=dict)  # variables set on top of flower_env(), its tag among them
    cwd: str = str(PROJECT_DIR)
    netns: str | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}

    @property
    def shell(self) -> str:
        """The command as one shell line that runs as printed (folder, PATH, Flower's variables, the
        deployment's tag: :func:`command_line`), e.g. to restart it by hand in the foreground."""
        return command_line(self.command, {**flower_env_vars(), **self.env}, cwd=self.cwd, netns=self.netns)


def start(
    role: str,
    command: list[str],
    *,
    tag: str,
    log: str | Path,
    env: dict[str, str] | None = None,
    cwd: str | Path = PROJECT_DIR,
    netns: str | None = None,
) -> Process:
    """Start ``command`` in the background (own session, output to ``log``), tagged ``<tag>:<role>``.

    ``env`` holds variables added to :func:`flower_env`; ``netns`` runs it in
    that network namespace (``ip netns exec``, which keeps the PID).
    """
    env = {**(env or {}), TAG_VAR: f"{tag}:{role}"}  # kept in Process.env: a printed restart is found by stop too
    full_env = {**flower_env(), **env}
    argv = (["ip", "netns", "exec", netns] if netns else []) + command
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Process(role, popen.pid, command, str(log), env, str(cwd), netns, popen)


def restart(process: Process, tag: str) -> Process:
    """Start the same command again (same role, log appended)."""
    env = {k: v for k, v in process.env.items() if k != TAG_VAR}
    return start(process.role, process.command, tag=tag, log=process.log, env=env, cwd=process.cwd, netns=process.netns)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie has exited, only not yet reaped


def processes(tag: str, role: str | None = None) -> set[int]:
    """Live processes tagged ``<tag>:<role>`` (any role when None), and their descendants."""
    if role is not None:
        return processes_with_environ(f"{TAG_VAR}={tag}:{role}".encode())
    return processes_with_environ(f"{TAG_VAR}={tag}:".encode(), prefix=True)


def _process_table() -> dict[int, int]:
    """pid -> parent pid of every live process but this one."""
    me = os.getpid()
    table = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != me:
            st = _stat(int(proc.name))
            if st is not None:
                table[int(proc.name)] = st[1]
    return table


def _with_descendants(found: set[int], parent_of: dict[int, int]) -> set[int]:
    """``found`` and every live descendant of it."""
    found = set(found)
    grew = True
    while grew:  # children that dropped the variable, or were started under another name
        new = {pid for pid, ppid in parent_of.items() if ppid in found and pid not in found}
        found |= new
        grew = bool(new)
    return {pid for pid in found if alive(pid)}


def processes_with_environ(entry: bytes, prefix: bool = False) -> set[int]:
    """Live processes (not this one) whose environment holds ``entry`` (``b"NAME=value"``; with
    ``prefix``, any entry starting with it), and all their descendants."""
    parent_of = _process_table()
    found: set[int] = set()
    for pid in parent_of:
        try:
            variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(entry) if prefix else v == entry for v in variables):
            found.add(pid)
    return _with_descendants(found, parent_of)


def cmdline(pid: int) -> list[str]:
    """A process's arguments ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def processes_with_cmdline(match: Callable[[list[str]], bool]) -> set[int]:
    """Live processes (not this one, nor its ancestors) whose arguments satisfy ``match``, and their descendants."""
    parent_of = _process_table()
    mine, pid = set(), os.getppid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        pid = parent_of.get(pid, 0)
    return _with_descendants({pid for pid in parent_of if pid not in mine and match(cmdline(pid))}, parent_of)


FLOWER_PROGRAMS = frozenset(
    {"flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp"}
)


def is_deploy_process(args: list[str]) -> bool:
    """Whether these arguments are a Flower program's, a fedalign worker's or ``python -m deploy``'s."""
    head = args[:3]
    return (
        bool({Path(a).name for a in head[:2]} & FLOWER_PROGRAMS)
        or "fedalign.client.worker" in head
        or head[1:3] == ["-m", "deploy"]
    )


def describe(pid: int) -> str:
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid}: ?"


def _reap(popens: Sequence[subprocess.Popen | None]) -> None:
    for p in popens:
        if p is not None:
            p.poll()


def kill(
    tag: str, role: str | None = None, *, sig: int = signal.SIGKILL, popens: Sequence[subprocess.Popen | None] = ()
) -> list[int]:
    """Send ``sig`` to every process of ``<tag>:<role>`` (all of ``tag`` when role is None) at once."""
    pids = sorted(processes(tag, role))
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap(list(popens))
        time.sleep(0.1)
    return pids


def stop(tag: str, *, grace: float = 15.0, popens: Sequence[subprocess.Popen | None] = ()) -> list[str]:
    """SIGTERM every process of ``tag``, SIGKILL what is left after ``grace`` s; returns survivors."""
    return stop_processes(lambda: processes(tag), grace=grace, popens=popens)


def stop_processes(
    find: Callable[[], set[int]], *, grace: float = 15.0, popens: Sequence[subprocess.Popen | None] = ()
) -> list[str]:
    """SIGTERM every process ``find()`` returns, SIGKILL what is left after ``grace`` s (asking ``find``
    again each time); returns the survivors, described."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0), (signal.SIGKILL, 10.0)):
        pids = find()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            _reap(list(popens))
            time.sleep(0.2)
    _reap(list(popens))
    return [describe(p) for p in sorted(find())]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return f"--- {path} (last {lines} lines)\n" + "\n".join(text[-lines:])


def wait_for_port(host: str, port: int, process: Process, timeout: float = 60.0) -> None:
    """Until something accepts TCP connections on host:port; fails early if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{process.role} exited with {process.popen.returncode}\n{log_tail(process.log)}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(
        f"{process.role}: nothing listens on {host}:{port} after {timeout:.0f}s\n{log_tail(process.log)}"
    )
