"""``python -m deploy`` commands that set up separate machines: certificates, keys, connections,
registrations, and a SuperLink or SuperNode in the foreground."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fedalign.client.paths import worker_socket

from . import certs, launch
from .cli_shared import exec_command, need_file, print_command, reaching
from .launch import DeployError


def cmd_certs(a: argparse.Namespace) -> int:
    out = Path(a.out).expanduser().resolve()
    new_ca = a.new_ca or not (out / "ca.crt").exists()
    # every check before any file is written
    if not a.force:
        existing = [p for p in (out / "server.key", out / "server.pem") if p.exists()]
        if existing:
            raise DeployError(
                f"{existing[0]} exists: a SuperLink may be using it, and SuperNodes trust its CA; "
                "pass --force to replace the SuperLink's certificate and key (add --new-ca for a new CA "
                "too, then copy the new ca.crt everywhere)"
            )
    if not new_ca and not (out / "ca.key").is_file():
        raise DeployError(
            f"{out / 'ca.crt'} has no ca.key beside it, so it cannot sign: run this where ca.key is, "
            "or pass --new-ca to make a new CA (then copy the new ca.crt everywhere)"
        )
    if new_ca:
        certs.make_ca(out, days=a.days, overwrite=True)
        print(f"new CA: {out / 'ca.crt'} (+ private ca.key)")
    else:
        print(f"reusing CA {out / 'ca.crt'}")
    cert, key = certs.make_server_cert(out, a.host, days=a.days, overwrite=True)
    print(f"SuperLink certificate: {cert} (private key {key}), valid for: {', '.join(certs.valid_for(cert))}")
    print(
        f"Copy ONLY {out / 'ca.crt'} to each SuperNode machine and each machine that runs `flwr`; "
        "ca.key and server.key stay private."
    )
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
    need_file(a.root_certificates, "the CA certificate", "give the ca.crt made by python -m deploy certs")
    if a.insecure:
        launch.warn_insecure("flwr connection")
    elif not a.root_certificates:
        print(
            "no --root-certificates: flwr will check the SuperLink's certificate against the system's CAs",
            file=sys.stderr,
        )
    path = launch.write_connection(
        a.name,
        a.address,
        root_certificates=a.root_certificates,
        insecure=a.insecure,
        flwr_home=a.flwr_home,
        default=a.default,
    )
    print(f"[superlink.{a.name}] -> {a.address} written to {path}")
    return 0


def cmd_register(a: argparse.Namespace) -> int:
    env = launch.flower_env(a.flwr_home)
    ids, refused = {}, []
    with reaching(a.connection, env):
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
    cmd = launch.superlink_command(
        host=a.host, port=a.port, certs_dir=a.certs, insecure=a.insecure, auth=not a.no_auth, database=a.database
    )  # refuses first, warns after
    if a.insecure:
        launch.warn_insecure("SuperLink")
    elif a.no_auth:
        print(
            "WARNING: SuperNode authentication is OFF (--no-auth): any SuperNode that trusts the CA can join.",
            file=sys.stderr,
        )
    return exec_command(cmd, a.flwr_home, a.dry_run)


def cmd_supernode(a: argparse.Namespace) -> int:
    # every refusal first, warnings after
    try:
        socket_path = None if a.no_worker else worker_socket(a.state_dir, a.partition_id)
        config = launch.node_config(a.partition_id, a.num_partitions, a.data_root, a.state_dir, socket_path)
    except ValueError as error:
        raise DeployError(f"{error}: give --partition-id i and --num-partitions K with 0 <= i < K") from None
    if not a.insecure:
        need_file(a.ca_cert, "--ca-cert", "copy the federation's ca.crt to this machine")
        need_file(a.key, "--key", "copy this node's private key (made by python -m deploy keys) to this machine")
    mismatch = None if a.dry_run else launch.tls_mismatch(a.superlink, a.insecure)
    if mismatch:
        raise DeployError(mismatch)
    if a.insecure:
        launch.warn_insecure("SuperNode")
    else:
        if a.ca_cert is None:
            print("no --ca-cert: the SuperLink's certificate is checked against the system's CAs", file=sys.stderr)
        if a.key is None:
            print(
                "WARNING: no --key: this SuperNode does not authenticate; a SuperLink started with "
                "authentication (the default) refuses it.",
                file=sys.stderr,
            )
    cmd = launch.supernode_command(
        superlink=a.superlink,
        config=config,
        ca_cert=a.ca_cert,
        key=a.key,
        insecure=a.insecure,
        runtime_port=a.runtime_port,
    )
    if socket_path is not None:  # the worker outlives this process's exec into the SuperNode, and ends with it
        worker_cmd = launch.worker_command(socket_path, exit_with_parent=True)
        worker_line = launch.command_line(worker_cmd, launch.flower_env_vars())
        if a.dry_run:
            print(worker_line + " &")
        else:
            print_command(worker_line)
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
    return exec_command(cmd, a.flwr_home, a.dry_run, relay=True)


def add_credential_commands(sub) -> None:
    """The ``certs``, ``keys``, ``connection`` and ``register`` subcommands.

    Args:
        sub: the parser's subparsers.
    """
    p = sub.add_parser("certs", help="a CA and the SuperLink's TLS certificate")
    p.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument(
        "--host",
        action="append",
        required=True,
        help="a host name or IP address by which SuperNodes and flwr reach the SuperLink (repeat); "
        "localhost and 127.0.0.1 are always added",
    )
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--new-ca", action="store_true", help="make a new CA even if --out has one")
    p.add_argument("--force", action="store_true", help="replace an existing server.pem / server.key")
    p.set_defaults(fn=cmd_certs)

    p = sub.add_parser("keys", help="SuperNode authentication key pairs (EC P-384, OpenSSH format)")
    p.add_argument("--out", required=True)
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. node-0 node-1 (all or none are made)")
    p.add_argument(
        "--force", action="store_true", help="replace existing key pairs (locks out nodes registered with them)"
    )
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


def add_process_commands(sub) -> None:
    """The ``superlink`` and ``supernode`` subcommands.

    Args:
        sub: the parser's subparsers.
    """
    p = sub.add_parser("superlink", help="run flower-superlink in the foreground (TLS + authentication)")
    p.add_argument("--certs", help="folder with ca.crt, server.pem, server.key (python -m deploy certs)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=launch.DEFAULT_PORT,
        help="the one port for SuperNodes and flwr (default %(default)s)",
    )
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
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="no warm worker beside the SuperNode: each message's ClientApp process imports torch and "
        "PyG itself (about 3 s more per message here)",
    )
    p.add_argument(
        "--runtime-port",
        type=int,
        default=9094,
        help="local port for the SuperNode's ClientApp processes (default %(default)s; "
        "differs per SuperNode on one machine)",
    )
    p.add_argument("--insecure", action="store_true", help="NO TLS and no authentication")
    p.add_argument("--flwr-home", help="FLWR_HOME for the SuperNode (where it installs app bundles)")
    p.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    p.set_defaults(fn=cmd_supernode)
