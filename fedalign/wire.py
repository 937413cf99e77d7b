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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


class StatisticsRejected(ValueError):
    """A release of statistics that is not a valid set of distributions; the message says why."""


# |sum over a node's in-edges - 1| allowed, per wire dtype: float16 keeps 11 significant bits
# (relative error <= 2^-11 per entry, so <= 2^-11 on a sum of probabilities), float32 24 bits.
SUM_TOLERANCE = {"float32": 1e-4, "float16": 2e-3}


Statistics = list[np.ndarray]  # one 1-D probability array per released layer (float32 or float16 on the wire)

# Every scalar a client may report: training/evaluation metrics and the privacy spent.
REPLY_METRICS = frozenset({
    "task_loss", "align_loss", "val_metric", "test_metric", "val_loss",  # Student.train / evaluate
    "task_grad_norm", "align_grad_norm",  # Student.train, when the alignment term is on
    "epsilon", "withheld", "dp_sgd_epsilon",  # privacy (the release policy / DP-SGD)
    "ledger_lost",  # a client that lost its privacy ledger releases nothing and says so (fedalign.ledgers)
    "answered_queries", "labelled_queries",  # strategy votes: queries answered by the last histogram, and kept
})
# Metrics a client may send with privacy on: accounted, or computed from public information only.
ACCOUNTED_METRICS = frozenset({"epsilon", "withheld", "dp_sgd_epsilon", "ledger_lost"})
# What a reply says about itself: which client answered, and (without privacy) how long it worked.
REPLY_METADATA = ("partition-id", "client-seconds")
REQUIRED_METADATA = ("partition-id",)


def private_releases(cfg) -> bool:
    """True when a client's releases are protected (statistics mechanism, DP-SGD or label DP): then
    nothing else computed from its private data may leave it (:func:`split_metrics`)."""
    return cfg.privacy.mechanism != "none" or cfg.privacy.dp_sgd.enabled or cfg.privacy.unit == "labels"


def split_metrics(metrics: dict[str, float], private: bool) -> tuple[dict[str, float], dict[str, float]]:
    """``(sent, kept)``: what a reply carries and what stays on the client.

    Without privacy everything is sent. With privacy only :data:`ACCOUNTED_METRICS` are: losses,
    validation and test scores and gradient norms are computed from the client's private data
    without noise, so they stay in the client's own evaluation log.
    """
    if not private:
        return dict(metrics), {}
    sent = {k: v for k, v in metrics.items() if k in ACCOUNTED_METRICS}
    return sent, {k: v for k, v in metrics.items() if k not in ACCOUNTED_METRICS}


# What an honest value of each metric can be: (lowest, highest, +inf allowed).
METRIC_RANGES = {
    "val_metric": (0.0, 1.0, False), "test_metric": (0.0, 1.0, False),
    "task_loss": (0.0, math.inf, False), "align_loss": (0.0, math.inf, False), "val_loss": (0.0, math.inf, False),
    "task_grad_norm": (0.0, math.inf, False), "align_grad_norm": (0.0, math.inf, False),
    "epsilon": (0.0, math.inf, True), "dp_sgd_epsilon": (0.0, math.inf, True), "withheld": (0.0, 1.0, False),
    "ledger_lost": (0.0, 1.0, False), "answered_queries": (0.0, math.inf, False),
    "labelled_queries": (0.0, math.inf, False),
}


class MetricsRejected(ValueError):
    """Reply metrics no honest client sends (unknown name, NaN, out of range); the message says which."""


def check_metrics(metrics: dict[str, float], sender: str = "client") -> dict[str, float]:
    """``metrics`` if every value is what an honest client can report (:data:`METRIC_RANGES`), else raise.

    A client leaves out a metric it has nothing for (e.g. no validation nodes); it never sends NaN.
    """
    for name, value in metrics.items():
        if name not in METRIC_RANGES:
            raise MetricsRejected(f"metrics from {sender} rejected: unknown metric {name!r}")
        low, high, inf_ok = METRIC_RANGES[name]
        try:
            value = float(value)
        except (TypeError, ValueError):  # None, a string: not a number
            raise MetricsRejected(f"metrics from {sender} rejected: {name} = {value!r} is not a number") from None
        if math.isnan(value) or (math.isinf(value) and not (inf_ok and value > 0)) or not low <= value <= high:
            raise MetricsRejected(f"metrics from {sender} rejected: {name} = {value} is outside what an honest client "
                                  f"reports ([{low:g}, {high:g}]{', or +inf' if inf_ok else ''})")
    return metrics


# Peer ids under which a trainer receives the sum of every contributor's share (secure aggregation).
SUM_WITH_OWN, SUM_WITHOUT_OWN = -1, -2
SUM_PEERS = (SUM_WITH_OWN, SUM_WITHOUT_OWN)


@dataclass
class PeerSum:
    """What the server learns from one securely aggregated round: the sum of the contributors' shares.

    Attributes:
        arrays: one float64 ``[E]`` array per released layer, the sum over ``contributors``.
        contributors: the client ids whose shares are in the sum (sorted).
    """

    arrays: list[np.ndarray]
    contributors: list[int]

    def job_for(self, client: int) -> dict[int, list[np.ndarray]]:
        """The peer statistics a trainer gets: the sum's arrays, then one ``[1]`` array holding the number
        of shares in it; under :data:`SUM_WITH_OWN` when the trainer's own share is one of them."""
        count = np.array([len(self.contributors)], dtype=np.float64)
        return {SUM_WITH_OWN if client in self.contributors else SUM_WITHOUT_OWN: [*self.arrays, count]}


def check_peer_sum(arrays: object, num_edges: int, num_layers: int, sender: str = "the server",
                   counted: bool = False) -> list[np.ndarray]:
    """``arrays`` if it is a sum of shares of this experiment (``num_layers`` finite float64 ``[E]``
    arrays; with ``counted``, then the ``[1]`` array of :meth:`PeerSum.job_for` holding a count >= 1),
    else raise :class:`StatisticsRejected`. A sum of noisy shares may hold any finite value."""
    if counted:
        if not isinstance(arrays, (list, tuple)) or not arrays:
            raise StatisticsRejected(f"sum of shares from {sender} rejected: expected {num_layers} arrays and a count")
        *arrays, count = arrays
        if not (isinstance(count, np.ndarray) and count.shape == (1,) and count[0] >= 1 and count[0] == int(count[0])):
            raise StatisticsRejected(f"sum of shares from {sender} rejected: its last array must be the number of "
                                     "shares in it, a [1] array holding an integer >= 1")
    if not isinstance(arrays, (list, tuple)) or len(arrays) != num_layers:
        raise StatisticsRejected(f"sum of shares from {sender} rejected: expected {num_layers} arrays")
    for layer, a in enumerate(arrays, start=1):
        if not isinstance(a, np.ndarray) or a.shape != (num_edges,) or a.dtype != np.float64:
            raise StatisticsRejected(f"sum of shares from {sender} rejected: layer {layer} must be a float64 array "
                                     f"of shape ({num_edges},), got {getattr(a, 'dtype', type(a).__name__)} "
                                     f"{getattr(a, 'shape', '')}")
        if not np.isfinite(a).all():
            raise StatisticsRejected(f"sum of shares from {sender} rejected: layer {layer} has non-finite entries")
    return list(arrays)


# Peer id under which a trainer receives its peers' summed mass (:class:`PeerMass`), outside secure aggregation.
PEER_MASS = -3
MASS_DTYPE = np.float64


def sum_p_log_p(p: np.ndarray) -> float:
    """``sum_e p_e log p_e`` in float64 (0 log 0 = 0) of one released array ``p``: its part of the KL's constant."""
    p = np.asarray(p, dtype=np.float64)
    return float(np.sum(p * np.log(p, where=p > 0, out=np.zeros_like(p))))


def summed_request_pays(num_peers: int, dtype: str) -> bool:
    """Whether a trainer with ``num_peers`` cached peers gets their :class:`PeerMass` rather than their releases
    in the wire ``dtype``: when those hold at least as many bytes per entry (``num_peers`` x itemsize >= 8): a
    request never grows past the sum's size, and with one peer (K = 2) it is that peer's release."""
    return num_peers * np.dtype(dtype).itemsize >= np.dtype(MASS_DTYPE).itemsize


@dataclass
class PeerMass:
    """What a trainer needs of its peers' releases (:mod:`fedalign.client.objective`), summed by the server.

    Attributes:
        arrays: per student layer l = 1..L_s (one array for ``logits``), ``M_l = sum_k sum_{q paired with l}
            p_{k,q}``, float64 ``[E]``; every group (a node's in-edges) sums to ``num_peers``.
        constant: ``sum_k sum_pairs sum_e p log p`` over the same peers and pairs (nats, <= 0).
        num_peers: P >= 1, the peers in the sums.
    """

    arrays: list[np.ndarray]
    constant: float
    num_peers: int

    def job(self) -> dict[int, list[np.ndarray]]:
        """As a train request carries it: under :data:`PEER_MASS`, the arrays, then a ``[2]`` float64 array
        ``[num_peers, constant]``."""
        return {PEER_MASS: [*self.arrays, np.array([self.num_peers, self.constant], dtype=MASS_DTYPE)]}

    @classmethod
    def from_job(cls, arrays: list[np.ndarray]) -> PeerMass:
        """The inverse of :meth:`job` (``arrays``: a request's entry under :data:`PEER_MASS`), unchecked."""
        *mass, (num_peers, constant) = arrays
        return cls(list(mass), float(constant), int(num_peers))


def check_peer_mass(arrays: object, graph: ReleaseLayout, num_layers: int, dtype: str = "float32",
                    max_peers: int | None = None, sender: str = "the server") -> PeerMass:
    """The :class:`PeerMass` in ``arrays`` if it can be an honest sum of this experiment's releases, else raise
    :class:`StatisticsRejected`: ``num_layers`` finite, non-negative float64 ``[E]`` arrays, each group summing
    to P (within P x the dtype's tolerance), then ``[P, constant]``, P an integer in 1..``max_peers``, the
    constant in [-P L sum_g log |g|, 0] (P x L distributions on the groups g).

    Args:
        arrays: as received (a request's entry under :data:`PEER_MASS`).
        graph: the alignment graph's layout (the groups the sums are checked on).
        num_layers: L_s, the receiving student's arrays (one for ``logits``).
        dtype: the wire dtype of the releases summed (``align.statistics_dtype``).
        max_peers: the most peers a trainer has (K - 1); None: unbounded.
        sender: who sent it, for the error message.
    """
    def reject(problem: str) -> StatisticsRejected:
        return StatisticsRejected(f"summed peer mass from {sender} rejected: {problem}")

    if not isinstance(arrays, (list, tuple)) or len(arrays) != num_layers + 1:
        raise reject(f"expected {num_layers} arrays and [peers, constant]")
    meta = arrays[-1]
    if not (isinstance(meta, np.ndarray) and meta.shape == (2,) and meta.dtype == MASS_DTYPE
            and np.isfinite(meta).all() and meta[0] >= 1 and meta[0] == int(meta[0]) <= (max_peers or np.inf)):
        raise reject(f"its last array must be [peers, constant], float64, finite, peers an integer in 1..{max_peers}")
    peers = meta[0]
    tolerance = peers * SUM_TOLERANCE[dtype]
    for layer, mass in enumerate(arrays[:-1], start=1):
        if not (isinstance(mass, np.ndarray) and mass.dtype == MASS_DTYPE and mass.shape == (graph.num_edges,)):
            raise reject(f"layer {layer} must be a float64 array of shape ({graph.num_edges},), got "
                         f"{getattr(mass, 'dtype', type(mass).__name__)} {getattr(mass, 'shape', '')}")
        if not np.isfinite(mass).all() or (mass < 0).any():
            raise reject(f"layer {layer} has non-finite or negative entries")
        sums = np.bincount(graph.target, weights=mass, minlength=graph.num_nodes)
        error = np.abs(sums - peers) * graph.has_in_edges
        if error.max(initial=0.0) > tolerance:
            node = int(error.argmax())
            raise reject(f"layer {layer}: node {node}'s in-edges sum to {sums[node]:.6g}, not the {peers:g} "
                         f"peers (tolerance {tolerance:g})")
    sizes = np.bincount(graph.target, minlength=graph.num_nodes)
    floor = -peers * num_layers * float(np.log(sizes[sizes > 0]).sum())
    slack = peers * num_layers * graph.num_nodes * SUM_TOLERANCE[dtype]
    if not floor - slack <= meta[1] <= slack:
        raise reject(f"constant {meta[1]:g} outside [{floor:g}, 0]")
    return PeerMass.from_job(list(arrays))


def payload_bytes(statistics: Statistics | None) -> int:
    """Size in bytes of a statistics payload (the arrays' raw data)."""
    return int(sum(np.asarray(p).nbytes for p in statistics)) if statistics else 0


@dataclass(frozen=True)
class ReleaseLayout:
    """How the entries of a released array group into distributions (what the checks need).

    For the structure strategies the groups are the target nodes of the public
    alignment graph's edges.

    Attributes:
        num_nodes: the number of groups (N, the alignment graph's nodes).
        target: int64 [E], the group of every entry (``edge_index[1]``: the target node v of edge u -> v).
        votes: True for strategy ``votes``: every group is one-hot (a vote) or all zero (an abstention).
    """

    num_nodes: int
    target: np.ndarray
    votes: bool = False

    @property
    def num_edges(self) -> int:
        """E, the number of entries of one released array."""
        return int(self.target.shape[0])

    @property
    def members(self) -> int:
        """Entries per group for node layouts (classes, or 2 per label); meaningful where groups are equal-sized."""
        return self.num_edges // max(self.num_nodes, 1)

    @functools.cached_property
    def has_in_edges(self) -> np.ndarray:
        """bool [N]: the nodes whose in-edge probabilities must sum to 1."""
        return np.bincount(self.target, minlength=self.num_nodes) > 0

    @classmethod
    def from_edge_index(cls, edge_index, num_nodes: int) -> ReleaseLayout:
        """From a ``[2, E]`` edge index (torch tensor or array)."""
        target = np.asarray(edge_index[1].cpu() if hasattr(edge_index, "cpu") else edge_index[1], dtype=np.int64)
        return cls(int(num_nodes), target)


def release_layout(strategy: str, edge_index, num_nodes: int, num_classes: int, multilabel: bool,
                   queries: int | None = None) -> ReleaseLayout:
    """How the entries of one released array group into distributions, for ``strategy``.

    Structure strategies: one entry per edge of the alignment graph, grouped by target
    node (``edge_index`` long [2, E], ``num_nodes`` N). Strategies ``logits`` and ``votes``: the
    class distributions of :func:`fedalign.statistics.class_log_probs` (or one-hot votes in the same
    places) on the ``queries`` nodes of the query set (:func:`fedalign.queries.query_nodes`; None: all
    N): ``C`` entries per node (multiclass), or 2 per (node, label) (multilabel). The returned spec's
    ``num_nodes`` is then the number of groups and ``target`` the group of each entry.
    """
    if strategy not in ("logits", "votes"):
        return ReleaseLayout.from_edge_index(edge_index, num_nodes)
    nodes = num_nodes if queries is None else queries
    groups, members = (nodes * num_classes, 2) if multilabel else (nodes, num_classes)
    return ReleaseLayout(groups, np.repeat(np.arange(groups, dtype=np.int64), members), votes=strategy == "votes")


def release_clip_norm(clip_norm: float, layout: ReleaseLayout) -> float:
    """C of one release: ``sqrt(groups)`` for votes (a vote vector's L2 norm, so clipping is the identity:
    :mod:`fedalign.client.votes`), else ``clip_norm`` (``privacy.clip_norm``)."""
    return math.sqrt(layout.num_nodes) if layout.votes else clip_norm


def _check_votes(values: np.ndarray, graph: ReleaseLayout, where: str) -> str | None:
    """The first problem of a votes array (every entry 0 or 1, every group one vote or none), or None."""
    if not np.isin(values, (0.0, 1.0)).all():
        return f"{where} holds entries other than 0 and 1 (a vote is one-hot)"
    sums = np.bincount(graph.target, weights=values, minlength=graph.num_nodes)
    if (sums > 1).any():
        return (f"{where}: {int((sums > 1).sum())} queries carry more than one vote, "
                f"first query {int(np.argmax(sums > 1))}")
    return None


def check_statistics(
    statistics: object,
    graph: ReleaseLayout | int,
    num_layers: int,
    dtype: str = "float32",
    sender: str = "peer",
) -> list[np.ndarray]:
    """Return ``statistics`` if it is a valid release, else raise :class:`StatisticsRejected`.

    Args:
        statistics: the release as received (expected: a list of ``num_layers``
            numpy arrays of shape ``[E]`` and dtype ``dtype``).
        graph: the alignment graph the probabilities live on; or only its
            number of edges E, when the checker cannot read the graph (then
            the per-node sums cannot be checked, only that entries are <= 1).
        num_layers: L, the sender's number of hidden layers.
        dtype: the wire dtype of the experiment (``align.statistics_dtype``).
        sender: who sent it, for the error message (e.g. ``"client 1"``).
    """
    def reject(problem: str) -> StatisticsRejected:
        return StatisticsRejected(f"statistics from {sender} rejected: {problem}")

    if not isinstance(statistics, (list, tuple)):
        raise reject(f"expected a list of {num_layers} arrays, got {type(statistics).__name__}")
    if len(statistics) != num_layers:
        raise reject(f"{len(statistics)} layers, expected {num_layers} (the sender's hidden_layers)")
    num_edges = graph.num_edges if isinstance(graph, ReleaseLayout) else int(graph)
    tolerance = SUM_TOLERANCE[dtype]
    for layer, probs in enumerate(statistics, start=1):
        where = f"layer {layer}"
        if not isinstance(probs, np.ndarray):
            raise reject(f"{where} is a {type(probs).__name__}, not an array")
        if probs.dtype != np.dtype(dtype):
            raise reject(f"{where} has dtype {probs.dtype}, expected {dtype} (align.statistics_dtype)")
        if probs.shape != (num_edges,):
            raise reject(f"{where} has shape {probs.shape}, expected ({num_edges},) for the "
                         f"{num_edges} edges of the alignment graph")
        values = probs.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise reject(f"{where} has {int(bad.sum())} non-finite entries (NaN/Inf), "
                         f"first at edge {int(bad.argmax())}")
        if (values < 0).any():
            raise reject(f"{where} has {int((values < 0).sum())} negative probabilities, "
                         f"first at edge {int((values < 0).argmax())}")
        if not isinstance(graph, ReleaseLayout):
            if (values > 1 + tolerance).any():
                raise reject(f"{where} has {int((values > 1 + tolerance).sum())} probabilities above 1")
            continue
        if graph.votes:
            problem = _check_votes(values, graph, where)
            if problem is not None:
                raise reject(problem)
            continue
        sums = np.bincount(graph.target, weights=values, minlength=graph.num_nodes)
        error = np.abs(sums - 1.0) * graph.has_in_edges
        if error.max(initial=0.0) > tolerance:
            node = int(error.argmax())
            raise reject(f"{where}: the probabilities over node {node}'s in-edges sum to {sums[node]:.6g}, "
                         f"not 1 (tolerance {tolerance:g}); {int((error > tolerance).sum())} nodes are off")
    return list(statistics)
