"""The server side: the coordinator, its statistics cache and saved state, and checks on what arrives.

Everything here runs on the server. It builds on the shared vocabulary (:mod:`fedalign.config`,
:mod:`fedalign.wire`, :mod:`fedalign.schedules`, :mod:`fedalign.alignment`, :mod:`fedalign.data`)
and never imports the client side (:mod:`fedalign.client`, :mod:`fedalign.models`,
:mod:`fedalign.privacy`).
"""

from .coordinator import Coordinator
from .layout import release_layout_of, with_layout_fingerprint
from .records import RoundListener, RoundRecord
from .state import ServerState
from .summary import summarise
from .transport import Reply, Transport

__all__ = [
    "Coordinator",
    "Reply",
    "RoundListener",
    "RoundRecord",
    "ServerState",
    "Transport",
    "release_layout_of",
    "summarise",
    "with_layout_fingerprint",
]
