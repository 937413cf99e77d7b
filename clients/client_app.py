"""fedalign ClientApp: one student per SuperNode.

The node's ``partition-id`` (set by the simulation engine, or by
``--node-config`` in deployment) says which client it is; an optional
``data-root`` and ``state-dir`` in the node config say where its data and
checkpoints live. Model and optimiser state persist across rounds in a
checkpoint on the client's disk, keyed by the run tag, so any process (a
new simulation worker, a restarted SuperNode) can pick the student up. The
checkpoint also holds the client's privacy ledgers, so it is written after
every release (query and train), not only after training.

Requests are idempotent: the checkpoint keeps the last reply (its message
type and round), and a repeated request -- a restarted server re-sending
the round it did not see finish -- gets that same reply again, without
training twice or spending privacy budget twice.
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

from .protocol import IDENTIFY_ROUND, decode_request, encode_reply

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


class _Call:
    """One request to this client: its student (restored from the checkpoint) and what was asked."""

    def __init__(self, msg: Message, context: Context) -> None:
        self.started = time.perf_counter()
        self.msg = msg
        cfg, self.round, run_tag, self.peers = decode_request(msg.content)
        if "data-root" in context.node_config:
            cfg.data.root = str(context.node_config["data-root"])
        self.pid = _partition_id(context, cfg)
        self.checkpoint = _checkpoint_path(context, run_tag, self.pid)
        self.saved: dict = {}
        self.student: StudentClient | None = None
        if self.round != IDENTIFY_ROUND:
            self.student = build_client(cfg, self.pid)
            if self.checkpoint.exists():
                self.saved = torch.load(self.checkpoint, map_location=self.student.device, weights_only=True)
                self.student.load_state_dict(self.saved)

    @property
    def request(self) -> str:
        return f"{self.msg.metadata.message_type}:{self.round}"

    def repeated(self) -> Message | None:
        """The stored reply if this exact request was answered before."""
        last = self.saved.get("last_reply")
        if not last or last["request"] != self.request:
            return None
        statistics = [t.numpy() for t in last["statistics"]] if last["statistics"] is not None else None
        return self.reply(dict(last["metrics"]), statistics)

    def reply(self, metrics: dict, statistics) -> Message:
        metrics = {**metrics, "partition-id": self.pid, "client-seconds": time.perf_counter() - self.started}
        return Message(content=encode_reply(metrics, statistics), reply_to=self.msg)

    def save(self, metrics: dict, statistics) -> Message:
        """Checkpoint the student with this reply (atomically: a crash never leaves a torn file); return it."""
        state = self.student.state_dict()
        state["last_reply"] = {
            "request": self.request, "metrics": dict(metrics),
            "statistics": [torch.from_numpy(p) for p in statistics] if statistics is not None else None,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)
        return self.reply(metrics, statistics)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This client's current statistics on the alignment graph (round -1: only which client this is)."""
    call = _Call(msg, context)
    if call.student is None:
        return call.reply({}, None)
    repeated = call.repeated()
    if repeated is not None:
        return repeated
    statistics, release_metrics = call.student.release(call.round)
    if call.student.ledger is None:  # nothing recorded: no need to persist anything
        return call.reply(release_metrics, statistics)
    return call.save(release_metrics, statistics)  # persist the privacy spent with the release


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train local epochs against the peers' statistics; reply with fresh statistics."""
    call = _Call(msg, context)
    repeated = call.repeated()
    if repeated is not None:
        return repeated
    metrics = call.student.train(call.peers, call.round)
    statistics, release_metrics = call.student.release(call.round)
    return call.save({**metrics, **release_metrics}, statistics)  # the checkpoint's ledger includes the release


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Validation and test metrics of the current student."""
    call = _Call(msg, context)
    return call.reply(call.student.evaluate(), None)
