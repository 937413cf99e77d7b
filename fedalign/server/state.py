"""The coordinator's state in a run folder, so that a restarted server resumes the experiment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from ..files import replaced_privately
from ..wire import PeerSum, Statistics


class ServerState:
    """The coordinator's state in a run folder, saved after every round.

    ``server-state.npz`` holds the last completed round (``completed_round``)
    and the statistics cache (``"<client>.<layer>"`` -> the cached array) -- or, with secure
    aggregation, the last sum of shares (``"sum.<layer>"``, ``"contributors"``) --
    written atomically (a crash mid-save leaves the previous state), readable by its owner only. The
    privacy ledgers live with the clients, in their checkpoints; the
    epsilon each client reported is in ``rounds.jsonl``. ``wall_seconds``: the run's wall time so far,
    all its parts (``clock()`` at each save; absent when no clock is set).
    """

    FILE = "server-state.npz"
    # Key prefix of the largest epsilon each client reported, per ledger metric ("reported-<metric>-clients"
    # and "-values"): what the server checks every later reply against (fedalign.ledgers.ReportedEpsilon).
    REPORTED = "reported-"

    def __init__(self, run_dir: str | Path) -> None:
        """The state file of a run folder.

        Args:
            run_dir: the run folder; the state is its ``server-state.npz``.
        """
        self.path = Path(run_dir) / self.FILE
        self.clock: Callable[[], float] | None = None  # the run's wall seconds so far, saved with the state

    def exists(self) -> bool:
        """Whether a state has been saved."""
        return self.path.is_file()

    def save(
        self,
        completed_round: int,
        cache: dict[int, Statistics],
        summed: PeerSum | None = None,
        reported: dict[str, dict[int, float]] | None = None,
    ) -> None:
        """Write the state after round ``completed_round``, atomically, readable by its owner only.

        Args:
            completed_round: the last round whose records are in.
            cache: each client's last valid statistics, by client id.
            summed: secure aggregation's last sum of shares, or None.
            reported: the largest epsilon each client reported, ``{metric: {client: value}}``, or None.
        """
        arrays = {f"{client}.{layer}": p for client, stats in cache.items() for layer, p in enumerate(stats, start=1)}
        for metric, values in (reported or {}).items():  # {metric: {client: largest value reported}}
            if not values:
                continue
            arrays[f"{self.REPORTED}{metric}-clients"] = np.asarray(sorted(values), dtype=np.int64)
            arrays[f"{self.REPORTED}{metric}-values"] = np.asarray(
                [values[c] for c in sorted(values)], dtype=np.float64
            )
        if summed is not None:
            arrays.update({f"sum.{layer}": p for layer, p in enumerate(summed.arrays, start=1)})
            arrays["contributors"] = np.asarray(summed.contributors, dtype=np.int64)
        if self.clock is not None:
            arrays["wall_seconds"] = np.asarray(self.clock(), dtype=np.float64)
        with replaced_privately(self.path) as handle:
            np.savez(handle, allow_pickle=True, completed_round=np.int64(completed_round), **arrays)

    def load(self) -> tuple[int, dict[int, Statistics], PeerSum | None]:
        """(last completed round, cache, the last sum of shares or None)."""
        with np.load(self.path) as saved:
            completed = int(saved["completed_round"])
            layers: dict[int | str, dict[int, np.ndarray]] = {}
            for key in (k for k in saved.files if not k.startswith(self.REPORTED)):
                if key not in ("completed_round", "contributors", "wall_seconds"):
                    owner, layer = key.split(".")
                    layers.setdefault(owner if owner == "sum" else int(owner), {})[int(layer)] = saved[key]
            contributors = [int(c) for c in saved["contributors"]] if "contributors" in saved.files else None
        ordered = {c: [ls[layer] for layer in sorted(ls)] for c, ls in layers.items()}
        summed = PeerSum(ordered.pop("sum"), contributors) if contributors is not None else None
        return completed, cast(dict[int, list[np.ndarray]], ordered), summed  # without the sum: clients only

    def wall_seconds(self) -> float:
        """The run's wall time as of the saved state (0 if none was saved)."""
        with np.load(self.path) as saved:
            return float(saved["wall_seconds"]) if "wall_seconds" in saved.files else 0.0

    def load_reported(self) -> dict[str, dict[int, float]]:
        """The reported epsilons saved with the state: ``{metric: {client: value}}`` (empty for a state saved
        before they were kept)."""
        with np.load(self.path) as saved:
            metrics = [
                k[len(self.REPORTED) : -len("-clients")]
                for k in saved.files
                if k.startswith(self.REPORTED) and k.endswith("-clients")
            ]
            return {
                m: {
                    int(c): float(v)
                    for c, v in zip(
                        saved[f"{self.REPORTED}{m}-clients"], saved[f"{self.REPORTED}{m}-values"], strict=True
                    )
                }
                for m in metrics
            }
