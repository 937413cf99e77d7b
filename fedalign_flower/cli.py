"""The ``fedalign`` command line.

    fedalign run simulations/quickstart.yaml                 # Flower simulation (default)
    fedalign run simulations/cora.yaml --engine inprocess    # same code, no Flower
    fedalign run simulations/cora.yaml --set federation.rounds=10 --set align.strategy=none
    fedalign run simulations/cora.yaml --resume outputs/cora-20261123-101500   # carry on a stopped run
    fedalign check simulations/cora.yaml                     # check a config, train nothing
    fedalign sweep simulations/cora-strategies.yaml          # a resumable grid of runs
    fedalign layout simulations/cora.yaml --out layout.npz   # the public layout artefact, for a server without data

Errors a user can fix (a config value or key -- unknown, of the wrong type, given twice in the file --,
``device: cuda`` without a GPU, missing data files, a run folder that does not
match, a client whose privacy ledger was lost) end the command at once with one line
saying what is wrong and how to fix it, and exit status 2. Flower's and Ray's logs go to
``flower.log`` in the run folder (``--verbose`` shows them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedalign.config import ConfigError, ExperimentConfig, check_device, load_config
from fedalign.data import missing_raw_files
from fedalign.inprocess import run_inprocess
from fedalign.ledgers import LedgerBroken
from fedalign.public_layout import public_layout_from_data, save_public_layout
from fedalign.queries import check_query_set
from fedalign.sweep import cell_config, cells, load_sweep, run_sweep

ENGINES = ("flower", "inprocess")


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedalign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and write a run folder")
    check = sub.add_parser("check", help="check an experiment file and its data without training")
    layout = sub.add_parser(
        "layout",
        help="write the public layout artefact the server checks releases against "
        "(run where the data is; ship the file to the server)",
    )
    layout.add_argument("--out", required=True, help="the .npz to write, e.g. layout.npz")
    for p in (run, check, layout):
        p.add_argument("config", help="experiment YAML, e.g. simulations/quickstart.yaml")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set federation.rounds=10 (repeatable)",
        )
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default="flower",
        help="flower: Flower Simulation Runtime (default); inprocess: every student in this process",
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None, help="write outputs here instead of a new folder under output.dir")
    where.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a stopped run from its saved state (same config; rounds may grow)",
    )
    sweep = sub.add_parser("sweep", help="run a grid of experiments (resumable) and tabulate them")
    sweep.add_argument("sweep", help="sweep YAML, e.g. simulations/cora-strategies.yaml")
    sweep.add_argument(
        "--workers",
        type=int,
        default=1,
        help="cells run at once, each in its own process with one torch thread (in-process engine)",
    )
    for p in (run, sweep):
        p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs on the console")
    return parser


def engine(name: str, verbose: bool = False):
    """The run function of an engine: (cfg, run_dir, resume) -> (run_dir, summary).

    Args:
        name: ``"inprocess"`` or ``"flower"``.
        verbose: show Flower's and Ray's logs on the console (the Flower engine).
    """
    if name == "inprocess":
        return run_inprocess
    from .runtime import run_flower_simulation

    def run(cfg: ExperimentConfig, run_dir=None, resume: bool = False):
        return run_flower_simulation(cfg, run_dir, resume, verbose=verbose)

    return run


def require_data(cfg: ExperimentConfig) -> None:
    """Simulation runs read the data and train here: fail before any round if its files are missing, or if
    ``device: cuda`` finds no GPU on this machine.

    Args:
        cfg: the experiment config.
    """
    check_device(cfg)
    reason = missing_raw_files(cfg.data.name, cfg.data.root)
    if reason is not None:
        raise UserError(reason)
    check_query_set(cfg)


def _run(args) -> int:
    cfg = load_config(args.config, args.set)
    require_data(cfg)
    if args.resume is not None and not (Path(args.resume) / "config.yaml").is_file():
        raise UserError(f"--resume {args.resume}: not a run folder (no config.yaml there)")
    try:
        run_dir, summary = engine(args.engine, args.verbose)(
            cfg, args.resume or args.run_dir, resume=args.resume is not None
        )
    except ValueError as err:
        if args.resume is not None and "cannot resume" in str(err):
            raise UserError(str(err)) from None
        raise
    except LedgerBroken as err:  # a client's privacy ledger did not continue: refused, the run folder kept
        raise UserError(f"refused: {err}") from None
    print(json.dumps({k: summary[k] for k in ("status", "metric", "mean_test_at_best_val", "clients")}, indent=2))
    print(f"outputs written to {run_dir}")
    return 0


def _sweep(args) -> int:
    spec = load_sweep(args.sweep)
    if args.workers < 1 or (args.workers > 1 and spec.engine != "inprocess"):
        raise UserError(
            f"--workers {args.workers}: use a number >= 1, and more than 1 only with engine: inprocess "
            "(the Flower engine places its clients through Ray)"
        )
    for cfg in {
        json.dumps(cell_config(spec, c).data.model_dump(), sort_keys=True): cell_config(spec, c) for c in cells(spec)
    }.values():
        require_data(cfg)
    rows = run_sweep(spec, engine(spec.engine, args.verbose), workers=args.workers)
    print((spec.output / "table.md").read_text())
    print(f"{len(rows)} cells; results in {spec.output}")
    return 0


def _layout(args) -> int:
    """Derive the public layout of an experiment from its data, save it, and print its fingerprint."""
    cfg = load_config(args.config, args.set)
    require_data(cfg)
    artefact = public_layout_from_data(cfg)
    path = save_public_layout(artefact, args.out).resolve()
    print(f"public layout of {cfg.name} ({cfg.align.strategy}, {artefact.num_nodes} nodes): {path}")
    print(f"fingerprint (sha256): {artefact.fingerprint}")
    print(f"on the server: --set federation.public_layout={path}  (copy the file there first; it needs no data)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``fedalign`` command line: run, resume, sweep, layout or show an experiment.

    Args:
        argv: the command-line arguments, or None for ``sys.argv[1:]``.

    Returns:
        the exit status (0 on success, 2 on a config or user error).
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "layout":
            return _layout(args)
        if args.command == "check":
            cfg = load_config(args.config, args.set)
            require_data(cfg)
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        return _run(args)
    except ConfigError as err:
        print(f"fedalign: config error: {err}", file=sys.stderr)
    except UserError as err:
        print(f"fedalign: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
