"""fedalign ClientApp: one student per SuperNode.

The node's ``partition-id`` (set by the simulation engine, or by
``--node-config`` in deployment) says which client it is; an optional
``data-root`` and ``state-dir`` in the node config say where its data and
checkpoints live. Model and optimiser state persist across rounds in a
checkpoint on the client's disk, keyed by the run tag, so any process (a
new simulation worker, a restarted SuperNode) can pick the student up. The
checkpoint also holds the client's privacy ledgers, so it is written after
every release (query and train), not only after training.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedalign.config import ExperimentConfig
from fedalign.student import StudentClient, build_client

from .protocol import decode_request, encode_reply

app = ClientApp()


def _partition_id(context: Context, cfg: ExperimentConfig) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("this SuperNode has no partition-id: start it with --node-config 'partition-id=<i> num-partitions=<K>'")
    pid = int(context.node_config["partition-id"])
    k = int(context.node_config.get("num-partitions", cfg.federation.num_clients))
    if k != cfg.federation.num_clients or not 0 <= pid < k:
        raise ValueError(f"node config partition-id={pid}, num-partitions={k} does not fit "
                         f"federation.num_clients={cfg.federation.num_clients}")
    return pid


def _checkpoint_path(context: Context, run_tag: str, pid: int) -> Path:
    root = context.node_config.get("state-dir") or os.environ.get("FEDALIGN_STATE_DIR") \
        or Path.home() / ".cache" / "fedalign" / "client-state"
    return Path(str(root)) / run_tag / f"client-{pid}.pt"


def _load_student(msg: Message, context: Context):
    cfg, round_number, run_tag, peers = decode_request(msg.content)
    if "data-root" in context.node_config:
        cfg.data.root = str(context.node_config["data-root"])
    pid = _partition_id(context, cfg)
    student = build_client(cfg, pid)
    checkpoint = _checkpoint_path(context, run_tag, pid)
    if checkpoint.exists():
        student.load_state_dict(torch.load(checkpoint, map_location=student.device, weights_only=True))
    return student, pid, round_number, peers, checkpoint


def _save(student: StudentClient, checkpoint: Path) -> None:
    """Atomic write: a crash mid-save never leaves a truncated checkpoint."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint.with_suffix(f".tmp{os.getpid()}")
    torch.save(student.state_dict(), tmp)
    tmp.replace(checkpoint)


def _reply(msg: Message, metrics: dict, statistics, pid: int, started: float) -> Message:
    metrics = {**metrics, "partition-id": pid, "client-seconds": time.perf_counter() - started}
    return Message(content=encode_reply(metrics, statistics), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This client's current statistics on the alignment graph."""
    started = time.perf_counter()
    student, pid, round_number, _, checkpoint = _load_student(msg, context)
    statistics, release_metrics = student.release(round_number)
    if student.ledger is not None:  # the release was recorded: persist the privacy spent
        _save(student, checkpoint)
    return _reply(msg, release_metrics, statistics, pid, started)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train local epochs against the peers' statistics; reply with fresh statistics."""
    started = time.perf_counter()
    student, pid, round_number, peers, checkpoint = _load_student(msg, context)
    metrics = student.train(peers, round_number)
    statistics, release_metrics = student.release(round_number)
    _save(student, checkpoint)  # after the release, so the checkpoint's ledger includes it
    return _reply(msg, {**metrics, **release_metrics}, statistics, pid, started)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Validation and test metrics of the current student."""
    started = time.perf_counter()
    student, pid, _, _, _ = _load_student(msg, context)
    return _reply(msg, student.evaluate(), None, pid, started)
