"""What travels between a client and the server, and the checks on it (the shared vocabulary of both sides).

A client's *release* is a list of 1-D probability arrays (:data:`Statistics`):
one ``[E]`` array per hidden layer for the structure strategies (``p_l(u|v)``
per edge of the alignment graph), or one array of class distributions for
strategy ``logits``. :class:`ReleaseLayout` says how a release's entries group
into distributions. Besides releases, a reply carries only the scalar metrics
named in :data:`REPLY_METRICS`; who replied and how long it worked travel as
:data:`REPLY_METADATA`, not as metrics.

Statistics arrive from other sites, so a bug or a hostile client may send
anything. :func:`check_statistics` accepts a release only when it is exactly
what an honest client of this experiment sends -- ``L`` one-dimensional
arrays of shape ``[E]`` in the configured wire dtype, finite, non-negative,
summing to 1 over every node's in-edges (or, for strategy ``logits``, one
array of class distributions: :func:`release_layout`) -- and raises
:class:`StatisticsRejected` naming the first problem otherwise. The server
checks every reply before caching it (a rejected release is never forwarded
to peers), and every client checks the peer statistics it receives.

With secure aggregation (``privacy.secure_aggregation``) a client sends a *share* instead: its
clipped statistics plus its part of the noise, float64, not a distribution
(:mod:`fedalign.aggregation`). The server learns only the :class:`PeerSum` of the
shares, and forwards it to every trainer as the single peer :data:`SUM_WITH_OWN` (the
trainer's own share is in the sum: it subtracts it) or :data:`SUM_WITHOUT_OWN`.
:func:`check_peer_sum` checks a sum's layout.

Outside secure aggregation a trainer of a summed strategy (:data:`~fedalign.alignment.SUMMED_STRATEGIES`)
gets no peer's release but its peers' :class:`PeerMass`, kept by the server per student depth, under the
single peer id :data:`PEER_MASS`: one float64 ``[E]`` array per student layer, whatever the number of
clients. :func:`check_peer_mass` is the trainer's check of it.

The parts: :mod:`fedalign.wire.releases` (releases and their check), :mod:`fedalign.wire.metrics` (what a
reply may report) and :mod:`fedalign.wire.sums` (summed requests); their names are all re-exported here.
"""

from .metrics import (
    ACCOUNTED_METRICS,
    METRIC_RANGES,
    REPLY_METADATA,
    REPLY_METRICS,
    REQUIRED_METADATA,
    MetricsRejected,
    check_metrics,
    private_releases,
    split_metrics,
)
from .releases import (
    SUM_TOLERANCE,
    ReleaseLayout,
    Statistics,
    StatisticsRejected,
    check_statistics,
    payload_bytes,
    release_clip_norm,
    release_layout,
)
from .sums import (
    MASS_DTYPE,
    PEER_MASS,
    SUM_PEERS,
    SUM_WITH_OWN,
    SUM_WITHOUT_OWN,
    PeerMass,
    PeerSum,
    check_peer_mass,
    check_peer_sum,
    sum_p_log_p,
    summed_request_pays,
)

__all__ = [
    "ACCOUNTED_METRICS",
    "MASS_DTYPE",
    "METRIC_RANGES",
    "MetricsRejected",
    "PEER_MASS",
    "PeerMass",
    "PeerSum",
    "REPLY_METADATA",
    "REPLY_METRICS",
    "REQUIRED_METADATA",
    "ReleaseLayout",
    "SUM_PEERS",
    "SUM_TOLERANCE",
    "SUM_WITHOUT_OWN",
    "SUM_WITH_OWN",
    "Statistics",
    "StatisticsRejected",
    "check_metrics",
    "check_peer_mass",
    "check_peer_sum",
    "check_statistics",
    "payload_bytes",
    "private_releases",
    "release_clip_norm",
    "release_layout",
    "split_metrics",
    "sum_p_log_p",
    "summed_request_pays",
]
