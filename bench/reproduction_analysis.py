"""The reproduction's numbers: run folders read, arms compared by paired tests, verdicts (no output files).

Definitions. A cell's test metric is ``summary.json``'s ``mean_test_at_best_val`` (each
student's test metric at its best validation round, averaged over the students); its
validation metric is the students' mean best validation metric. Comparisons of two arms
are *paired by seed* (same data split, same initial weights): the mean of the per-seed
differences, its standard error, the two-sided paired t-test p-value and the 95 %
t-interval. A verdict needs at least 3 seeds and differences that vary (the t-test is
undefined when every seed differs by the same amount, which discrete test metrics make possible
with few seeds); otherwise it is n/a. Verdict for "A beats B": **reproduced** when the difference is positive with
p < 0.05; **not reproduced** when the interval's upper end lies below the smallest effect
of interest (0.5 points of the metric; for convergence, a 10 % saving of epochs), i.e. a
gain of that size is ruled out; **inconclusive** otherwise. A student's epoch after its
n-th turn is ``n * train.local_epochs``; it reaches a level at the first evaluated epoch
whose validation metric is >= the level (a fraction of the ``none`` arm's mean best
validation metric in that setting); a cell's epochs-to-level is the mean over its students
("not reached" if any student never reached it). The alignment term's size is
``a * align_loss / task_loss`` at each student's last turn, and its gradient's size the
median over turns of ``align_grad_norm / task_grad_norm`` (norms of the gradients of
``a * align_loss`` and of the task loss over all parameters, last epoch of each turn).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
LEVELS = (0.95, 0.98)
MIN_EFFECT = 0.005  # accuracy / F1 points (as a fraction): the smallest gain the verdicts care about
MIN_EPOCH_SAVING = 0.10  # convergence: a 10 % saving of epochs
COMPARISONS = (  # (A, B, what "A beats B" means)
    ("alignahead", "none", "alignahead beats independent students"),
    ("alignahead", "self", "knowledge transfer: alignahead beats its own-statistics control"),
    ("alignahead", "one-to-one", "cross-layer beats one-to-one"),
    ("self", "none", "the cross-layer regulariser alone"),
    ("logits", "none", "mutual learning beats independent students"),
    ("alignahead-tuned", "none", "tuned alignahead beats independent students"),
    ("alignahead-tuned", "self-tuned", "tuned: knowledge transfer"),
    ("logits-tuned", "none", "tuned mutual learning beats independent students"),
    ("alignahead-tuned", "logits-tuned", "tuned: structure beats outputs"),
)
MAP_COMPARISONS = (
    ("alignahead-best", "none"),
    ("alignahead-best", "self-best"),
    ("logits-best", "none"),
    ("alignahead-best", "logits-best"),
)
ARM_ORDER = (
    "none",
    "self",
    "one-to-one",
    "alignahead",
    "logits",
    "self-tuned",
    "one-to-one-tuned",
    "alignahead-tuned",
    "logits-tuned",
    "self-best",
    "one-to-one-best",
    "alignahead-best",
    "logits-best",
)


# ---------------------------------------------------------------- loading


def load(sweeps_dir: Path, sweep) -> Any:
    from fedalign.sweep import load_sweep

    spec = load_sweep(sweeps_dir / sweep.file)
    spec.name = sweep.id
    return spec


def load_or_none(sweeps_dir: Path, sweep) -> Any:
    """The sweep spec, or None while an arms file it needs is not written yet."""
    from fedalign.config import ConfigError

    try:
        return load(sweeps_dir, sweep)
    except ConfigError:
        return None


def missing_data(spec) -> str | None:
    from fedalign.data import missing_raw_files
    from fedalign.sweep import cell_config, cells

    cfg = cell_config(spec, cells(spec)[0])
    return missing_raw_files(cfg.data.name, cfg.data.root)


def collect(spec) -> list[dict]:
    """One dict per cell: its grid values and, when finished, its numbers."""
    from fedalign.outputs import read_rounds
    from fedalign.runstore import runs_dir
    from fedalign.sweep import cell_id, cells, finished_cell

    result = []
    for cell in cells(spec):
        run_dir = runs_dir(spec.output) / cell_id(cell)
        summary = finished_cell(spec, cell)
        item: dict[str, Any] = {"cell": cell, "run_dir": run_dir, "finished": summary is not None}
        if summary is not None:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            records = sorted(read_rounds(run_dir), key=lambda r: (r.round, r.client))
            vals = [c["best_val"] for c in summary["clients"].values() if c["best_val"] is not None]
            item.update(
                summary=summary,
                config=config,
                test=summary["mean_test_at_best_val"],
                best_val=float(np.mean(vals)) if vals else None,
                seed=config["seed"],
                arm=cell.get("arm", config["align"]["strategy"]),
                curves=student_curves(records, config["train"]["local_epochs"]),
                term=alignment_term(records, config["align"]["weight"]),
                reused=(run_dir / "reused_from.txt").is_file(),
            )
        result.append(item)
    return result


def student_curves(records, local_epochs: int) -> dict[int, list[tuple[int, float]]]:
    """Per client: (student epoch, validation metric) after each of its turns, in round order."""
    curves: dict[int, list[tuple[int, float]]] = {}
    for record in records:
        if record.status in ("ok", "withheld") and "val_metric" in record.metrics:
            points = curves.setdefault(record.client, [])
            points.append(((len(points) + 1) * local_epochs, record.metrics["val_metric"]))
    return curves


def alignment_term(records, weight: float) -> dict[str, float | None]:
    """Size of the alignment term against the task term (see Definitions); {} without one."""
    last: dict[int, dict] = {}
    grad_ratios: dict[int, list[float]] = {}
    for record in records:
        m = record.metrics
        if record.status == "ok" and "task_loss" in m:
            last[record.client] = m
            if m.get("task_grad_norm"):
                grad_ratios.setdefault(record.client, []).append(m["align_grad_norm"] / m["task_grad_norm"])
    if not last or not any(m.get("align_loss") for m in last.values()):
        return {}
    return {
        "loss_ratio": float(np.mean([weight * m["align_loss"] / m["task_loss"] for m in last.values()])),
        "grad_ratio": float(np.mean([np.median(r) for r in grad_ratios.values()])) if grad_ratios else None,
        "align_loss": float(np.mean([m["align_loss"] for m in last.values()])),
    }


# ---------------------------------------------------------------- statistics


def mean_std(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    return {
        "n": len(values),
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None),
    }


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired comparison of two arms' per-seed values: mean difference, SE, t-test p, 95 % interval."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    out: dict[str, Any] = {
        "seeds": seeds,
        "diffs": diffs,
        "n": len(diffs),
        "mean": float(np.mean(diffs)) if diffs else None,
    }
    if len(diffs) < 2:
        return {**out, "se": None, "p": None, "ci": None}
    sd = float(np.std(diffs, ddof=1))
    se = sd / math.sqrt(len(diffs))
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * se
    if se == 0:  # no spread: a t-test is undefined unless there is no difference at all
        p = 1.0 if out["mean"] == 0 else None
    else:
        p = float(2 * stats.t.sf(abs(out["mean"]) / se, len(diffs) - 1))
    return {**out, "se": se, "p": p, "ci": [out["mean"] - half, out["mean"] + half]}


MIN_SEEDS = 3  # fewer paired seeds give no verdict


def verdict(comparison: dict, min_effect: float) -> str:
    """reproduced / not reproduced / inconclusive for "A beats B"; n/a with too few seeds (see Definitions)."""
    if comparison.get("p") is None or comparison["n"] < MIN_SEEDS:
        return "n/a"
    if comparison["mean"] > 0 and comparison["p"] < 0.05:
        return "reproduced"
    if comparison["ci"][1] < min_effect:
        return "not reproduced"
    return "inconclusive"


def by_arm(items: list[dict], key: str = "test") -> dict[str, dict[int, float]]:
    arms: dict[str, dict[int, float]] = {}
    for i in items:
        if i["finished"] and i.get(key) is not None:
            arms.setdefault(i["arm"], {})[i["seed"]] = i[key]
    return arms


# ---------------------------------------------------------------- findings


def strategies_finding(sweep_id: str, items: list[dict]) -> dict | None:
    done = [i for i in items if i["finished"]]
    if not done:
        return None
    config = done[0]["config"]
    tests = by_arm(done)
    arms = [a for a in ARM_ORDER if a in tests]
    result: dict[str, Any] = {
        "sweep": sweep_id,
        "setting": f"{config['data']['name']} / {config['model']['arch'].upper()}",
        "metric": done[0]["summary"]["metric"],
        "accuracy": {a: {**mean_std(list(tests[a].values())), "values": tests[a]} for a in arms},
        "comparisons": [],
        "terms": {},
        "curves": {},
        "levels": {},
    }
    for a, b, meaning in COMPARISONS:
        if a in tests and b in tests:
            c = paired(tests[a], tests[b])
            result["comparisons"].append({"a": a, "b": b, "meaning": meaning, **c, "verdict": verdict(c, MIN_EFFECT)})
    for arm in arms:
        terms = [i["term"] for i in done if i["arm"] == arm and i["term"]]
        if terms:
            result["terms"][arm] = {
                k: float(np.mean([t[k] for t in terms if t.get(k) is not None]))
                for k in ("loss_ratio", "grad_ratio", "align_loss")
                if any(t.get(k) is not None for t in terms)
            }
        result["curves"][arm] = mean_curve([i for i in done if i["arm"] == arm])
    if "none" in tests:
        result["none_best_val"] = float(np.nanmean([i["best_val"] or np.nan for i in done if i["arm"] == "none"]))
        result["levels"] = convergence(done, arms, result["none_best_val"])
    return result


def mean_curve(items: list[dict]) -> dict | None:
    """Validation metric against student epoch: mean over students, then mean/std over seeds."""
    per_cell = []
    for i in items:
        curves = list(i["curves"].values())
        if curves and len({len(c) for c in curves}) == 1:
            per_cell.append(([e for e, _ in curves[0]], np.mean([[v for _, v in c] for c in curves], axis=0)))
    if not per_cell or len({tuple(e) for e, _ in per_cell}) != 1:
        return None
    stack = np.array([v for _, v in per_cell])
    return {
        "epochs": per_cell[0][0],
        "mean": stack.mean(axis=0).tolist(),
        "std": (stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(stack.shape[1])).tolist(),
        "n": len(stack),
    }


def epochs_to(curves: dict[int, list[tuple[int, float]]], level: float) -> float | None:
    firsts = []
    for points in curves.values():
        first = next((epoch for epoch, value in points if value >= level), None)
        if first is None:
            return None
        firsts.append(first)
    return float(np.mean(firsts)) if firsts else None


def convergence(done: list[dict], arms: list[str], reference: float) -> dict:
    levels = {}
    for fraction in LEVELS:
        level = fraction * reference
        epochs = {a: {i["seed"]: epochs_to(i["curves"], level) for i in done if i["arm"] == a} for a in arms}
        table = {
            a: {
                **mean_std([e for e in per_seed.values() if e is not None]),
                "reached": sum(e is not None for e in per_seed.values()),
                "cells": len(per_seed),
            }
            for a, per_seed in epochs.items()
        }
        comparisons = []
        for a in ("alignahead", "alignahead-tuned", "logits", "logits-tuned", "self"):
            if a in epochs and "none" in epochs:
                saved = paired(
                    {s: -e for s, e in epochs[a].items() if e is not None},
                    {s: -e for s, e in epochs["none"].items() if e is not None},
                )
                none_mean = table["none"]["mean"] or 0.0
                comparisons.append(
                    {"a": a, "b": "none", **saved, "verdict": verdict(saved, MIN_EPOCH_SAVING * none_mean)}
                )
        levels[f"{fraction:g}"] = {"level": level, "arms": table, "saved": comparisons}
    return levels


def students_finding(items: list[dict], baseline: dict | None) -> dict | None:
    """Finding (c): paired gain over none (from the strategies sweep: K does not change it) per K and arm."""
    done = [i for i in items if i["finished"]]
    if not done or baseline is None:
        return None
    none = baseline["accuracy"].get("none", {}).get("values", {})
    rows = []
    for arm in ("alignahead", "alignahead-tuned"):
        if arm in baseline["accuracy"]:
            rows.append({"K": 2, "arm": arm, **paired(baseline["accuracy"][arm]["values"], none)})
        for k in sorted({i["config"]["federation"]["num_clients"] for i in done}):
            at_k = {
                i["seed"]: i["test"] for i in done if i["arm"] == arm and i["config"]["federation"]["num_clients"] == k
            }
            if at_k:
                rows.append({"K": k, "arm": arm, **paired(at_k, none)})
    for row in rows:
        row["verdict"] = verdict(row, MIN_EFFECT)
    return {"setting": baseline["setting"], "metric": baseline["metric"], "rows": rows}


def map_finding(items: list[dict]) -> dict | None:
    done = [i for i in items if i["finished"]]
    if not done:
        return None
    groups: dict[tuple, list[dict]] = {}
    for i in done:
        c = i["config"]
        key = (c["partition"]["scheme"], c["federation"]["num_clients"], c["partition"]["label_rate"])
        groups.setdefault(key, []).append(i)
    rows = []
    for (scheme, k, rate), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        tests = by_arm(members)
        row = {
            "scheme": scheme,
            "K": k,
            "label_rate": rate,
            "arms": {a: mean_std(list(v.values())) for a, v in tests.items()},
            "comparisons": [],
        }
        for a, b in MAP_COMPARISONS:
            if a in tests and b in tests:
                c = paired(tests[a], tests[b])
                row["comparisons"].append({"a": a, "b": b, **c, "verdict": verdict(c, MIN_EFFECT)})
        rows.append(row)
    config = done[0]["config"]
    return {
        "setting": f"{config['data']['name']} / {config['model']['arch'].upper()}",
        "metric": done[0]["summary"]["metric"],
        "rows": rows,
    }


def tuning_finding(sweep_id: str, items: list[dict]) -> dict | None:
    done = [i for i in items if i["finished"]]
    if not done:
        return None
    keys = [k for k in items[0]["cell"] if k != "seed"]
    cells = [
        {**{k: i["cell"][k] for k in keys}, "val": i["best_val"], "test": i["test"], "config": i["config"]}
        for i in done
    ]
    # ties: the first in grid order; a run that diverged (no validation metric) is never chosen
    best = max(cells, key=lambda c: (-math.inf if c["val"] is None else c["val"], -cells.index(c)))
    return {"sweep": sweep_id, "keys": keys, "cells": cells, "chosen": best, "complete": len(done) == len(items)}
