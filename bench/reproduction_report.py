"""The reproduction report's files: ``results.md``, ``results.json`` and the plots, from the run folders.

:func:`write` reads every sweep of the programme through :mod:`bench.reproduction_analysis`
and rewrites the report; a hand-written ``notes.md`` in the report folder is included as the
reading. :func:`record_provenance` notes which commit ran (``provenance.json``, each entry with the
invocation's full :func:`fedalign.provenance.provenance`); ``results.json``'s ``report_provenance``
is the provenance of the command that wrote the report (its ``provenance`` key lists ``provenance.json``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedalign.provenance import provenance as full_provenance

from . import reproduction_analysis as analysis
from . import reproduction_plots as plots

REPO = Path(__file__).resolve().parent.parent


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+uncommitted changes" if dirty else "")


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "report_revision": git_revision(),
    }


def record_provenance(out: Path, workers: int, sweeps: list[str]) -> None:
    """Append this invocation's commit, time and sweeps to ``provenance.json`` (which code made the runs)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "provenance.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append(
        {
            "revision": git_revision(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "workers": workers,
            "sweeps": sweeps,
            "machine": machine(),
            "provenance": full_provenance(),
        }
    )
    path.write_text(json.dumps(entries, indent=1) + "\n")


# ---------------------------------------------------------------- writing


def write(programme, sweeps_dir: Path, out: Path, status: dict | None = None, smoke: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    status = status or {}
    sweeps: list[dict] = []
    tuning: list[dict | None] = []
    findings: list[dict | None] = []  # one per strategies sweep; None where it has no finished run
    students: list[dict | None] = []
    maps: list[dict | None] = []
    collected = {}
    for sweep in programme:
        spec = analysis.load_or_none(sweeps_dir, sweep)
        info = {"id": sweep.id, "kind": sweep.kind, "phase": sweep.phase, "file": _display(sweeps_dir / sweep.file)}
        if spec is None:
            sweeps.append(
                {**info, "state": "waits for the arms chosen in an earlier phase", "cells": None, "finished": 0}
            )
            continue
        items = collected[sweep.id] = analysis.collect(spec)
        reason = status.get(sweep.id, {}).get("skipped") or analysis.missing_data(spec)
        sweeps.append({**info, **sweep_state(items, reason)})
        if sweep.kind == "tuning":
            tuning.append(analysis.tuning_finding(sweep.id, items))
        elif sweep.kind == "strategies":
            findings.append(analysis.strategies_finding(sweep.id, items))
        elif sweep.kind == "map":
            maps.append(analysis.map_finding(items))
    strategies = [s for s in findings if s]
    for sweep in (s for s in programme if s.kind == "students" and s.id in collected):
        students.append(analysis.students_finding(collected[sweep.id], strategies[0] if strategies else None))
    provenance = out / "provenance.json"
    report = {
        "machine": machine(),
        "smoke": smoke,
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "provenance": json.loads(provenance.read_text()) if provenance.is_file() else [],
        "report_provenance": full_provenance(),
        "definitions": analysis.__doc__.split("Definitions. ", 1)[1].strip(),
        "sweeps": sweeps,
        "tuning": [t for t in tuning if t],
        "strategies": strategies,
        "students": [s for s in students if s],
        "map": [m for m in maps if m],
    }
    plots.plot_all(report, out)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    (out / "results.md").write_text(render(report, out))
    return report


def sweep_state(items: list[dict], reason: str | None) -> dict[str, Any]:
    """A sweep's row in the report: its state, cells, finished and reused cells and the wall time it took.

    Args:
        items: the sweep's cells (:func:`reproduction_analysis.collect`).
        reason: why the sweep was skipped (None: it was not).
    """
    done = [i for i in items if i["finished"]]
    state = "skipped: " + reason if reason else "done" if len(done) == len(items) else "partial" if done else "not run"
    return {
        "state": state,
        "cells": len(items),
        "finished": len(done),
        "reused": sum(i["reused"] for i in done),
        "wall_seconds": round(sum(i["summary"]["wall_seconds"] for i in done if not i["reused"]), 1),
    }


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def pct(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f} ({entry['n']})"


def diff(c: dict, scale: float = 100.0, unit: str = "") -> str:
    if c.get("mean") is None:
        return "n/a"
    if c.get("se") is None:
        return f"{scale * c['mean']:+.2f}{unit} (n={c['n']})"
    p = "no spread" if c["p"] is None else f"p={c['p']:.3f}"
    return f"{scale * c['mean']:+.2f} ± {scale * c['se']:.2f}{unit} ({p}, n={c['n']})"


# ---------------------------------------------------------------- markdown


def render(report: dict, out: Path) -> str:
    m = report["machine"]
    lines = ["# Faithful reproduction of Alignahead (Guo, Chen & Wang, IJCNN 2022) in fedalign", ""]
    if report["smoke"]:
        lines += ["**Smoke run** on the built-in synthetic graph: checks the pipeline, not the paper.", ""]
    revisions = sorted({p["revision"] or "unknown" for p in report["provenance"]})
    lines += [
        "Command (resumable; finished cells are skipped, so the same command continues an interrupted run):",
        "",
        "```bash",
        "FEDALIGN_DATA_ROOT=../shared/data .venv/bin/python -m bench.reproduce --workers 2",
        "```",
        "",
        f"Runs made at revision(s) {', '.join(revisions) or 'unknown'} (provenance.json); report written "
        f"{report['written']} at {m['report_revision']}. Machine: {m['cpu']}, {m['cpu_count']} cores, GPU: "
        f"{m['gpu'] or 'none'}, torch {m['torch']}; cells ran two at a time, one thread each.",
        "",
        "## What ran",
        "",
        "| sweep | phase | cells finished | state | training time (sum over cells) |",
        "|---|---|---|---|---|",
    ]
    for s in report["sweeps"]:
        wall = f"{s['wall_seconds'] / 60:.0f} min" if s.get("wall_seconds") is not None else "-"
        reused = f" ({s['reused']} copied)" if s.get("reused") else ""
        lines.append(
            f"| `{s['file']}` | {s['phase']} | {s['finished']}/{s['cells'] or '?'}{reused} | {s['state']} | {wall} |"
        )
    lines += [""] + render_tuning(report["tuning"]) + render_accuracy(report["strategies"])
    lines += render_terms(report["strategies"]) + render_convergence(report["strategies"])
    lines += render_students(report["students"]) + render_map(report["map"])
    notes = out / "notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    lines += ["## Definitions", "", report["definitions"], ""]
    return "\n".join(lines)


def render_tuning(tuning: list[dict]) -> list[str]:
    lines = []
    for t in tuning:
        lines += [
            f"## Tuning on validation: `{t['sweep']}` (seed 0)",
            "",
            "| " + " | ".join(t["keys"]) + " | best validation (mean of students) | test |",
            "|" + "---|" * (len(t["keys"]) + 2),
        ]
        for c in t["cells"]:
            mark = " **(chosen)**" if c is t["chosen"] else ""
            val = "diverged" if c["val"] is None else f"{100 * c['val']:.2f}"
            test = "n/a" if c["test"] is None else f"{100 * c['test']:.2f}"
            lines.append("| " + " | ".join(str(c[k]) for k in t["keys"]) + f" | {val}{mark} | {test} |")
        lines.append("")
    return lines


def render_accuracy(strategies: list[dict]) -> list[str]:
    if not strategies:
        return []
    lines = ["## (a) Accuracy: test metric at best validation (%), mean ± std (seeds)", ""]
    for r in strategies:
        arms = list(r["accuracy"])
        lines += [
            f"**{r['setting']}** ({r['metric']})",
            "",
            "| " + " | ".join(arms) + " |",
            "|" + "---|" * len(arms),
            "| " + " | ".join(pct(r["accuracy"][a]) for a in arms) + " |",
            "",
            "| comparison (paired by seed) | difference (points) ± SE | 95 % interval | verdict |",
            "|---|---|---|---|",
        ]
        for c in r["comparisons"]:
            ci = "n/a" if c["ci"] is None else f"[{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]"
            lines.append(f"| {c['a']} − {c['b']}: {c['meaning']} | {diff(c)} | {ci} | {c['verdict']} |")
        lines.append("")
    return lines


def render_terms(strategies: list[dict]) -> list[str]:
    rows = [(r["setting"], arm, t) for r in strategies for arm, t in r["terms"].items()]
    if not rows:
        return []
    lines = [
        "### How strongly the alignment term pulls",
        "",
        "| setting | arm | a · alignment loss / task loss (last turn) | ‖∇ a·alignment‖ / ‖∇ task‖ (median over "
        "turns) | alignment loss (nats) |",
        "|---|---|---|---|---|",
    ]
    for setting, arm, t in rows:
        grad = "n/a" if t.get("grad_ratio") is None else f"{t['grad_ratio']:.4f}"
        lines.append(
            f"| {setting} | {arm} | {t.get('loss_ratio', float('nan')):.4f} | {grad} | "
            f"{t.get('align_loss', float('nan')):.5f} |"
        )
    return lines + [""]


def render_convergence(strategies: list[dict]) -> list[str]:
    lines = ["## (b) Convergence: student epochs to reach a fixed validation level", ""]
    any_rows = False
    for r in strategies:
        for fraction, block in r.get("levels", {}).items():
            any_rows = True
            arms = list(block["arms"])
            cells = [
                (
                    "n/a"
                    if block["arms"][a]["mean"] is None
                    else f"{block['arms'][a]['mean']:.0f} ± {block['arms'][a]['std']:.0f} "
                    f"({block['arms'][a]['reached']}/{block['arms'][a]['cells']})"
                )
                for a in arms
            ]
            saved = "; ".join(f"{c['a']}: {diff(c, 1.0, ' ep')} → {c['verdict']}" for c in block["saved"])
            lines += [
                f"**{r['setting']}**, {float(fraction):.0%} of none's best validation "
                f"({100 * block['level']:.2f}): " + ", ".join(f"{a} {v}" for a, v in zip(arms, cells, strict=True)),
                "",
                f"Epochs saved against none (paired; positive = faster): {saved}",
                "",
            ]
    if not any_rows:
        return []
    return lines + ["![validation metric against student epoch](convergence.png)", ""]


def render_students(students: list[dict]) -> list[str]:
    lines = []
    for r in students:
        lines += [
            f"## (c) Gain over independent students against K: {r['setting']} ({r['metric']}, points)",
            "",
            "Independent students do not depend on K (they share nothing), so every K is paired with the "
            "K = 2 `none` cells of the same seed.",
            "",
            "| arm | K | paired gain ± SE | verdict |",
            "|---|---|---|---|",
        ]
        lines += [f"| {row['arm']} | {row['K']} | {diff(row)} | {row['verdict']} |" for row in r["rows"]]
        lines += ["", "![gain against K](gain_vs_k.png)", ""]
    return lines


def render_map(maps: list[dict]) -> list[str]:
    lines = []
    for r in maps:
        arms = list(dict.fromkeys(a for row in r["rows"] for a in row["arms"]))
        lines += [
            f"## Where alignment helps: federated map on {r['setting']} ({r['metric']}, %)",
            "",
            "| partition | K | label rate | " + " | ".join(arms) + " |",
            "|" + "---|" * (3 + len(arms)),
        ]
        for row in r["rows"]:
            lines.append(
                f"| {row['scheme']} | {row['K']} | {row['label_rate']:g} | "
                + " | ".join(pct(row["arms"].get(a)) for a in arms)
                + " |"
            )
        lines += [
            "",
            "| partition | K | label rate | " + " | ".join(f"{a} − {b}" for a, b in analysis.MAP_COMPARISONS) + " |",
            "|" + "---|" * (3 + len(analysis.MAP_COMPARISONS)),
        ]
        for row in r["rows"]:
            found = {(c["a"], c["b"]): c for c in row["comparisons"]}
            cells = [
                (diff(found[(a, b)]) + (" **★**" if found[(a, b)]["verdict"] == "reproduced" else ""))
                if (a, b) in found
                else "n/a"
                for a, b in analysis.MAP_COMPARISONS
            ]
            lines.append(f"| {row['scheme']} | {row['K']} | {row['label_rate']:g} | " + " | ".join(cells) + " |")
        lines += ["", "★ = A beats B, paired t-test p < 0.05.", "", "![gains on the federated map](map.png)", ""]
    return lines


# ---------------------------------------------------------------- plots
