"""Answering one request: what both engines' clients do with a query or a training request.

:func:`respond` trains (for a training request) and releases, keeps the client's checkpoint
and answers a repeated request with its stored reply. With privacy on, the reply carries
only accounted values (:func:`fedalign.wire.split_metrics`); the client's other metrics --
losses, validation and test scores -- go to its own :class:`EvaluationLog`, which never
leaves the client: the in-process and simulation engines, where client and server share
a machine, merge it into the run folder as evaluation-only figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..wire import Statistics, private_releases, split_metrics
from .checkpoint import Checkpoint, state_root
from .student import Student


class EvaluationLog:
    """A client's own log of the metrics it does not send: one JSON line per answered request (mode 0600)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: list[dict] = []  # kept in memory too (and only there when path is None)

    def append(self, round_number: int, client_id: int, metrics: dict[str, float]) -> None:
        row = {"round": round_number, "client": client_id, **metrics}
        self.rows.append(row)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
                handle.write(json.dumps(row, allow_nan=True) + "\n")


def evaluation_log_path(state_dir: str | Path | None, run_tag: str, client_id: int) -> Path:
    """``<state root>/<run tag>/client-<i>-evaluation.jsonl``."""
    return state_root(state_dir) / run_tag / f"client-{client_id}-evaluation.jsonl"


def read_evaluation_logs(paths: list[Path]) -> list[dict]:
    """Every row of the clients' evaluation logs that exist (a torn last line, from a crash, is skipped)."""
    rows = []
    for path in paths:
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def respond(student: Student, request: str, round_number: int, peers: dict[int, Statistics], train: bool,
            checkpoint: Checkpoint | None = None, log: EvaluationLog | None = None
            ) -> tuple[dict[str, float], Statistics | None]:
    """``(metrics to send, statistics to send)`` for one request (``request``: message type and round).

    A request answered before (its reply is in ``checkpoint``) gets the same reply again, without
    training twice or spending privacy budget twice.
    """
    if checkpoint is not None:
        repeated = checkpoint.last_reply(request)
        if repeated is not None:
            return repeated
    metrics = student.train(peers, round_number) if train else {}
    statistics, release_metrics = student.release(round_number)
    sent, kept = split_metrics({**metrics, **release_metrics}, private_releases(student.cfg))
    if kept and log is not None:
        log.append(round_number, student.client_id, kept)
    if checkpoint is not None and (train or student.release_policy.state_dict()):
        checkpoint.save(student, request, sent, statistics)  # the checkpoint's ledger includes this release
    return sent, statistics
