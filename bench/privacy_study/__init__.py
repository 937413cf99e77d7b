"""The privacy study's report: accuracy against epsilon per arm and mode, paired with `none` and with noise controls.

    FEDALIGN_DATA_ROOT=../shared/data fedalign sweep simulations/privacy-study/<sweep>.yaml --workers 2
    python -m bench.privacy_study   # results/privacy-study/{table,conclusions[,tuning]}.md, results.csv, plot.png

Every folder under the study's results folder that holds a ``results.csv`` is a sweep (no list of
names): each of its cells is read from its own run folder (``runs/<cell id>/`` or the folder's
``runs.tar.xz``, :mod:`.runs`), and what the cell is (K, split, arm, privacy mode, epsilon) comes from
its ``config.yaml`` and ``summary.json`` (:mod:`.modes`), never from the sweep's name; renaming a sweep
folder changes nothing in the report. Cells of sweeps marked ``purpose: tuning`` (``sweep.json``) go to
``tuning.md`` (:mod:`.tuning`: settings chosen on validation), the others to the table (:mod:`.table`):
every row paired by seed with ``none`` (gain, SE, paired t-test, and at a finite epsilon the share of
the arm's no-noise gain kept) and each DP row with its noise control. ``conclusions.md``
(:mod:`.conclusions`) lists the paired differences between rows with verdicts, ``plot.png``
(:mod:`.plot`) accuracy against epsilon. Missing cells are left out (the table says how many seeds each
row has).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .conclusions import comparisons, write_conclusions
from .modes import describe
from .plot import plot
from .runs import read_cells, sweep_folders
from .table import summarise, write_table
from .tuning import choose, write_tuning

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "results" / "privacy-study"

__all__ = [
    "load_records",
    "summarise",
    "write_table",
    "comparisons",
    "write_conclusions",
    "choose",
    "write_tuning",
    "plot",
    "report",
    "main",
]


def load_records(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every finished cell under ``out``, described from its run: (study cells, tuning cells).

    Args:
        out: the study's results folder (one sweep folder per subfolder with a results.csv).
    """
    study: list[Any] = []
    tuning: list[Any] = []
    for folder in sweep_folders(out):
        for cell in read_cells(folder):
            (tuning if cell["purpose"] == "tuning" else study).append(describe(cell))
    return study, tuning


def report(out: Path, records: tuple[list, list] | None = None) -> list[dict[str, Any]]:
    """Write the study's table.md, results.csv, conclusions.md, plot.png and (with tuning sweeps) tuning.md.

    Args:
        out: the study's results folder.
        records: :func:`load_records`' result, if already read (else it is read from ``out``).

    Returns:
        the table's rows (empty when no cell has finished).
    """
    study, tuning = records or load_records(out)
    table = summarise(study) if study else []
    if table:
        write_table(table, out)
        write_conclusions(comparisons(study), out)
        plot(table, out)
    if tuning:
        write_tuning(choose(tuning), out)
    return table


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.privacy_study [--out FOLDER]``.

    Args:
        argv: the arguments (default: the process's).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the study's results folder (the sweeps write there)")
    args = parser.parse_args(argv)
    study, tuning = load_records(args.out)
    table = report(args.out, (study, tuning))
    if not table:
        print(f"no finished cells under {args.out}; run the sweeps first (see the module docstring)")
        return 1
    print((args.out / "table.md").read_text())
    print((args.out / "conclusions.md").read_text())
    hours = sum(r["wall_seconds"] for r in study if r["wall_seconds"] is not None) / 3600
    print(f"{len(study)} cells, {hours:.1f} h of cell time (sum of the cells' wall_seconds)")
    return 0
