"""Reproduce the paper's three findings (issue 4, item 1) with one command.

    FEDALIGN_DATA_ROOT=../shared/data python -m benchmarks.reproduce            # everything, resumably
    python -m benchmarks.reproduce --only photo-gcn,photo-gcn-k                   # some sweeps
    python -m benchmarks.reproduce --report-only                                  # tables from what exists
    python -m benchmarks.reproduce --smoke                                        # < 1 min, synthetic data

Runs the sweeps ``simulations/reproduction-*.yaml`` in :data:`PLAN` order (most
important first) with the in-process engine; each is an ordinary resumable
``fedalign sweep`` (finished cells are skipped), so an interrupted programme is
continued by running the same command again. A sweep whose dataset's raw files
are missing is skipped with a message. Cells that are the very same experiment
as a finished cell of another sweep (same resolved config, e.g. the K = 2 cells
of the K sweep) are copied from it (``reused_from.txt`` in the run folder) rather
than trained again.

After every sweep the report is rewritten into ``--out`` (default
``simulations/results/reproduction/``):

* ``results.md`` -- (a) test metric at best validation, mean +- std over seeds,
  per strategy; (b) validation metric against student epoch and epochs to reach
  95 % / 98 % of the independent students' best validation metric; (c) the gain
  of Alignahead over independent students against the number of students K;
  plus what ran, the machine, wall times and the commands. A hand-written
  ``notes.md`` in the same folder, if present, is included as the reading;
* ``results.json`` -- every number of the tables, the per-cell values they come
  from, and the mean curves;
* ``convergence.png``, ``gain_vs_k.png``.

Definitions. A cell's test metric is ``summary.json``'s ``mean_test_at_best_val``
(each student's test metric at its best validation round, averaged over the
students). A student's epoch after its n-th training round is ``n *
train.local_epochs`` (read from ``rounds.jsonl``: the records of that client
with a validation metric, in round order). The level of a setting is a
fraction of the mean, over the ``none`` cells, of the students' mean best
validation metric; a student reaches it at the first epoch whose validation
metric is >= the level; a cell's epochs-to-level is the mean over its
students, or "not reached" if any student never reached it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
SIMULATIONS = REPO / "simulations"
DEFAULT_OUT = SIMULATIONS / "results" / "reproduction"
LEVELS = (0.95, 0.98)
STRATEGY_ORDER = ("none", "one-to-one", "alignahead")


@dataclass(frozen=True)
class Entry:
    """One sweep of the programme: ``kind`` "strategies" (findings a, b) or "students" (finding c)."""

    id: str
    sweep: str  # file name, relative to the sweeps folder
    kind: str


PLAN: tuple[Entry, ...] = (
    Entry("photo-gcn", "reproduction-photo-gcn.yaml", "strategies"),
    Entry("photo-gcn-k", "reproduction-photo-gcn-k.yaml", "students"),
    Entry("computers-gcn", "reproduction-computers-gcn.yaml", "strategies"),
    Entry("cs-gcn", "reproduction-cs-gcn.yaml", "strategies"),
    Entry("physics-gcn", "reproduction-physics-gcn.yaml", "strategies"),
    Entry("ppi-gcn", "reproduction-ppi-gcn.yaml", "strategies"),
    Entry("photo-gat", "reproduction-photo-gat.yaml", "strategies"),
    Entry("computers-gat", "reproduction-computers-gat.yaml", "strategies"),
    Entry("cs-gat", "reproduction-cs-gat.yaml", "strategies"),
    Entry("physics-gat", "reproduction-physics-gat.yaml", "strategies"),
    Entry("ppi-gat", "reproduction-ppi-gat.yaml", "strategies"),
)

# ---------------------------------------------------------------- smoke programme (synthetic, seconds)

SMOKE_BASE = {
    "name": "smoke", "seed": 0,
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 160, "homophily": 0.6, "signal": 0.6}},
    "partition": {"scheme": "replicate"},
    "federation": {"num_clients": 2, "rounds": 8, "schedule": "alternating"},
    "model": {"arch": "gcn", "hidden_layers": 3, "hidden_dim": 16, "dropout": 0.5},
    # tau 1 (not 100): with 16-dim embeddings of a tiny graph the tau-100 distributions are almost
    # uniform and the strategies would give identical numbers, which would make the smoke check weaker
    "align": {"strategy": "alignahead", "weight": 1.0, "tau": 1.0},
    "train": {"local_epochs": 2, "lr": 0.01, "weight_decay": 5.0e-4},
}


def smoke_plan(folder: Path) -> tuple[Entry, ...]:
    """Write the smoke programme's sweep files into ``folder`` (same shapes as the real one)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(SMOKE_BASE, sort_keys=False))
    sweeps = {
        "synthetic-gcn.yaml": {"base": "base.yaml", "grid": {"seed": [0, 1, 2], "align.strategy": list(STRATEGY_ORDER)},
                               "output": "../synthetic-gcn", "plot": {"x": "align.strategy"}},
        "synthetic-gcn-k.yaml": {"base": "base.yaml", "grid": {
            "align.strategy": ["alignahead", "none"], "seed": [0, 1, 2],
            "federation.num_clients,federation.rounds": [[2, 8], [3, 12]]},
            "output": "../synthetic-gcn-k", "plot": {"x": "federation.num_clients", "line": "align.strategy"}},
        # a real dataset under a data root with nothing in it: must be skipped with a message
        "missing-gcn.yaml": {"base": "base.yaml", "set": ["data.name=cora", f"data.root={folder / 'no-data'}"],
                             "grid": {"seed": [0], "align.strategy": ["none"]}, "output": "../missing-gcn"},
    }
    for name, body in sweeps.items():
        (folder / name).write_text(yaml.safe_dump(body, sort_keys=False))
    return (Entry("synthetic-gcn", "synthetic-gcn.yaml", "strategies"),
            Entry("synthetic-gcn-k", "synthetic-gcn-k.yaml", "students"),
            Entry("missing-gcn", "missing-gcn.yaml", "strategies"))


# ---------------------------------------------------------------- machine and data checks


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                  text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        revision = None
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": platform.platform(), "load_average_1min": round(os.getloadavg()[0], 2), "git_revision": revision,
    }


def missing_data(spec) -> str | None:
    """Why the sweep's dataset cannot be read here (a message), or None when its raw files are present."""
    from fedalign.data import datasets
    from fedalign.sweep import cell_config, cells

    cfg = cell_config(spec, cells(spec)[0])
    key = datasets.canonical_name(cfg.data.name)
    source = datasets._REAL_SOURCES.get(key)
    if source is None:  # built-in synthetic data
        return None
    try:
        datasets._check_raw_files(datasets._data_root(cfg.data.root, key), source, key)
    except FileNotFoundError as err:
        lines = str(err).splitlines()
        return lines[0].rstrip(":") + (f" (e.g. {lines[1].strip()})" if len(lines) > 1 else "")
    return None


# ---------------------------------------------------------------- running


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "name"}


def reuse_identical_runs(spec, donors: list, stream) -> int:
    """Copy finished runs of ``donors`` (sweep specs) whose resolved config equals an unfinished cell's.

    Returns the number of cells filled this way; each gets ``reused_from.txt``.
    """
    from fedalign.sweep import cell_config, cell_id, cells

    finished = []
    for donor in donors:
        for run_dir in sorted((donor.output / "runs").glob("*")):
            summary = _finished_summary(run_dir)
            if summary is not None and (run_dir / "config.yaml").is_file() and not (run_dir / "reused_from.txt").exists():
                finished.append((run_dir, _comparable(yaml.safe_load((run_dir / "config.yaml").read_text()))))
    copied = 0
    for cell in cells(spec):
        target = spec.output / "runs" / cell_id(cell)
        if _finished_summary(target) is not None:
            continue
        wanted = _comparable(cell_config(spec, cell).to_dict())
        for source, config in finished:
            if config == wanted:
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                for name in ("config.yaml", "rounds.jsonl", "summary.json"):
                    shutil.copy2(source / name, target / name)
                (target / "reused_from.txt").write_text(str(source.relative_to(spec.output.parent)) + "\n")
                print(f"[reproduce] {cell_id(cell)}: same experiment as {source}, copied", file=stream, flush=True)
                copied += 1
                break
    return copied


def _finished_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("status") == "finished":
            return data
    return None


def run_programme(entries: tuple[Entry, ...], sweeps_dir: Path, out: Path, stream=None,
                  programme: tuple[Entry, ...] | None = None) -> dict[str, dict]:
    """Run every entry's sweep in order (skipping missing data); rewrite the report after each.

    ``programme``: every entry of the report (default ``entries``); their finished cells may be reused.
    """
    from fedalign.runner import run_inprocess
    from fedalign.sweep import load_sweep, run_sweep

    stream = stream or sys.stderr
    programme = programme or entries
    status: dict[str, dict] = {}
    specs = {e.id: load_sweep(sweeps_dir / e.sweep) for e in programme}
    for entry in entries:
        spec = specs[entry.id]
        reason = missing_data(spec)
        if reason is not None:
            print(f"[reproduce] {entry.id}: skipped, dataset files missing: {reason}", file=stream, flush=True)
            status[entry.id] = {"skipped": reason}
            continue
        donors = [specs[e.id] for e in programme if e.id != entry.id]
        reuse_identical_runs(spec, donors, stream)
        print(f"[reproduce] {entry.id}: running {sweeps_dir / entry.sweep}", file=stream, flush=True)
        started = time.perf_counter()
        run_sweep(spec, run_inprocess, stream=stream)
        status[entry.id] = {"invocation_seconds": round(time.perf_counter() - started, 1)}
        write_report(programme, sweeps_dir, out, status)
    return status


# ---------------------------------------------------------------- reading run folders


def final_losses(run_dir: Path) -> dict[str, float]:
    """Mean over students of the task and alignment loss (last local epoch) of each student's last round."""
    from fedalign.outputs import read_rounds

    last: dict[int, dict] = {}
    for record in sorted(read_rounds(run_dir), key=lambda r: r.round):
        if record.status == "ok" and "task_loss" in record.metrics:
            last[record.client] = record.metrics
    return {key: float(np.mean([m[key] for m in last.values()])) for key in ("task_loss", "align_loss")
            if last and all(key in m for m in last.values())}


def student_curves(run_dir: Path, local_epochs: int) -> dict[int, list[tuple[int, float]]]:
    """Per client: (student epoch, validation metric) after each of its training rounds, in round order."""
    from fedalign.outputs import read_rounds

    curves: dict[int, list[tuple[int, float]]] = {}
    records = sorted(read_rounds(run_dir), key=lambda r: (r.round, r.client))
    for record in records:
        if record.status in ("ok", "withheld") and "val_metric" in record.metrics:
            points = curves.setdefault(record.client, [])
            points.append(((len(points) + 1) * local_epochs, record.metrics["val_metric"]))
    return curves


def first_epoch_at(points: list[tuple[int, float]], level: float) -> int | None:
    for epoch, value in points:
        if value >= level:
            return epoch
    return None


def collect(entry: Entry, spec) -> list[dict]:
    """One dict per cell of the sweep: its grid values and, when finished, its summary and curves."""
    from fedalign.sweep import cell_id, cells

    result = []
    for cell in cells(spec):
        run_dir = spec.output / "runs" / cell_id(cell)
        summary = _finished_summary(run_dir)
        item = {"cell": cell, "run_dir": run_dir, "finished": summary is not None}
        if summary is not None:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            item.update(
                summary=summary, config=config, test=summary["mean_test_at_best_val"],
                best_val=float(np.mean([c["best_val"] for c in summary["clients"].values() if c["best_val"] is not None])),
                curves=student_curves(run_dir, config["train"]["local_epochs"]),
                reused=(run_dir / "reused_from.txt").is_file(), losses=final_losses(run_dir),
            )
        result.append(item)
    return result


def mean_std(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    return {"n": len(values), "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)}


def setting_label(config: dict) -> str:
    return f"{config['data']['name']} / {config['model']['arch'].upper()}"


# ---------------------------------------------------------------- findings


def finding_a_b(entry: Entry, items: list[dict]) -> dict | None:
    done = [i for i in items if i["finished"]]
    if not done:
        return None
    config = done[0]["config"]
    strategies = [s for s in STRATEGY_ORDER if any(i["cell"]["align.strategy"] == s for i in items)]
    by_strategy = {s: [i for i in done if i["config"]["align"]["strategy"] == s] for s in strategies}
    accuracy = {s: {**mean_std([i["test"] for i in cs]), "seeds": [i["config"]["seed"] for i in cs],
                    "values": [i["test"] for i in cs]} for s, cs in by_strategy.items()}
    losses = {s: {key: float(np.mean([i["losses"][key] for i in cs if key in i["losses"]]))
                  for key in ("task_loss", "align_loss") if any(key in i["losses"] for i in cs)}
              for s, cs in by_strategy.items() if cs}
    result: dict[str, Any] = {
        "setting": setting_label(config), "dataset": config["data"]["name"], "arch": config["model"]["arch"],
        "metric": done[0]["summary"]["metric"], "accuracy": accuracy, "final_losses": losses,
    }
    # (b) mean validation curve (over students, then over seeds) against student epoch
    curves = {}
    for s, cs in by_strategy.items():
        per_cell = []
        for i in cs:
            lengths = {len(p) for p in i["curves"].values()}
            if len(lengths) != 1:
                continue  # a student missed rounds: no common epoch grid
            epochs = [e for e, _ in next(iter(i["curves"].values()))]
            per_cell.append((epochs, np.mean([[v for _, v in p] for p in i["curves"].values()], axis=0)))
        if per_cell and len({tuple(e) for e, _ in per_cell}) == 1:
            stack = np.array([v for _, v in per_cell])
            curves[s] = {"epochs": per_cell[0][0], "mean": stack.mean(axis=0).tolist(),
                         "std": (stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(stack.shape[1])).tolist(),
                         "n": len(stack)}
    result["curves"] = curves
    if by_strategy.get("none"):
        reference = float(np.mean([i["best_val"] for i in by_strategy["none"]]))
        result["none_best_val"] = reference
        result["levels"] = {}
        for fraction in LEVELS:
            level = fraction * reference
            table = {}
            for s, cs in by_strategy.items():
                per_cell = []
                for i in cs:
                    firsts = [first_epoch_at(p, level) for _, p in sorted(i["curves"].items())]
                    per_cell.append({"seed": i["config"]["seed"], "students": firsts,
                                     "epochs": None if any(f is None for f in firsts) else float(np.mean(firsts))})
                reached = [c["epochs"] for c in per_cell if c["epochs"] is not None]
                table[s] = {**mean_std(reached), "reached": len(reached), "cells": len(per_cell), "per_cell": per_cell}
            result["levels"][f"{fraction:g}"] = {"level": level, "strategies": table}
    return result


def finding_c(entry: Entry, items: list[dict]) -> dict | None:
    done = [i for i in items if i["finished"]]
    if not done:
        return None
    config = done[0]["config"]
    ks = sorted({i["cell"]["federation.num_clients"] for i in items})
    rows = []
    for k in ks:
        at_k = {s: [i for i in done if i["config"]["federation"]["num_clients"] == k
                    and i["config"]["align"]["strategy"] == s] for s in ("alignahead", "none")}
        baseline_k = k
        if not at_k["none"]:  # independent students do not depend on K: fall back to the smallest K run
            for other in ks:
                none_other = [i for i in done if i["config"]["federation"]["num_clients"] == other
                              and i["config"]["align"]["strategy"] == "none"]
                if none_other:
                    at_k["none"], baseline_k = none_other, other
                    break
        align = {i["config"]["seed"]: i["test"] for i in at_k["alignahead"]}
        none = {i["config"]["seed"]: i["test"] for i in at_k["none"]}
        paired = sorted(set(align) & set(none))
        epochs = {i["config"]["train"]["local_epochs"] * i["config"]["federation"]["rounds"]
                  // i["config"]["federation"]["num_clients"] for i in at_k["alignahead"] + at_k["none"]}
        rows.append({
            "K": k, "alignahead": {**mean_std(list(align.values())), "seeds": sorted(align)},
            "none": {**mean_std(list(none.values())), "seeds": sorted(none)}, "none_from_K": baseline_k,
            "gain": (None if not align or not none else
                     mean_std(list(align.values()))["mean"] - mean_std(list(none.values()))["mean"]),
            "paired_gain": {**mean_std([align[s] - none[s] for s in paired]), "seeds": paired},
            "epochs_per_student": sorted(epochs),
        })
    return {"setting": setting_label(config), "metric": done[0]["summary"]["metric"], "rows": rows}


# ---------------------------------------------------------------- report


def pct(entry: dict | None, key_mean: str = "mean", key_std: str = "std") -> str:
    if not entry or entry.get(key_mean) is None:
        return "n/a"
    return f"{100 * entry[key_mean]:.2f} ± {100 * entry[key_std]:.2f}"


def verdict_a(acc: dict) -> str:
    a, n = acc.get("alignahead"), acc.get("none")
    if not a or not n or a["mean"] is None or n["mean"] is None:
        return "n/a"
    delta = a["mean"] - n["mean"]
    se = math.sqrt((a["std"] ** 2) / max(a["n"], 1) + (n["std"] ** 2) / max(n["n"], 1))
    if delta <= 0:
        return f"no ({100 * delta:+.2f} pts)"
    return f"yes ({100 * delta:+.2f} pts, {'> 2 SE' if se > 0 and delta > 2 * se else 'within 2 SE'})"


def write_report(entries: tuple[Entry, ...], sweeps_dir: Path, out: Path, status: dict[str, dict] | None = None,
                 smoke: bool = False) -> dict:
    from fedalign.sweep import load_sweep

    out.mkdir(parents=True, exist_ok=True)
    status = status or {}
    sweeps, ab, c = [], [], []
    for entry in entries:
        spec = load_sweep(sweeps_dir / entry.sweep)
        info = {"id": entry.id, "kind": entry.kind, "sweep": _display_path(sweeps_dir / entry.sweep),
                "output": _display_path(spec.output)}
        reason = status.get(entry.id, {}).get("skipped") or missing_data(spec)
        items = collect(entry, spec)
        finished = [i for i in items if i["finished"]]
        info.update(cells=len(items), finished=len(finished), reused=sum(i["reused"] for i in finished),
                    cell_wall_seconds=round(sum(i["summary"]["wall_seconds"] for i in finished if not i["reused"]), 1))
        if reason is not None:
            info["state"], info["reason"] = "skipped: dataset files missing", reason
        else:
            info["state"] = ("done" if len(finished) == len(items) else "partial" if finished else "not run")
        sweeps.append(info)
        result = finding_a_b(entry, items) if entry.kind == "strategies" else finding_c(entry, items)
        if result is not None:
            result["sweep"] = entry.id
            (ab if entry.kind == "strategies" else c).append(result)
    report = {
        "machine": machine(), "smoke": smoke, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "definitions": __doc__.split("Definitions. ", 1)[1].strip(),
        "sweeps": sweeps, "strategies": ab, "students": c,
    }
    if ab:
        plot_convergence(ab, out / "convergence.png")
    if c:
        plot_gain(c, out / "gain_vs_k.png")
    (out / "results.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    (out / "results.md").write_text(render_markdown(report, out, smoke))
    return report


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def render_markdown(report: dict, out: Path, smoke: bool) -> str:
    m = report["machine"]
    lines = ["# Reproduction: Alignahead (Guo, Chen & Wang, IJCNN 2022) in fedalign", ""]
    if smoke:
        lines += ["**Smoke run** on the built-in synthetic graph: checks the pipeline, not the paper.", ""]
    lines += [
        "Command (resumable: finished cells are skipped, so the same command continues an interrupted run):", "",
        "```bash", "FEDALIGN_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.reproduce",
        "# one part: --only photo-gcn,photo-gcn-k   tables from what exists: --report-only   CI check: --smoke",
        "```", "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, GPU: {m['gpu'] or 'none'}; torch {m['torch']} "
        f"with {m['torch_threads']} thread(s); shared with other jobs (load average when this report was "
        f"written: {m['load_average_1min']}). Report written {report['written']} at revision {m['git_revision']}.", "",
        "## What ran", "",
        "| sweep | kind | cells finished | state | training wall time (sum over cells) |", "|---|---|---|---|---|",
    ]
    for s in report["sweeps"]:
        reused = f" ({s['reused']} copied from identical cells)" if s["reused"] else ""
        state = s["state"] + (f" — {s['reason']}" if s.get("reason") else "")
        lines.append(f"| `{s['sweep']}` | {s['kind']} | {s['finished']}/{s['cells']}{reused} | {state} | "
                     f"{s['cell_wall_seconds'] / 60:.1f} min |")
    lines += ["", "Cells not finished are run by the command above; nothing else needs changing.", ""]

    lines += ["## (a) Accuracy: test metric at best validation, mean ± std over seeds (%)", "",
              "| setting | none | one-to-one | alignahead | seeds | alignahead − none | alignahead − one-to-one | "
              "alignahead beats none? |", "|---|---|---|---|---|---|---|---|"]
    for r in report["strategies"]:
        acc = r["accuracy"]
        def diff(a, b):
            if a in acc and b in acc and acc[a]["mean"] is not None and acc[b]["mean"] is not None:
                return f"{100 * (acc[a]['mean'] - acc[b]['mean']):+.2f}"
            return "n/a"
        seeds = "/".join(str(acc[s]["n"]) for s in STRATEGY_ORDER if s in acc)
        lines.append(f"| {r['setting']} ({r['metric']}) | {pct(acc.get('none'))} | {pct(acc.get('one-to-one'))} | "
                     f"{pct(acc.get('alignahead'))} | {seeds} | {diff('alignahead', 'none')} | "
                     f"{diff('alignahead', 'one-to-one')} | {verdict_a(acc)} |")
    lines += ["", "Per cell: each student's test metric at its best validation round, averaged over the students; "
              "then mean ± sample std over seeds. SE = standard error of the difference of the two means.", ""]
    loss_lines = []
    for r in report["strategies"]:
        for s in ("one-to-one", "alignahead"):
            l = r.get("final_losses", {}).get(s, {})
            if "align_loss" in l and "task_loss" in l:
                loss_lines.append(f"| {r['setting']} | {s} | {l['task_loss']:.4f} | {l['align_loss']:.5f} | "
                                  f"{l['align_loss'] / l['task_loss']:.2%} |")
    if loss_lines:
        lines += ["How strongly the alignment term pulls at the end of training (each student's last round, "
                  "mean over students and seeds; the alignment term enters the loss with weight `align.weight`):", "",
                  "| setting | strategy | task loss | alignment loss | alignment / task |", "|---|---|---|---|---|",
                  *loss_lines, ""]

    lines += ["## (b) Convergence: student epochs to reach a fixed validation level", "",
              "Level = fraction of the independent students' (none) mean best validation metric. "
              "Mean ± std over seeds of each cell's mean over its students; `reached` counts cells whose "
              "students all reached the level within the run.", "",
              "| setting | level | none | one-to-one | alignahead | reached (none/1-1/ahead) |", "|---|---|---|---|---|---|"]
    for r in report["strategies"]:
        for fraction, block in (r.get("levels") or {}).items():
            t = block["strategies"]
            cells_text = []
            for s in STRATEGY_ORDER:
                e = t.get(s)
                cells_text.append("n/a" if not e or e["mean"] is None else f"{e['mean']:.1f} ± {e['std']:.1f}")
            reached = ", ".join(f"{t[s]['reached']}/{t[s]['cells']}" if s in t else "-" for s in STRATEGY_ORDER)
            lines.append(f"| {r['setting']} | {float(fraction):.0%} of {100 * r['none_best_val']:.2f} = "
                         f"{100 * block['level']:.2f} | " + " | ".join(cells_text) + f" | {reached} |")
    if report["strategies"]:
        lines += ["", "![validation metric against student epoch](convergence.png)", ""]

    lines += ["## (c) Gain of Alignahead over independent students against the number of students K (%)", ""]
    for r in report["students"]:
        lines += [f"**{r['setting']}** ({r['metric']}); every student trains the same number of epochs at every K.", "",
                  "| K | epochs per student | none | alignahead | gain (difference of means) | paired gain (same seed) | seeds (ahead/none) |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            note = "" if row["none_from_K"] == row["K"] else f" (none at K={row['none_from_K']}†)"
            gain = "n/a" if row["gain"] is None else f"{100 * row['gain']:+.2f}"
            paired = ("n/a" if row["paired_gain"]["mean"] is None else
                      f"{100 * row['paired_gain']['mean']:+.2f} ± {100 * row['paired_gain']['std']:.2f}")
            lines.append(f"| {row['K']} | {', '.join(map(str, row['epochs_per_student']))} | {pct(row['none'])}{note} | "
                         f"{pct(row['alignahead'])} | {gain} | {paired} | {row['alignahead']['n']}/{row['none']['n']} |")
        if any(row["none_from_K"] != row["K"] for row in r["rows"]):
            lines += ["", "† no independent-student cells at this K were run: independent students share nothing, "
                      "so K does not change them, and the K shown is used as the baseline."]
        lines.append("")
    if report["students"]:
        lines += ["![gain against K](gain_vs_k.png)", ""]
    notes = out / "notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    lines += ["## Definitions", "", report["definitions"], ""]
    return "\n".join(lines)


def plot_convergence(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    colours = {"none": "tab:gray", "one-to-one": "tab:blue", "alignahead": "tab:red"}
    for ax, r in zip(axes.flat, results):
        for s in STRATEGY_ORDER:
            curve = r["curves"].get(s)
            if not curve:
                continue
            x, y, e = np.array(curve["epochs"]), np.array(curve["mean"]), np.array(curve["std"])
            ax.plot(x, y, color=colours[s], label=f"{s} (n={curve['n']})")
            ax.fill_between(x, y - e, y + e, color=colours[s], alpha=0.15)
        for fraction, block in (r.get("levels") or {}).items():
            ax.axhline(block["level"], linestyle=":", color="black", alpha=0.5)
            ax.text(0, block["level"], f" {float(fraction):.0%} of none's best", va="bottom", fontsize=7)
        best = r.get("none_best_val")
        if best:
            ax.set_ylim(max(0.0, best * 0.8), min(1.0, best * 1.03))
        ax.set_title(r["setting"])
        ax.set_xlabel("student epoch")
        ax.set_ylabel(f"validation {r['metric']} (mean over students)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gain(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in results:
        ks = [row["K"] for row in r["rows"]]
        for s, colour in (("none", "tab:gray"), ("alignahead", "tab:red")):
            pts = [(row["K"], row[s]["mean"], row[s]["std"]) for row in r["rows"] if row[s]["mean"] is not None]
            if pts:
                left.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                              marker="o", capsize=3, color=colour, label=f"{r['setting']}: {s}")
        pts = [(row["K"], row["paired_gain"]["mean"], row["paired_gain"]["std"]) for row in r["rows"]
               if row["paired_gain"]["mean"] is not None]
        if pts:
            right.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                           marker="o", capsize=3, label=r["setting"])
        left.set_xticks(ks)
        right.set_xticks(ks)
    left.set_xlabel("number of students K")
    left.set_ylabel("test metric at best validation (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("number of students K")
    right.set_ylabel("alignahead − none (points, paired by seed)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated sweep ids (default: all, in order): "
                        + ", ".join(e.id for e in PLAN))
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic programme into a temporary folder (< 1 min)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default simulations/results/reproduction/; with --smoke a temp folder)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rewrite the report from the run folders")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="fedalign-reproduce-smoke-"))
        sweeps_dir = out / "sweeps"
        entries = smoke_plan(sweeps_dir)
    else:
        out, sweeps_dir, entries = args.out or DEFAULT_OUT, SIMULATIONS, PLAN
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {e.id for e in entries}]
        if unknown:
            parser.error(f"--only: unknown sweep id(s) {', '.join(unknown)}; choose from {', '.join(e.id for e in entries)}")
        selected = tuple(e for e in entries if e.id in wanted)
    else:
        selected = entries
    started = time.perf_counter()
    status = {} if args.report_only else run_programme(selected, sweeps_dir, out, programme=entries)
    write_report(entries, sweeps_dir, out, status, smoke=args.smoke)
    print(f"[reproduce] report: {out / 'results.md'} ({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
