"""The round log: one :class:`RoundRecord` per client per round, and who listens to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    # the server's time from request to reply; None (no ``seconds`` in the log) when there was no reply
    # or the transport refused it unread, and with privacy on (a client's time reveals its data's size)
    seconds: float | None
    error: str | None = None
    # what left the client besides scalar metrics, where it is not statistics: "weights" for the weight-averaging
    # reference arms (fedalign.server.fedavg); None (not in the log) for fedalign's own strategies
    shared: str | None = None

    def to_json(self) -> dict:
        """The record as a row of ``rounds.jsonl`` (metrics inline; ``seconds``, ``error`` and ``shared`` only when
        set).
        """
        row = {
            "round": self.round,
            "client": self.client,
            "status": self.status,
            "peers": self.peers,
            **self.metrics,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
        }
        if self.seconds is not None:
            row["seconds"] = round(self.seconds, 6)
        if self.error:
            row["error"] = self.error
        if self.shared:
            row["shared"] = self.shared
        return row

    @classmethod
    def from_json(cls, row: dict) -> RoundRecord:
        """Inverse of :meth:`to_json` (as written to ``rounds.jsonl``: "inf" strings, null for NaN).

        Args:
            row: one parsed line of ``rounds.jsonl``.
        """
        fixed = {"round", "client", "status", "peers", "bytes_received", "bytes_sent", "seconds", "error", "shared"}

        def number(value) -> float:
            return float("nan") if value is None else float(value)

        return cls(
            int(row["round"]),
            int(row["client"]),
            row["status"],
            list(row["peers"]),
            {k: number(v) for k, v in row.items() if k not in fixed},
            int(row["bytes_received"]),
            int(row["bytes_sent"]),
            None if row.get("seconds") is None else float(row["seconds"]),
            row.get("error"),
            row.get("shared"),
        )


class RoundListener(Protocol):
    def on_round(self, round_number: int, total_rounds: int, records: list[RoundRecord]) -> None:
        """Called after every round with its records.

        Args:
            round_number: the round just completed (0: the initial release).
            total_rounds: the run's number of rounds.
            records: the round's records, one per client.
        """
        ...
