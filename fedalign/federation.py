"""The server side of the method: schedules, the statistics cache, rounds.

:class:`Coordinator` runs an experiment over any :class:`Transport`, the
object that delivers requests to clients and brings back their replies.
:class:`InProcessTransport` calls :class:`~fedalign.student.StudentClient`
objects directly; the Flower ServerApp (``server/``) implements the same
three calls with Flower messages, so both engines run this very code and
produce the same round log.

Schedules (``federation.schedule``):

* ``alternating`` (the paper's): in round r (1-based) client (r - 1) mod K
  trains against the cached statistics of its frozen peers, then its fresh
  statistics replace its entry in the cache.
* ``simultaneous``: every client trains each round against the statistics
  all peers released in the previous round.

The coordinator only ever holds statistics and scalar metrics.

Every release is checked (:mod:`fedalign.validation`) before it enters the
cache: a malformed or hostile one gets status ``rejected`` with the reason,
is logged, and is never forwarded; the cache keeps the client's last valid
statistics.

After every round the coordinator can save its state (:class:`ServerState`:
the last completed round and the cache) so that a restarted server resumes
the experiment instead of starting over; the round records themselves are in
``rounds.jsonl``.

Privacy (``privacy`` config section): a client whose privacy budget is spent
replies without statistics; its record gets status ``withheld``, its last
statistics stay in the cache and its peers carry on. Clients report the
epsilon they have spent as the metric ``epsilon``; :func:`summarise` keeps
each client's last value and their maximum.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .alignment import released_arrays, shares_statistics
from .config import ExperimentConfig
from .student import Statistics, StudentClient, build_client, prepare_data
from .validation import AlignmentGraphSpec, StatisticsRejected, check_statistics, release_spec

log = logging.getLogger("fedalign")


@dataclass
class Reply:
    """What one client sent back for one request.

    ``statistics`` is None when the client released nothing (or failed:
    then ``error`` says why). ``rejected`` is set by a transport that refused
    the reply's content before decoding it (unknown message type, unexpected
    records, oversized payload). ``bytes_received`` / ``bytes_sent`` count
    the statistics payload from the client's point of view (arrays in,
    arrays out), in bytes.
    """

    client: int
    metrics: dict[str, float] = field(default_factory=dict)
    statistics: Statistics | None = None
    error: str | None = None
    bytes_received: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    rejected: str | None = None


class Transport(Protocol):
    """Delivers the coordinator's requests to clients."""

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        """Each client's current statistics (no training)."""

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        """``jobs``: trainer id -> {peer id: peer statistics}. Returns fresh statistics + metrics."""

    def evaluate(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        """Validation/test metrics of each client."""


def payload_bytes(statistics: Statistics | None) -> int:
    """Size in bytes of a statistics payload (the arrays' raw data)."""
    return int(sum(np.asarray(p).nbytes for p in statistics)) if statistics else 0


def trainers_for_round(schedule: str, round_number: int, num_clients: int) -> list[int]:
    """The clients that train in ``round_number`` (1-based)."""
    if schedule == "alternating":
        return [(round_number - 1) % num_clients]
    if schedule == "simultaneous":
        return list(range(num_clients))
    raise ValueError(f"unknown schedule {schedule!r}; choose alternating or simultaneous")


def alignment_graph_spec(cfg: ExperimentConfig) -> AlignmentGraphSpec | None:
    """The public alignment graph of the experiment, for checking releases.

    The server builds it from the same data and partition config as the
    clients. None (with a warning) when this process cannot read the data:
    releases are then checked without the per-node sums.
    """
    try:
        dataset, clients = prepare_data(cfg)
    except FileNotFoundError as error:
        log.warning("the server cannot read the dataset (%s); statistics are checked for shape, dtype and "
                    "range only, not for per-node sums. Give the server data.root to check them fully.", error)
        return None
    graph = clients[0].alignment
    return release_spec(cfg.align.strategy, graph.edge_index, graph.num_nodes, dataset.num_classes, dataset.multilabel)


class ServerState:
    """The coordinator's state in a run folder, saved after every round.

    ``server-state.npz`` holds the last completed round (``completed_round``)
    and the statistics cache (``"<client>.<layer>"`` -> the cached array),
    written atomically (a crash mid-save leaves the previous state). The
    privacy ledgers live with the clients, in their checkpoints; the
    epsilon each client reported is in ``rounds.jsonl``.
    """

    FILE = "server-state.npz"

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / self.FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, completed_round: int, cache: dict[int, Statistics]) -> None:
        arrays = {f"{client}.{layer}": p for client, stats in cache.items() for layer, p in enumerate(stats, start=1)}
        tmp = self.path.with_name(f".{self.FILE}.tmp{os.getpid()}.npz")
        np.savez(tmp, completed_round=np.int64(completed_round), **arrays)
        tmp.replace(self.path)

    def load(self) -> tuple[int, dict[int, Statistics]]:
        """(last completed round, cache)."""
        with np.load(self.path) as saved:
            completed = int(saved["completed_round"])
            layers: dict[int, dict[int, np.ndarray]] = {}
            for key in saved.files:
                if key != "completed_round":
                    client, layer = (int(part) for part in key.split("."))
                    layers.setdefault(client, {})[layer] = saved[key]
        return completed, {c: [ls[l] for l in sorted(ls)] for c, ls in layers.items()}


class InProcessTransport:
    """Runs every client in this process, one :class:`StudentClient` each."""

    def __init__(self, clients: dict[int, StudentClient]) -> None:
        self.clients = clients

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "InProcessTransport":
        return cls({i: build_client(cfg, i) for i in range(cfg.federation.num_clients)})

    def _call(self, client: int, fn: Callable[[], tuple[dict, Statistics | None]], received: int) -> Reply:
        start = time.perf_counter()
        metrics, stats = fn()
        return Reply(client, metrics, stats, None, received, payload_bytes(stats), time.perf_counter() - start)

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        def work(i: int):
            stats, release_metrics = self.clients[i].release(round_number)
            return release_metrics, stats

        return {i: self._call(i, lambda i=i: work(i), 0) for i in clients}

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        def work(i: int, peers: dict[int, Statistics]):
            metrics = self.clients[i].train(peers, round_number)
            stats, release_metrics = self.clients[i].release(round_number)
            return {**metrics, **release_metrics}, stats

        return {
            i: self._call(i, lambda i=i, p=peers: work(i, p), sum(payload_bytes(s) for s in peers.values()))
            for i, peers in jobs.items()
        }

    def evaluate(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        return {i: self._call(i, lambda i=i: (self.clients[i].evaluate(), None), 0) for i in clients}


@dataclass
class RoundRecord:
    """One line of ``rounds.jsonl``: one client's part in one round."""

    round: int
    client: int
    # "ok"; "missing" (no reply / error reply); "withheld" (replied, released no statistics);
    # "rejected" (the reply or its statistics failed the checks: nothing cached or forwarded)
    status: str
    peers: list[int]
    metrics: dict[str, float]
    bytes_received: int
    bytes_sent: int
    seconds: float
    error: str | None = None

    def to_json(self) -> dict:
        row = {
            "round": self.round, "client": self.client, "status": self.status, "peers": self.peers,
            **self.metrics,
            "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 6),
        }
        if self.error:
            row["error"] = self.error
        return row

    @classmethod
    def from_json(cls, row: dict) -> "RoundRecord":
        """Inverse of :meth:`to_json` (as written to ``rounds.jsonl``: "inf" strings, null for NaN)."""
        fixed = {"round", "client", "status", "peers", "bytes_received", "bytes_sent", "seconds", "error"}

        def number(value) -> float:
            return float("nan") if value is None else float(value)

        return cls(int(row["round"]), int(row["client"]), row["status"], list(row["peers"]),
                   {k: number(v) for k, v in row.items() if k not in fixed},
                   int(row["bytes_received"]), int(row["bytes_sent"]), float(row["seconds"]), row.get("error"))


class RoundListener(Protocol):
    def on_round(self, round_number: int, total_rounds: int, records: list[RoundRecord]) -> None: ...


class Coordinator:
    """Runs the rounds of one experiment over a transport.

    Args:
        cfg: the experiment config (schedule, rounds, number of clients).
        transport: how requests reach the clients.
        listeners: called after every round with its records (logging, progress).
        graph: the public alignment graph, to check releases against; None ->
            :func:`alignment_graph_spec` (or, when the server cannot read the
            data, checks without per-node sums, on the first release's edge count).
        state: where to save the state after every round (None: not saved).
    """

    def __init__(self, cfg: ExperimentConfig, transport: Transport, listeners: list[RoundListener] = (),
                 graph: AlignmentGraphSpec | None = None, state: "ServerState | None" = None) -> None:
        self.cfg = cfg
        self.transport = transport
        self.listeners = list(listeners)
        self.cache: dict[int, Statistics] = {}
        self.records: list[RoundRecord] = []
        self.completed_round = -1  # the last round whose records are in; -1 before round 0
        self.state = state
        self.graph: AlignmentGraphSpec | int | None = graph
        if graph is None and self._needs_statistics():
            self.graph = alignment_graph_spec(cfg)

    @property
    def num_clients(self) -> int:
        return self.cfg.federation.num_clients

    def _needs_statistics(self) -> bool:
        return shares_statistics(self.cfg.align.strategy) and self.num_clients > 1

    def initialise(self) -> list[RoundRecord]:
        """Round 0: fill the cache with every client's initial statistics."""
        if not self._needs_statistics():
            return []
        replies = self.transport.query(list(range(self.num_clients)), 0)
        return self._absorb(0, {i: [] for i in range(self.num_clients)}, replies)

    def run_round(self, round_number: int) -> list[RoundRecord]:
        trainers = trainers_for_round(self.cfg.federation.schedule, round_number, self.num_clients)
        jobs = {
            i: ({j: s for j, s in self.cache.items() if j != i} if self._needs_statistics() else {})
            for i in trainers
        }
        replies = self.transport.train(jobs, round_number)
        # The cache is updated only after all replies of the round are in, so
        # simultaneous trainers all see the previous round's statistics.
        return self._absorb(round_number, {i: sorted(p) for i, p in jobs.items()}, replies)

    def released_arrays(self, client: int) -> int:
        """How many arrays an honest release of ``client`` holds."""
        return released_arrays(self.cfg.align.strategy, self.cfg.model.for_client(client)["hidden_layers"])

    def expected_bytes(self, client: int) -> int | None:
        """Size of an honest release of ``client`` in bytes (None while the edge count is unknown)."""
        if self.graph is None:
            return None
        num_edges = self.graph.num_edges if isinstance(self.graph, AlignmentGraphSpec) else self.graph
        layers = self.released_arrays(client)
        return layers * num_edges * np.dtype(self.cfg.align.statistics_dtype).itemsize

    def _check(self, client: int, statistics: Statistics) -> Statistics:
        """The release if valid (:func:`~fedalign.validation.check_statistics`), else raises."""
        graph = self.graph
        if graph is None:  # no graph on the server: the first release that passes fixes E
            first = statistics[0] if isinstance(statistics, list) and statistics else None
            if not isinstance(first, np.ndarray) or first.ndim != 1:
                raise StatisticsRejected(f"statistics from client {client} rejected: not a list of 1-D arrays")
            graph = first.shape[0]
        checked = check_statistics(statistics, graph, self.released_arrays(client),
                                   self.cfg.align.statistics_dtype, sender=f"client {client}")
        self.graph = graph
        return checked

    def _absorb(self, round_number: int, peers: dict[int, list[int]], replies: dict[int, Reply]) -> list[RoundRecord]:
        records = []
        for client in sorted(peers):
            reply = replies.get(client)
            if reply is None or reply.error is not None:
                error = reply.error if reply is not None else "no reply before the timeout"
                records.append(RoundRecord(round_number, client, "missing", peers[client], {}, 0, 0, 0.0, error))
                continue
            status, error = "ok", reply.rejected
            if error is None and self._needs_statistics():
                limit = self.expected_bytes(client)
                if reply.statistics is not None and limit is not None and reply.bytes_sent > limit:
                    error = (f"statistics from client {client} rejected: payload of {reply.bytes_sent} bytes "
                             f"exceeds the {limit} bytes of a release of this experiment")
                elif reply.statistics is not None:
                    try:
                        self.cache[client] = self._check(client, reply.statistics)
                    except StatisticsRejected as rejection:
                        error = str(rejection)
                else:  # e.g. a spent privacy budget: the cache keeps the client's last statistics
                    status = "withheld"
            elif error is None and reply.statistics is not None:
                error = f"client {client} sent statistics although align.strategy {self.cfg.align.strategy!r} shares none"
            if error is not None:  # never cached, never forwarded; the peers keep its last valid release
                log.warning("round %d: %s", round_number, error)
                records.append(RoundRecord(round_number, client, "rejected", peers[client], {},
                                           reply.bytes_received, reply.bytes_sent, reply.seconds, error))
                continue
            records.append(RoundRecord(round_number, client, status, peers[client], reply.metrics,
                                       reply.bytes_received, reply.bytes_sent, reply.seconds))
        self.records.extend(records)
        self.completed_round = round_number
        if self.state is not None:
            self.state.save(self.completed_round, self.cache)
        for listener in self.listeners:
            listener.on_round(round_number, self.cfg.federation.rounds, records)
        return records

    def resume(self, completed_round: int, cache: dict[int, Statistics], records: list[RoundRecord]) -> None:
        """Continue after ``completed_round`` with a saved cache and the records logged so far."""
        self.completed_round = completed_round
        self.cache = {c: self._check(c, s) for c, s in cache.items()}
        self.records = list(records)

    def run(self) -> list[RoundRecord]:
        """Round 0 (initial statistics), then rounds 1..R; after :meth:`resume`, only
        the rounds not completed yet. Returns every record."""
        if self.completed_round < 0:
            self.initialise()
            self.completed_round = 0
        for r in range(self.completed_round + 1, self.cfg.federation.rounds + 1):
            self.run_round(r)
        trained = [r for r in self.records if r.round > 0]
        if trained and all(r.status in ("missing", "rejected") for r in trained):
            raise RuntimeError(f"no client completed any round; first error: {trained[0].error}")
        return self.records


def summarise(records: list[RoundRecord], num_clients: int, metric_name: str) -> dict:
    """Best validation metric per client and the test metric of that same round.

    Ties in validation keep the earliest round. Clients that never reported
    a validation metric get ``None``. Rounds whose release was withheld still
    count (the client trained and evaluated). When any record carries
    ``epsilon``, each client gets ``epsilon`` (its last reported value, None if
    it never reported one) and the summary a top-level ``epsilon``, the
    maximum over clients, plus ``withheld_rounds``.
    """
    clients = {}
    for c in range(num_clients):
        rows = [r for r in records
                if r.client == c and r.status in ("ok", "withheld") and "val_metric" in r.metrics]
        if not rows:
            clients[str(c)] = {"best_val": None, "test_at_best_val": None, "best_round": None, "rounds_trained": 0}
            continue
        best = max(rows, key=lambda r: (r.metrics["val_metric"], -r.round))
        clients[str(c)] = {
            "best_val": best.metrics["val_metric"],
            "test_at_best_val": best.metrics["test_metric"],
            "best_round": best.round,
            "rounds_trained": len(rows),
        }
    privacy = {}
    if any("epsilon" in r.metrics for r in records):
        spent = []
        for c in range(num_clients):
            reported = [r for r in records if r.client == c and "epsilon" in r.metrics]
            last = max(reported, key=lambda r: r.round).metrics["epsilon"] if reported else None
            clients[str(c)]["epsilon"] = last
            if last is not None:
                spent.append(last)
        privacy = {
            "epsilon": max(spent) if spent else None,
            "withheld_rounds": [{"round": r.round, "client": r.client} for r in records if r.status == "withheld"],
        }
    tests = [v["test_at_best_val"] for v in clients.values() if v["test_at_best_val"] is not None]
    return {
        "metric": metric_name,
        "clients": clients,
        "mean_test_at_best_val": float(np.mean(tests)) if tests else None,
        "missing_rounds": [{"round": r.round, "client": r.client, "error": r.error}
                           for r in records if r.status == "missing"],
        "rejected_rounds": [{"round": r.round, "client": r.client, "error": r.error}
                            for r in records if r.status == "rejected"],
        "bytes_sent_total": int(sum(r.bytes_sent for r in records)),
        "bytes_received_total": int(sum(r.bytes_received for r in records)),
        **privacy,
    }
