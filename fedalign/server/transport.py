"""How the coordinator reaches clients: a :class:`Transport` delivers requests and brings back a :class:`Reply`
per client.

The in-process engine (:mod:`fedalign.inprocess`) and the Flower ServerApp implement it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..wire import PeerSum, Statistics


@dataclass
class Reply:
    """What one client sent back for one request.

    ``statistics`` is None when the client released nothing (or failed:
    then ``error`` says why). ``rejected`` is set by a transport that refused
    the reply's content before decoding it (unknown message type, unexpected
    records, oversized payload). ``bytes_received`` / ``bytes_sent`` count
    the statistics payload from the client's point of view (arrays in,
    arrays out), in bytes. ``seconds``: the server's time from request to reply; None when
    nothing was timed (an error, a reply refused unread, or privacy on).
    """

    client: int
    metrics: dict[str, float] = field(default_factory=dict)
    statistics: Statistics | None = None
    error: str | None = None
    bytes_received: int = 0
    bytes_sent: int = 0
    seconds: float | None = None
    rejected: str | None = None


class Transport(Protocol):
    """Delivers the coordinator's requests to clients.

    ``epsilon_before`` (client -> the largest epsilon it reported so far) is set by the coordinator; a
    transport tells each client its own value with every request, so that a client that has lost its
    privacy ledger refuses to release (:mod:`fedalign.ledgers`).
    """

    epsilon_before: dict[int, float]

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        """Each client's current statistics (no training).

        Args:
            clients: the client ids asked.
            round_number: the round (0: the initial release).
        """

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        """Each trainer trains a turn on its peers' statistics. Returns fresh statistics + metrics.

        Args:
            jobs: trainer id -> {peer id: peer statistics} (or one summed entry).
            round_number: the round, 1-based.
        """

    def query_summed(self, clients: list[int], round_number: int) -> tuple[dict[int, Reply], PeerSum | None]:
        """Secure aggregation: each client's current share; only their sum comes back (replies carry metrics).

        Args:
            clients: the client ids asked.
            round_number: the round (0: the initial release).
        """

    def train_summed(
        self, jobs: dict[int, dict[int, Statistics]], round_number: int
    ) -> tuple[dict[int, Reply], PeerSum | None]:
        """Secure aggregation: ``jobs`` as for :meth:`train` (each holding the last sum); the trainers'
        fresh shares come back only as their sum (None when too few clients contributed).

        Args:
            jobs: trainer id -> its job (the last sum of shares).
            round_number: the round, 1-based.
        """
