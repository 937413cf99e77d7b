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

This module is the deployment API in one place: it re-exports the names of :mod:`deploy.environment`
(tools, environment, printed command lines, TLS checks, :class:`DeployError`), :mod:`deploy.commands` (the
Flower processes' command lines), :mod:`deploy.flwr_cli` (the ``flwr`` CLI), :mod:`deploy.processes`
(starting, finding and stopping processes) and :mod:`deploy.local` (:class:`Deployment`, :func:`start_local`).
"""

from __future__ import annotations

from .commands import node_config, run_config, superlink_command, supernode_command, wait_for_socket, worker_command
from .environment import (
    BIN,
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    DEPLOYMENT_FILE,
    LOCAL_CONNECTION,
    PROJECT_DIR,
    SUPEREXEC_POLL_SECONDS,
    TAG_VAR,
    DeployError,
    command_line,
    deploy_line,
    flower_env,
    flower_env_vars,
    speaks_tls,
    tls_mismatch,
    tool,
    warn_insecure,
)
from .flwr_cli import (
    NODE_REFUSED,
    NODE_REFUSED_HINT,
    FlwrError,
    RunLost,
    RunTimeout,
    SuperLinkUnavailable,
    connection_address,
    explain_flower_log,
    flower_config_path,
    flwr_reason,
    register,
    run_status,
    save_run_log,
    submit,
    supernodes,
    wait_for_nodes,
    wait_for_run,
    write_connection,
)
from .local import Deployment, start_local
from .processes import (
    FLOWER_PROGRAMS,
    Process,
    alive,
    cmdline,
    describe,
    free_port,
    is_deploy_process,
    kill,
    log_tail,
    processes,
    processes_with_cmdline,
    processes_with_environ,
    restart,
    start,
    stop,
    stop_processes,
    wait_for_port,
)

# Every name of deploy.environment, .commands, .flwr_cli, .processes and .local
__all__ = [
    "BIN",
    "DEFAULT_PORT",
    "DEFAULT_WORKDIR",
    "DEPLOYMENT_FILE",
    "DeployError",
    "Deployment",
    "FLOWER_PROGRAMS",
    "FlwrError",
    "LOCAL_CONNECTION",
    "NODE_REFUSED",
    "NODE_REFUSED_HINT",
    "PROJECT_DIR",
    "Process",
    "RunLost",
    "RunTimeout",
    "SUPEREXEC_POLL_SECONDS",
    "SuperLinkUnavailable",
    "TAG_VAR",
    "alive",
    "cmdline",
    "command_line",
    "connection_address",
    "deploy_line",
    "describe",
    "explain_flower_log",
    "flower_config_path",
    "flower_env",
    "flower_env_vars",
    "flwr_reason",
    "free_port",
    "is_deploy_process",
    "kill",
    "log_tail",
    "node_config",
    "processes",
    "processes_with_cmdline",
    "processes_with_environ",
    "register",
    "restart",
    "run_config",
    "run_status",
    "save_run_log",
    "speaks_tls",
    "start",
    "start_local",
    "stop",
    "stop_processes",
    "submit",
    "superlink_command",
    "supernode_command",
    "supernodes",
    "tls_mismatch",
    "tool",
    "wait_for_nodes",
    "wait_for_port",
    "wait_for_run",
    "wait_for_socket",
    "warn_insecure",
    "worker_command",
    "write_connection",
]
