"""One machine: a SuperLink and its SuperNodes started on 127.0.0.1 (:func:`start_local`), and the
:class:`Deployment` record that finds, restarts and stops them."""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from fedalign.client.paths import worker_socket

from . import certs
from .commands import node_config, superlink_command, supernode_command, wait_for_socket, worker_command
from .environment import (
    DEFAULT_WORKDIR,
    DEPLOYMENT_FILE,
    LOCAL_CONNECTION,
    DeployError,
    deploy_line,
    flower_env,
    warn_insecure,
)
from .flwr_cli import (
    explain_flower_log,
    register,
    wait_for_nodes,
    write_connection,
)
from .processes import (
    Process,
    free_port,
    is_deploy_process,
    log_tail,
    processes,
    processes_with_cmdline,
    start,
    stop_processes,
    wait_for_port,
)


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
            raise DeployError(
                f"no deployment in {path.parent} (no {DEPLOYMENT_FILE}): give the --workdir that "
                f"python -m deploy local printed (default {DEFAULT_WORKDIR})"
            ) from None
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise DeployError(
                f"{path} cannot be read ({error}): stop its processes by tag "
                "(python -m deploy stop --tag <tag>) and start afresh"
            ) from None

    def _mentions(self, args: list[str]) -> bool:
        """Whether a Flower / worker / ``python -m deploy`` command line belongs to this deployment: it names
        a file in its folder (certificates, keys, state) or its SuperLink's address, or is a SuperLink on its port."""
        if not is_deploy_process(args):
            return False
        inside = str(Path(self.workdir)) + os.sep
        if any(inside in a or a == self.address for a in args[1:]):
            return True
        port = self.address.rpartition(":")[2]
        return any(Path(a).name == "flower-superlink" for a in args[:2]) and any(
            a == "--port" and b == port for a, b in zip(args, args[1:], strict=False)
        )

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


def start_local(
    workdir: str | Path,
    clients: int,
    *,
    port: int | None = None,
    insecure: bool = False,
    data_root: str | Path | None = None,
    tag: str | None = None,
    node_timeout: float = 180.0,
    workers: bool = True,
) -> Deployment:
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
    _refuse_a_running_deployment(workdir)
    tag = tag or uuid.uuid4().hex[:12]
    host = "127.0.0.1"
    port = port or free_port(host)
    deployment = _new_local_deployment(workdir, tag, host, port, insecure)
    try:
        wait_for_port(host, port, _start_superlink(deployment, host, port))
        for i in range(clients):
            _start_supernode(deployment, i, clients, data_root, workers)
        if insecure:
            wait_for_nodes(LOCAL_CONNECTION, deployment.env, count=clients, timeout=node_timeout)
        else:
            wait_for_nodes(
                LOCAL_CONNECTION, deployment.env, node_ids=list(deployment.node_ids.values()), timeout=node_timeout
            )
    except KeyboardInterrupt:
        deployment.stop(grace=5)
        raise
    except Exception as error:
        raise _start_failed(deployment, error) from error
    deployment.save()
    return deployment


def _new_local_deployment(workdir: Path, tag: str, host: str, port: int, insecure: bool) -> Deployment:
    """A fresh CA and SuperLink certificate (unless ``insecure``), the ``flwr`` connection, and the (empty)
    :class:`Deployment` of :func:`start_local`."""
    address = f"{host}:{port}"
    flwr_home = workdir / "flwr-home"
    if insecure:
        warn_insecure("python -m deploy local")
    else:
        certs.make_ca(workdir / "certs", common_name=f"fedalign local CA {tag}", overwrite=True)  # a fresh local setup
        certs.make_server_cert(workdir / "certs", [host, "localhost"], overwrite=True)
    write_connection(
        LOCAL_CONNECTION,
        address,
        root_certificates=None if insecure else workdir / "certs" / "ca.crt",
        insecure=insecure,
        flwr_home=flwr_home,
        default=True,
    )
    return Deployment(tag, str(workdir), address, LOCAL_CONNECTION, str(flwr_home), insecure, [])


def _start_superlink(deployment: Deployment, host: str, port: int) -> Process:
    """Start the SuperLink of ``deployment`` on ``host:port`` (recorded in it, and saved)."""
    workdir = Path(deployment.workdir)
    link = start(
        "superlink",
        superlink_command(host=host, port=port, certs_dir=workdir / "certs", insecure=deployment.insecure),
        tag=deployment.tag,
        log=workdir / "superlink" / "superlink.log",
        env={"FLWR_HOME": str(workdir / "superlink" / "flwr-home")},
    )
    deployment.processes.append(link)
    deployment.save()
    return link


def _refuse_a_running_deployment(workdir: Path) -> None:
    """Raise :class:`DeployError` when the deployment recorded in ``workdir`` is still running."""
    if (workdir / DEPLOYMENT_FILE).exists():
        old = Deployment.load(workdir)
        if old.alive():
            raise DeployError(
                f"a deployment is already running from {workdir} (SuperLink {old.address}, "
                f"tag {old.tag}): stop it first ({deploy_line(['stop', '--workdir', str(workdir)])}) "
                "or give another --workdir"
            )


def _start_supernode(deployment: Deployment, i: int, clients: int, data_root: str | Path | None, workers: bool) -> None:
    """Start SuperNode ``i`` of ``clients`` of ``deployment`` (its key registered first unless insecure; its warm
    worker first when ``workers``)."""
    workdir, insecure, tag = Path(deployment.workdir), deployment.insecure, deployment.tag
    role = f"supernode-{i}"
    node_dir = workdir / f"node-{i}"
    key = None
    if not insecure:
        key, public = certs.make_node_keys(workdir / "keys", f"node-{i}", overwrite=True)  # a fresh local setup
        deployment.node_ids[role] = register(public, LOCAL_CONNECTION, deployment.env)
    socket_path = None
    if workers:
        socket_path = worker_socket(node_dir / "state", i)
        worker = start(f"worker-{i}", worker_command(socket_path), tag=tag, log=node_dir / "worker.log")
        deployment.processes.append(worker)
        assert worker.popen is not None  # start() keeps the Popen
        wait_for_socket(socket_path, worker.popen, worker.log)
    cmd = supernode_command(
        superlink=deployment.address,
        config=node_config(i, clients, data_root, node_dir / "state", socket_path),
        ca_cert=None if insecure else workdir / "certs" / "ca.crt",
        key=key,
        insecure=insecure,
        runtime_port=free_port(),
    )
    deployment.processes.append(
        start(role, cmd, tag=tag, log=node_dir / "supernode.log", env={"FLWR_HOME": str(node_dir / "flwr-home")})
    )
    deployment.save()


def _start_failed(deployment: Deployment, error: Exception) -> DeployError:
    """Stop what a failed :func:`start_local` started; the one-line error that says so, with the logs' tails."""
    logs = "\n".join(log_tail(p.log, 15) for p in deployment.processes)
    left = deployment.stop(grace=5)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    hint = explain_flower_log(logs) or "see the logs above"
    state = "nothing is left running" if not left else f"{len(left)} processes survived: " + "; ".join(left)
    return DeployError(
        f"starting the local deployment in {deployment.workdir} failed ({first}); {state}; {hint}", details=logs, code=1
    )
