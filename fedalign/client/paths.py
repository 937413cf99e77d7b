"""Where a client keeps its state on its own disk (no torch: the deploy tools and a light ClientApp use it)."""

from __future__ import annotations

import os
from pathlib import Path


def state_root(state_dir: str | Path | None) -> Path:
    """Where clients keep their state: ``state_dir``, else ``$FEDALIGN_STATE_DIR``, else
    ``~/.cache/fedalign/client-state``.

    Args:
        state_dir: the configured state directory, or None.
    """
    return Path(
        str(state_dir or os.environ.get("FEDALIGN_STATE_DIR") or Path.home() / ".cache" / "fedalign" / "client-state")
    )


def worker_socket(state_dir: str | Path | None, client_id: int) -> Path:
    """``<state root>/worker-<i>.sock``: the Unix socket of client ``client_id``'s node worker.

    Args:
        state_dir: the configured state directory, or None (:func:`state_root`).
        client_id: the client's index.
    """
    return state_root(state_dir) / f"worker-{client_id}.sock"
