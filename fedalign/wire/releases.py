"""Releases: what a client sends (:data:`Statistics`), how its entries group into distributions
(:class:`ReleaseLayout`), and :func:`check_statistics`, the check every side runs on a release."""

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


def payload_bytes(statistics: Statistics | None) -> int:
    """Size in bytes of a statistics payload (the arrays' raw data).

    Args:
        statistics: the arrays (None or empty: 0 bytes).
    """
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
        """From a ``[2, E]`` edge index (torch tensor or array).

        Args:
            edge_index: the alignment graph's edges ``[2, E]``; the entries group by target node.
            num_nodes: N, its number of nodes.
        """
        target = np.asarray(edge_index[1].cpu() if hasattr(edge_index, "cpu") else edge_index[1], dtype=np.int64)
        return cls(int(num_nodes), target)


def release_layout(
    strategy: str, edge_index, num_nodes: int, num_classes: int, multilabel: bool, queries: int | None = None
) -> ReleaseLayout:
    """How the entries of one released array group into distributions, for ``strategy``.

    Structure strategies: one entry per edge of the alignment graph, grouped by target
    node (``edge_index`` long [2, E], ``num_nodes`` N). Strategies ``logits`` and ``votes``: the
    class distributions of :func:`fedalign.statistics.class_log_probs` (or one-hot votes in the same
    places) on the ``queries`` nodes of the query set (:func:`fedalign.queries.query_nodes`; None: all
    N): ``C`` entries per node (multiclass), or 2 per (node, label) (multilabel). The returned spec's
    ``num_nodes`` is then the number of groups and ``target`` the group of each entry.

    Args:
        strategy: ``align.strategy``.
        edge_index: the alignment graph's edges ``[2, E]`` (structure strategies; else unused).
        num_nodes: N, the alignment graph's number of nodes.
        num_classes: C (``logits`` / ``votes``).
        multilabel: whether the task is multilabel (``logits`` / ``votes``).
        queries: the size of the query set (None: all N nodes).
    """
    if strategy not in ("logits", "votes"):
        return ReleaseLayout.from_edge_index(edge_index, num_nodes)
    nodes = num_nodes if queries is None else queries
    groups, members = (nodes * num_classes, 2) if multilabel else (nodes, num_classes)
    return ReleaseLayout(groups, np.repeat(np.arange(groups, dtype=np.int64), members), votes=strategy == "votes")


def release_clip_norm(clip_norm: float, layout: ReleaseLayout) -> float:
    """C of one release: ``sqrt(groups)`` for votes (a vote vector's L2 norm, so clipping is the identity:
    :mod:`fedalign.client.votes`), else ``clip_norm`` (``privacy.clip_norm``).

    Args:
        clip_norm: ``privacy.clip_norm``.
        layout: the release's layout (votes or not, and its number of groups).
    """
    return math.sqrt(layout.num_nodes) if layout.votes else clip_norm


def _check_votes(values: np.ndarray, graph: ReleaseLayout, where: str) -> str | None:
    """The first problem of a votes array (every entry 0 or 1, every group one vote or none), or None."""
    if not np.isin(values, (0.0, 1.0)).all():
        return f"{where} holds entries other than 0 and 1 (a vote is one-hot)"
    sums = np.bincount(graph.target, weights=values, minlength=graph.num_nodes)
    if (sums > 1).any():
        return (
            f"{where}: {int((sums > 1).sum())} queries carry more than one vote, first query {int(np.argmax(sums > 1))}"
        )
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
    for layer, probs in enumerate(statistics, start=1):
        problem = _layer_problem(probs, graph, dtype, f"layer {layer}")
        if problem is not None:
            raise reject(problem)
    return list(statistics)


def _layer_problem(probs: object, graph: ReleaseLayout | int, dtype: str, where: str) -> str | None:
    """The first problem of one released layer (see :func:`check_statistics`), or None."""
    num_edges = graph.num_edges if isinstance(graph, ReleaseLayout) else int(graph)
    tolerance = SUM_TOLERANCE[dtype]
    if not isinstance(probs, np.ndarray):
        return f"{where} is a {type(probs).__name__}, not an array"
    if probs.dtype != np.dtype(dtype):
        return f"{where} has dtype {probs.dtype}, expected {dtype} (align.statistics_dtype)"
    if probs.shape != (num_edges,):
        return (
            f"{where} has shape {probs.shape}, expected ({num_edges},) for the {num_edges} edges of the alignment graph"
        )
    values = probs.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        return f"{where} has {int(bad.sum())} non-finite entries (NaN/Inf), first at edge {int(bad.argmax())}"
    if (values < 0).any():
        return (
            f"{where} has {int((values < 0).sum())} negative probabilities, first at edge {int((values < 0).argmax())}"
        )
    if not isinstance(graph, ReleaseLayout):
        if (values > 1 + tolerance).any():
            return f"{where} has {int((values > 1 + tolerance).sum())} probabilities above 1"
        return None
    if graph.votes:
        return _check_votes(values, graph, where)
    sums = np.bincount(graph.target, weights=values, minlength=graph.num_nodes)
    error = np.abs(sums - 1.0) * graph.has_in_edges
    if error.max(initial=0.0) > tolerance:
        node = int(error.argmax())
        return (
            f"{where}: the probabilities over node {node}'s in-edges sum to {sums[node]:.6g}, "
            f"not 1 (tolerance {tolerance:g}); {int((error > tolerance).sum())} nodes are off"
        )
    return None
