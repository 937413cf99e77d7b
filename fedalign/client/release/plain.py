"""No privacy: the raw statistics, in the wire dtype."""

from __future__ import annotations

from .base import ReleasePolicy, on_wire


class PlainRelease(ReleasePolicy):
    """``(statistics in the wire dtype, {})``."""

    def __init__(self, wire_dtype: str) -> None:
        """Release in ``wire_dtype``.

        Args:
            wire_dtype: ``"float32"`` or ``"float16"``.
        """
        self.wire_dtype = wire_dtype

    def release(self, statistics, round_number, turn):
        """The raw statistics in the wire dtype, with no metrics."""
        return on_wire(statistics(), self.wire_dtype), {}
