"""Reading a sweep folder's cells: results.csv names each cell, its run folder holds its config and summary.

A sweep folder is any folder with a ``results.csv`` (:mod:`fedalign.sweep`). Each row's run
folder is ``runs/<cell id>/`` (the ``run`` column; older results.csv files have none, and the id is
rebuilt from the grid columns before ``metric`` as :func:`fedalign.sweep.cell_id` builds it). A
finished sweep keeps its runs in ``runs.tar.xz``: its ``config.yaml`` and ``summary.json`` members
are read in memory (regular files at ``runs/<id>/<file>`` only; nothing is written to disk).
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from fedalign.runstore import ARCHIVE, RUNS
from fedalign.sweep_tables import read_sweep_json

WANTED = ("config.yaml", "summary.json")
OPTIONAL = ("vote_labels.json",)  # strategy votes: the kept labels scored by the simulation


def sweep_folders(out: Path) -> list[Path]:
    """Every folder under ``out`` (one level down) holding a ``results.csv``, in name order.

    Args:
        out: the study's results folder.
    """
    return sorted(p.parent for p in Path(out).glob("*/results.csv") if p.is_file())


def _parse(name: str, data: bytes) -> Any:
    return yaml.safe_load(data) if name.endswith(".yaml") else json.loads(data)


def read_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """``{cell id: {"config.yaml": dict, "summary.json": dict}}`` from ``runs/`` or, failing that, ``runs.tar.xz``.

    Args:
        folder: a sweep's results folder.
    """
    runs: dict[str, dict[str, Any]] = {}
    live, archive = Path(folder) / RUNS, Path(folder) / ARCHIVE
    if live.is_dir():
        for run in sorted(p for p in live.iterdir() if p.is_dir()):
            for name in WANTED + OPTIONAL:
                if (run / name).is_file():
                    runs.setdefault(run.name, {})[name] = _parse(name, (run / name).read_bytes())
    elif archive.is_file():
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (
                    member.isreg()
                    and len(parts) == 3
                    and parts[0] == RUNS
                    and parts[2] in WANTED + OPTIONAL
                    and parts[1] not in (".", "..")
                ):
                    stream = tar.extractfile(member)
                    if stream is not None:  # None for anything but a regular file
                        runs.setdefault(parts[1], {})[parts[2]] = _parse(parts[2], stream.read())
    return runs


def _cell_id(row: dict[str, str], columns: list[str]) -> str:
    """The run folder of a results.csv row (``run`` column, else rebuilt from the grid columns)."""
    if row.get("run"):
        return row["run"]
    keys = columns[: columns.index("metric")]
    return "__".join(f"{k}={row[k] if row[k] != '' else None}" for k in keys).replace("/", "_").replace(" ", "")


def read_cells(folder: Path) -> list[dict[str, Any]]:
    """One record per finished cell of a sweep folder: its results.csv row, run config and summary.

    Args:
        folder: a sweep's results folder (with results.csv).

    Returns:
        dicts with ``sweep``, ``purpose``, ``run``, ``row`` (the results.csv row, strings), ``grid`` (the grid
        columns: name -> value), ``config`` and ``summary``; rows without a test value are left out.
    """
    meta = read_sweep_json(folder)
    with open(Path(folder) / "results.csv") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    runs = read_runs(folder)
    grid_columns = [c for c in columns[: columns.index("metric")] if c != "run"] if "metric" in columns else []
    cells = []
    for row in rows:
        if not row.get("test"):
            continue
        run = _cell_id(row, columns)
        found = runs.get(run, {})
        missing = [name for name in WANTED if name not in found]
        if missing:
            raise FileNotFoundError(
                f"{folder}: run {run!r} of results.csv has no {' or '.join(missing)} under {RUNS}/ or in {ARCHIVE}"
            )
        cells.append(
            {
                "sweep": Path(folder).name,
                "purpose": meta["purpose"],
                "run": run,
                "row": row,
                "grid": {c: row[c] for c in grid_columns},
                "config": found["config.yaml"],
                "summary": found["summary.json"],
                "vote_labels": found.get("vote_labels.json"),
            }
        )
    return cells
