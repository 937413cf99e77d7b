"""Run folders: the resolved config, the per-round log, the summary, a plot.

A run writes into ``<output.dir>/<name>-<UTC timestamp>/``:

* ``config.yaml``: the fully resolved experiment config;
* ``rounds.jsonl``: one JSON object per client per round, appended and
  flushed as each round ends (nothing is lost if the run dies); with privacy on
  without ``seconds`` (a client's time reveals the size of its data);
* ``summary.json``: status (``finished`` / ``failed``), best validation
  metric per client with the test metric of the same round, totals
  (``wall_seconds``: the whole run, every part of a resumed one), and
  ``provenance`` (:func:`fedalign.provenance.provenance`, taken when this part of the run started;
  a resumed run keeps its earlier parts' in ``provenance_earlier_parts``);
* ``curves.png``: validation metric against round, one line per client.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import yaml

from .config import ExperimentConfig
from .provenance import provenance
from .server import RoundRecord, summarise
from .wire import private_releases


def run_dir_for(cfg: ExperimentConfig, run_dir: str | Path | None) -> Path:
    """``run_dir`` as given, or (None) a fresh folder under ``output.dir``: the one place that default lives.

    Args:
        cfg: the experiment config (``output.dir``, ``name``).
        run_dir: the run folder, or None for a new one.
    """
    return Path(run_dir) if run_dir is not None else new_run_dir(cfg)


def new_run_dir(cfg: ExperimentConfig, root: str | Path | None = None) -> Path:
    """A fresh, uniquely named folder for one run (created).

    Args:
        cfg: the experiment config (its ``name`` starts the folder's name).
        root: the parent folder, or None for ``output.dir``.
    """
    base = Path(root if root is not None else cfg.output.dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = base / f"{cfg.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{cfg.name}-{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


def json_safe(value):
    """JSON has no NaN/Inf: write infinities as the string "inf" and NaN as null (recursively).

    Args:
        value: a JSON-like value (dicts, lists and tuples are walked).
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def read_rounds(run_dir: str | Path) -> list[RoundRecord]:
    """The records of a run folder's ``rounds.jsonl`` (a torn last line, from a crash, is skipped).

    Args:
        run_dir: the run folder.
    """
    path = Path(run_dir) / "rounds.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(RoundRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError):
                continue
    return records


class RunWriter:
    """Writes a run folder as rounds arrive (a ``RoundListener``).

    With privacy on (:func:`~fedalign.wire.private_releases`) no record keeps its ``seconds``:
    the log holds no per-client time.

    Args:
        run_dir: the run folder (exists); ``config.yaml`` and ``rounds.jsonl`` are written at once.
        cfg: the experiment config.
        metric_name: the task metric's name (``accuracy`` or ``micro_f1``).
        engine: the engine's name, recorded in the summary (e.g. ``inprocess``).
        previous: records of rounds completed before a restart; ``rounds.jsonl`` is rewritten to hold
            exactly those, then appended to.
        wall_seconds_before: the wall time of the run's earlier parts (before a restart), which
            :meth:`wall_seconds` adds to this part's.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: ExperimentConfig,
        metric_name: str,
        engine: str,
        previous: Sequence[RoundRecord] = (),
        wall_seconds_before: float = 0.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.metric_name = metric_name
        self.engine = engine
        self.private = private_releases(cfg)
        self.records: list[RoundRecord] = self._logged(previous)
        self.wall_seconds_before = wall_seconds_before
        self.started = time.monotonic()
        self.extra: dict = {}  # more summary keys an engine adds (the weight arms: "shared", "shared_note", ...)
        self.provenance = provenance()
        self.earlier_provenance = earlier_provenance(self.run_dir) if (previous or wall_seconds_before) else []
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        tmp = self.run_dir / ".rounds.jsonl.tmp"
        tmp.write_text("".join(json.dumps(json_safe(r.to_json())) + "\n" for r in self.records))
        tmp.replace(self.run_dir / "rounds.jsonl")
        self._log = (self.run_dir / "rounds.jsonl").open("a")

    def _logged(self, records) -> list[RoundRecord]:
        """``records`` as the log keeps them: without per-client times when privacy is on."""
        return [dataclasses.replace(r, seconds=None) for r in records] if self.private else list(records)

    def wall_seconds(self) -> float:
        """The run's wall time so far: its earlier parts and this one."""
        return self.wall_seconds_before + time.monotonic() - self.started

    def on_round(self, round_number: int, total_rounds: int, records: list[RoundRecord]) -> None:
        """Append the round's records to ``rounds.jsonl``.

        Args:
            round_number: the round just completed (0: the initial release).
            total_rounds: the run's number of rounds.
            records: the round's records, one per client.
        """
        records = self._logged(records)
        for record in records:
            row = json_safe(record.to_json())
            self._log.write(json.dumps(row) + "\n")
        self._log.flush()
        self.records.extend(records)

    def finish(self, error: BaseException | None = None, evaluation: list[dict] | None = None) -> dict:
        """Write ``summary.json`` (and the plot); returns the summary.

        Args:
            error: the error the run stopped with, or None (then its status is ``finished``).
            evaluation: the clients' own evaluation-log rows (privacy on, clients and server on
                one machine): written to ``evaluation.jsonl`` and merged into the summary, which then says
                ``"metrics_source": "client evaluation logs (evaluation only, never sent)"``.
        """
        self._log.close()
        records = self.records
        source = "round log"
        if evaluation:
            (self.run_dir / "evaluation.jsonl").write_text("".join(json.dumps(json_safe(r)) + "\n" for r in evaluation))
            records = merge_evaluation(self.records, evaluation)
            source = "client evaluation logs (evaluation only, never sent to the server)"
        summary = summarise(records, self.cfg.federation.num_clients, self.metric_name)
        summary = {
            "name": self.cfg.name,
            "engine": self.engine,
            "status": "failed" if error else "finished",
            "error": f"{type(error).__name__}: {error}" if error else None,
            "rounds_completed": max((r.round for r in self.records), default=0),
            "wall_seconds": round(self.wall_seconds(), 3),
            "metrics_source": source,
            **summary,
            **self.extra,
            "provenance": self.provenance,
            **({"provenance_earlier_parts": self.earlier_provenance} if self.earlier_provenance else {}),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        if self.cfg.output.plot and records:
            plot_curves(records, self.run_dir / "curves.png", self.metric_name, self.cfg.name)
        return summary


def earlier_provenance(run_dir: Path) -> list[dict]:
    """The provenance of a run's earlier parts, from the ``summary.json`` a resumed run is about to replace.

    Args:
        run_dir: the run folder."""
    try:
        before = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(before, dict):
        return []
    earlier = before.get("provenance_earlier_parts") or []
    return earlier + ([before["provenance"]] if isinstance(before.get("provenance"), dict) else [])


def merge_evaluation(records: list[RoundRecord], evaluation: list[dict]) -> list[RoundRecord]:
    """Copies of ``records`` with each (round, client)'s evaluation-log metrics added (last row wins).

    Args:
        records: the round records.
        evaluation: the clients' evaluation-log rows, each with ``round`` and ``client``.
    """
    extra = {
        (int(r["round"]), int(r["client"])): {k: v for k, v in r.items() if k not in ("round", "client")}
        for r in evaluation
    }
    return [dataclasses.replace(r, metrics={**r.metrics, **extra.get((r.round, r.client), {})}) for r in records]


class ProgressPrinter:
    """One line per round on a stream (stderr by default), with the time since the start unless
    ``timings`` is false (privacy on: with one trainer per round, the time between two lines is a
    client's time)."""

    def __init__(self, metric_name: str, stream: TextIO | None = None, timings: bool = True) -> None:
        """Print to ``stream``.

        Args:
            metric_name: the task metric's name.
            stream: where to print, or None for stderr.
            timings: show the time since the start on each line.
        """
        self.metric_name = metric_name
        self.stream = stream or sys.stderr
        self.timings = timings
        self.started = time.perf_counter()

    def on_round(self, round_number: int, total_rounds: int, records: list[RoundRecord]) -> None:
        """Print one line for the round: each client's losses and metrics, failures and withheld releases.

        Args:
            round_number: the round just completed (0: the initial release).
            total_rounds: the run's number of rounds.
            records: the round's records, one per client.
        """
        parts = []
        for r in records:
            if r.status in ("missing", "rejected"):
                parts.append(f"client {r.client}: {r.status.upper()} ({r.error})")
                continue
            shown = [
                f"{label} {r.metrics[key]:.4f}"
                for key, label in (
                    ("task_loss", "task"),
                    ("align_loss", "align"),
                    ("val_metric", "val"),
                    ("test_metric", "test"),
                )
                if key in r.metrics
            ]
            if "epsilon" in r.metrics and r.status != "withheld":
                shown.append(f"ε {r.metrics['epsilon']:.3g}")
            if shown and r.round > 0:
                parts.append(f"client {r.client}: " + " ".join(shown))
            if r.status == "withheld":
                spent = f", ε={r.metrics['epsilon']:.4g}" if "epsilon" in r.metrics else ""
                parts.append(f"client {r.client} withheld its release (privacy budget or release_every{spent})")
        label = "init" if round_number == 0 else f"{round_number}/{total_rounds}"
        elapsed = f" | {time.perf_counter() - self.started:6.1f}s" if self.timings else ""
        print(f"[round {label}{elapsed}] " + ("; ".join(parts) or "statistics collected"), file=self.stream, flush=True)


def plot_curves(records: list[RoundRecord], path: Path, metric_name: str, title: str) -> None:
    """Validation metric against round, one line per client (PNG).

    Args:
        records: the run's round records.
        path: the PNG file to write.
        metric_name: the task metric's name (the y-axis label).
        title: the plot's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for client in sorted({r.client for r in records}):
        rows = [r for r in records if r.client == client and r.status == "ok" and "val_metric" in r.metrics]
        if rows:
            ax.plot(
                [r.round for r in rows], [r.metrics["val_metric"] for r in rows], marker=".", label=f"client {client}"
            )
    ax.set_xlabel("round")
    ax.set_ylabel(f"validation {metric_name}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
