"""The ``fedalign`` command line.

    fedalign run simulations/quickstart.yaml                 # Flower simulation (default)
    fedalign run simulations/cora.yaml --engine inprocess    # same code, no Flower
    fedalign run simulations/cora.yaml --set federation.rounds=10 --set align.strategy=none
    fedalign run simulations/cora.yaml --resume outputs/cora-20261123-101500   # carry on a stopped run
    fedalign validate simulations/cora.yaml                  # check a config, train nothing
    fedalign sweep simulations/cora-strategies.yaml          # a resumable grid of runs

The Flower engine lives in the ``server`` package (the library itself never
imports Flower); it is loaded only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .sweep import load_sweep, run_sweep


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedalign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and write a run folder")
    validate = sub.add_parser("validate", help="check an experiment file without training")
    for p in (run, validate):
        p.add_argument("config", help="experiment YAML, e.g. simulations/quickstart.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set federation.rounds=10 (repeatable)")
    run.add_argument("--engine", choices=("flower", "inprocess"), default="flower",
                     help="flower: Flower Simulation Runtime (default); inprocess: every student in this process")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None, help="write outputs here instead of a new folder under output.dir")
    where.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue a stopped run from its saved state (same config; rounds may grow)")
    sweep = sub.add_parser("sweep", help="run a grid of experiments (resumable) and tabulate them")
    sweep.add_argument("sweep", help="sweep YAML, e.g. simulations/cora-strategies.yaml")
    return parser


def _engine(name: str):
    """The run function of an engine: (cfg, run_dir) -> (run_dir, summary)."""
    if name == "flower":
        return importlib.import_module("server.simulation").run_flower_simulation
    return importlib.import_module("fedalign.runner").run_inprocess


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            spec = load_sweep(args.sweep)
        else:
            cfg = load_config(args.config, args.set)
    except ConfigError as err:
        print(f"fedalign: config error: {err}", file=sys.stderr)
        return 2
    if args.command == "sweep":
        rows = run_sweep(spec, _engine(spec.engine))
        print((spec.output / "table.md").read_text())
        print(f"{len(rows)} cells; results in {spec.output}")
        return 0
    if args.command == "validate":
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.resume is not None and not (Path(args.resume) / "config.yaml").is_file():
        print(f"fedalign: --resume {args.resume}: not a run folder (no config.yaml there)", file=sys.stderr)
        return 2
    try:
        run_dir, summary = _engine(args.engine)(cfg, args.resume or args.run_dir, resume=args.resume is not None)
    except ValueError as err:
        if args.resume is None or "cannot resume" not in str(err):
            raise
        print(f"fedalign: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("status", "metric", "mean_test_at_best_val", "clients")}, indent=2))
    print(f"outputs written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
