"""Label DP: the statistics of a model trained on randomised labels are post-processing; they go out as they are."""

from __future__ import annotations

from typing import Any

from .base import ReleasePolicy, on_wire


class LabelDPRelease(ReleasePolicy):
    """The raw statistics, reported with ``epsilon`` = the per-label epsilon of randomised response
    (:mod:`fedalign.privacy.labels`), which the client spent once, before training."""

    def __init__(self, wire_dtype: str, label_epsilon: float) -> None:
        self.wire_dtype, self.label_epsilon = wire_dtype, label_epsilon

    def release(self, statistics, round_number, turn):
        return on_wire(statistics(), self.wire_dtype), {"epsilon": self.label_epsilon, "withheld": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"label_epsilon": self.label_epsilon}  # non-empty: the client's state (its labels) is kept
