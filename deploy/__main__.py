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
import sys

from .launch import DeployError
from .machines import add_credential_commands, add_process_commands
from .runs import add_run_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_credential_commands(sub)
    add_process_commands(sub)
    add_run_commands(sub)
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
