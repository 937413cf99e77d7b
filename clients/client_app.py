"""fedalign ClientApp: one student per SuperNode (a thin adapter over :mod:`fedalign.client`).

The node's ``partition-id`` (set by the simulation engine, or by
``--node-config`` in deployment) says which client it is; an optional
``data-root`` and ``state-dir`` in the node config say where its data, its
checkpoint and its evaluation log live (:mod:`fedalign.client.checkpoint`,
:mod:`fedalign.client.service`): the student persists across messages there,
keyed by the run tag, and a repeated request gets its stored reply.

In deployment, Flower's SuperNode runs every message in a fresh ``flwr-clientapp``
process. There the client's share of the data is read from its prepared file
(:mod:`fedalign.client.prepared`) instead of loading and partitioning the dataset again,
and the structure kernels run eagerly: compiling them (about 3 s per process here) does not
pay off within one message. How long each step took goes to the client's own
``client-<i>-timing.jsonl`` in its state dir (never to the server: a time depends on the
size of the private data).
"""

from __future__ import annotations

import time

_IMPORT_STARTED = time.perf_counter()

import contextlib  # noqa: E402 - after the clock that times this module's imports
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedalign.client import build_student  # noqa: E402
from fedalign.client.checkpoint import Checkpoint, checkpoint_path, state_root  # noqa: E402
from fedalign.client.prepared import prepared_client_data  # noqa: E402
from fedalign.client.service import EvaluationLog, evaluation_log_path, respond  # noqa: E402
from fedalign.config import ExperimentConfig  # noqa: E402
from fedalign.statistics import eager_kernels  # noqa: E402
from fedalign.wire import private_releases  # noqa: E402
from fedalign_flower.protocol import IDENTIFY_ROUND, decode_request, encode_reply  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORT_STARTED

# True in a SuperNode's per-message ``flwr-clientapp`` process; the simulation runtime keeps its
# workers, and what they loaded and compiled, between messages.
FRESH_PROCESS_PER_MESSAGE = Path(sys.argv[0]).name == "flwr-clientapp"

app = ClientApp()


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _log_timing(path: Path, row: dict) -> None:
    """Append one row to the client's own timing log (mode 0600; it stays on the client)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
        handle.write(json.dumps(row) + "\n")


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
    started, age = time.perf_counter(), process_age()
    cfg, round_number, run_tag, peers = decode_request(msg.content)
    if "data-root" in context.node_config:
        cfg.data.root = str(context.node_config["data-root"])
    pid = _partition_id(context, cfg)

    def reply(metrics: dict, statistics) -> Message:
        seconds = None if private_releases(cfg) else time.perf_counter() - started  # a time reveals data size
        return Message(content=encode_reply(metrics, statistics, pid, seconds), reply_to=msg)

    if round_number == IDENTIFY_ROUND:  # "which client are you?": no student, no release
        return reply({}, None)
    state_dir = context.node_config.get("state-dir")
    data = prepared_client_data(cfg, pid, state_dir) if FRESH_PROCESS_PER_MESSAGE else None
    student = build_student(cfg, pid, data)
    checkpoint = Checkpoint(checkpoint_path(state_dir, run_tag, pid))
    checkpoint.restore(student)
    log = EvaluationLog(evaluation_log_path(state_dir, run_tag, pid))
    request = f"{msg.metadata.message_type}:{round_number}"
    loaded = time.perf_counter()
    with eager_kernels() if FRESH_PROCESS_PER_MESSAGE else contextlib.nullcontext():
        answer = respond(student, request, round_number, peers, train, checkpoint, log)
    worked = time.perf_counter()
    message = reply(*answer)
    _log_timing(state_root(state_dir) / run_tag / f"client-{pid}-timing.jsonl", {
        "round": round_number, "type": msg.metadata.message_type, "fresh_process": FRESH_PROCESS_PER_MESSAGE,
        "before_handler": None if age is None else round(age, 3), "imports": round(IMPORT_SECONDS, 3),
        "load": round(loaded - started, 3), "work": round(worked - loaded, 3),
        "reply": round(time.perf_counter() - worked, 3),
    })
    return message


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This client's current statistics on the alignment graph (round -1: only which client this is)."""
    return _handle(msg, context, train=False)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train local epochs against the peers' statistics; reply with fresh statistics."""
    return _handle(msg, context, train=True)
