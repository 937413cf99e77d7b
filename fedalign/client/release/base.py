"""The release-policy interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...wire import Statistics

ReleaseMetrics = dict[str, float]  # "epsilon" (when privacy is on) and "withheld" (0.0 / 1.0)


class ReleasePolicy:
    """Turns a student's raw statistics into what its client sends, once per release.

    Subclasses implement :meth:`release`; a policy that keeps state across releases
    (a privacy ledger) saves it in :meth:`state_dict`, which goes into the client's checkpoint.
    """

    def release(
        self, statistics: Callable[[], Statistics], round_number: int, turn: int
    ) -> tuple[Statistics | None, ReleaseMetrics]:
        """Make one release.

        Args:
            statistics: computes the raw probabilities when called (one array per released layer).
            round_number: the round the release is made in (0 for the initial release).
            turn: how many turns the student has trained (0: the initial release of round 0).

        Returns:
            ``(arrays to send or None, release metrics)``.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The policy's state to keep in the client's checkpoint (empty: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (``state`` is the whole client checkpoint).

        Args:
            state: the whole client checkpoint.
        """


class NoRelease(ReleasePolicy):
    """Strategies that share nothing (``none``, ``self``): ``(None, {})``."""

    def release(self, statistics, round_number, turn):
        """Release nothing: ``(None, {})``."""
        return None, {}


def on_wire(statistics: Statistics, dtype: str) -> Statistics:
    """The statistics in the wire precision ``align.statistics_dtype`` (float32 or float16).

    Args:
        statistics: the arrays to send, one per released layer.
        dtype: ``"float32"`` or ``"float16"``.
    """
    return [np.asarray(p).astype(np.dtype(dtype), copy=False) for p in statistics]
