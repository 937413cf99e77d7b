"""Answering one request: what both engines' clients do with a query or a training request.

:func:`answer_request` is the whole answer to one message as the Flower ClientApp (or its
node's worker) receives it: the config, the client's data and student, its checkpoint.
:func:`respond` trains (for a training request) and releases, keeps the client's checkpoint
and answers a repeated request with its stored reply. With privacy on, the reply carries
only accounted values (:func:`fedalign.wire.split_metrics`); the client's other metrics --
losses, validation and test scores -- go to its own :class:`EvaluationLog`, which never
leaves the client: the in-process and simulation engines, where client and server share
a machine, merge it into the run folder as evaluation-only figures.

Every request says the largest epsilon the server has seen this client report (``epsilon_before``);
a client that does not continue a ledger holding it -- no checkpoint of this run, or an older one --
releases nothing and replies only ``ledger_lost`` (:func:`fedalign.ledgers.refusal`), and the
server stops the run naming it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

from ..config import ExperimentConfig, config_from_dict
from ..files import append_private_line
from ..ledgers import LEDGER_LOST, refusal
from ..statistics import eager_kernels
from ..wire import Statistics, private_releases, split_metrics
from .checkpoint import Checkpoint, checkpoint_path
from .paths import state_root
from .prepared import prepared_client_data
from .requests import Answer, Request
from .student import Student, build_student


class EvaluationLog:
    """A client's own log of the metrics it does not send: one JSON line per answered request (mode 0600)."""

    def __init__(self, path: Path | None) -> None:
        """Log to ``path``, or only in memory.

        Args:
            path: the JSON-lines file (:func:`evaluation_log_path`), or None to keep the rows only in :attr:`rows`.
        """
        self.path = path
        self.rows: list[dict] = []  # kept in memory too (and only there when path is None)

    def append(self, round_number: int, client_id: int, metrics: dict[str, float]) -> None:
        """Append one row: the round, the client and its metrics.

        Args:
            round_number: the round answered.
            client_id: the client's index.
            metrics: the metrics the client keeps to itself.
        """
        row = {"round": round_number, "client": client_id, **metrics}
        self.rows.append(row)
        if self.path is not None:
            append_private_line(self.path, json.dumps(row, allow_nan=True))


def evaluation_log_path(state_dir: str | Path | None, run_tag: str, client_id: int) -> Path:
    """``<state root>/<run tag>/client-<i>-evaluation.jsonl``.

    Args:
        state_dir: the configured state directory, or None (:func:`~fedalign.client.paths.state_root`).
        run_tag: the run's tag.
        client_id: the client's index.
    """
    return state_root(state_dir) / run_tag / f"client-{client_id}-evaluation.jsonl"


def read_evaluation_logs(paths: list[Path]) -> list[dict]:
    """Every row of the clients' evaluation logs that exist (a torn last line, from a crash, is skipped).

    Args:
        paths: the log files; missing ones are skipped.
    """
    rows = []
    for path in paths:
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def spent_epsilon(student: Student) -> float | None:
    """The largest epsilon the student's ledgers hold (release, DP-SGD, label DP); None: it keeps none.

    Args:
        student: the client's student.
    """
    policy = student.release_policy
    ledger, dp_sgd = getattr(policy, "ledger", None), getattr(student, "dp_sgd", None)
    label_epsilon = getattr(policy, "label_epsilon", None)
    values = [ledger.epsilon()] if ledger is not None else []
    if dp_sgd is not None:
        values.append(dp_sgd.ledger.epsilon())
    if label_epsilon is not None:
        values.append(float(label_epsilon))
    return max(values, default=None)


def respond(
    student: Student,
    request: str,
    round_number: int,
    peers: dict[int, Statistics],
    train: bool,
    checkpoint: Checkpoint | None = None,
    log: EvaluationLog | None = None,
    epsilon_before: float | None = None,
) -> tuple[dict[str, float], Statistics | None]:
    """``(metrics to send, statistics to send)`` for one request.

    A request answered before (its reply is in ``checkpoint``) gets the same reply again, without
    training twice or spending privacy budget twice. A client that does not continue a ledger holding
    ``epsilon_before`` (no state of its own, or a ledger below it) neither trains nor releases:
    ``({"ledger_lost": 1.0}, None)``.

    Args:
        student: the client's student, restored from its checkpoint.
        request: the request's key: message type and round.
        round_number: the round the request belongs to.
        peers: the peers' statistics, by peer id (or summed entries).
        train: whether to train a turn before releasing (a train request), else only release.
        checkpoint: where replies and state are saved, or None (the student lives on in this process).
        log: the client's evaluation log for the metrics it does not send, or None.
        epsilon_before: the largest epsilon the server says this client reported so far, or None.
    """
    if checkpoint is not None:
        repeated = checkpoint.last_reply(request)
        if repeated is not None:
            return repeated
    if epsilon_before is not None:
        holds_state = checkpoint is None or checkpoint.holds_state  # without a checkpoint the student lives on here
        # against an infinite epsilon (privacy.reproducible_noise reports one) only the state's presence is checked
        spent = spent_epsilon(student) if math.isfinite(epsilon_before) else None
        refused = refusal(student.client_id, epsilon_before, holds_state, spent)
        if refused is not None:
            logging.getLogger("fedalign").error("%s", refused)
            return {LEDGER_LOST: 1.0}, None
    metrics = student.train(peers, round_number) if train else {}
    statistics, release_metrics = student.release(round_number)
    sent, kept = split_metrics({**metrics, **release_metrics}, private_releases(student.cfg))
    if kept and log is not None:
        log.append(round_number, student.client_id, kept)
    if checkpoint is not None and (train or student.release_policy.state_dict()):
        checkpoint.save(student, request, sent, statistics)  # the checkpoint's ledger includes this release
    return sent, statistics


def check_partition(cfg: ExperimentConfig, partition_id: int, num_partitions: int | None) -> None:
    """The node's ``partition-id`` (and ``num-partitions``, when given) must fit the run's clients.

    Args:
        cfg: the experiment config.
        partition_id: the node config's ``partition-id``.
        num_partitions: the node config's ``num-partitions``, or None when not given.
    """
    k = cfg.federation.num_clients if num_partitions is None else num_partitions
    if k != cfg.federation.num_clients or not 0 <= partition_id < k:
        raise ValueError(
            f"node config partition-id={partition_id}, num-partitions={k} does not fit "
            f"federation.num_clients={cfg.federation.num_clients}"
        )


def answer_request(request: Request, *, prepared: bool = False, eager: bool = False) -> Answer:
    """The client's answer to ``request``: its student rebuilt and restored from its checkpoint, then :func:`respond`.

    Args:
        request: the decoded request (experiment config, partition, round, peers' statistics).
        prepared: build the student from its prepared data on disk
            (:func:`~fedalign.client.prepared.prepared_client_data`).
        eager: run the structure kernels uncompiled (a process that answers one message cannot win back
            compiling them).
    """
    started = time.perf_counter()
    cfg = config_from_dict(json.loads(request.experiment))
    if request.data_root is not None:
        cfg.data.root = request.data_root
    check_partition(cfg, request.partition_id, request.num_partitions)
    send_seconds = not private_releases(cfg)  # a time reveals the size of private data
    if request.identify:
        return Answer({}, None, send_seconds)
    pid, state_dir = request.partition_id, request.state_dir
    student = build_student(cfg, pid, prepared_client_data(cfg, pid, state_dir) if prepared else None)
    checkpoint = Checkpoint(checkpoint_path(state_dir, request.run_tag, pid))
    checkpoint.restore(student)
    log = EvaluationLog(evaluation_log_path(state_dir, request.run_tag, pid))
    loaded = time.perf_counter()
    with eager_kernels() if eager else contextlib.nullcontext():
        metrics, statistics = respond(
            student,
            f"{request.message_type}:{request.round_number}",
            request.round_number,
            request.peers,
            request.message_type == "train",
            checkpoint,
            log,
            request.epsilon_before,
        )
    return Answer(metrics, statistics, send_seconds, loaded - started, time.perf_counter() - loaded)
