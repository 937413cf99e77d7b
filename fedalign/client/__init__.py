"""The client side: one participant's student, how it trains, and what it releases.

Everything here runs on a client. It builds on the shared vocabulary below it
(:mod:`fedalign.config`, :mod:`fedalign.statistics`, :mod:`fedalign.alignment`,
:mod:`fedalign.wire`, :mod:`fedalign.schedules`, :mod:`fedalign.data`) and on
:mod:`fedalign.models` and :mod:`fedalign.privacy`; it never imports the server side.
"""

from .data import TaskInfo, split_into_graphs
from .student import Student, build_student

__all__ = ["Student", "TaskInfo", "build_student", "split_into_graphs"]
