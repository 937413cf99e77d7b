"""What every part of a deployment shares: where the Flower tools are, the environment they run in, the
command lines printed for people to run, TLS checks, and :class:`DeployError`."""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

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
    env = {
        "PATH": path,
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get(
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(SUPEREXEC_POLL_SECONDS)
        ),
        "FLWR_TELEMETRY_ENABLED": os.environ.get("FLWR_TELEMETRY_ENABLED", "0"),
        "FLWR_DISABLE_UPDATE_CHECK": os.environ.get("FLWR_DISABLE_UPDATE_CHECK", "1"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).expanduser().resolve())
    return env


def flower_env(flwr_home: str | Path | None = None) -> dict[str, str]:
    """The environment for Flower commands: this process's, plus :func:`flower_env_vars`."""
    return {**os.environ, **flower_env_vars(flwr_home)}


def command_line(
    command: list[str], env: dict[str, str] | None = None, *, cwd: str | Path | None = None, netns: str | None = None
) -> str:
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
    return " && ".join(
        [f"cd {shlex.quote(str(PROJECT_DIR))}", *(shlex.join([sys.executable, "-m", "deploy", *c]) for c in commands)]
    )


def warn_insecure(what: str) -> None:
    """Say loudly that TLS (and with it SuperNode authentication) is off."""
    bar = "!" * 78
    print(
        f"{bar}\n!!! INSECURE MODE ({what}): TLS is OFF. Statistics, metrics and the app bundle\n"
        "!!! travel in clear text, and SuperNode authentication is off too (Flower needs\n"
        "!!! TLS for it), so anyone who can reach the SuperLink can join the federation.\n"
        f"!!! Use it only on a trusted network, for debugging.\n{bar}",
        file=sys.stderr,
    )


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
        return (
            f"the SuperLink at {address} uses TLS, but this SuperNode was asked to connect with --insecure "
            "(it would only retry 'Connection attempt failed' forever): drop --insecure and pass "
            "--ca-cert <the federation's ca.crt> and --key <this node's private key>"
        )
    if tls is False and not insecure:
        return (
            f"the SuperLink at {address} does not speak TLS (was it started with --insecure?): start it with "
            "its certificate (python -m deploy superlink --certs ...), or, on a trusted network only, "
            "start this SuperNode with --insecure too"
        )
    return None
