"""fedalign ClientApp: one student per SuperNode (a thin adapter over :mod:`fedalign.client`).

The node's ``partition-id`` (set by the simulation engine, or by
``--node-config`` in deployment) says which client it is; an optional
``data-root`` and ``state-dir`` in the node config say where its data, its
checkpoint and its evaluation log live (:mod:`fedalign.client.checkpoint`,
:mod:`fedalign.client.service`): the student persists across messages there,
keyed by the run tag, and a repeated request gets its stored reply.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedalign.client import build_student
from fedalign.client.checkpoint import Checkpoint, checkpoint_path
from fedalign.client.service import EvaluationLog, evaluation_log_path, respond
from fedalign.config import ExperimentConfig
from fedalign.wire import private_releases
from fedalign_flower.protocol import IDENTIFY_ROUND, decode_request, encode_reply

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


def _handle(msg: Message, context: Context, train: bool) -> Message:
    started = time.perf_counter()
    cfg, round_number, run_tag, peers = decode_request(msg.content)
    if "data-root" in context.node_config:
        cfg.data.root = str(context.node_config["data-root"])
    pid = _partition_id(context, cfg)

    def reply(metrics: dict, statistics) -> Message:
        seconds = None if private_releases(cfg) else time.perf_counter() - started  # a time reveals data size
        return Message(content=encode_reply(metrics, statistics, pid, seconds), reply_to=msg)

    if round_number == IDENTIFY_ROUND:  # "which client are you?": no student, no release
        return reply({}, None)
    student = build_student(cfg, pid)
    state_dir = context.node_config.get("state-dir")
    checkpoint = Checkpoint(checkpoint_path(state_dir, run_tag, pid))
    checkpoint.restore(student)
    log = EvaluationLog(evaluation_log_path(state_dir, run_tag, pid))
    request = f"{msg.metadata.message_type}:{round_number}"
    return reply(*respond(student, request, round_number, peers, train, checkpoint, log))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This client's current statistics on the alignment graph (round -1: only which client this is)."""
    return _handle(msg, context, train=False)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train local epochs against the peers' statistics; reply with fresh statistics."""
    return _handle(msg, context, train=True)
