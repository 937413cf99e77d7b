"""DP-SGD alone: the statistics are DP as post-processing of the DP-SGD model on a public graph."""

from __future__ import annotations

from ...config import ExperimentConfig
from ...noise import reported_epsilon
from ...privacy import PrivacyLedger
from .base import ReleasePolicy, on_wire


class DPSGDRelease(ReleasePolicy):
    """The raw statistics with ``epsilon`` = the DP-SGD ledger's epsilon (unit: one training graph).

    Sound only because the statistics read nothing but the DP-SGD-trained model and the
    public alignment graph (``partition.scheme: graphs``; the config checks refuse the rest).
    """

    def __init__(self, cfg: ExperimentConfig, client_id: int, ledger: PrivacyLedger) -> None:
        """Report the epsilon of ``ledger`` with every release.

        Args:
            cfg: the experiment config.
            client_id: the client's index.
            ledger: the ledger of the client's DP-SGD steps.
        """
        self.cfg, self.client_id = cfg, client_id
        self.wire_dtype, self.ledger = cfg.align.statistics_dtype, ledger

    def release(self, statistics, round_number, turn):
        """The raw statistics in the wire dtype, with the DP-SGD ledger's epsilon."""
        epsilon = reported_epsilon(self.cfg, self.client_id, self.ledger.epsilon())
        return on_wire(statistics(), self.wire_dtype), {"epsilon": epsilon, "withheld": 0.0}
