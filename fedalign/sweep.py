"""Grids of experiments: run every cell once, resumably, and tabulate.

A sweep file (YAML) names a base experiment and a grid of overrides::

    base: cora.yaml                 # experiment file, relative to the sweep file
    set: [federation.rounds=200]    # overrides applied to every cell (optional)
    grid:                           # the cartesian product of these values
      align.strategy: [none, one-to-one, alignahead]
      seed: [0, 1, 2]
      federation.num_clients,federation.rounds: [[2, 100], [3, 150]]   # zipped keys
    engine: inprocess               # or flower (Flower Simulation Runtime)
    output: results/cora-strategies # results folder, relative to the sweep file
    plot: {x: align.strategy}       # optional: x axis key (and `line` key) of plot.png
    noise_controls: true            # optional: a noise-control twin beside every DP-statistics cell
    purpose: study                  # optional: study (default) or tuning (settings chosen on validation)

A grid key naming several config keys separated by commas is *zipped*: its
values are lists with one entry per named key, set together (above: 2 clients
with 100 rounds, then 3 clients with 150 rounds; not 2 x 2 combinations).
In cell names, tables and ``plot`` the zipped keys appear one by one.

``noise_controls: true`` adds, right after every cell whose config noises released
statistics (``privacy.mechanism: gaussian`` with a finite ``target_epsilon`` or a
``noise_multiplier`` > 0, a strategy that shares statistics, ``privacy.noise_control``
false), its *noise control*: the same config plus ``privacy.noise_control=true`` (every
charged release made from zeros: pure noise of the same sigma, epsilon spent 0). The twin
is a cell like any other (id: the cell's id + ``__noise-control``; resumed, tabulated and
plotted, dashed, like the others), and ``results.csv`` gets a ``privacy.noise_control``
column. Cells without statistics noise (``none``, ``self``, ``fedavg``, ``dp-fedavg``,
epsilon = inf, label DP) get no twin. ``purpose`` is copied into ``<output>/sweep.json``
(with the sweep's name and ``noise_controls``), where reports read it: a ``tuning`` sweep's
cells choose settings by their validation metric (``bench.privacy_study`` writes
``tuning.md``), never by test.

Named *arms* bundle overrides under one name, and the grid key ``arm`` picks
them (an arm is a row of the table, e.g. a strategy with its own settings)::

    arms:
      none: [align.strategy=none]
      alignahead-tuned: [align.strategy=alignahead, align.weight=10, align.tau=1]
    arms_file: tuned-arms.yaml      # optional: more arms from a file (or a list of files)
    grid:
      seed: [0, 1, 2]
      arm: [none, alignahead-tuned]

Each cell runs into ``<output>/runs/<cell id>/``; a cell whose
``summary.json`` says ``finished`` (with the cell's current config) is not run
again, so an interrupted sweep resumes where it stopped. When every cell is
done the run folders are packed into ``<output>/runs.tar.xz``
(:mod:`fedalign.runstore`). After every cell the sweep rewrites
``results.csv`` (one row per cell), ``table.md`` (mean +- std over seeds of
the test metric at best validation, one row per combination of the
non-seed keys), ``plot.png`` and ``sweep.json`` (:mod:`fedalign.sweep_tables`);
``results.csv``'s ``run`` column names each cell's run folder. Before each cell the process forgets
the datasets and partitions it cached (:func:`fedalign.data.release_cached_data`), so a long sweep holds
one cell's data at a time.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .alignment import shares_statistics
from .config import ExperimentConfig, load_config
from .data import release_cached_data
from .runner import config_differences
from .runstore import RUNS, archive_runs, finished_summary, runs_dir, unarchive_runs
from .sweep_spec import ARM, SweepSpec, read_sweep_spec
from .sweep_tables import NOISE_CONTROL, aggregate, plot_sweep, write_results

__all__ = [
    "SweepSpec",
    "load_sweep",
    "cells",
    "cell_id",
    "cell_config",
    "finished_cell",
    "run_sweep",
    "run_sweeps",
    "result_row",
    "aggregate",
    "write_results",
    "plot_sweep",
    "needs_noise_control",
    "NOISE_CONTROL",
]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every cell's config is validated up front.

    Args:
        path: the sweep file (YAML; see the module docstring).
    """
    spec = read_sweep_spec(path)
    for cell in cells(spec):
        cell_config(spec, cell)  # fail before any training
    return spec


def cells(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of grid values, in grid order (zipped keys vary together); with ``noise_controls``,
    each DP-statistics cell followed by its noise-control twin (the cell plus ``privacy.noise_control: True``).

    Args:
        spec: the sweep.
    """
    axes = spec.axes
    result = []
    for combo in itertools.product(*(values for _, values in axes)):
        cell: dict[str, Any] = {}
        for (keys, _), values in zip(axes, combo, strict=True):
            cell.update(zip(keys, values, strict=True))
        result.append(cell)
        if spec.noise_controls and needs_noise_control(cell_config(spec, cell)):
            result.append({**cell, NOISE_CONTROL: True})
    return result


def needs_noise_control(cfg: ExperimentConfig) -> bool:
    """True when ``cfg`` noises the statistics it releases (the Gaussian mechanism with a finite epsilon or a
    sigma > 0, a strategy that shares statistics) and is not itself a noise control.

    Args:
        cfg: a cell's config.
    """
    p = cfg.privacy
    noisy = (p.target_epsilon is not None and math.isfinite(p.target_epsilon)) or (p.noise_multiplier or 0) > 0
    return p.mechanism == "gaussian" and noisy and not p.noise_control and shares_statistics(cfg.align.strategy)


def cell_id(cell: dict[str, Any]) -> str:
    """A file-name-safe, stable name for a cell, e.g. ``align.strategy=none__seed=0``; a noise-control twin's
    ends in ``__noise-control``.

    Args:
        cell: the cell's grid values (config key -> value).
    """
    parts = ["noise-control" if k == NOISE_CONTROL and v is True else f"{k}={v}" for k, v in cell.items()]
    return "__".join(parts).replace("/", "_").replace(" ", "")


def cell_config(spec: SweepSpec, cell: dict[str, Any]) -> ExperimentConfig:
    """The cell's config: the base experiment, the sweep's ``set``, the cell's arm, then its grid values.

    Args:
        spec: the sweep.
        cell: the cell's grid values.
    """
    sets = [
        f"{k}={json.dumps(v) if not (isinstance(v, float) and math.isinf(v)) else '.inf'}"
        for k, v in cell.items()
        if k != ARM
    ]
    arm = spec.arms[cell[ARM]] if ARM in cell else []
    cfg = load_config(spec.base, spec.overrides + arm + sets + ["output.plot=false", "output.progress=false"])
    cfg.name = cell_id(cell)
    return cfg


def finished_cell(spec: SweepSpec, cell: dict[str, Any], stream=None) -> dict | None:
    """The summary of the cell's run if it finished with the cell's current config, else None.

    A finished run whose ``config.yaml`` no longer matches the cell (the base experiment or a
    default changed since) does not count: it is run again, and the message says why.

    Args:
        spec: the sweep.
        cell: the cell's grid values.
        stream: where the message goes (default stderr).
    """
    run_dir = runs_dir(spec.output) / cell_id(cell)
    summary = finished_summary(run_dir)
    if summary is None:
        return None
    changed = config_differences(run_dir, cell_config(spec, cell))
    if changed:
        print(
            f"[sweep] {run_dir.name}: finished with another config ({'; '.join(changed[:3])}"
            f"{'; ...' if len(changed) > 3 else ''}): running it again",
            file=stream or sys.stderr,
            flush=True,
        )
        return None
    return summary


Runner = Callable[[ExperimentConfig, Path], tuple[Path, dict]]


def run_sweep(spec: SweepSpec, runner: Runner, stream=None, workers: int = 1) -> list[dict]:
    """Run every unfinished cell with ``runner(cfg, run_dir)``; returns the result rows.

    Args:
        spec: the sweep.
        runner: runs one cell's config into its run folder; returns (run folder, summary).
        stream: where progress lines go (default stderr).
        workers: cells run at a time.
    """
    return run_sweeps([spec], runner, stream, workers)[0]


def run_sweeps(specs: list[SweepSpec], runner: Runner, stream=None, workers: int = 1) -> list[list[dict]]:
    """Run the unfinished cells of several sweeps, in order, ``workers`` at a time; rows per sweep.

    With ``workers`` > 1 each cell runs in a worker process with one torch thread (the runner must be module-level);
    after every finished cell its sweep's results are rewritten, and a progress line gives the cells and minutes left.

    Args:
        specs: the sweeps.
        runner: as for :func:`run_sweep`.
        stream: as for :func:`run_sweep`.
        workers: as for :func:`run_sweep`.
    """
    stream = stream or sys.stderr
    todo, rows = _finished_rows(specs, stream)
    total, started, done = len(todo), time.perf_counter(), 0

    def finished(s_index: int, c_index: int, cell: dict, summary: dict, seconds: float) -> None:
        nonlocal done
        done += 1
        spec = specs[s_index]
        rows[s_index][c_index] = result_row(cell, summary, spec.noise_controls)
        write_results(spec, [rows[s_index][i] for i in sorted(rows[s_index])])
        metric = summary.get("mean_test_at_best_val")
        elapsed = time.perf_counter() - started
        left = elapsed / done * (total - done) / 60
        label = ", ".join(f"{k}={v}" for k, v in cell.items())
        print(
            f"[sweep {spec.name or spec.output.name}] {label}: test "
            f"{metric if metric is None else round(metric, 4)} ({seconds:.1f}s); {done}/{total} cells run, "
            f"~{left:.0f} min left",
            file=stream,
            flush=True,
        )

    for s_index, spec in enumerate(specs):  # tables of what is already there
        if rows[s_index]:
            write_results(spec, [rows[s_index][i] for i in sorted(rows[s_index])])
    jobs = [
        (s_index, c_index, cell, cell_config(specs[s_index], cell), specs[s_index].output / "runs" / cell_id(cell))
        for s_index, c_index, cell in todo
    ]
    _run_jobs(jobs, runner, workers, finished)
    for spec in specs:  # every cell done: the per-run logs go into one archive beside the tables
        if (spec.output / RUNS).is_dir():
            archive_runs(spec.output)
    return [[r[i] for i in sorted(r)] for r in rows]


def _finished_rows(specs: list[SweepSpec], stream) -> tuple[list[tuple[int, int, dict]], list[dict[int, dict]]]:
    """The cells still to run, as (sweep index, cell index, cell), and per sweep the rows of the finished ones
    (by cell index); a sweep with cells to run gets its archived runs back."""
    todo, rows = [], [dict[int, dict]() for _ in specs]
    for s_index, spec in enumerate(specs):
        for c_index, cell in enumerate(cells(spec)):
            summary = finished_cell(spec, cell, stream)
            if summary is None:
                todo.append((s_index, c_index, cell))
            else:
                rows[s_index][c_index] = result_row(cell, summary, spec.noise_controls)
        if any(t[0] == s_index for t in todo):
            unarchive_runs(spec.output)
    return todo, rows


def _run_jobs(jobs: list[tuple], runner: Runner, workers: int, finished: Callable[..., None]) -> None:
    """Run every (sweep index, cell index, cell, config, run folder) job, in this process or ``workers`` spawned
    ones; ``finished(sweep index, cell index, cell, summary, seconds)`` after each."""
    if workers <= 1:
        for s_index, c_index, cell, cfg, run_dir in jobs:
            summary, seconds = _run_cell(runner, cfg, run_dir)
            finished(s_index, c_index, cell, summary, seconds)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = {
            pool.submit(_run_cell, runner, cfg, run_dir): (s_index, c_index, cell)
            for s_index, c_index, cell, cfg, run_dir in jobs
        }
        for future in as_completed(futures):
            summary, seconds = future.result()
            finished(*futures[future], summary, seconds)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run_cell(runner: Runner, cfg: ExperimentConfig, run_dir: Path) -> tuple[dict, float]:
    if run_dir.exists():  # a cell interrupted earlier: start it afresh
        for stale in ("rounds.jsonl", "summary.json", "server-state.npz"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "client-state", ignore_errors=True)
    release_cached_data()  # the last cell's partition goes before this one's is built (not both in memory)
    started = time.perf_counter()
    _, summary = runner(cfg, run_dir)
    return summary, time.perf_counter() - started


def result_row(cell: dict[str, Any], summary: dict, noise_controls: bool = False) -> dict[str, Any]:
    """One results.csv row: the cell's grid values, its run folder's name, and its summary's numbers.

    Args:
        cell: the cell's grid values.
        summary: its run's ``summary.json``.
        noise_controls: the sweep adds noise controls (every row then says whether it is one).
    """
    control = {NOISE_CONTROL: cell.get(NOISE_CONTROL, False)} if noise_controls else {}
    row = {
        **cell,
        **control,
        "run": cell_id(cell),
        "metric": summary["metric"],
        "test": summary["mean_test_at_best_val"],
    }
    for client, values in summary["clients"].items():
        row[f"test_client{client}"] = values["test_at_best_val"]
        row[f"best_round_client{client}"] = values["best_round"]
    if "epsilon" in summary:
        row["epsilon_spent"] = summary["epsilon"]
    row["bytes_sent_total"] = summary["bytes_sent_total"]
    row["wall_seconds"] = summary["wall_seconds"]
    return row
