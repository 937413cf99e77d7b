"""The command lines of the Flower processes a deployment starts (SuperLink, SuperNode, worker) and the
run config ``flwr run`` submits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .environment import DEFAULT_PORT, DeployError, tool
from .processes import log_tail


def superlink_command(
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    certs_dir: str | Path | None = None,
    insecure: bool = False,
    auth: bool = True,
    database: str | Path | None = None,
) -> list[str]:
    """``flower-superlink`` with TLS from ``certs_dir`` (``ca.crt``, ``server.pem``, ``server.key``)
    and SuperNode authentication, unless ``insecure``."""
    cmd = [tool("flower-superlink"), "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if insecure:
        cmd.append("--insecure")  # Flower refuses --enable-supernode-auth without TLS
    else:
        if certs_dir is None:
            raise DeployError(
                "a SuperLink without --insecure needs its certificates: give --certs <folder> "
                "(made by python -m deploy certs --out <folder> --host <its address>)"
            )
        d = Path(certs_dir).expanduser().resolve()
        for name in ("ca.crt", "server.pem", "server.key"):
            if not (d / name).is_file():
                raise DeployError(
                    f"{d / name} is missing: make it with python -m deploy certs --out {d} --host "
                    "<the SuperLink's address>"
                )
        cmd += [
            "--ssl-ca-certfile",
            str(d / "ca.crt"),
            "--ssl-certfile",
            str(d / "server.pem"),
            "--ssl-keyfile",
            str(d / "server.key"),
        ]
        if auth:
            cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(Path(database).expanduser().resolve())]
    return cmd


def _toml_path(path: str | Path) -> str:
    text = str(Path(path).expanduser().resolve())
    if any(c in text for c in "\"\\\n'"):
        raise ValueError(f"path {text!r} must not contain quotes, backslashes or newlines (it becomes a TOML string)")
    return f'"{text}"'


def node_config(
    partition_id: int,
    num_partitions: int,
    data_root: str | Path | None = None,
    state_dir: str | Path | None = None,
    worker: str | Path | None = None,
) -> str:
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
    return [
        sys.executable,
        "-m",
        "fedalign.client.worker",
        str(socket_path),
        *(["--exit-with-parent"] if exit_with_parent else []),
    ]


def wait_for_socket(path: Path, process: subprocess.Popen, log: str | Path, timeout: float = 120.0) -> None:
    """Block until the worker listens on ``path``; raise with its log if it ends or takes too long."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the worker for {path} ended (exit {process.returncode}):\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker for {path} was not listening after {timeout:.0f}s:\n{log_tail(log)}")
        time.sleep(0.1)


def supernode_command(
    *,
    superlink: str,
    config: str,
    ca_cert: str | Path | None = None,
    key: str | Path | None = None,
    insecure: bool = False,
    runtime_port: int = 9094,
) -> list[str]:
    """``flower-supernode`` connecting to ``superlink`` (host:port) over TLS, authenticated by ``key``.

    ``runtime_port`` is the SuperNode's local port for its ClientApp processes
    (127.0.0.1 only); SuperNodes sharing a machine need different ones.
    """
    cmd = [tool("flower-supernode"), "--superlink", superlink, "--node-config", config, "--port", str(runtime_port)]
    if insecure:
        return cmd + ["--insecure"]
    if ca_cert is not None:  # without it the system's trusted CAs are used
        cmd += ["--root-certificates", str(Path(ca_cert).expanduser().resolve())]
    if key is not None:
        cmd += ["--auth-supernode-private-key", str(Path(key).expanduser().resolve())]
    return cmd


def run_config(
    config: str = "simulations/quickstart.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    resume: str | None = None,
    revision: str = "",
) -> str:
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
