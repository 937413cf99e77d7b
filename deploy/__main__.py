"""``python -m deploy``: certificates, keys, SuperLink, SuperNodes and runs for fedalign on Flower.

One machine (everything on 127.0.0.1, TLS + SuperNode authentication)::

    python -m deploy local --clients 2 --run --set federation.rounds=2   # start, run, print status, stop
    python -m deploy local --clients 2                                   # start and leave running
    python -m deploy run --workdir ~/.cache/fedalign/deploy/local --set federation.rounds=2
    python -m deploy stop --workdir ~/.cache/fedalign/deploy/local

Separate machines: ``certs`` and ``keys`` once, ``superlink`` on the server,
``connection`` + ``register`` where you run ``flwr``, ``supernode`` on each
client machine, then ``run``. See README, "Running clients on separate machines".

Every command line printed runs as printed (``env PATH=... VAR=... /abs/program ...``).
An expected failure ends with one line, ``deploy <command>: <problem>: <fix>``, and a
non-zero exit (2: refused before anything was done; 1: it failed; 130: interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from fedalign.client.paths import worker_socket

from . import certs, launch
from .launch import DeployError

DEFAULT_CONFIG = "simulations/quickstart.yaml"


def _print_command(line: str) -> None:
    print(f"$ {line}", file=sys.stderr, flush=True)


def _relay_stderr_with_hint() -> None:
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
                    view = view[os.write(2, view):]
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


def _exec(cmd: list[str], flwr_home: str | None, dry_run: bool, relay: bool = False) -> int:
    """Print the command (complete: it runs as printed); unless ``dry_run``, replace this process with it
    (same PID: signals reach Flower). ``relay``: explain Flower's node refusals on stderr."""
    variables = launch.flower_env_vars(flwr_home)
    line = launch.command_line(cmd, variables)
    if dry_run:
        print(line)
        return 0
    _print_command(line)
    print(f"PID {os.getpid()}", file=sys.stderr, flush=True)
    if relay:
        _relay_stderr_with_hint()
    os.execvpe(cmd[0], cmd, {**os.environ, **variables})
    return 1  # not reached


def _need_file(path: str | None, what: str, fix: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise DeployError(f"{what} {Path(path).expanduser().resolve()} does not exist: {fix}")


# ---------------------------------------------------------------- subcommands


def cmd_certs(a: argparse.Namespace) -> int:
    out = Path(a.out).expanduser().resolve()
    new_ca = a.new_ca or not (out / "ca.crt").exists()
    # every check before any file is written
    if not a.force:
        existing = [p for p in (out / "server.key", out / "server.pem") if p.exists()]
        if existing:
            raise DeployError(f"{existing[0]} exists: a SuperLink may be using it, and SuperNodes trust its CA; "
                              "pass --force to replace the SuperLink's certificate and key (add --new-ca for a new CA "
                              "too, then copy the new ca.crt everywhere)")
    if not new_ca and not (out / "ca.key").is_file():
        raise DeployError(f"{out / 'ca.crt'} has no ca.key beside it, so it cannot sign: run this where ca.key is, "
                          "or pass --new-ca to make a new CA (then copy the new ca.crt everywhere)")
    if new_ca:
        certs.make_ca(out, days=a.days, overwrite=True)
        print(f"new CA: {out / 'ca.crt'} (+ private ca.key)")
    else:
        print(f"reusing CA {out / 'ca.crt'}")
    cert, key = certs.make_server_cert(out, a.host, days=a.days, overwrite=True)
    print(f"SuperLink certificate: {cert} (private key {key}), valid for: {', '.join(certs.valid_for(cert))}")
    print(f"Copy ONLY {out / 'ca.crt'} to each SuperNode machine and each machine that runs `flwr`; "
          "ca.key and server.key stay private.")
    return 0


def cmd_keys(a: argparse.Namespace) -> int:
    try:
        made = certs.make_node_key_pairs(a.out, a.names, overwrite=a.force)  # all or nothing
    except (ValueError, FileExistsError) as error:
        raise DeployError(f"{error}; no key was made") from None
    for name, (private, public) in zip(a.names, made, strict=True):
        print(f"{name}: private key {private} (stays on the SuperNode machine), public key {public} (register it)")
    return 0


def cmd_connection(a: argparse.Namespace) -> int:
    _need_file(a.root_certificates, "the CA certificate", "give the ca.crt made by python -m deploy certs")
    if a.insecure:
        launch.warn_insecure("flwr connection")
    elif not a.root_certificates:
        print("no --root-certificates: flwr will check the SuperLink's certificate against the system's CAs",
              file=sys.stderr)
    path = launch.write_connection(a.name, a.address, root_certificates=a.root_certificates, insecure=a.insecure,
                                   flwr_home=a.flwr_home, default=a.default)
    print(f"[superlink.{a.name}] -> {a.address} written to {path}")
    return 0


@contextmanager
def _reaching(connection: str, env: dict[str, str], d: launch.Deployment | None = None):
    """Turn "the SuperLink is unavailable" into one line that says how to bring it back."""
    try:
        yield
    except launch.SuperLinkUnavailable:
        if d is not None:
            state = "is not running" if not d.alive() else "does not answer (its SuperLink may have died)"
            stop = [["stop", "--workdir", d.workdir]] if d.alive() else []
            raise DeployError(f"the local deployment in {d.workdir} {state}: nothing answers at {d.address}; "
                              f"start it again: {launch.deploy_line(*stop, d.local_command()[3:])}", code=1) from None
        address = launch.connection_address(connection, env) or "its address"
        raise DeployError(f"cannot reach the SuperLink of connection {connection} at {address}: start it "
                          f"(python -m deploy superlink ... on its machine), or correct the address "
                          f"(python -m deploy connection {connection} --address HOST:PORT ...)", code=1) from None


def cmd_register(a: argparse.Namespace) -> int:
    env = launch.flower_env(a.flwr_home)
    ids, refused = {}, []
    with _reaching(a.connection, env):
        for key in a.public_keys:
            try:
                ids[str(key)] = launch.register(key, a.connection, env)
            except launch.FlwrError as error:
                if error.flower_code != 23:
                    raise
                refused.append(error)
    print(json.dumps(ids, indent=2))
    if len(refused) == 1:
        raise refused[0]
    if refused:
        raise DeployError(f"{len(refused)} keys are already registered with {a.connection} ({refused[0]})")
    return 0


def cmd_superlink(a: argparse.Namespace) -> int:
    cmd = launch.superlink_command(host=a.host, port=a.port, certs_dir=a.certs, insecure=a.insecure,
                                   auth=not a.no_auth, database=a.database)  # refuses first, warns after
    if a.insecure:
        launch.warn_insecure("SuperLink")
    elif a.no_auth:
        print("WARNING: SuperNode authentication is OFF (--no-auth): any SuperNode that trusts the CA can join.",
              file=sys.stderr)
    return _exec(cmd, a.flwr_home, a.dry_run)


def cmd_supernode(a: argparse.Namespace) -> int:
    # every refusal first, warnings after
    try:
        socket_path = None if a.no_worker else worker_socket(a.state_dir, a.partition_id)
        config = launch.node_config(a.partition_id, a.num_partitions, a.data_root, a.state_dir, socket_path)
    except ValueError as error:
        raise DeployError(f"{error}: give --partition-id i and --num-partitions K with 0 <= i < K") from None
    if not a.insecure:
        _need_file(a.ca_cert, "--ca-cert", "copy the federation's ca.crt to this machine")
        _need_file(a.key, "--key", "copy this node's private key (made by python -m deploy keys) to this machine")
    mismatch = None if a.dry_run else launch.tls_mismatch(a.superlink, a.insecure)
    if mismatch:
        raise DeployError(mismatch)
    if a.insecure:
        launch.warn_insecure("SuperNode")
    else:
        if a.ca_cert is None:
            print("no --ca-cert: the SuperLink's certificate is checked against the system's CAs", file=sys.stderr)
        if a.key is None:
            print("WARNING: no --key: this SuperNode does not authenticate; a SuperLink started with "
                  "authentication (the default) refuses it.", file=sys.stderr)
    cmd = launch.supernode_command(superlink=a.superlink, config=config, ca_cert=a.ca_cert, key=a.key,
                                   insecure=a.insecure, runtime_port=a.runtime_port)
    if socket_path is not None:  # the worker outlives this process's exec into the SuperNode, and ends with it
        worker_cmd = launch.worker_command(socket_path, exit_with_parent=True)
        worker_line = launch.command_line(worker_cmd, launch.flower_env_vars())
        if a.dry_run:
            print(worker_line + " &")
        else:
            _print_command(worker_line)
            log = Path(socket_path).with_suffix(".log")
            log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(log, "ab") as out:
                worker = subprocess.Popen(worker_cmd, stdout=out, stderr=subprocess.STDOUT, env=launch.flower_env())
            try:
                launch.wait_for_socket(Path(socket_path), worker, log)
            except (RuntimeError, TimeoutError) as error:
                worker.kill()
                raise DeployError(f"{str(error).splitlines()[0]}: see {log}", code=1) from None
            print(f"worker PID {worker.pid} on {socket_path} (log {log})", file=sys.stderr, flush=True)
    return _exec(cmd, a.flwr_home, a.dry_run, relay=True)


def _connection_and_env(a: argparse.Namespace) -> tuple[str, dict[str, str], launch.Deployment | None]:
    if a.workdir:
        d = launch.Deployment.load(a.workdir)
        return a.connection or d.connection, d.env, d
    if not a.connection:
        raise DeployError("no SuperLink named: give a connection name (see python -m deploy connection) or --workdir "
                          "<a folder made by python -m deploy local>")
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


def _run_and_wait(connection: str, env: dict[str, str], a: argparse.Namespace, d: launch.Deployment | None = None,
                  keeps_running: bool = True) -> int:
    """Submit, wait, print the run's entry; ``d``: the local deployment it runs on; ``keeps_running``: whether
    that deployment (or the remote SuperLink) is left running afterwards (else the hints point at files)."""
    try:
        launch.run_config(a.config, a.set, a.resume)  # checked before anything is sent
    except ValueError as error:
        raise DeployError(f"{error}: give --set key.path=value words without quotes or spaces") from None
    submitted = time.time()
    with _reaching(connection, env, d):
        run_id = launch.submit(connection, env, config=a.config, overrides=a.set, resume=a.resume)
    ls = launch.command_line([launch.tool("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"],
                             _flwr_home_of(env))
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
            fix = f"once the SuperLink answers again (nodes online), resume it: " \
                  f"{launch.deploy_line(['run', connection, *_run_options(a, folder)])}"
        elif keeps_running:
            fix = "start the deployment again and resume it: " + launch.deploy_line(
                ["stop", "--workdir", d.workdir], d.local_command("--run", "--keep", *_run_options(a, folder))[3:])
        else:
            fix = "resume it: " + launch.deploy_line(d.local_command("--run", *_run_options(a, folder))[3:])
        raise DeployError(f"{error}; {fix}", code=1) from None
    print(json.dumps(run, indent=2))
    if run["status"] != "finished:completed":
        print(f"deploy {a.command}: run {run_id} did not complete: {run['status']} ({run.get('status-details')}); "
              f"{_log_hint(connection, run_id, env, d, keeps_running)}", file=sys.stderr)
        return 1
    return 0


def _flwr_home_of(env: dict[str, str]) -> dict[str, str]:
    """``FLWR_HOME`` for a printed ``flwr`` line, when ``env`` sets one (else flwr's default ~/.flwr applies)."""
    return {"FLWR_HOME": env["FLWR_HOME"]} if env.get("FLWR_HOME") else {}


def _log_hint(connection: str, run_id: str, env: dict[str, str], d: launch.Deployment | None,
              keeps_running: bool) -> str:
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
        print(f"deploy run: interrupted; run {stop.run_id} goes on at the SuperLink: stop it with "
              f"{launch.command_line([launch.tool('flwr'), 'stop', stop.run_id, connection], _flwr_home_of(env))}",
              file=sys.stderr)
        return 130


def _terminate_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def cmd_local(a: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # `kill` stops what it started, as Ctrl-C does
    try:
        try:
            d = launch.start_local(a.workdir, a.clients, port=a.port, insecure=a.insecure, data_root=a.data_root,
                                   tag=a.tag, workers=not a.no_worker)
        except KeyboardInterrupt:
            print(f"deploy local: interrupted while starting; stopped what it had started in {a.workdir}",
                  file=sys.stderr)
            return 130
        print(f"local deployment {d.tag} in {d.workdir}: SuperLink {d.address}, "
              f"{'INSECURE' if d.insecure else 'TLS + SuperNode authentication'}")
        for p in d.processes:
            node = f" node-id {d.node_ids[p.role]}" if p.role in d.node_ids else ""
            print(f"  {p.role:<12} PID {p.pid}{node}  log {p.log}\n      {p.shell}")
        flwr = [launch.tool("flwr")]
        ls = launch.command_line([*flwr, "ls", d.connection, "--format", "json"], _flwr_home_of(d.env))
        nodes = launch.command_line([*flwr, "supernode", "ls", d.connection], _flwr_home_of(d.env))
        run = launch.deploy_line(["run", "--workdir", d.workdir, "--set", "federation.rounds=2"])
        print(f"each line above restarts its process by hand (in the foreground; a SuperNode once `{nodes}` "
              f"shows it offline)\n"
              f"flwr against it:   {ls}\n"
              f"run an experiment: {run}\n"
              f"stop everything:   {launch.deploy_line(['stop', '--workdir', d.workdir])}", flush=True)
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
            print(f"deploy local: interrupted; {run} and the deployment go on (--keep): stop them with "
                  f"{launch.deploy_line(['stop', '--workdir', d.workdir])}", file=sys.stderr)
        else:
            print(f"deploy local: interrupted; stopped {run} and the deployment in {d.workdir}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_stop(a: argparse.Namespace) -> int:
    if a.tag:
        tag, found = a.tag, launch.processes(a.tag)
        left = launch.stop(a.tag)
    else:
        d = launch.Deployment.load(a.workdir)
        tag, found = d.tag, d.alive()
        left = d.stop()
    if left:
        raise DeployError(f"{len(left)} processes of deployment {tag} survived SIGTERM and SIGKILL: "
                          + "; ".join(left) + ": see whether they are stuck in the kernel (ps -o stat,pid)", code=1)
    print(f"deployment {tag}: stopped {len(found)} processes" if found else f"deployment {tag}: nothing was running")
    return 0


# ---------------------------------------------------------------- parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="experiment YAML, relative to the project (default %(default)s)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set federation.rounds=2 output.dir=/abs/path "
                        "(output.dir is on the SuperLink's machine; give it absolute)")
    p.add_argument("--resume", help="continue this run folder (absolute, on the SuperLink's machine)")
    p.add_argument("--timeout", type=float, default=None, help="stop waiting after this many seconds")
    p.add_argument("--no-wait", action="store_true", help="only submit; print the run id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="a CA and the SuperLink's TLS certificate")
    p.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument("--host", action="append", required=True,
                   help="a host name or IP address by which SuperNodes and flwr reach the SuperLink (repeat); "
                        "localhost and 127.0.0.1 are always added")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--new-ca", action="store_true", help="make a new CA even if --out has one")
    p.add_argument("--force", action="store_true", help="replace an existing server.pem / server.key")
    p.set_defaults(fn=cmd_certs)

    p = sub.add_parser("keys", help="SuperNode authentication key pairs (EC P-384, OpenSSH format)")
    p.add_argument("--out", required=True)
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. node-0 node-1 (all or none are made)")
    p.add_argument("--force", action="store_true",
                   help="replace existing key pairs (locks out nodes registered with them)")
    p.set_defaults(fn=cmd_keys)

    p = sub.add_parser("connection", help="tell `flwr` where a SuperLink is ($FLWR_HOME/config.toml)")
    p.add_argument("name")
    p.add_argument("--address", required=True, help="SuperLink host:port")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--root-certificates", help="the CA certificate (ca.crt) that signed the SuperLink's certificate")
    g.add_argument("--insecure", action="store_true", help="plain HTTP (only for a SuperLink started --insecure)")
    p.add_argument("--default", action="store_true", help="make it flwr's default connection")
    p.add_argument("--flwr-home", help="FLWR_HOME to write to (default $FLWR_HOME or ~/.flwr)")
    p.set_defaults(fn=cmd_connection)

    p = sub.add_parser("register", help="register SuperNode public keys (flwr supernode register)")
    p.add_argument("connection")
    p.add_argument("public_keys", nargs="+")
    p.add_argument("--flwr-home")
    p.set_defaults(fn=cmd_register)

    p = sub.add_parser("superlink", help="run flower-superlink in the foreground (TLS + authentication)")
    p.add_argument("--certs", help="folder with ca.crt, server.pem, server.key (python -m deploy certs)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=launch.DEFAULT_PORT, help="the one port for SuperNodes and flwr "
                                                                           "(default %(default)s)")
    p.add_argument("--database", help="keep the SuperLink's state (registered nodes, runs) in this SQLite file")
    p.add_argument("--no-auth", action="store_true", help="TLS but no SuperNode authentication")
    p.add_argument("--insecure", action="store_true", help="NO TLS and no authentication")
    p.add_argument("--flwr-home", help="FLWR_HOME for the SuperLink (where it installs app bundles)")
    p.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    p.set_defaults(fn=cmd_superlink)

    p = sub.add_parser("supernode", help="run flower-supernode for one client in the foreground")
    p.add_argument("--superlink", required=True, help="SuperLink host:port (the host must be in its certificate)")
    p.add_argument("--partition-id", type=int, required=True, help="which client this is, 0..K-1")
    p.add_argument("--num-partitions", type=int, required=True, help="K, = federation.num_clients")
    p.add_argument("--ca-cert", help="the CA certificate (ca.crt)")
    p.add_argument("--key", help="this SuperNode's private key (its .pub must be registered)")
    p.add_argument("--data-root", help="where this client's datasets are (node-config data-root)")
    p.add_argument("--state-dir", help="where this client keeps its checkpoints (node-config state-dir)")
    p.add_argument("--no-worker", action="store_true",
                   help="no warm worker beside the SuperNode: each message's ClientApp process imports torch and "
                        "PyG itself (about 3 s more per message here)")
    p.add_argument("--runtime-port", type=int, default=9094,
                   help="local port for the SuperNode's ClientApp processes (default %(default)s; "
                        "differs per SuperNode on one machine)")
    p.add_argument("--insecure", action="store_true", help="NO TLS and no authentication")
    p.add_argument("--flwr-home", help="FLWR_HOME for the SuperNode (where it installs app bundles)")
    p.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    p.set_defaults(fn=cmd_supernode)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DeployError as error:
        if error.details:
            print(error.details, file=sys.stderr)
        print(f"deploy {args.command}: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
