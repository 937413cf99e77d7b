"""The coordinator: schedules, the statistics cache, rounds -- the server side of the method.

:class:`Coordinator` runs an experiment over any :class:`~fedalign.server.transport.Transport`;
the in-process engine and the Flower ServerApp implement it, so both run this very code
and produce the same round log. Schedules: :mod:`fedalign.schedules`.

The coordinator only ever holds statistics and scalar metrics. Every release is checked
(:func:`fedalign.wire.check_statistics`) before it enters the cache: a malformed or hostile
one gets status ``rejected`` with the reason, is logged, and is never forwarded; the cache
keeps the client's last valid statistics. A client whose privacy budget is spent replies
without statistics: status ``withheld``, its last statistics stay cached. After every
round the state can be saved (:class:`~fedalign.server.state.ServerState`) so that a
restarted server resumes the experiment.

With secure aggregation (``privacy.secure_aggregation``) the coordinator never holds a client's
statistics: the transport returns only the :class:`~fedalign.wire.PeerSum` of the round's shares,
which replaces the cache and goes to every trainer; a sum with fewer contributors than
:func:`~fedalign.aggregation.minimum_contributors` carries too little noise and is dropped
(the trainers keep the previous one).

Without it, a trainer of a summed strategy (:data:`~fedalign.alignment.SUMMED_STRATEGIES`) gets no peer's
release but their summed mass (:class:`~fedalign.wire.PeerMass`), which the coordinator keeps per student
depth as releases enter the cache (:mod:`fedalign.server.peer_mass`): a request holds one float64 ``[E]``
array per student layer whatever K, and every release in the sum passed :func:`~fedalign.wire.check_statistics`.
A trainer with a single peer in float32 (K = 2), or fewer than 4 in float16, gets the peers' releases, which
are then no larger (:func:`~fedalign.wire.summed_request_pays`); so does strategy ``votes``.

Ledgers cannot silently reset (:mod:`fedalign.ledgers`): the coordinator keeps each client's largest
reported epsilon (saved with the state), hands it to the transport, which tells each client with every
request, and stops the run with :class:`~fedalign.ledgers.LedgerBroken`, naming the client, on a reply
whose epsilon fell, went missing or is not a number, or that says the client lost its ledger (a reply,
or in a SecAgg+ round its error) -- before anything of the round is cached, summed or saved.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from ..aggregation import minimum_contributors
from ..alignment import SUMMED_STRATEGIES, released_arrays, shares_statistics
from ..config import ExperimentConfig
from ..ledgers import FIX, LedgerBroken, ReportedEpsilon
from ..schedules import trainers_for_round
from ..wire import (
    MetricsRejected,
    PeerSum,
    ReleaseLayout,
    Statistics,
    StatisticsRejected,
    check_metrics,
    check_peer_sum,
    check_statistics,
    private_releases,
    summed_request_pays,
)
from .layout import release_bytes, release_layout_of
from .peer_mass import PeerMassTotals
from .records import RoundListener, RoundRecord
from .state import ServerState
from .transport import Reply, Transport

log = logging.getLogger("fedalign")


class Coordinator:
    """Runs the rounds of one experiment over a transport.

    Args:
        cfg: the experiment config (schedule, rounds, number of clients).
        transport: how requests reach the clients.
        listeners: called after every round with its records (logging, progress).
        layout: how releases group into distributions, to check them against; None ->
            :func:`~fedalign.server.layout.release_layout_of` (the public layout artefact of
            ``federation.public_layout``, else the data; when the server has neither, checks
            without per-node sums, on the first release's length).
        state: where to save the state after every round (None: not saved).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        transport: Transport,
        listeners: Sequence[RoundListener] = (),
        layout: ReleaseLayout | None = None,
        state: ServerState | None = None,
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.listeners = list(listeners)
        self.cache: dict[int, Statistics] = {}
        self.summed: PeerSum | None = None  # secure aggregation: the last sum of shares, instead of the cache
        self.records: list[RoundRecord] = []
        self.completed_round = -1  # the last round whose records are in; -1 before round 0
        self.state = state
        self.layout: ReleaseLayout | int | None = layout
        self.reported = ReportedEpsilon()  # each client's largest epsilon so far (fedalign.ledgers)
        transport.epsilon_before = self.reported.latest  # what the transport tells each client it reported
        self.totals = (
            PeerMassTotals(
                cfg.align.strategy, {c: cfg.model.for_client(c)["hidden_layers"] for c in range(self.num_clients)}
            )
            if cfg.align.strategy in SUMMED_STRATEGIES and not self.secure
            else None
        )  # per student depth
        if layout is None and self._needs_statistics():
            self.layout = release_layout_of(cfg)

    @property
    def num_clients(self) -> int:
        """K, ``federation.num_clients``."""
        return self.cfg.federation.num_clients

    def _needs_statistics(self) -> bool:
        return shares_statistics(self.cfg.align.strategy) and self.num_clients > 1

    @property
    def secure(self) -> bool:
        """Whether this run aggregates securely (the server sees only sums of shares)."""
        return self.cfg.privacy.secure_aggregation and self._needs_statistics()

    def initialise(self) -> list[RoundRecord]:
        """Round 0: fill the cache with every client's initial statistics."""
        if not self._needs_statistics():
            return []
        clients = list(range(self.num_clients))
        if self.secure:
            replies, summed = self.transport.query_summed(clients, 0)
            return self._absorb(0, {i: [] for i in clients}, replies, summed)
        return self._absorb(0, {i: [] for i in clients}, self.transport.query(clients, 0))

    def run_round(self, round_number: int) -> list[RoundRecord]:
        """Run training round ``round_number``: its trainers train on their peers' statistics and release.

        Args:
            round_number: the round, 1-based.

        Returns:
            the round's records, one per trainer.
        """
        trainers = trainers_for_round(self.cfg.federation.schedule, round_number, self.num_clients)
        if self.secure:
            jobs = {i: self.summed.job_for(i) if self.summed is not None else {} for i in trainers}
            peers = {i: [c for c in (self.summed.contributors if self.summed else []) if c != i] for i in trainers}
            replies, summed = self.transport.train_summed(jobs, round_number)
            return self._absorb(round_number, peers, replies, summed)
        jobs = {i: self.job_for(i) for i in trainers}
        peers = {i: sorted(j for j in self.cache if j != i) if self._needs_statistics() else [] for i in trainers}
        replies = self.transport.train(jobs, round_number)
        # The cache (and the summed mass) is updated only after all replies of the round are in, so
        # simultaneous trainers all see the previous round's statistics.
        return self._absorb(round_number, peers, replies)

    def job_for(self, client: int) -> dict[int, Statistics]:
        """Trainer ``client``'s peer statistics outside secure aggregation: its peers' summed mass
        (:meth:`PeerMassTotals.request_for`) when that is no larger than their releases, else each peer's
        cached release.

        Args:
            client: the trainer."""
        if not self._needs_statistics():
            return {}
        peers = len(self.cache) - (client in self.cache)
        if self.totals is None or not summed_request_pays(peers, self.cfg.align.statistics_dtype):
            return {j: s for j, s in self.cache.items() if j != client}
        summed = self.totals.request_for(client, self.cache)
        return {} if summed is None else summed.job()

    def released_arrays(self, client: int) -> int:
        """How many arrays an honest release of ``client`` holds.

        Args:
            client: the client's index.
        """
        return released_arrays(self.cfg.align.strategy, self.cfg.model.for_client(client)["hidden_layers"])

    def expected_bytes(self, client: int) -> int | None:
        """Size of an honest release of ``client`` in bytes (None while the edge count is unknown).

        Args:
            client: the client's index.
        """
        if self.layout is None:
            return None
        return release_bytes(self.cfg, client, self._num_edges())

    def _num_edges(self) -> int:
        """E of the alignment graph, from the layout (or the edge count fixed by the first release)."""
        if isinstance(self.layout, ReleaseLayout):
            return self.layout.num_edges
        assert self.layout is not None  # callers check
        return self.layout

    def _check(self, client: int, statistics: Statistics) -> Statistics:
        """The release if valid (:func:`~fedalign.wire.check_statistics`), else raises."""
        layout = self.layout
        if layout is None:  # the server cannot read the data: the first release that passes fixes E
            first = statistics[0] if isinstance(statistics, list) and statistics else None
            if not isinstance(first, np.ndarray) or first.ndim != 1:
                raise StatisticsRejected(f"statistics from client {client} rejected: not a list of 1-D arrays")
            layout = first.shape[0]
        checked = check_statistics(
            statistics, layout, self.released_arrays(client), self.cfg.align.statistics_dtype, sender=f"client {client}"
        )
        self.layout = layout
        return checked

    def _absorb(
        self, round_number: int, peers: dict[int, list[int]], replies: dict[int, Reply], summed: PeerSum | None = None
    ) -> list[RoundRecord]:
        self._check_ledgers(round_number, replies)
        if self.secure:
            self._accept_sum(round_number, summed)
        records = []
        for client in sorted(peers):
            reply = replies.get(client)
            if reply is None or reply.error is not None:
                error = reply.error if reply is not None else "no reply before the timeout"
                records.append(RoundRecord(round_number, client, "missing", peers[client], {}, 0, 0, None, error))
                continue
            status, error = self._accept(client, reply)
            if error is not None:  # never cached, never forwarded; the peers keep its last valid release
                log.warning("round %d: %s", round_number, error)
                records.append(
                    RoundRecord(
                        round_number,
                        client,
                        "rejected",
                        peers[client],
                        {},
                        reply.bytes_received,
                        reply.bytes_sent,
                        reply.seconds,
                        error,
                    )
                )
                continue
            records.append(
                RoundRecord(
                    round_number,
                    client,
                    status,
                    peers[client],
                    reply.metrics,
                    reply.bytes_received,
                    reply.bytes_sent,
                    reply.seconds,
                )
            )
        self.records.extend(records)
        self.completed_round = round_number
        if self.state is not None:
            self.state.save(self.completed_round, self.cache, self.summed, self.reported.values)
        for listener in self.listeners:
            listener.on_round(round_number, self.cfg.federation.rounds, records)
        return records

    def _check_ledgers(self, round_number: int, replies: dict[int, Reply]) -> None:
        """Raise :class:`~fedalign.ledgers.LedgerBroken` if a reply breaks its client's ledger; else take
        the epsilons of every reply whose metrics pass :func:`~fedalign.wire.check_metrics`. A run without
        privacy (:func:`~fedalign.wire.private_releases`) keeps no ledgers: nothing to check."""
        if not private_releases(self.cfg):
            return
        answered = {c: r for c, r in replies.items() if r is not None and r.error is None and r.rejected is None}
        problems = []
        for client in sorted(c for c, r in replies.items() if r is not None):
            reply = replies[client]
            problem = (
                self.reported.problem(client, reply.metrics)
                if client in answered
                else self.reported.problem_in_error(client, reply.error or "")
            )  # a SecAgg+ round: only its error
            if problem is not None:
                problems.append(problem)
        if problems:
            raise LedgerBroken(
                f"round {round_number}: {'; '.join(problems)}. The run stops; its folder keeps every "
                f"completed round and can be resumed. {FIX}."
            )
        for client, reply in answered.items():
            try:
                check_metrics(reply.metrics, sender=f"client {client}")
            except MetricsRejected:
                continue
            self.reported.record(client, reply.metrics)

    def _accept(self, client: int, reply: Reply) -> tuple[str, str | None]:
        """Cache the reply's release if it is valid: ``(status, rejection reason or None)``."""
        if reply.rejected is not None:
            return "ok", reply.rejected
        try:
            check_metrics(reply.metrics, sender=f"client {client}")
        except MetricsRejected as rejection:
            return "ok", str(rejection)
        if not self._needs_statistics():
            if reply.statistics is not None:
                return (
                    "ok",
                    f"client {client} sent statistics although align.strategy {self.cfg.align.strategy!r} shares none",
                )
            return "ok", None
        if self.secure:  # the reply carries no statistics; its share is in the round's sum
            if reply.statistics is not None:
                return "ok", f"client {client} sent statistics outside secure aggregation; refused unread"
            return ("withheld" if reply.metrics.get("withheld") == 1.0 else "ok"), None
        if reply.statistics is None:  # e.g. a spent privacy budget: the cache keeps the client's last statistics
            return "withheld", None
        limit = self.expected_bytes(client)
        if limit is not None and reply.bytes_sent > limit:
            return "ok", (
                f"statistics from client {client} rejected: payload of {reply.bytes_sent} bytes "
                f"exceeds the {limit} bytes of a release of this experiment"
            )
        try:
            checked = self._check(client, reply.statistics)
        except StatisticsRejected as rejection:
            return "ok", str(rejection)
        if self.totals is not None:  # only a checked release enters the sums
            self.totals.replace(client, self.cache.get(client), checked)
        self.cache[client] = checked
        return "ok", None

    def _accept_sum(self, round_number: int, summed: PeerSum | None) -> None:
        """Take the round's sum of shares, if it has enough contributors and the layout of a release."""
        need = minimum_contributors(self.num_clients, self.cfg.privacy.max_dropout_share)
        if summed is None or len(summed.contributors) < need:
            got = "no sum" if summed is None else f"a sum of {len(summed.contributors)} shares"
            log.warning(
                "round %d: %s, fewer than the %d contributors whose noise the privacy analysis needs "
                "(privacy.max_dropout_share); the trainers keep the previous sum",
                round_number,
                got,
                need,
            )
            return
        self.summed = PeerSum(self._check_sum(summed.arrays), sorted(summed.contributors))

    def _check_sum(self, arrays: list) -> list:
        if self.layout is None:
            raise StatisticsRejected(
                "secure aggregation needs the alignment graph's size on the server; it could not read the public graph"
            )
        return check_peer_sum(arrays, self._num_edges(), self.released_arrays(0), sender="secure aggregation")

    def resume(
        self,
        completed_round: int,
        cache: dict[int, Statistics],
        records: list[RoundRecord],
        summed: PeerSum | None = None,
        reported: dict[str, dict[int, float]] | None = None,
    ) -> None:
        """Continue after ``completed_round`` with a saved cache (or sum of shares) and the records so far.

        Args:
            completed_round: the last round whose records are in.
            cache: each client's last valid statistics, by client id (checked again here).
            records: the round records so far.
            summed: secure aggregation's last sum of shares, or None.
            reported: the epsilons saved with the state (:meth:`ServerState.load_reported`), merged with
                those in ``records`` (the larger wins); None for none.
        """
        self.completed_round = completed_round
        self.reported.merge_records(records)
        self.reported.merge(reported or {})
        self.cache = {c: self._check(c, s) for c, s in cache.items()}
        if self.totals is not None:
            self.totals.rebuild(self.cache)
        self.summed = None if summed is None else PeerSum(self._check_sum(summed.arrays), summed.contributors)
        self.records = list(records)

    def run(self) -> list[RoundRecord]:
        """Round 0 (initial statistics), then rounds 1..R; after :meth:`resume`, only
        the rounds not completed yet. Returns every record."""
        if self.completed_round < 0:
            self._stop_if_all_failed(self.initialise())
            self.completed_round = 0
        for r in range(self.completed_round + 1, self.cfg.federation.rounds + 1):
            records = self.run_round(r)
            if r == 1 and not any(rec.round == 0 for rec in self.records):
                self._stop_if_all_failed(records)
        trained = [r for r in self.records if r.round > 0]
        if trained and all(r.status in ("missing", "rejected") for r in trained):
            raise RuntimeError(f"no client completed any round; first error: {trained[0].error}")
        return self.records

    @staticmethod
    def _stop_if_all_failed(records: list[RoundRecord]) -> None:
        """A first round in which every client failed with the same error ends the run with that error:
        it is a problem of the set-up (data, config, code), and every later round would repeat it."""
        errors = {re.sub(r"\bnode \d+", "node", r.error or "") for r in records}  # the same error on every node
        if records and all(r.status == "missing" for r in records) and len(errors) == 1:
            raise RuntimeError(
                f"every client failed in round {records[0].round} with the same error, so the run "
                f"stops: {records[0].error}"
            )
