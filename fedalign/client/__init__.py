"""The client side: one participant's student, how it trains, and what it releases.

Everything here runs on a client. It builds on the shared vocabulary below it
(:mod:`fedalign.config`, :mod:`fedalign.statistics`, :mod:`fedalign.alignment`,
:mod:`fedalign.wire`, :mod:`fedalign.schedules`, :mod:`fedalign.data`) and on
:mod:`fedalign.models` and :mod:`fedalign.privacy`; it never imports the server side.

The names below load on first use, so that :mod:`fedalign.client.worker`'s light half
(what a ClientApp process needs to hand a message to its node's worker) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Student": ".student", "build_student": ".student", "TaskInfo": ".data", "split_into_graphs": ".data"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
