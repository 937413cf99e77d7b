"""DP-SGD alone: the statistics are DP as post-processing of the DP-SGD model on a public graph."""

from __future__ import annotations

from ...privacy import PrivacyLedger
from .base import ReleasePolicy, on_wire


class DPSGDRelease(ReleasePolicy):
    """The raw statistics with ``epsilon`` = the DP-SGD ledger's epsilon (unit: one training graph).

    Sound only because the statistics read nothing but the DP-SGD-trained model and the
    public alignment graph (``partition.scheme: graphs``; the config checks refuse the rest).
    """

    def __init__(self, wire_dtype: str, ledger: PrivacyLedger) -> None:
        self.wire_dtype, self.ledger = wire_dtype, ledger

    def release(self, statistics, round_number, turn):
        return on_wire(statistics(), self.wire_dtype), {"epsilon": self.ledger.epsilon(), "withheld": 0.0}
