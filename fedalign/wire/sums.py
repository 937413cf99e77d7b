"""Summed requests: the :class:`PeerSum` of secure aggregation's shares and the :class:`PeerMass` the server
keeps outside it, the peer ids they travel under, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .releases import SUM_TOLERANCE, ReleaseLayout, StatisticsRejected

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
        of shares in it; under :data:`SUM_WITH_OWN` when the trainer's own share is one of them.

        Args:
            client: the trainer's index.
        """
        count = np.array([len(self.contributors)], dtype=np.float64)
        return {SUM_WITH_OWN if client in self.contributors else SUM_WITHOUT_OWN: [*self.arrays, count]}


def check_peer_sum(
    arrays: object, num_edges: int, num_layers: int, sender: str = "the server", counted: bool = False
) -> list[np.ndarray]:
    """``arrays`` if it is a sum of shares of this experiment (``num_layers`` finite float64 ``[E]``
    arrays; with ``counted``, then the ``[1]`` array of :meth:`PeerSum.job_for` holding a count >= 1),
    else raise :class:`StatisticsRejected`. A sum of noisy shares may hold any finite value.

    Args:
        arrays: the sum as received.
        num_edges: E, the alignment graph's number of edges.
        num_layers: L, the number of arrays a share holds.
        sender: who sent it, for the error message.
        counted: whether a ``[1]`` array with the number of shares follows the arrays.
    """
    if counted:
        if not isinstance(arrays, (list, tuple)) or not arrays:
            raise StatisticsRejected(f"sum of shares from {sender} rejected: expected {num_layers} arrays and a count")
        *arrays, count = arrays
        if not (isinstance(count, np.ndarray) and count.shape == (1,) and count[0] >= 1 and count[0] == int(count[0])):
            raise StatisticsRejected(
                f"sum of shares from {sender} rejected: its last array must be the number of "
                "shares in it, a [1] array holding an integer >= 1"
            )
    if not isinstance(arrays, (list, tuple)) or len(arrays) != num_layers:
        raise StatisticsRejected(f"sum of shares from {sender} rejected: expected {num_layers} arrays")
    for layer, a in enumerate(arrays, start=1):
        if not isinstance(a, np.ndarray) or a.shape != (num_edges,) or a.dtype != np.float64:
            raise StatisticsRejected(
                f"sum of shares from {sender} rejected: layer {layer} must be a float64 array "
                f"of shape ({num_edges},), got {getattr(a, 'dtype', type(a).__name__)} "
                f"{getattr(a, 'shape', '')}"
            )
        if not np.isfinite(a).all():
            raise StatisticsRejected(f"sum of shares from {sender} rejected: layer {layer} has non-finite entries")
    return list(arrays)


# Peer id under which a trainer receives its peers' summed mass (:class:`PeerMass`), outside secure aggregation.
PEER_MASS = -3
MASS_DTYPE = np.float64


def sum_p_log_p(p: np.ndarray) -> float:
    """``sum_e p_e log p_e`` in float64 (0 log 0 = 0) of one released array ``p``: its part of the KL's constant.

    Args:
        p: one released array.
    """
    p = np.asarray(p, dtype=np.float64)
    return float(np.sum(p * np.log(p, where=p > 0, out=np.zeros_like(p))))


def summed_request_pays(num_peers: int, dtype: str) -> bool:
    """Whether a trainer with ``num_peers`` cached peers gets their :class:`PeerMass` rather than their releases
    in the wire ``dtype``: when those hold at least as many bytes per entry (``num_peers`` x itemsize >= 8): a
    request never grows past the sum's size, and with one peer (K = 2) it is that peer's release.

    Args:
        num_peers: the trainer's number of cached peers.
        dtype: the wire dtype (``align.statistics_dtype``).
    """
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
        """The inverse of :meth:`job`, unchecked.

        Args:
            arrays: a request's entry under :data:`PEER_MASS`.
        """
        *mass, (num_peers, constant) = arrays
        return cls(list(mass), float(constant), int(num_peers))


def check_peer_mass(
    arrays: object,
    graph: ReleaseLayout,
    num_layers: int,
    dtype: str = "float32",
    max_peers: int | None = None,
    sender: str = "the server",
) -> PeerMass:
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
    if not (
        isinstance(meta, np.ndarray)
        and meta.shape == (2,)
        and meta.dtype == MASS_DTYPE
        and np.isfinite(meta).all()
        and meta[0] >= 1
        and meta[0] == int(meta[0]) <= (max_peers or np.inf)
    ):
        raise reject(f"its last array must be [peers, constant], float64, finite, peers an integer in 1..{max_peers}")
    peers = meta[0]
    tolerance = peers * SUM_TOLERANCE[dtype]
    for layer, mass in enumerate(arrays[:-1], start=1):
        problem = _layer_mass_problem(f"layer {layer}", mass, graph, peers, tolerance)
        if problem is not None:
            raise reject(problem)
    sizes = np.bincount(graph.target, minlength=graph.num_nodes)
    floor = -peers * num_layers * float(np.log(sizes[sizes > 0]).sum())
    slack = peers * num_layers * graph.num_nodes * SUM_TOLERANCE[dtype]
    if not floor - slack <= meta[1] <= slack:
        raise reject(f"constant {meta[1]:g} outside [{floor:g}, 0]")
    return PeerMass.from_job(list(arrays))


def _layer_mass_problem(where: str, mass: object, graph: ReleaseLayout, peers: float, tolerance: float) -> str | None:
    """The first problem of one layer of a summed peer mass (see :func:`check_peer_mass`), or None."""
    if not (isinstance(mass, np.ndarray) and mass.dtype == MASS_DTYPE and mass.shape == (graph.num_edges,)):
        return (
            f"{where} must be a float64 array of shape ({graph.num_edges},), got "
            f"{getattr(mass, 'dtype', type(mass).__name__)} {getattr(mass, 'shape', '')}"
        )
    if not np.isfinite(mass).all() or (mass < 0).any():
        return f"{where} has non-finite or negative entries"
    sums = np.bincount(graph.target, weights=mass, minlength=graph.num_nodes)
    error = np.abs(sums - peers) * graph.has_in_edges
    if error.max(initial=0.0) > tolerance:
        node = int(error.argmax())
        return (
            f"{where}: node {node}'s in-edges sum to {sums[node]:.6g}, not the {peers:g} peers "
            f"(tolerance {tolerance:g})"
        )
    return None
