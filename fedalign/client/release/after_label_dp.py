"""Label DP: the statistics of a model trained on randomised labels are post-processing; they go out as they are."""

from __future__ import annotations

from typing import Any

from ...config import ExperimentConfig
from ...noise import reported_epsilon
from .base import ReleasePolicy, on_wire


class LabelDPRelease(ReleasePolicy):
    """The raw statistics, reported with ``epsilon`` = the per-label epsilon of randomised response
    (:mod:`fedalign.privacy.labels`), which the client spent once, before training (infinity under
    ``privacy.reproducible_noise``: the randomisation can then be regenerated from the config)."""

    def __init__(self, cfg: ExperimentConfig, client_id: int) -> None:
        """Report ``privacy.label_epsilon`` with every release.

        Args:
            cfg: the experiment config.
            client_id: the client's index.
        """
        self.cfg, self.client_id = cfg, client_id
        self.wire_dtype, self.label_epsilon = cfg.align.statistics_dtype, cfg.privacy.label_epsilon

    def release(self, statistics, round_number, turn):
        """The raw statistics in the wire dtype, with the per-label epsilon."""
        epsilon = reported_epsilon(self.cfg, self.client_id, self.label_epsilon)
        return on_wire(statistics(), self.wire_dtype), {"epsilon": epsilon, "withheld": 0.0}

    def state_dict(self) -> dict[str, Any]:
        """The label epsilon (non-empty, so that the client's randomised labels are kept)."""
        return {"label_epsilon": self.label_epsilon}  # non-empty: the client's state (its labels) is kept
