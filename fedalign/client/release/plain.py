"""No privacy: the raw statistics, in the wire dtype."""

from __future__ import annotations

from .base import ReleasePolicy, on_wire


class PlainRelease(ReleasePolicy):
    """``(statistics in the wire dtype, {})``."""

    def __init__(self, wire_dtype: str) -> None:
        self.wire_dtype = wire_dtype

    def release(self, statistics, round_number, turn):
        return on_wire(statistics(), self.wire_dtype), {}
