"""The faithful reproduction of Alignahead, its controls and the federated map, with one command.

    FEDALIGN_DATA_ROOT=../shared/data python -m bench.reproduce             # everything, resumably
    python -m bench.reproduce --only photo-tuning,photo-tuning-logits,photo  # some sweeps
    python -m bench.reproduce --report-only                                  # tables from what exists
    python -m bench.reproduce --smoke                                        # ~1 min, synthetic data

Runs the sweeps of ``simulations/reproduction/`` (:data:`PLAN`) with the in-process
engine, ``--workers`` cells at a time (default 2, one torch thread each). Every sweep
is an ordinary resumable ``fedalign sweep``: finished cells are skipped, so an
interrupted programme continues when the same command runs again. Cells that are the
very same experiment as a finished cell elsewhere in the programme (same resolved
config) are copied from it (``reused_from.txt``) instead of trained again.

The programme runs in three phases, because later arms are *chosen* from earlier
results, on validation only:

1. ``photo-tuning`` (alignahead: kernel x tau x a) and ``photo-tuning-logits``
   (mutual learning: a x temperature) on Amazon Photo, seed 0. The best mean
   validation metric defines the ``*-tuned`` arms -> ``tuned-arms.yaml``.
2. ``photo`` (every arm, 5 seeds) and ``photo-k`` (K = 3, 4). The better of
   faithful and tuned alignahead (and logits) on Photo's validation defines the
   ``*-best`` arms of the federated map -> ``best-arms.yaml``.
3. ``map`` (federated partitions, few labels), ``computers``, ``synthetic-ppi``, ``cs``.

A sweep whose dataset files are missing is skipped with a message. After every phase
the report (:mod:`bench.reproduction_report`) is rewritten into ``--out``
(default ``results/reproduction/``): ``results.md``, ``results.json``
and the plots. ``--report-only`` rewrites it from the run folders alone.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import reproduction_analysis as analysis
from . import reproduction_report as report

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "simulations" / "reproduction"
DEFAULT_OUT = REPO / "results" / "reproduction"
TUNED_ARMS, BEST_ARMS = "tuned-arms.yaml", "best-arms.yaml"


@dataclass(frozen=True)
class Sweep:
    """One sweep of the programme: ``kind`` tuning | strategies | students | map; ``phase`` 1..3."""

    id: str
    file: str  # in the sweeps folder
    kind: str
    phase: int


PLAN: tuple[Sweep, ...] = (
    Sweep("photo-tuning", "photo-tuning.yaml", "tuning", 1),
    Sweep("photo-tuning-logits", "photo-tuning-logits.yaml", "tuning", 1),
    Sweep("photo", "photo.yaml", "strategies", 2),
    Sweep("photo-k", "photo-k.yaml", "students", 2),
    Sweep("map", "map.yaml", "map", 3),
    Sweep("computers", "computers.yaml", "strategies", 3),
    Sweep("synthetic-ppi", "ppi.yaml", "strategies", 3),
    Sweep("cs", "cs.yaml", "strategies", 3),
)

# ---------------------------------------------------------------- smoke programme (synthetic, about a minute)

SMOKE_BASE = {
    "name": "smoke",
    "seed": 0,
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 160, "homophily": 0.6, "signal": 0.6}},
    "partition": {"scheme": "replicate"},
    "federation": {"num_clients": 2, "rounds": 8, "schedule": "alternating"},
    "model": {"arch": "gcn", "hidden_layers": 3, "hidden_dim": 16, "activation": "relu"},
    "align": {"strategy": "alignahead"},
    "train": {"local_epochs": 2, "lr": 0.01, "weight_decay": 0.0},
}
STRATEGY_ARMS = ["none", "self", "one-to-one", "alignahead", "logits", "self-tuned", "alignahead-tuned", "logits-tuned"]


def smoke_sweeps(folder: Path) -> dict[str, dict]:
    """The smoke programme's sweep files by name (:func:`smoke_plan` writes them into ``folder``)."""
    tuned = ["arms.yaml", f"../{TUNED_ARMS}"]
    return {
        "tuning.yaml": {
            "base": "base.yaml",
            "grid": {"align.kernel": ["lsp", "l1-softmax"], "align.tau": [1.0], "seed": [0]},
            "output": "../tuning",
        },
        "tuning-logits.yaml": {
            "base": "base.yaml",
            "set": ["align.strategy=logits"],
            "grid": {"align.logit_temperature": [1.0, 3.0], "seed": [0]},
            "output": "../tuning-logits",
        },
        "strategies.yaml": {
            "base": "base.yaml",
            "arms_file": tuned,
            "grid": {"seed": [0, 1, 2], "arm": STRATEGY_ARMS},
            "output": "../strategies",
        },
        "students.yaml": {
            "base": "base.yaml",
            "arms_file": tuned,
            "grid": {
                "seed": [0, 1, 2],
                "federation.num_clients,federation.rounds": [[3, 12]],
                "arm": ["alignahead", "alignahead-tuned"],
            },
            "output": "../students",
        },
        "map.yaml": {
            "base": "base.yaml",
            "arms_file": ["arms.yaml", f"../{BEST_ARMS}"],
            "set": ["partition.public_fraction=0.3"],
            "grid": {
                "partition.scheme": ["community"],
                "federation.num_clients,federation.rounds": [[3, 6]],
                "partition.label_rate": [0.2],
                "seed": [0, 1, 2],
                "arm": ["none", "self-best", "one-to-one-best", "alignahead-best", "logits-best"],
            },
            "output": "../map",
        },
        # a real dataset under a data root with nothing in it: skipped with a message
        "missing.yaml": {
            "base": "base.yaml",
            "set": ["data.name=cora", "data.synthetic={}", f"data.root={folder / 'no-data'}"],
            "arms_file": "arms.yaml",
            "grid": {"seed": [0], "arm": ["none"]},
            "output": "../missing",
        },
    }


def smoke_plan(folder: Path) -> tuple[Sweep, ...]:
    """Write the smoke programme's sweep files into ``folder`` (the real programme's shapes, tiny)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(SMOKE_BASE, sort_keys=False))
    (folder / "arms.yaml").write_text((SWEEPS / "arms.yaml").read_text())
    for name, body in smoke_sweeps(folder).items():
        (folder / name).write_text(yaml.safe_dump(body, sort_keys=False))
    return (
        Sweep("tuning", "tuning.yaml", "tuning", 1),
        Sweep("tuning-logits", "tuning-logits.yaml", "tuning", 1),
        Sweep("strategies", "strategies.yaml", "strategies", 2),
        Sweep("students", "students.yaml", "students", 2),
        Sweep("map", "map.yaml", "map", 3),
        Sweep("missing", "missing.yaml", "strategies", 3),
    )


# ---------------------------------------------------------------- choosing arms on validation


def write_tuned_arms(programme: tuple[Sweep, ...], sweeps_dir: Path, out: Path) -> Path | None:
    """After the tuning sweeps: ``tuned-arms.yaml`` from their best validation cells (None if unfinished)."""
    chosen = {}
    for sweep in (s for s in programme if s.kind == "tuning"):
        finding = analysis.tuning_finding(sweep.id, analysis.collect(analysis.load(sweeps_dir, sweep)))
        if finding is None or not finding["complete"]:
            return None
        best = finding["chosen"]["config"]["align"]
        chosen[best["strategy"]] = best
    structure, logits = chosen["alignahead"], chosen["logits"]
    keys = [
        f"align.kernel={structure['kernel']}",
        f"align.tau={structure['tau']}",
        f"align.weight={structure['weight']}",
    ]
    arms = {f"{s}-tuned": [f"align.strategy={s}", *keys] for s in ("self", "one-to-one", "alignahead")}
    arms["logits-tuned"] = [
        "align.strategy=logits",
        f"align.weight={logits['weight']}",
        f"align.logit_temperature={logits['logit_temperature']}",
    ]
    path = out / TUNED_ARMS
    _write_arms(path, arms, "the best mean validation metric of the tuning sweeps (seed 0, never test)")
    return path


def write_best_arms(programme: tuple[Sweep, ...], sweeps_dir: Path, out: Path) -> Path | None:
    """After the strategies sweep of phase 2: ``best-arms.yaml``, faithful or tuned by mean validation."""
    first = next(s for s in programme if s.kind == "strategies")
    items = analysis.collect(analysis.load(sweeps_dir, first))
    if not items or not all(i["finished"] for i in items):
        return None
    arms_of = yaml.safe_load((out / TUNED_ARMS).read_text())
    faithful = yaml.safe_load((sweeps_dir / "arms.yaml").read_text())

    def mean_val(arm: str) -> float:  # a diverged run (no validation metric) counts as -inf
        values = [i["best_val"] if i["best_val"] is not None else -math.inf for i in items if i["cell"]["arm"] == arm]
        return sum(values) / len(values)

    structure = "tuned" if mean_val("alignahead-tuned") > mean_val("alignahead") else "faithful"
    logits = "tuned" if mean_val("logits-tuned") > mean_val("logits") else "faithful"
    arms = {}
    for strategy in ("self", "one-to-one", "alignahead", "logits"):
        variant = logits if strategy == "logits" else structure
        arms[f"{strategy}-best"] = arms_of[f"{strategy}-tuned"] if variant == "tuned" else faithful[strategy]
    path = out / BEST_ARMS
    _write_arms(
        path,
        arms,
        f"the better of faithful and tuned on {first.id}'s mean validation metric: "
        f"structure arms {structure}, logits {logits}",
    )
    return path


def _write_arms(path: Path, arms: dict, why: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by bench/reproduce.py: {why}.\n"
    path.write_text(header + yaml.safe_dump(arms, sort_keys=False, default_flow_style=None))


# ---------------------------------------------------------------- running


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "name"}


def reuse_identical_runs(specs: list, donors: list, stream) -> int:
    """Copy finished runs of ``donors`` whose resolved config equals an unfinished cell's of ``specs``."""
    from fedalign.runstore import finished_summary, runs_dir, unarchive_runs
    from fedalign.sweep import cell_config, cell_id, cells, finished_cell

    finished = []
    for donor in donors:
        for run_dir in sorted(runs_dir(donor.output).glob("*")):
            if finished_summary(run_dir) is not None and not (run_dir / "reused_from.txt").exists():
                config = _comparable(yaml.safe_load((run_dir / "config.yaml").read_text()))
                finished.append((run_dir, config, f"{donor.output.name}/{run_dir.name}"))
    copied = 0
    for spec in specs:
        for cell in cells(spec):
            if finished_cell(spec, cell, stream) is not None:
                continue
            unarchive_runs(spec.output)
            target = spec.output / "runs" / cell_id(cell)
            wanted = _comparable(cell_config(spec, cell).to_dict())
            source, label = next(
                (
                    (run, label)
                    for run, config, label in finished
                    if config == wanted and label != f"{spec.output.name}/{cell_id(cell)}"
                ),
                (None, None),
            )
            if source is None:
                continue
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name in ("config.yaml", "rounds.jsonl", "summary.json"):
                shutil.copy2(source / name, target / name)
            (target / "reused_from.txt").write_text(f"{label}\n")
            print(f"[reproduce] {cell_id(cell)}: same experiment as {label}, copied", file=stream, flush=True)
            copied += 1
    return copied


def run_programme(
    selected: tuple[Sweep, ...], programme: tuple[Sweep, ...], sweeps_dir: Path, out: Path, workers: int, stream=None
) -> dict[str, dict]:
    """Run the selected sweeps phase by phase (choosing arms between phases); rewrite the report after each."""
    from fedalign.inprocess import run_inprocess
    from fedalign.sweep import run_sweeps

    stream = stream or sys.stderr
    status: dict[str, dict] = {}
    report.record_provenance(out, workers, [s.id for s in selected])
    for phase in (1, 2, 3):
        if phase == 2 and write_tuned_arms(programme, sweeps_dir, out) is None:
            print("[reproduce] the tuning sweeps are not finished: phases 2-3 wait for them", file=stream)
            break
        if phase == 3 and write_best_arms(programme, sweeps_dir, out) is None:
            print("[reproduce] the phase-2 strategies sweep is not finished: phase 3 waits for it", file=stream)
            break
        specs = []
        for sweep in (s for s in selected if s.phase == phase):
            spec = analysis.load(sweeps_dir, sweep)
            reason = analysis.missing_data(spec)
            if reason is not None:
                print(f"[reproduce] {sweep.id}: skipped, dataset files missing: {reason}", file=stream, flush=True)
                status[sweep.id] = {"skipped": reason}
            else:
                specs.append(spec)
        if not specs:
            continue
        donors = [d for d in (analysis.load_or_none(sweeps_dir, s) for s in programme) if d is not None]
        reuse_identical_runs(specs, donors, stream)
        print(
            f"[reproduce] phase {phase}: {', '.join(s.name for s in specs)} on {workers} worker(s)",
            file=stream,
            flush=True,
        )
        started = time.perf_counter()
        run_sweeps(specs, run_inprocess, stream=stream, workers=workers)
        status[f"phase-{phase}"] = {"invocation_seconds": round(time.perf_counter() - started, 1)}
        report.write(programme, sweeps_dir, out, status)
    return status


def archive_finished(programme: tuple[Sweep, ...], sweeps_dir: Path, written: dict) -> None:
    """Pack the run folders of every finished sweep into its ``runs.tar.xz`` (read back transparently)."""
    from fedalign.runstore import RUNS, archive_runs

    done = {s["id"] for s in written["sweeps"] if s["state"] == "done"}
    for sweep in programme:
        spec = analysis.load_or_none(sweeps_dir, sweep)
        if sweep.id in done and spec is not None and (spec.output / RUNS).is_dir():
            archive_runs(spec.output)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated sweep ids (default: all, in order): " + ", ".join(s.id for s in PLAN),
    )
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic programme into a temporary folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default results/reproduction/; with --smoke a temp folder)",
    )
    parser.add_argument("--workers", type=int, default=2, help="cells run at once, one torch thread each (default 2)")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: rewrite the report from the run folders"
    )
    args = parser.parse_args(argv)

    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="fedalign-reproduce-smoke-"))
        sweeps_dir = out / "sweeps"
        programme = smoke_plan(sweeps_dir)
    else:
        out, sweeps_dir, programme = args.out or DEFAULT_OUT, SWEEPS, PLAN
    selected = programme
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {s.id for s in programme}]
        if unknown:
            parser.error(
                f"--only: unknown sweep id(s) {', '.join(unknown)}; choose from {', '.join(s.id for s in programme)}"
            )
        selected = tuple(s for s in programme if s.id in wanted)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    status = {} if args.report_only else run_programme(selected, programme, sweeps_dir, out, args.workers)
    written = report.write(programme, sweeps_dir, out, status, smoke=args.smoke)
    archive_finished(programme, sweeps_dir, written)
    print(f"[reproduce] report: {out / 'results.md'} ({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
