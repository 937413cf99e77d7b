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
``results.csv``'s ``run`` column names each cell's run folder.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alignment import shares_statistics
from .config import ConfigError, ExperimentConfig, load_config, read_yaml
from .runner import config_differences
from .runstore import RUNS, archive_runs, finished_summary, runs_dir, unarchive_runs
from .sweep_tables import NOISE_CONTROL, aggregate, plot_sweep, write_results

__all__ = ["SweepSpec", "load_sweep", "cells", "cell_id", "cell_config", "finished_cell", "run_sweep", "run_sweeps",
           "result_row", "aggregate", "write_results", "plot_sweep", "needs_noise_control", "NOISE_CONTROL"]


@dataclass
class SweepSpec:
    base: Path
    grid: dict[str, list[Any]]
    output: Path
    overrides: list[str] = field(default_factory=list)
    engine: str = "inprocess"
    plot: dict[str, str] = field(default_factory=dict)
    arms: dict[str, list[str]] = field(default_factory=dict)  # arm name -> its overrides (grid key "arm")
    name: str = ""  # for progress lines: the sweep file's stem
    noise_controls: bool = False  # add a noise-control twin beside every DP-statistics cell
    purpose: str = "study"  # study or tuning (recorded in sweep.json)

    @property
    def axes(self) -> list[tuple[tuple[str, ...], list[tuple]]]:
        """The grid as (config keys, value tuples) per grid entry; a zipped entry has several keys."""
        return [(split_key(key), [tuple(v) if len(split_key(key)) > 1 else (v,) for v in values])
                for key, values in self.grid.items()]

    @property
    def keys(self) -> list[str]:
        """Every config key the grid sets, zipped keys one by one, in grid order."""
        return [k for keys, _ in self.axes for k in keys]

    @property
    def group_keys(self) -> list[str]:
        """Grid keys that define a table row (all but the seed; with noise controls, ``privacy.noise_control``)."""
        extra = [NOISE_CONTROL] if self.noise_controls and NOISE_CONTROL not in self.keys else []
        return [k for k in self.keys if k != "seed"] + extra

    def values_of(self, key: str) -> list[Any]:
        """The values the grid gives one config key (for a zipped key: its entry in each tuple).

        Args:
            key: a dotted config key of the grid.
        """
        for keys, values in self.axes:
            if key in keys:
                return [v[keys.index(key)] for v in values]
        raise KeyError(key)


def split_key(key: str) -> tuple[str, ...]:
    """``"a.b,c.d"`` -> ``("a.b", "c.d")``; a plain key -> a 1-tuple.

    Args:
        key: a grid key.
    """
    return tuple(part.strip() for part in str(key).split(","))


SWEEP_KEYS = {"base", "set", "grid", "engine", "output", "plot", "arms", "arms_file", "noise_controls", "purpose"}
PURPOSES = ("study", "tuning")
ARM = "arm"  # the grid key that picks a named arm


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every cell's config is validated up front.

    Args:
        path: the sweep file (YAML; see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} not found")
    raw = read_yaml(path) or {}
    unknown = set(raw) - SWEEP_KEYS
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown sweep key (valid: {', '.join(sorted(SWEEP_KEYS))})")
    for key in ("base", "grid", "output"):
        if key not in raw:
            raise ConfigError(f"{key}: missing from the sweep file {path}")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError("grid: expected a mapping of config keys to non-empty lists of values")
    seen: set[str] = set()
    for key, values in grid.items():
        names = split_key(key)
        if not all(names) or len(set(names)) != len(names) or seen & set(names):
            raise ConfigError(f"grid: {key}: every config key may appear once in the grid, and a zipped key is a "
                              "comma-separated list of distinct keys, e.g. federation.num_clients,federation.rounds")
        seen |= set(names)
        if len(names) > 1:
            for value in values:
                if not isinstance(value, list) or len(value) != len(names):
                    raise ConfigError(f"grid: {key}: zipped keys take lists of {len(names)} values "
                                      f"(one per key), e.g. [[2, 100], [3, 150]]; got {value!r}")
    if raw.get("engine", "inprocess") not in ("inprocess", "flower"):
        raise ConfigError(f"engine: must be 'inprocess' or 'flower', got {raw['engine']!r}")
    if not isinstance(raw.get("noise_controls", False), bool):
        raise ConfigError(f"noise_controls: must be true or false, got {raw['noise_controls']!r}")
    if raw.get("purpose", "study") not in PURPOSES:
        raise ConfigError(f"purpose: must be one of {', '.join(PURPOSES)}, got {raw['purpose']!r}")
    arms = _read_arms(raw, path)
    unknown_arms = [a for a in grid.get(ARM, []) if a not in arms]
    if unknown_arms:
        raise ConfigError(f"grid: arm: {unknown_arms[0]!r} is not defined under arms"
                          + (f" or in arms_file {raw['arms_file']}" if raw.get("arms_file") else "")
                          + f" (defined: {', '.join(arms) or 'none'})")
    spec = SweepSpec(
        base=(path.parent / raw["base"]).resolve(), grid=grid, output=(path.parent / raw["output"]).resolve(),
        overrides=list(raw.get("set") or []), engine=raw.get("engine", "inprocess"), plot=raw.get("plot") or {},
        arms=arms, name=path.stem, noise_controls=raw.get("noise_controls", False),
        purpose=raw.get("purpose", "study"),
    )
    for cell in cells(spec):
        cell_config(spec, cell)  # fail before any training
    return spec


def _read_arms(raw: dict, path: Path) -> dict[str, list[str]]:
    arms = dict(raw.get("arms") or {})
    files = raw.get("arms_file") or []
    for name in [files] if isinstance(files, str) else files:
        arms_path = path.parent / name
        if not arms_path.is_file():
            raise ConfigError(f"arms_file: {arms_path} not found; it is written by the step that defines these "
                              "arms (e.g. the tuning step of bench/reproduce.py): run that first")
        arms.update(read_yaml(arms_path) or {})
    for name, overrides in arms.items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"arms: {name}: expected a list of key.path=value overrides, got {overrides!r}")
    return arms


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
    sets = [f"{k}={json.dumps(v) if not (isinstance(v, float) and math.isinf(v)) else '.inf'}"
            for k, v in cell.items() if k != ARM]
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
        print(f"[sweep] {run_dir.name}: finished with another config ({'; '.join(changed[:3])}"
              f"{'; ...' if len(changed) > 3 else ''}): running it again", file=stream or sys.stderr, flush=True)
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
        print(f"[sweep {spec.name or spec.output.name}] {label}: test "
              f"{metric if metric is None else round(metric, 4)} ({seconds:.1f}s); {done}/{total} cells run, "
              f"~{left:.0f} min left", file=stream, flush=True)

    for s_index, spec in enumerate(specs):  # tables of what is already there
        if rows[s_index]:
            write_results(spec, [rows[s_index][i] for i in sorted(rows[s_index])])
    jobs = [(s_index, c_index, cell, cell_config(specs[s_index], cell),
             specs[s_index].output / "runs" / cell_id(cell)) for s_index, c_index, cell in todo]
    if workers <= 1:
        for s_index, c_index, cell, cfg, run_dir in jobs:
            summary, seconds = _run_cell(runner, cfg, run_dir)
            finished(s_index, c_index, cell, summary, seconds)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(_run_cell, runner, cfg, run_dir): (s_index, c_index, cell)
                       for s_index, c_index, cell, cfg, run_dir in jobs}
            for future in as_completed(futures):
                summary, seconds = future.result()
                finished(*futures[future], summary, seconds)
    for spec in specs:  # every cell done: the per-run logs go into one archive beside the tables
        if (spec.output / RUNS).is_dir():
            archive_runs(spec.output)
    return [[r[i] for i in sorted(r)] for r in rows]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run_cell(runner: Runner, cfg: ExperimentConfig, run_dir: Path) -> tuple[dict, float]:
    if run_dir.exists():  # a cell interrupted earlier: start it afresh
        for stale in ("rounds.jsonl", "summary.json", "server-state.npz"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "client-state", ignore_errors=True)
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
    row = {**cell, **control, "run": cell_id(cell), "metric": summary["metric"],
           "test": summary["mean_test_at_best_val"]}
    for client, values in summary["clients"].items():
        row[f"test_client{client}"] = values["test_at_best_val"]
        row[f"best_round_client{client}"] = values["best_round"]
    if "epsilon" in summary:
        row["epsilon_spent"] = summary["epsilon"]
    row["bytes_sent_total"] = summary["bytes_sent_total"]
    row["wall_seconds"] = summary["wall_seconds"]
    return row
