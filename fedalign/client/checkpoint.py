"""A client's checkpoint on its own disk: the student's state and its last reply (so requests are idempotent).

Any process -- a new simulation worker, a restarted SuperNode, a fresh
``flwr-clientapp`` process per message -- picks the student up from it. It also
holds the client's privacy ledgers, so it is written after every release, not only
after training. The last reply (request and content) lets a repeated request -- a
restarted server re-sending the round it did not see finish -- get the same answer
without training twice or spending privacy budget twice. Files are private to the
user (mode 0600): they hold the model's weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import replaced_privately
from ..wire import Statistics
from .paths import state_root
from .student import Student

LastReply = tuple[dict[str, float], Statistics | None]


def checkpoint_path(state_dir: str | Path | None, run_tag: str, client_id: int) -> Path:
    """``<state root>/<run tag>/client-<i>.pt`` (:func:`state_root`).

    Args:
        state_dir: the configured state directory, or None for the default (:func:`state_root`).
        run_tag: the run's tag, one directory per run.
        client_id: the client's index, 0..K-1.
    """
    return state_root(state_dir) / run_tag / f"client-{client_id}.pt"


class Checkpoint:
    """The checkpoint file of one client in one run."""

    def __init__(self, path: Path) -> None:
        """Bind to a checkpoint file; nothing is read until :meth:`restore`.

        Args:
            path: the checkpoint file (:func:`checkpoint_path`).
        """
        self.path = path
        self.saved: dict = {}
        # whether the student continues its own state: restored from the file, or saved by this process
        # (a client that holds none while the server says it spent privacy refuses to release: fedalign.ledgers)
        self.holds_state = False

    def restore(self, student: Student) -> None:
        """Load the student's state from the file, if there is one (a missing file is not an error here:
        a client that has never answered has none; :func:`~fedalign.ledgers.refusal` decides).

        Args:
            student: the student to load the saved state into.
        """
        if self.path.exists():
            self.saved = torch.load(self.path, map_location=student.device, weights_only=True)
            student.load_state_dict(self.saved)
            self.holds_state = True

    def last_reply(self, request: str) -> LastReply | None:
        """The stored reply if ``request`` (message type and round) was answered before.

        Args:
            request: the request's key (message type and round), as passed to :meth:`save`.

        Returns:
            ``(metrics, statistics)`` of that reply (statistics None where it released none), else None.
        """
        last = self.saved.get("last_reply")
        if not last or last["request"] != request:
            return None
        statistics = [t.numpy() for t in last["statistics"]] if last["statistics"] is not None else None
        return dict(last["metrics"]), statistics

    def save(self, student: Student, request: str, metrics: dict[str, float], statistics: Statistics | None) -> None:
        """Write the student's state with this reply, atomically (a crash never leaves a torn file), mode 0600.

        Args:
            student: the student whose state is written.
            request: the answered request's key (message type and round).
            metrics: the reply's metrics.
            statistics: the reply's released arrays, or None where it released none.
        """
        state = student.state_dict()
        state["last_reply"] = {
            "request": request,
            "metrics": dict(metrics),
            "statistics": [torch.from_numpy(p) for p in statistics] if statistics is not None else None,
        }
        with replaced_privately(self.path) as handle:
            torch.save(state, handle)
        self.holds_state = True
