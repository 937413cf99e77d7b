"""Start a Flower SuperLink and SuperNodes for fedalign, launch experiments, stop it all.

The unchanged fedalign ServerApp / ClientApp run on Flower's deployment
runtime (Flower 1.41):

* ``flower-superlink`` serves the Fleet, Control and Runtime APIs on ONE
  HTTPS port (``--host``/``--port``). It starts ``flower-superexec``, which
  starts one ``flwr-serverapp`` per run (the ServerApp, from the app bundle
  ``flwr run`` sends). Run folders are written on the SuperLink's machine.
* ``flower-supernode`` (one per client) connects to that port, pulls
  messages and starts one ``flwr-clientapp`` per message (through its own
  ``flower-superexec``). Its ``--node-config`` says which client it is and
  where its data and checkpoints live: ``partition-id``, ``num-partitions``,
  ``data-root``, ``state-dir`` (read by ``clients/client_app.py``).
* ``flwr run . <connection>`` submits a run; ``flwr ls <connection> --run-id
  ID --format json`` is the only place that says whether it succeeded
  (``flwr run`` exits 0 once the run is submitted).

Security is on unless ``--insecure`` is given: TLS with a certificate made
by :mod:`deploy.certs`, and SuperNode authentication (each SuperNode holds
an EC key pair; its public key is registered with ``flwr supernode
register`` before it may connect).

Every process started here carries ``FEDALIGN_DEPLOY_TAG=<tag>:<role>`` in
its environment, inherited by the processes Flower starts in turn, so
:func:`stop` finds and ends all of them by PID (Linux ``/proc``). The command
lines printed for them (:attr:`Process.shell`) carry the tag too, and
:meth:`Deployment.alive` also finds a Flower process restarted by hand
without it, by the deployment's folder or address on its command line.

Expected failures raise :class:`DeployError`: one line that names the
problem and the fix (``python -m deploy`` prints it, no traceback).

All processes run from the Python environment this module runs in: the
``flower-*`` commands next to ``sys.executable`` are used and put first on
``PATH`` (Flower starts ``flower-superexec`` by name).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomli_w

from fedalign.client.paths import worker_socket
from fedalign.provenance import declared_revision

from . import certs

BIN = Path(sys.executable).parent
PROJECT_DIR = Path(__file__).resolve().parent.parent
TAG_VAR = "FEDALIGN_DEPLOY_TAG"
DEFAULT_PORT = 9093
DEFAULT_WORKDIR = Path.home() / ".cache" / "fedalign" / "deploy" / "local"
LOCAL_CONNECTION = "fedalign-local"
DEPLOYMENT_FILE = "deployment.json"
# How often a SuperNode's (and the SuperLink's) SuperExec asks its own node for a task to start, through
# Flower's FLWR_SUPEREXEC_TASK_POLL_INTERVAL (default 1 s, minimum 0.01 s): a local call, so polling
# often is cheap and starts each message's ClientApp sooner. The SuperNode's own poll of the SuperLink
# (3 s when nothing is waiting) is fixed in flwr 1.41 (``time.sleep(3)`` in
# flwr/supernode/start_client_internal.py); nothing changes it.
SUPEREXEC_POLL_SECONDS = 0.1


def tool(name: str) -> str:
    """A Flower command of this Python environment (falls back to ``PATH``)."""
    exe = BIN / name
    return str(exe) if exe.exists() else name


class DeployError(RuntimeError):
    """An expected failure: ``str()`` is ONE line naming the problem and the fix; ``details`` (logs, ...)
    are shown before it; ``code`` is the exit status of ``python -m deploy``."""

    def __init__(self, message: str, *, details: str = "", code: int = 2) -> None:
        super().__init__(" ".join(str(message).splitlines()))
        self.details = details
        self.code = code


def flower_env_vars(flwr_home: str | Path | None = None) -> dict[str, str]:
    """The variables :func:`flower_env` sets on top of this process's environment: this venv's ``bin``
    first on PATH (Flower starts ``flower-superexec`` by name), no telemetry, no runtime ``pip``/``uv``
    installs of the app's dependencies (the venv already has them), a SuperExec that looks for new
    tasks every :data:`SUPEREXEC_POLL_SECONDS` (Flower's default: 1 s), and ``FLWR_HOME`` if given.
    A printed command line carries them all (:func:`command_line`)."""
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != str(BIN):
        path = f"{BIN}{os.pathsep}{path}" if path else str(BIN)
    env = {"PATH": path,
           "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL",
                                                               str(SUPEREXEC_POLL_SECONDS)),
           "FLWR_TELEMETRY_ENABLED": os.environ.get("FLWR_TELEMETRY_ENABLED", "0"),
           "FLWR_DISABLE_UPDATE_CHECK": os.environ.get("FLWR_DISABLE_UPDATE_CHECK", "1"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).expanduser().resolve())
    return env


def flower_env(flwr_home: str | Path | None = None) -> dict[str, str]:
    """The environment for Flower commands: this process's, plus :func:`flower_env_vars`."""
    return {**os.environ, **flower_env_vars(flwr_home)}


def command_line(command: list[str], env: dict[str, str] | None = None, *, cwd: str | Path | None = None,
                 netns: str | None = None) -> str:
    """``command`` as one shell line that runs as printed, from any shell and folder:
    ``env [-C CWD] VAR=value ... /abs/program args`` (every word quoted with :func:`shlex.quote`).
    Give ``env`` the variables the process needs on top of a plain shell's (:func:`flower_env_vars`)."""
    words = ["env"]
    if cwd is not None:
        words += ["-C", str(cwd)]
    words += [f"{k}={v}" for k, v in (env or {}).items()]
    words += command
    line = shlex.join(words)
    return f"ip netns exec {shlex.quote(netns)} {line}" if netns else line


def deploy_line(*commands: list[str]) -> str:
    """``python -m deploy`` commands as one shell line that runs as printed: from the project folder,
    where ``deploy`` is (``cd /project && /venv/bin/python -m deploy A && ... -m deploy B``)."""
    return " && ".join([f"cd {shlex.quote(str(PROJECT_DIR))}",
                        *(shlex.join([sys.executable, "-m", "deploy", *c]) for c in commands)])


def warn_insecure(what: str) -> None:
    """Say loudly that TLS (and with it SuperNode authentication) is off."""
    bar = "!" * 78
    print(f"{bar}\n!!! INSECURE MODE ({what}): TLS is OFF. Statistics, metrics and the app bundle\n"
          "!!! travel in clear text, and SuperNode authentication is off too (Flower needs\n"
          "!!! TLS for it), so anyone who can reach the SuperLink can join the federation.\n"
          f"!!! Use it only on a trusted network, for debugging.\n{bar}", file=sys.stderr)


def speaks_tls(address: str, timeout: float = 5.0) -> bool | None:
    """Whether the server at ``host:port`` answers a TLS handshake (None: nothing reachable there).

    Only the protocol is probed, not the certificate. A SuperNode started with ``--insecure``
    against a TLS SuperLink (or the other way round) only ever logs "Connection attempt
    failed" and retries; this lets ``deploy supernode`` say why before it starts.
    """
    import ssl

    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            try:
                with context.wrap_socket(raw, server_hostname=host.strip("[]") or None):
                    return True
            except (TimeoutError, ssl.SSLError, ConnectionError):
                return False
    except (OSError, ValueError):
        return None


def tls_mismatch(address: str, insecure: bool) -> str | None:
    """What is wrong when this node's ``insecure`` setting does not match what the SuperLink speaks."""
    tls = speaks_tls(address)
    if tls is True and insecure:
        return (f"the SuperLink at {address} uses TLS, but this SuperNode was asked to connect with --insecure "
                "(it would only retry 'Connection attempt failed' forever): drop --insecure and pass "
                "--ca-cert <the federation's ca.crt> and --key <this node's private key>")
    if tls is False and not insecure:
        return (f"the SuperLink at {address} does not speak TLS (was it started with --insecure?): start it with "
                "its certificate (python -m deploy superlink --certs ...), or, on a trusted network only, "
                "start this SuperNode with --insecure too")
    return None


# ---------------------------------------------------------------- commands


def superlink_command(*, host: str = "0.0.0.0", port: int = DEFAULT_PORT, certs_dir: str | Path | None = None,
                      insecure: bool = False, auth: bool = True, database: str | Path | None = None) -> list[str]:
    """``flower-superlink`` with TLS from ``certs_dir`` (``ca.crt``, ``server.pem``, ``server.key``)
    and SuperNode authentication, unless ``insecure``."""
    cmd = [tool("flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if insecure:
        cmd.append("--insecure")  # Flower refuses --enable-supernode-auth without TLS
    else:
        if certs_dir is None:
            raise DeployError("a SuperLink without --insecure needs its certificates: give --certs <folder> "
                              "(made by python -m deploy certs --out <folder> --host <its address>)")
        d = Path(certs_dir).expanduser().resolve()
        for name in ("ca.crt", "server.pem", "server.key"):
            if not (d / name).is_file():
                raise DeployError(f"{d / name} is missing: make it with python -m deploy certs --out {d} --host "
                                  "<the SuperLink's address>")
        cmd += ["--ssl-ca-certfile", str(d / "ca.crt"), "--ssl-certfile", str(d / "server.pem"),
                "--ssl-keyfile", str(d / "server.key")]
        if auth:
            cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(Path(database).expanduser().resolve())]
    return cmd


def _toml_path(path: str | Path) -> str:
    text = str(Path(path).expanduser().resolve())
    if any(c in text for c in '"\\\n\''):
        raise ValueError(f"path {text!r} must not contain quotes, backslashes or newlines (it becomes a TOML string)")
    return f'"{text}"'


def node_config(partition_id: int, num_partitions: int, data_root: str | Path | None = None,
                state_dir: str | Path | None = None, worker: str | Path | None = None) -> str:
    """The ``--node-config`` string: which client this SuperNode is, where its data and checkpoints live.

    Values are TOML, so paths are quoted: ``partition-id=0 num-partitions=2 state-dir="/srv/state"``.
    """
    if not 0 <= int(partition_id) < int(num_partitions):
        raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    items = [f"partition-id={int(partition_id)}", f"num-partitions={int(num_partitions)}"]
    if data_root is not None:
        items.append(f"data-root={_toml_path(data_root)}")
    if state_dir is not None:
        items.append(f"state-dir={_toml_path(state_dir)}")
    if worker is not None:
        items.append(f"worker={_toml_path(worker)}")
    return " ".join(items)


def worker_command(socket_path: str | Path, exit_with_parent: bool = False) -> list[str]:
    """The node's warm worker (:mod:`fedalign.client.worker`), listening on ``socket_path``."""
    return [sys.executable, "-m", "fedalign.client.worker", str(socket_path),
            *(["--exit-with-parent"] if exit_with_parent else [])]


def wait_for_socket(path: Path, process: subprocess.Popen, log: str | Path, timeout: float = 120.0) -> None:
    """Block until the worker listens on ``path``; raise with its log if it ends or takes too long."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the worker for {path} ended (exit {process.returncode}):\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker for {path} was not listening after {timeout:.0f}s:\n{log_tail(log)}")
        time.sleep(0.1)


def supernode_command(*, superlink: str, config: str, ca_cert: str | Path | None = None,
                      key: str | Path | None = None, insecure: bool = False,
                      runtime_port: int = 9094) -> list[str]:
    """``flower-supernode`` connecting to ``superlink`` (host:port) over TLS, authenticated by ``key``.

    ``runtime_port`` is the SuperNode's local port for its ClientApp processes
    (127.0.0.1 only); SuperNodes sharing a machine need different ones.
    """
    cmd = [tool("flower-supernode"), "--superlink", superlink, "--node-config", config,
           "--port", str(runtime_port)]
    if insecure:
        return cmd + ["--insecure"]
    if ca_cert is not None:  # without it the system's trusted CAs are used
        cmd += ["--root-certificates", str(Path(ca_cert).expanduser().resolve())]
    if key is not None:
        cmd += ["--auth-supernode-private-key", str(Path(key).expanduser().resolve())]
    return cmd


def run_config(config: str = "simulations/quickstart.yaml", overrides: list[str] | tuple[str, ...] = (),
               resume: str | None = None, revision: str = "") -> str:
    """The ``--run-config`` value for the fedalign app: ``config='<yaml>' set='<k=v k=v>' [resume='<dir>']
    [revision='<rev>[+dirty]']``.

    ``config`` is relative to the project (it travels in the app bundle) or
    absolute on the SuperLink's machine. Give ``output.dir`` as an absolute
    path on the SuperLink's machine: a relative one resolves against the
    directory the SuperLink was started from. ``resume``: an absolute run
    folder (on the SuperLink's machine) to continue. ``revision``: the submitting checkout's
    (:func:`fedalign.provenance.declared_revision`), which the ServerApp records in each summary's
    ``provenance`` (its app bundle has no git metadata).
    """
    for text in (config, *overrides, resume or "", revision):
        if "'" in text:
            raise ValueError(f"{text!r}: no single quotes allowed (TOML literal string)")
    for item in overrides:
        if "=" not in item or any(c.isspace() for c in item):
            raise ValueError(f"override {item!r} must look like key.path=value, without spaces")
    value = f"config='{config}'"
    if overrides:
        value += f" set='{' '.join(overrides)}'"
    if resume:
        value += f" resume='{resume}'"
    if revision:
        value += f" revision='{revision}'"
    return value


# ---------------------------------------------------------------- flwr CLI


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
_NOISE = ("Using SuperLink", "Listing all runs", "Displaying information for run", "For more information, visit",
          "Exit Code:", "Error")


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
        answer = json.loads(out[out.index("{"):])
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
    "just stopped, wait until `flwr supernode ls <connection>` shows it offline (about a minute) and start it again")


def explain_flower_log(text: str) -> str | None:
    """A one-line hint for a known Flower refusal in a SuperNode's output, else None."""
    return NODE_REFUSED_HINT if f"[code: {NODE_REFUSED}]" in _ANSI.sub("", text) else None


def flower_config_path(flwr_home: str | Path | None = None) -> Path:
    home = flwr_home or os.environ.get("FLWR_HOME") or Path.home() / ".flwr"
    return Path(home).expanduser() / "config.toml"


def write_connection(name: str, address: str, *, root_certificates: str | Path | None = None,
                     insecure: bool = False, flwr_home: str | Path | None = None, default: bool = False) -> Path:
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
            raise FlwrError(f"{path} is already registered with {connection}: nothing to do (its node keeps its id); "
                            f"to replace it, unregister its node first (flwr supernode ls {connection}, then "
                            f"flwr supernode unregister <node-id> {connection})", reason=error.reason,
                            flower_code=23, code=2) from None
        raise


def supernodes(connection: str, env: dict[str, str]) -> dict[int, str]:
    """Node id -> status (``registered``, ``online``, ``offline``, ...) from ``flwr supernode ls``."""
    nodes = _flwr_json(["supernode", "ls", connection], env)["nodes"]
    return {int(n["node-id"]): n["status"] for n in nodes}


def wait_for_nodes(connection: str, env: dict[str, str], *, node_ids: list[int] | None = None, count: int = 0,
                   status: str = "online", timeout: float = 120.0, poll: float = 3.0) -> dict[int, str]:
    """Until the given nodes (or ``count`` nodes) have ``status``; returns the listing."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = supernodes(connection, env)
        have = [n for n, s in nodes.items() if s == status]
        if (node_ids is not None and all(nodes.get(n) == status for n in node_ids)) or \
                (node_ids is None and len(have) >= count):
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"SuperNodes not {status} after {timeout:.0f}s: {nodes}")
        time.sleep(poll)


def submit(connection: str, env: dict[str, str], *, config: str = "simulations/quickstart.yaml",
           overrides: list[str] | tuple[str, ...] = (), resume: str | None = None,
           app: str | Path = PROJECT_DIR) -> str:
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


def wait_for_run(connection: str, run_id: str, env: dict[str, str], *, timeout: float | None = None,
                 poll: float = 5.0, progress: bool = False, retries: int = 4) -> dict:
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
                raise RunLost(f"lost the SuperLink while waiting for run {run_id} (last status: {last or 'unknown'}; "
                              f"{failures} polls failed: {reason})", run_id=run_id, last_status=last) from None
            print(f"run {run_id}: poll {failures} of {retries + 1} failed ({reason}); trying again in {poll:.0f}s",
                  file=sys.stderr, flush=True)
            time.sleep(poll)
            continue
        failures = 0
        if progress and run["status"] != last:
            print(f"run {run_id}: {run['status']}", file=sys.stderr, flush=True)
        last = run["status"]
        if run["status"].startswith("finished"):
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise RunTimeout(f"run {run_id} not finished after {timeout:.0f}s ({run['status']}); it goes on: "
                             f"watch it with flwr ls {connection} --run-id {run_id}", code=1)
        time.sleep(poll)


def save_run_log(connection: str, run_id: str, env: dict[str, str], path: str | Path,
                 timeout: float = 60.0) -> Path | None:
    """Write the run's log (``flwr log RUN_ID CONNECTION --show``) to ``path``; None when it cannot be read."""
    try:
        proc = subprocess.run([tool("flwr"), "log", str(run_id), connection, "--show"], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_ANSI.sub("", proc.stdout))
    return path


# ---------------------------------------------------------------- processes


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


def start(role: str, command: list[str], *, tag: str, log: str | Path, env: dict[str, str] | None = None,
          cwd: str | Path = PROJECT_DIR, netns: str | None = None) -> Process:
    """Start ``command`` in the background (own session, output to ``log``), tagged ``<tag>:<role>``.

    ``env`` holds variables added to :func:`flower_env`; ``netns`` runs it in
    that network namespace (``ip netns exec``, which keeps the PID).
    """
    env = {**(env or {}), TAG_VAR: f"{tag}:{role}"}  # kept in Process.env: a printed restart is found by stop too
    full_env = {**flower_env(), **env}
    argv = (["ip", "netns", "exec", netns] if netns else []) + command
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return Process(role, popen.pid, command, str(log), env, str(cwd), netns, popen)


def restart(process: Process, tag: str) -> Process:
    """Start the same command again (same role, log appended)."""
    env = {k: v for k, v in process.env.items() if k != TAG_VAR}
    return start(process.role, process.command, tag=tag, log=process.log, env=env,
                 cwd=process.cwd, netns=process.netns)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
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


FLOWER_PROGRAMS = frozenset({"flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                             "flwr-clientapp"})


def is_deploy_process(args: list[str]) -> bool:
    """Whether these arguments are a Flower program's, a fedalign worker's or ``python -m deploy``'s."""
    head = args[:3]
    return bool({Path(a).name for a in head[:2]} & FLOWER_PROGRAMS) or "fedalign.client.worker" in head \
        or head[1:3] == ["-m", "deploy"]


def describe(pid: int) -> str:
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid}: ?"


def _reap(popens: Sequence[subprocess.Popen | None]) -> None:
    for p in popens:
        if p is not None:
            p.poll()


def kill(tag: str, role: str | None = None, *, sig: int = signal.SIGKILL,
         popens: Sequence[subprocess.Popen | None] = ()) -> list[int]:
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


def stop_processes(find: Callable[[], set[int]], *, grace: float = 15.0,
                   popens: Sequence[subprocess.Popen | None] = ()) -> list[str]:
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
    raise TimeoutError(f"{process.role}: nothing listens on {host}:{port} after {timeout:.0f}s\n"
                       f"{log_tail(process.log)}")


# ---------------------------------------------------------------- one machine


@dataclass
class Deployment:
    """A SuperLink and its SuperNodes started by :func:`start_local` (and what ``flwr`` needs to reach them)."""

    tag: str
    workdir: str
    address: str
    connection: str
    flwr_home: str  # the FLWR_HOME whose config.toml holds `connection`
    insecure: bool
    processes: list[Process]
    node_ids: dict[str, int] = field(default_factory=dict)  # role -> node id (with authentication)

    @property
    def env(self) -> dict[str, str]:
        """Environment for ``flwr`` commands against this deployment."""
        return flower_env(self.flwr_home)

    def process(self, role: str) -> Process:
        return next(p for p in self.processes if p.role == role)

    def save(self) -> Path:
        path = Path(self.workdir) / DEPLOYMENT_FILE
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["processes"] = [p.to_json() for p in self.processes]
        path.write_text(json.dumps(data, indent=2))
        return path

    @classmethod
    def load(cls, workdir: str | Path) -> Deployment:
        path = Path(workdir).expanduser().resolve() / DEPLOYMENT_FILE
        try:
            data = json.loads(path.read_text())
            data["processes"] = [Process(**p) for p in data["processes"]]
            return cls(**data)
        except FileNotFoundError:
            raise DeployError(f"no deployment in {path.parent} (no {DEPLOYMENT_FILE}): give the --workdir that "
                              f"python -m deploy local printed (default {DEFAULT_WORKDIR})") from None
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise DeployError(f"{path} cannot be read ({error}): stop its processes by tag "
                              "(python -m deploy stop --tag <tag>) and start afresh") from None

    def _mentions(self, args: list[str]) -> bool:
        """Whether a Flower / worker / ``python -m deploy`` command line belongs to this deployment: it names
        a file in its folder (certificates, keys, state) or its SuperLink's address, or is a SuperLink on its port."""
        if not is_deploy_process(args):
            return False
        inside = str(Path(self.workdir)) + os.sep
        if any(inside in a or a == self.address for a in args[1:]):
            return True
        port = self.address.rpartition(":")[2]
        return any(Path(a).name == "flower-superlink" for a in args[:2]) and \
            any(a == "--port" and b == port for a, b in zip(args, args[1:], strict=False))

    def alive(self) -> set[int]:
        """Its live processes: those tagged with its tag, any Flower process or worker started by hand for it
        (found by its folder or address on the command line, e.g. a SuperNode restarted from its printed
        line without the tag), and all their descendants."""
        return processes(self.tag) | processes_with_cmdline(self._mentions)

    def stop(self, grace: float = 15.0) -> list[str]:
        """Stop every process of :meth:`alive`; returns the survivors."""
        return stop_processes(self.alive, grace=grace, popens=[p.popen for p in self.processes])

    def local_command(self, *extra: str) -> list[str]:
        """``python -m deploy local`` starting this deployment again (same folder, clients, options)."""
        nodes = [p for p in self.processes if p.role.startswith("supernode-")]
        cmd = [sys.executable, "-m", "deploy", "local", "--clients", str(len(nodes)), "--workdir", self.workdir]
        if self.insecure:
            cmd.append("--insecure")
        if not any(p.role.startswith("worker-") for p in self.processes):
            cmd.append("--no-worker")
        config = next((c[c.index("--node-config") + 1] for c in (p.command for p in nodes) if "--node-config" in c), "")
        data_root = re.search(r'data-root="([^"]*)"', config)
        if data_root:
            cmd += ["--data-root", data_root.group(1)]
        return cmd + list(extra)


def start_local(workdir: str | Path, clients: int, *, port: int | None = None, insecure: bool = False,
                data_root: str | Path | None = None, tag: str | None = None,
                node_timeout: float = 180.0, workers: bool = True) -> Deployment:
    """A SuperLink and ``clients`` SuperNodes on this machine (127.0.0.1), TLS and authentication on
    unless ``insecure``, each SuperNode with its warm worker unless not ``workers``. Returns once
    every SuperNode is online. On failure, stops what it started.

    Layout of ``workdir``: ``certs/`` (CA + SuperLink certificate), ``keys/``
    (one key pair per SuperNode), ``flwr-home/`` (the ``flwr`` CLI's
    ``config.toml`` with connection ``fedalign-local``), ``superlink/`` and
    ``node-<i>/`` (each with its own FLWR_HOME, a log, and for nodes the
    ``state`` folder with the client's checkpoints and its worker's socket, and the
    worker's ``worker.log``), ``deployment.json``.
    """
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / DEPLOYMENT_FILE).exists():
        old = Deployment.load(workdir)
        if old.alive():
            raise DeployError(f"a deployment is already running from {workdir} (SuperLink {old.address}, "
                              f"tag {old.tag}): stop it first ({deploy_line(['stop', '--workdir', str(workdir)])}) "
                              "or give another --workdir")
    tag = tag or uuid.uuid4().hex[:12]
    host = "127.0.0.1"
    port = port or free_port(host)
    address = f"{host}:{port}"
    flwr_home = workdir / "flwr-home"
    if insecure:
        warn_insecure("python -m deploy local")
    else:
        certs.make_ca(workdir / "certs", common_name=f"fedalign local CA {tag}", overwrite=True)  # a fresh local setup
        certs.make_server_cert(workdir / "certs", [host, "localhost"], overwrite=True)
    write_connection(LOCAL_CONNECTION, address, root_certificates=None if insecure else workdir / "certs" / "ca.crt",
                     insecure=insecure, flwr_home=flwr_home, default=True)
    deployment = Deployment(tag, str(workdir), address, LOCAL_CONNECTION, str(flwr_home), insecure, [])
    try:
        link = start("superlink",
                     superlink_command(host=host, port=port, certs_dir=workdir / "certs", insecure=insecure),
                     tag=tag, log=workdir / "superlink" / "superlink.log",
                     env={"FLWR_HOME": str(workdir / "superlink" / "flwr-home")})
        deployment.processes.append(link)
        deployment.save()
        wait_for_port(host, port, link)
        env = deployment.env
        for i in range(clients):
            role = f"supernode-{i}"
            node_dir = workdir / f"node-{i}"
            key = None
            if not insecure:
                key, public = certs.make_node_keys(workdir / "keys", f"node-{i}", overwrite=True)  # a fresh local setup
                deployment.node_ids[role] = register(public, LOCAL_CONNECTION, env)
            socket_path = None
            if workers:
                socket_path = worker_socket(node_dir / "state", i)
                worker = start(f"worker-{i}", worker_command(socket_path), tag=tag, log=node_dir / "worker.log")
                deployment.processes.append(worker)
                assert worker.popen is not None  # start() keeps the Popen
                wait_for_socket(socket_path, worker.popen, worker.log)
            cmd = supernode_command(superlink=address,
                                    config=node_config(i, clients, data_root, node_dir / "state", socket_path),
                                    ca_cert=None if insecure else workdir / "certs" / "ca.crt", key=key,
                                    insecure=insecure, runtime_port=free_port())
            deployment.processes.append(start(role, cmd, tag=tag, log=node_dir / "supernode.log",
                                              env={"FLWR_HOME": str(node_dir / "flwr-home")}))
            deployment.save()
        if insecure:
            wait_for_nodes(LOCAL_CONNECTION, env, count=clients, timeout=node_timeout)
        else:
            wait_for_nodes(LOCAL_CONNECTION, env, node_ids=list(deployment.node_ids.values()), timeout=node_timeout)
    except KeyboardInterrupt:
        deployment.stop(grace=5)
        raise
    except Exception as error:
        logs = "\n".join(log_tail(p.log, 15) for p in deployment.processes)
        left = deployment.stop(grace=5)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        hint = explain_flower_log(logs) or "see the logs above"
        state = "nothing is left running" if not left else f"{len(left)} processes survived: " + "; ".join(left)
        raise DeployError(f"starting the local deployment in {workdir} failed ({first}); {state}; {hint}",
                          details=logs, code=1) from error
    deployment.save()
    return deployment
