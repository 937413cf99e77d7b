"""``python -m deploy`` commands that run experiments: ``run`` (submit to a SuperLink and wait for the real
status), ``local`` (a deployment on this machine, optionally with a run) and ``stop``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from . import launch
from .cli_shared import DEFAULT_CONFIG, reaching
from .launch import DeployError


def _connection_and_env(a: argparse.Namespace) -> tuple[str, dict[str, str], launch.Deployment | None]:
    if a.workdir:
        d = launch.Deployment.load(a.workdir)
        return a.connection or d.connection, d.env, d
    if not a.connection:
        raise DeployError(
            "no SuperLink named: give a connection name (see python -m deploy connection) or --workdir "
            "<a folder made by python -m deploy local>"
        )
    return a.connection, launch.flower_env(a.flwr_home), None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting for run ``run_id`` (it goes on at the SuperLink unless its deployment is stopped)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _run_options(a: argparse.Namespace, resume: str | None) -> list[str]:
    """The run options again, to print a command that repeats this run (with ``resume``)."""
    options = [] if a.config == DEFAULT_CONFIG else ["--config", a.config]
    options += ["--resume", resume] if resume else []
    return options + (["--set", *a.set] if a.set else [])


def _run_folder(a: argparse.Namespace, d: launch.Deployment | None, submitted: float) -> str:
    """The run's folder for ``--resume``: the one given, or (a local deployment, whose SuperLink writes on this
    machine) the one made under output.dir since the submission, else a description of where it is."""
    if a.resume:
        return a.resume
    try:
        from fedalign.config import load_config

        path = Path(a.config)
        cfg = load_config(path if path.is_absolute() else launch.PROJECT_DIR / path, list(a.set))
    except Exception:  # noqa: BLE001 - only a hint depends on it
        return "<its run folder, under output.dir on the SuperLink's machine>"
    out = Path(cfg.output.dir)
    if d is not None:
        out = out if out.is_absolute() else Path(d.process("superlink").cwd) / out
        made = [p for p in out.glob(f"{cfg.name}-*") if p.is_dir() and p.stat().st_mtime >= submitted - 1]
        if len(made) == 1:
            return str(made[0])
    return f"<{out}/{cfg.name}-<date>-<time>: the run's folder on the SuperLink's machine>"


def _run_and_wait(
    connection: str,
    env: dict[str, str],
    a: argparse.Namespace,
    d: launch.Deployment | None = None,
    keeps_running: bool = True,
) -> int:
    """Submit, wait, print the run's entry; ``d``: the local deployment it runs on; ``keeps_running``: whether
    that deployment (or the remote SuperLink) is left running afterwards (else the hints point at files)."""
    try:
        launch.run_config(a.config, a.set, a.resume)  # checked before anything is sent
    except ValueError as error:
        raise DeployError(f"{error}: give --set key.path=value words without quotes or spaces") from None
    submitted = time.time()
    with reaching(connection, env, d):
        run_id = launch.submit(connection, env, config=a.config, overrides=a.set, resume=a.resume)
    ls = launch.command_line(
        [launch.tool("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"], _flwr_home_of(env)
    )
    print(f"submitted run {run_id}: {ls}", file=sys.stderr, flush=True)
    if a.no_wait:
        print(run_id)
        return 0
    try:
        run = launch.wait_for_run(connection, run_id, env, timeout=a.timeout, progress=True)
    except KeyboardInterrupt:
        raise RunInterrupted(run_id) from None
    except launch.RunTimeout as error:
        after = f"it goes on: {ls}" if keeps_running else "its deployment is stopped with it"
        raise DeployError(f"{error}; {after}", code=1) from None
    except launch.RunLost as error:
        folder = _run_folder(a, d, submitted)
        if d is None:
            fix = (
                f"once the SuperLink answers again (nodes online), resume it: "
                f"{launch.deploy_line(['run', connection, *_run_options(a, folder)])}"
            )
        elif keeps_running:
            fix = "start the deployment again and resume it: " + launch.deploy_line(
                ["stop", "--workdir", d.workdir], d.local_command("--run", "--keep", *_run_options(a, folder))[3:]
            )
        else:
            fix = "resume it: " + launch.deploy_line(d.local_command("--run", *_run_options(a, folder))[3:])
        raise DeployError(f"{error}; {fix}", code=1) from None
    print(json.dumps(run, indent=2))
    if run["status"] != "finished:completed":
        print(
            f"deploy {a.command}: run {run_id} did not complete: {run['status']} ({run.get('status-details')}); "
            f"{_log_hint(connection, run_id, env, d, keeps_running)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _flwr_home_of(env: dict[str, str]) -> dict[str, str]:
    """``FLWR_HOME`` for a printed ``flwr`` line, when ``env`` sets one (else flwr's default ~/.flwr applies)."""
    return {"FLWR_HOME": env["FLWR_HOME"]} if env.get("FLWR_HOME") else {}


def _log_hint(
    connection: str, run_id: str, env: dict[str, str], d: launch.Deployment | None, keeps_running: bool
) -> str:
    """Where the failed run's log is: a file saved now (a local deployment's SuperLink may be stopped next)
    and, while the SuperLink runs, the ``flwr log`` line that shows it (with its FLWR_HOME)."""
    show = launch.command_line([launch.tool("flwr"), "log", run_id, connection, "--show"], _flwr_home_of(env))
    saved = None
    if d is not None:
        saved = launch.save_run_log(connection, run_id, env, Path(d.workdir) / "logs" / f"run-{run_id}.log")
    if saved is not None:
        return f"its log: {saved}" + (f" (or: {show})" if keeps_running else "")
    if keeps_running:
        return f"its log: {show}"
    return f"its log was not readable; the SuperLink's is {d.process('superlink').log}" if d else ""


def cmd_run(a: argparse.Namespace) -> int:
    connection, env, d = _connection_and_env(a)
    try:
        return _run_and_wait(connection, env, a, d)
    except RunInterrupted as stop:
        print(
            f"deploy run: interrupted; run {stop.run_id} goes on at the SuperLink: stop it with "
            f"{launch.command_line([launch.tool('flwr'), 'stop', stop.run_id, connection], _flwr_home_of(env))}",
            file=sys.stderr,
        )
        return 130


def _terminate_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def cmd_local(a: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # `kill` stops what it started, as Ctrl-C does
    try:
        try:
            d = launch.start_local(
                a.workdir,
                a.clients,
                port=a.port,
                insecure=a.insecure,
                data_root=a.data_root,
                tag=a.tag,
                workers=not a.no_worker,
            )
        except KeyboardInterrupt:
            print(
                f"deploy local: interrupted while starting; stopped what it had started in {a.workdir}", file=sys.stderr
            )
            return 130
        _print_local(d)
        if not a.run:
            return 0
        interrupted = None
        try:
            return _run_and_wait(d.connection, d.env, a, d, keeps_running=a.keep)
        except KeyboardInterrupt as stop:
            interrupted = stop
        finally:
            if not a.keep:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                try:
                    left = d.stop()
                finally:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                print("stopped" if not left else "still running:\n" + "\n".join(left), file=sys.stderr)
        run = f"run {interrupted.run_id}" if isinstance(interrupted, RunInterrupted) else "the run"
        if a.keep:
            print(
                f"deploy local: interrupted; {run} and the deployment go on (--keep): stop them with "
                f"{launch.deploy_line(['stop', '--workdir', d.workdir])}",
                file=sys.stderr,
            )
        else:
            print(f"deploy local: interrupted; stopped {run} and the deployment in {d.workdir}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_local(d: launch.Deployment) -> None:
    """What ``deploy local`` started, each process's restart line, and the commands that reach it."""
    print(
        f"local deployment {d.tag} in {d.workdir}: SuperLink {d.address}, "
        f"{'INSECURE' if d.insecure else 'TLS + SuperNode authentication'}"
    )
    for p in d.processes:
        node = f" node-id {d.node_ids[p.role]}" if p.role in d.node_ids else ""
        print(f"  {p.role:<12} PID {p.pid}{node}  log {p.log}\n      {p.shell}")
    flwr = [launch.tool("flwr")]
    ls = launch.command_line([*flwr, "ls", d.connection, "--format", "json"], _flwr_home_of(d.env))
    nodes = launch.command_line([*flwr, "supernode", "ls", d.connection], _flwr_home_of(d.env))
    run = launch.deploy_line(["run", "--workdir", d.workdir, "--set", "federation.rounds=2"])
    print(
        f"each line above restarts its process by hand (in the foreground; a SuperNode once `{nodes}` "
        f"shows it offline)\n"
        f"flwr against it:   {ls}\n"
        f"run an experiment: {run}\n"
        f"stop everything:   {launch.deploy_line(['stop', '--workdir', d.workdir])}",
        flush=True,
    )


def cmd_stop(a: argparse.Namespace) -> int:
    if a.tag:
        tag, found = a.tag, launch.processes(a.tag)
        left = launch.stop(a.tag)
    else:
        d = launch.Deployment.load(a.workdir)
        tag, found = d.tag, d.alive()
        left = d.stop()
    if left:
        raise DeployError(
            f"{len(left)} processes of deployment {tag} survived SIGTERM and SIGKILL: "
            + "; ".join(left)
            + ": see whether they are stuck in the kernel (ps -o stat,pid)",
            code=1,
        )
    print(f"deployment {tag}: stopped {len(found)} processes" if found else f"deployment {tag}: nothing was running")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help="experiment YAML, relative to the project (default %(default)s)"
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set federation.rounds=2 output.dir=/abs/path "
        "(output.dir is on the SuperLink's machine; give it absolute)",
    )
    p.add_argument("--resume", help="continue this run folder (absolute, on the SuperLink's machine)")
    p.add_argument("--timeout", type=float, default=None, help="stop waiting after this many seconds")
    p.add_argument("--no-wait", action="store_true", help="only submit; print the run id")


def add_run_commands(sub) -> None:
    """The ``run``, ``local`` and ``stop`` subcommands.

    Args:
        sub: the parser's subparsers.
    """
    p = sub.add_parser("run", help="flwr run the fedalign app, wait, print the real status (flwr ls)")
    p.add_argument("connection", nargs="?", help="flwr connection name (default: the --workdir deployment's)")
    p.add_argument("--workdir", help="a folder made by `python -m deploy local`")
    p.add_argument("--flwr-home")
    _add_run_options(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("local", help="SuperLink + N SuperNodes on this machine (127.0.0.1)")
    p.add_argument("--clients", type=int, required=True, help="number of SuperNodes (= federation.num_clients)")
    p.add_argument("--workdir", default=str(launch.DEFAULT_WORKDIR), help="default %(default)s")
    p.add_argument("--port", type=int, help="SuperLink port (default: a free one)")
    p.add_argument("--data-root", help="node-config data-root for every SuperNode")
    p.add_argument("--insecure", action="store_true", help="NO TLS and no authentication")
    p.add_argument("--tag", help="label put on the processes' environment (default: random)")
    p.add_argument("--no-worker", action="store_true", help="no warm worker beside each SuperNode")
    p.add_argument("--run", action="store_true", help="then run an experiment, print its status and stop all")
    p.add_argument("--keep", action="store_true", help="with --run: leave the processes running afterwards")
    _add_run_options(p)
    p.set_defaults(fn=cmd_local)

    p = sub.add_parser("stop", help="stop every process of a `local` deployment (by PID), restarted ones too")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--workdir")
    g.add_argument("--tag")
    p.set_defaults(fn=cmd_stop)
