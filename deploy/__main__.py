"""``python -m deploy``: certificates, keys, SuperLink, SuperNodes and runs for fedalign on Flower.

One machine (everything on 127.0.0.1, TLS + SuperNode authentication)::

    python -m deploy local --clients 2 --run --set federation.rounds=2   # start, run, print status, stop
    python -m deploy local --clients 2                                   # start and leave running
    python -m deploy run --workdir ~/.cache/fedalign/deploy/local --set federation.rounds=2
    python -m deploy stop --workdir ~/.cache/fedalign/deploy/local

Separate machines: ``certs`` and ``keys`` once, ``superlink`` on the server,
``connection`` + ``register`` where you run ``flwr``, ``supernode`` on each
client machine, then ``run``. See README, "Running clients on separate machines".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from fedalign.client.paths import worker_socket

from . import certs, launch


def _print_command(cmd: list[str], env: dict[str, str] | None = None) -> None:
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    print(f"$ {prefix + ' ' if prefix else ''}{shlex.join(cmd)}", file=sys.stderr, flush=True)


def _exec(cmd: list[str], flwr_home: str | None, dry_run: bool) -> int:
    """Print the command; unless ``dry_run``, replace this process with it (same PID: signals reach Flower)."""
    extra = {"FLWR_HOME": str(Path(flwr_home).expanduser().resolve())} if flwr_home else {}
    if dry_run:
        print(" ".join([*(f"{k}={v}" for k, v in extra.items()), shlex.join(cmd)]))
        return 0
    _print_command(cmd, extra)
    print(f"PID {os.getpid()}", file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, {**launch.flower_env(), **extra})
    return 1  # not reached


# ---------------------------------------------------------------- subcommands


def cmd_certs(a: argparse.Namespace) -> int:
    out = Path(a.out).expanduser()
    if a.new_ca or not (out / "ca.crt").exists():
        certs.make_ca(out, days=a.days)
        print(f"new CA: {out / 'ca.crt'} (+ private ca.key)")
    else:
        print(f"reusing CA {out / 'ca.crt'}")
    cert, key = certs.make_server_cert(out, a.host, days=a.days)
    print(f"SuperLink certificate: {cert} (private key {key}), valid for: {', '.join(certs.valid_for(cert))}")
    print(f"Copy ONLY {out / 'ca.crt'} to each SuperNode machine and each machine that runs `flwr`; "
          "ca.key and server.key stay private.")
    return 0


def cmd_keys(a: argparse.Namespace) -> int:
    for name in a.names:
        try:
            private, public = certs.make_node_keys(a.out, name, overwrite=a.force)
        except FileExistsError as error:
            print(f"deploy keys: {error}", file=sys.stderr)
            return 2
        print(f"{name}: private key {private} (stays on the SuperNode machine), public key {public} (register it)")
    return 0


def cmd_connection(a: argparse.Namespace) -> int:
    if a.insecure:
        launch.warn_insecure("flwr connection")
    elif not a.root_certificates:
        print("no --root-certificates: flwr will check the SuperLink's certificate against the system's CAs",
              file=sys.stderr)
    path = launch.write_connection(a.name, a.address, root_certificates=a.root_certificates, insecure=a.insecure,
                                   flwr_home=a.flwr_home, default=a.default)
    print(f"[superlink.{a.name}] -> {a.address} written to {path}")
    return 0


def cmd_register(a: argparse.Namespace) -> int:
    env = launch.flower_env(a.flwr_home)
    ids = {str(k): launch.register(k, a.connection, env) for k in a.public_keys}
    print(json.dumps(ids, indent=2))
    return 0


def cmd_superlink(a: argparse.Namespace) -> int:
    if a.insecure:
        launch.warn_insecure("SuperLink")
    elif a.no_auth:
        print("WARNING: SuperNode authentication is OFF (--no-auth): any SuperNode that trusts the CA can join.",
              file=sys.stderr)
    cmd = launch.superlink_command(host=a.host, port=a.port, certs_dir=a.certs, insecure=a.insecure,
                                   auth=not a.no_auth, database=a.database)
    return _exec(cmd, a.flwr_home, a.dry_run)


def cmd_supernode(a: argparse.Namespace) -> int:
    if a.insecure:
        launch.warn_insecure("SuperNode")
    else:
        if a.ca_cert is None:
            print("no --ca-cert: the SuperLink's certificate is checked against the system's CAs", file=sys.stderr)
        if a.key is None:
            print("WARNING: no --key: this SuperNode does not authenticate; a SuperLink started with "
                  "authentication (the default) refuses it.", file=sys.stderr)
    mismatch = None if a.dry_run else launch.tls_mismatch(a.superlink, a.insecure)
    if mismatch:
        print(f"deploy supernode: {mismatch}", file=sys.stderr)
        return 2
    socket_path = None if a.no_worker else worker_socket(a.state_dir, a.partition_id)
    config = launch.node_config(a.partition_id, a.num_partitions, a.data_root, a.state_dir, socket_path)
    cmd = launch.supernode_command(superlink=a.superlink, config=config, ca_cert=a.ca_cert, key=a.key,
                                   insecure=a.insecure, runtime_port=a.runtime_port)
    if socket_path is not None:  # the worker outlives this process's exec into the SuperNode, and ends with it
        worker_cmd = launch.worker_command(socket_path, exit_with_parent=True)
        if a.dry_run:
            print(shlex.join(worker_cmd) + " &")
        else:
            _print_command(worker_cmd)
            log = Path(socket_path).with_suffix(".log")
            log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(log, "ab") as out:
                worker = subprocess.Popen(worker_cmd, stdout=out, stderr=subprocess.STDOUT, env=launch.flower_env())
            launch.wait_for_socket(Path(socket_path), worker, log)
            print(f"worker PID {worker.pid} on {socket_path} (log {log})", file=sys.stderr, flush=True)
    return _exec(cmd, a.flwr_home, a.dry_run)


def _connection_and_env(a: argparse.Namespace) -> tuple[str, dict[str, str]]:
    if a.workdir:
        d = launch.Deployment.load(a.workdir)
        return a.connection or d.connection, d.env
    if not a.connection:
        raise SystemExit("give a connection name (see `python -m deploy connection`) or --workdir")
    return a.connection, launch.flower_env(a.flwr_home)


def _run_and_wait(connection: str, env: dict[str, str], a: argparse.Namespace) -> int:
    run_id = launch.submit(connection, env, config=a.config, overrides=a.set, resume=a.resume)
    print(f"submitted run {run_id}: flwr ls {connection} --run-id {run_id} --format json", file=sys.stderr, flush=True)
    if a.no_wait:
        print(run_id)
        return 0
    run = launch.wait_for_run(connection, run_id, env, timeout=a.timeout, progress=True)
    print(json.dumps(run, indent=2))
    if run["status"] != "finished:completed":
        print(f"run {run_id} did not complete: {run['status']} ({run.get('status-details')}); "
              f"its log: flwr log {run_id} {connection}", file=sys.stderr)
        return 1
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    connection, env = _connection_and_env(a)
    return _run_and_wait(connection, env, a)


def cmd_local(a: argparse.Namespace) -> int:
    d = launch.start_local(a.workdir, a.clients, port=a.port, insecure=a.insecure, data_root=a.data_root, tag=a.tag,
                           workers=not a.no_worker)
    print(f"local deployment {d.tag} in {d.workdir}: SuperLink {d.address}, "
          f"{'INSECURE' if d.insecure else 'TLS + SuperNode authentication'}")
    for p in d.processes:
        node = f" node-id {d.node_ids[p.role]}" if p.role in d.node_ids else ""
        print(f"  {p.role:<12} PID {p.pid}{node}  log {p.log}\n      {p.shell}")
    print(f"flwr against it:  FLWR_HOME={d.flwr_home} flwr ls {d.connection} --format json\n"
          f"run an experiment: {sys.executable} -m deploy run --workdir {d.workdir} --set federation.rounds=2\n"
          f"stop everything:   {sys.executable} -m deploy stop --workdir {d.workdir}", flush=True)
    if not a.run:
        return 0
    try:
        return _run_and_wait(d.connection, d.env, a)
    finally:
        if not a.keep:
            left = d.stop()
            print("stopped" if not left else "still running:\n" + "\n".join(left), file=sys.stderr)


def cmd_stop(a: argparse.Namespace) -> int:
    tag = a.tag or launch.Deployment.load(a.workdir).tag
    left = launch.stop(tag)
    if left:
        print("still running:\n" + "\n".join(left), file=sys.stderr)
        return 1
    print(f"deployment {tag}: no process left")
    return 0


# ---------------------------------------------------------------- parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="simulations/quickstart.yaml",
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
    p.set_defaults(fn=cmd_certs)

    p = sub.add_parser("keys", help="SuperNode authentication key pairs (EC P-384, OpenSSH format)")
    p.add_argument("--out", required=True)
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. node-0 node-1")
    p.add_argument("--force", action="store_true", help="replace existing key pairs (locks out nodes registered with them)")
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

    p = sub.add_parser("stop", help="stop every process of a `local` deployment (by PID)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--workdir")
    g.add_argument("--tag")
    p.set_defaults(fn=cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
