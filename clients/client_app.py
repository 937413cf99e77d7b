"""fedalign ClientApp: one student per SuperNode (a thin adapter over :mod:`fedalign.client`).

The node's ``partition-id`` (set by the simulation engine, or by
``--node-config`` in deployment) says which client it is; an optional
``data-root`` and ``state-dir`` in the node config say where its data, its
checkpoint and its evaluation log live (:mod:`fedalign.client.checkpoint`,
:mod:`fedalign.client.service`): the student persists across messages there,
keyed by the run tag, and a repeated request gets its stored reply.

In deployment, Flower's SuperNode runs every message in a fresh ``flwr-clientapp``
process. With ``worker=<socket>`` in the node config (``python -m deploy`` sets it) the
process hands the message to the node's long-lived worker (:mod:`fedalign.client.worker`),
which has torch and PyG loaded; this module then imports no torch at all. Without a
worker (or when it cannot be reached) the process answers itself: it reads the client's
share of the data from its prepared file (:mod:`fedalign.client.prepared`) instead of
partitioning the dataset again, and runs the structure kernels eagerly (compiling them
costs about 3 s per process here). How long each step took goes to the client's own
``client-<i>-timing.jsonl`` in its state dir (never to the server: a time depends on the
size of the private data).

With ``privacy.secure_aggregation`` the server runs Flower's SecAgg+ workflow and the messages of
its stages pass through Flower's ``secaggplus_mod`` (:func:`secure_aggregation_mod`): the keys and
shares of the protocol are handled there, and the one message that asks for training reaches
:func:`train` as a FitIns; the client's share goes back as the FitRes' parameters, which the mod
quantises and masks -- and removes from the reply -- before it leaves the client.
"""

from __future__ import annotations

import time

_IMPORT_STARTED = time.perf_counter()

import json  # noqa: E402 - after the clock that times this module's imports
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from flwr.app import Context, Message, MessageType  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_CONFIGS  # noqa: E402

from clients.fedavg import answer_weights, is_weight_request  # noqa: E402
from fedalign.client.paths import state_root  # noqa: E402
from fedalign.client.requests import Request  # noqa: E402
from fedalign.client.worker import ask  # noqa: E402
from fedalign.files import append_private_line  # noqa: E402
from fedalign.ledgers import LEDGER_LOST, lost_error  # noqa: E402
from fedalign_flower.protocol import (  # noqa: E402
    IDENTIFY_ROUND,
    encode_reply,
    encode_share_reply,
    epsilon_before_of,
    is_share_request,
    request_fields,
    share_request_fields,
)

IMPORT_SECONDS = time.perf_counter() - _IMPORT_STARTED

# True in a SuperNode's per-message ``flwr-clientapp`` process; the simulation runtime keeps its
# workers, and what they loaded and compiled, between messages.
FRESH_PROCESS_PER_MESSAGE = Path(sys.argv[0]).name == "flwr-clientapp"


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; every other message passes through."""
    if msg.metadata.message_type == MessageType.TRAIN and SECAGG_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(mods=[secure_aggregation_mod])


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _log_timing(state_dir: str | None, run_tag: str, client_id: int, row: dict) -> None:
    """Append one row to the client's own timing log (mode 0600; it stays on the client)."""
    append_private_line(state_root(state_dir) / run_tag / f"client-{client_id}-timing.jsonl", json.dumps(row))


def _request(msg: Message, context: Context) -> Request:
    node = context.node_config
    if "partition-id" not in node:
        raise ValueError(
            "this SuperNode has no partition-id: start it with --node-config 'partition-id=<i> num-partitions=<K>'"
        )
    message_type = msg.metadata.message_type
    if is_share_request(msg.content):  # the training step of a SecAgg+ round
        experiment, round_number, run_tag, message_type, peers = share_request_fields(msg.content)
    else:
        experiment, round_number, run_tag, peers = request_fields(msg.content)
    optional = {
        key: str(node[name]) for key, name in (("state_dir", "state-dir"), ("data_root", "data-root")) if name in node
    }
    return Request(
        experiment,
        round_number,
        run_tag,
        message_type,
        int(node["partition-id"]),
        int(node["num-partitions"]) if "num-partitions" in node else None,
        identify=round_number == IDENTIFY_ROUND,
        peers=peers,
        epsilon_before=epsilon_before_of(msg.content),
        **optional,
    )


def _handle(msg: Message, context: Context) -> Message:
    started, age = time.perf_counter(), process_age()
    request = _request(msg, context)
    worker = context.node_config.get("worker")
    answer = ask(str(worker), request) if worker else None
    by_worker = answer is not None
    if answer is None:
        from fedalign.client.service import answer_request  # torch, PyG: only when answering here

        answer = answer_request(request, prepared=FRESH_PROCESS_PER_MESSAGE, eager=FRESH_PROCESS_PER_MESSAGE)
    seconds = time.perf_counter() - started if answer.send_seconds else None
    if is_share_request(msg.content):
        if LEDGER_LOST in answer.metrics:  # no share to send: the client leaves the secure round, saying why
            raise RuntimeError(
                f"{lost_error(request.partition_id)} (no checkpoint of this run holds the epsilon it reported before)"
            )
        content = encode_share_reply(answer.metrics, answer.statistics, request.partition_id)
    else:
        content = encode_reply(answer.metrics, answer.statistics, request.partition_id, seconds)
    reply = Message(content=content, reply_to=msg)
    if not request.identify:
        _log_timing(
            request.state_dir,
            request.run_tag,
            request.partition_id,
            {
                "round": request.round_number,
                "type": request.message_type,
                "fresh_process": FRESH_PROCESS_PER_MESSAGE,
                "worker": by_worker,
                "before_handler": None if age is None else round(age, 3),
                "imports": round(IMPORT_SECONDS, 3),
                "load": round(answer.load_seconds, 3),
                "work": round(answer.work_seconds, 3),
                "total": round(time.perf_counter() - started, 3),
            },
        )
    return reply


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This client's current statistics on the alignment graph (round -1: only which client this is); in the
    weight arms (fedavg, dp-fedavg: :mod:`clients.fedavg`) its initial weights."""
    if is_weight_request(msg.content):
        return answer_weights(msg, context)
    return _handle(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train local epochs against the peers' statistics; reply with fresh statistics. In the weight arms
    (fedavg, dp-fedavg: :mod:`clients.fedavg`): train from the global weights, reply with the trained weights."""
    if is_weight_request(msg.content):
        return answer_weights(msg, context)
    return _handle(msg, context)
