"""Talking to a SuperLink through the ``flwr`` CLI: connections, SuperNode registration, submitting runs
and reading their real status (``flwr run`` exits 0 once a run is submitted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w

from fedalign.provenance import declared_revision

from .commands import run_config
from .environment import PROJECT_DIR, DeployError, tool


class FlwrError(DeployError):
    """``flwr`` said no. ``reason``: its message, cleaned; ``flower_code``: Flower's error code, if it gave one."""

    def __init__(self, message: str, *, reason: str = "", flower_code: int | None = None, code: int = 1) -> None:
        super().__init__(message, code=code)
        self.reason = reason
        self.flower_code = flower_code


class SuperLinkUnavailable(FlwrError):
    """Nothing answers at the connection's address (the SuperLink is stopped, or the address is wrong)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FLOWER_CODE = re.compile(r"\[code: (\d+)\]")
_NOISE = (
    "Using SuperLink",
    "Listing all runs",
    "Displaying information for run",
    "For more information, visit",
    "Exit Code:",
    "Error",
)


def flwr_reason(text: str) -> str:
    """What a ``flwr`` error message says, on one line: no colours, boxes, "Using SuperLink" or links."""
    lines = []
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip().strip("╭╮╰╯│─").strip()
        line = re.sub(r"^(ERROR|WARNING|INFO)\s*:\s*", "", line)
        if line and not line.startswith(_NOISE):
            lines.append(line)
    return " ".join(" ".join(lines).split()) or "no message"


def _flwr_json(args: list[str], env: dict[str, str], timeout: float = 180.0) -> dict:
    """Run ``flwr ARGS --format json`` from the project folder; its JSON answer, or :class:`FlwrError`.

    ``flwr`` exits 0 with ``{"success": false, "error-message": ...}`` for most refusals, and non-zero
    with its message on stderr for others; both become one line (``flower_code`` = Flower's code).
    """
    cmd = [tool("flwr"), *args, "--format", "json"]
    what = "flwr " + " ".join(a for a in args[:2] if not a.startswith("/"))
    try:
        proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise FlwrError(f"{what}: no answer after {timeout:.0f}s", reason="timeout") from error
    out = proc.stdout
    try:
        answer = json.loads(out[out.index("{") :])
    except ValueError:
        answer = {"success": False}
    if proc.returncode == 0 and answer.get("success"):
        return answer
    reason = flwr_reason(str(answer.get("error-message") or "") or proc.stderr or out)
    code = _FLOWER_CODE.search(reason)
    kind = SuperLinkUnavailable if "Connection to the SuperLink is unavailable" in reason else FlwrError
    return_code = f" (exit {proc.returncode})" if proc.returncode else ""
    raise kind(f"{what} failed{return_code}: {reason}", reason=reason, flower_code=int(code.group(1)) if code else None)


NODE_REFUSED = 2004  # Flower's FLEET_NODE_ACTIVATION_FAILED
NODE_REFUSED_HINT = (
    "the SuperLink refused this SuperNode (Flower code 2004: its public key is not registered there, or a node "
    "with this key still shows online): register the key (python -m deploy register <connection> <key>.pub; a "
    "SuperLink restarted without --database has forgotten every registration), or, when restarting a node that "
    "just stopped, wait until `flwr supernode ls <connection>` shows it offline (about a minute) and start it again"
)


def explain_flower_log(text: str) -> str | None:
    """A one-line hint for a known Flower refusal in a SuperNode's output, else None."""
    return NODE_REFUSED_HINT if f"[code: {NODE_REFUSED}]" in _ANSI.sub("", text) else None


def flower_config_path(flwr_home: str | Path | None = None) -> Path:
    home = flwr_home or os.environ.get("FLWR_HOME") or Path.home() / ".flwr"
    return Path(home).expanduser() / "config.toml"


def write_connection(
    name: str,
    address: str,
    *,
    root_certificates: str | Path | None = None,
    insecure: bool = False,
    flwr_home: str | Path | None = None,
    default: bool = False,
) -> Path:
    """Add (or replace) ``[superlink.<name>]`` in ``$FLWR_HOME/config.toml``: where ``flwr`` finds the SuperLink.

    With ``root_certificates`` the CLI checks the SuperLink's certificate
    against that CA; without it (and not ``insecure``) against the system's CAs.
    """
    path = flower_config_path(flwr_home)
    if path.exists():
        data = tomllib.loads(path.read_text())
    else:
        try:  # keep flwr's own default connections (`local` simulation, ...)
            from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML

            data = tomllib.loads(DEFAULT_FLOWER_CONFIG_TOML)
        except ImportError:
            data = {}
    superlink = data.setdefault("superlink", {})
    conn: dict[str, object] = {"address": address}
    if insecure:
        conn["insecure"] = True
    elif root_certificates is not None:
        conn["root-certificates"] = str(Path(root_certificates).expanduser().resolve())
    superlink[name] = conn
    if default or "default" not in superlink:
        superlink["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


def connection_address(connection: str, env: dict[str, str]) -> str | None:
    """The address of ``[superlink.<connection>]`` in the config.toml that ``env``'s ``flwr`` reads."""
    try:
        return tomllib.loads(flower_config_path(env.get("FLWR_HOME")).read_text())["superlink"][connection]["address"]
    except (OSError, KeyError, TypeError, ValueError):
        return None


def register(public_key: str | Path, connection: str, env: dict[str, str]) -> int:
    """``flwr supernode register``: allow the SuperNode holding this key to join; returns its node id."""
    path = Path(public_key).expanduser().resolve()
    if not path.is_file():
        raise DeployError(f"{path} does not exist: give the public key (.pub) made by python -m deploy keys")
    try:
        return int(_flwr_json(["supernode", "register", str(path), connection], env)["node-id"])
    except FlwrError as error:
        if error.flower_code == 23:  # PUBLIC_KEY_ALREADY_IN_USE
            raise FlwrError(
                f"{path} is already registered with {connection}: nothing to do (its node keeps its id); "
                f"to replace it, unregister its node first (flwr supernode ls {connection}, then "
                f"flwr supernode unregister <node-id> {connection})",
                reason=error.reason,
                flower_code=23,
                code=2,
            ) from None
        raise


def supernodes(connection: str, env: dict[str, str]) -> dict[int, str]:
    """Node id -> status (``registered``, ``online``, ``offline``, ...) from ``flwr supernode ls``."""
    nodes = _flwr_json(["supernode", "ls", connection], env)["nodes"]
    return {int(n["node-id"]): n["status"] for n in nodes}


def wait_for_nodes(
    connection: str,
    env: dict[str, str],
    *,
    node_ids: list[int] | None = None,
    count: int = 0,
    status: str = "online",
    timeout: float = 120.0,
    poll: float = 3.0,
) -> dict[int, str]:
    """Until the given nodes (or ``count`` nodes) have ``status``; returns the listing."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = supernodes(connection, env)
        have = [n for n, s in nodes.items() if s == status]
        if (node_ids is not None and all(nodes.get(n) == status for n in node_ids)) or (
            node_ids is None and len(have) >= count
        ):
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"SuperNodes not {status} after {timeout:.0f}s: {nodes}")
        time.sleep(poll)


def submit(
    connection: str,
    env: dict[str, str],
    *,
    config: str = "simulations/quickstart.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    resume: str | None = None,
    app: str | Path = PROJECT_DIR,
) -> str:
    """``flwr run <app> <connection> --run-config ...``; returns the run id (the run is only submitted)."""
    value = run_config(config, overrides, resume, revision=declared_revision(app))
    return str(_flwr_json(["run", str(app), connection, "--run-config", value], env)["run-id"])


def run_status(connection: str, run_id: str, env: dict[str, str]) -> dict:
    """The run's entry in ``flwr ls --run-id``: ``status`` (``finished:completed``, ``finished:failed``,
    ``running``, ...), ``status-details``, timings."""
    runs = _flwr_json(["ls", connection, "--run-id", str(run_id)], env)["runs"]
    return next(r for r in runs if str(r["run-id"]) == str(run_id))


class RunLost(DeployError):
    """The SuperLink stopped answering while a run was being waited for (``run_id``, ``last_status``)."""

    def __init__(self, message: str, *, run_id: str, last_status: str | None) -> None:
        super().__init__(message, code=1)
        self.run_id, self.last_status = run_id, last_status


class RunTimeout(DeployError, TimeoutError):
    """The run had not finished when the caller's ``timeout`` ran out (it goes on)."""


def wait_for_run(
    connection: str,
    run_id: str,
    env: dict[str, str],
    *,
    timeout: float | None = None,
    poll: float = 5.0,
    progress: bool = False,
    retries: int = 4,
) -> dict:
    """Poll ``flwr ls`` until the run has finished; returns its final entry.

    A failed poll is tried again (every ``poll`` s) up to ``retries`` times in a row, saying so on stderr;
    then :class:`RunLost`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    failures = 0
    while True:
        try:
            run = run_status(connection, run_id, env)
        except (FlwrError, StopIteration) as error:  # SuperLink gone, restarted (without the run), overloaded
            failures += 1
            if isinstance(error, SuperLinkUnavailable):
                reason = f"nothing answers at {connection_address(connection, env) or connection}"
            else:
                reason = error.reason if isinstance(error, FlwrError) else f"run {run_id} is not listed"
            if failures > retries:
                raise RunLost(
                    f"lost the SuperLink while waiting for run {run_id} (last status: {last or 'unknown'}; "
                    f"{failures} polls failed: {reason})",
                    run_id=run_id,
                    last_status=last,
                ) from None
            print(
                f"run {run_id}: poll {failures} of {retries + 1} failed ({reason}); trying again in {poll:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(poll)
            continue
        failures = 0
        if progress and run["status"] != last:
            print(f"run {run_id}: {run['status']}", file=sys.stderr, flush=True)
        last = run["status"]
        if run["status"].startswith("finished"):
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise RunTimeout(
                f"run {run_id} not finished after {timeout:.0f}s ({run['status']}); it goes on: "
                f"watch it with flwr ls {connection} --run-id {run_id}",
                code=1,
            )
        time.sleep(poll)


def save_run_log(
    connection: str, run_id: str, env: dict[str, str], path: str | Path, timeout: float = 60.0
) -> Path | None:
    """Write the run's log (``flwr log RUN_ID CONNECTION --show``) to ``path``; None when it cannot be read."""
    try:
        proc = subprocess.run(
            [tool("flwr"), "log", str(run_id), connection, "--show"],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_ANSI.sub("", proc.stdout))
    return path
