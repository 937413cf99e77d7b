"""What the ``python -m deploy`` commands share: printing and running command lines, checking files."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from . import launch
from .launch import DeployError

DEFAULT_CONFIG = "simulations/quickstart.yaml"


def print_command(line: str) -> None:
    print(f"$ {line}", file=sys.stderr, flush=True)


def relay_stderr_with_hint() -> None:
    """Route this process's stderr (Flower's, once exec'd) through a forked relay that copies it unchanged and,
    when Flower refused the node (code 2004), ends it with one line saying what to do. The relay ignores
    SIGINT/SIGTERM (the SuperNode handles those) and ends when the last writer closes its end."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the relay
        try:
            os.close(write_fd)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            pending, hint, said = b"", None, False
            while chunk := os.read(read_fd, 65536):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(2, view) :]
                if said:
                    continue
                pending = (pending + chunk)[-4096:]
                text = pending.decode(errors="replace")
                hint = hint or launch.explain_flower_log(text)
                if hint and "For more information" in text.split("[code: ")[-1]:  # the end of Flower's exit message
                    os.write(2, f"deploy supernode: {hint}\n".encode())
                    said = True
            if hint and not said:
                os.write(2, f"deploy supernode: {hint}\n".encode())
        finally:
            os._exit(0)
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)


def exec_command(cmd: list[str], flwr_home: str | None, dry_run: bool, relay: bool = False) -> int:
    """Print the command (complete: it runs as printed); unless ``dry_run``, replace this process with it
    (same PID: signals reach Flower). ``relay``: explain Flower's node refusals on stderr."""
    variables = launch.flower_env_vars(flwr_home)
    line = launch.command_line(cmd, variables)
    if dry_run:
        print(line)
        return 0
    print_command(line)
    print(f"PID {os.getpid()}", file=sys.stderr, flush=True)
    if relay:
        relay_stderr_with_hint()
    os.execvpe(cmd[0], cmd, {**os.environ, **variables})
    return 1  # not reached


def need_file(path: str | None, what: str, fix: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise DeployError(f"{what} {Path(path).expanduser().resolve()} does not exist: {fix}")


@contextmanager
def reaching(connection: str, env: dict[str, str], d: launch.Deployment | None = None):
    """Turn "the SuperLink is unavailable" into one line that says how to bring it back."""
    try:
        yield
    except launch.SuperLinkUnavailable:
        if d is not None:
            state = "is not running" if not d.alive() else "does not answer (its SuperLink may have died)"
            stop = [["stop", "--workdir", d.workdir]] if d.alive() else []
            raise DeployError(
                f"the local deployment in {d.workdir} {state}: nothing answers at {d.address}; "
                f"start it again: {launch.deploy_line(*stop, d.local_command()[3:])}",
                code=1,
            ) from None
        address = launch.connection_address(connection, env) or "its address"
        raise DeployError(
            f"cannot reach the SuperLink of connection {connection} at {address}: start it "
            f"(python -m deploy superlink ... on its machine), or correct the address "
            f"(python -m deploy connection {connection} --address HOST:PORT ...)",
            code=1,
        ) from None
