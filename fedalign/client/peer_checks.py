"""What a student accepts from its peers (:meth:`~fedalign.client.student.Student.check_peer_statistics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..alignment import NODE_STRATEGIES, SUMMED_STRATEGIES, released_arrays
from ..wire import (
    PEER_MASS,
    SUM_PEERS,
    Statistics,
    StatisticsRejected,
    check_peer_mass,
    check_peer_sum,
    check_statistics,
)
from .release import SecureShareRelease

if TYPE_CHECKING:
    from .student import Student


def check_peer_statistics(student: Student, peer_statistics: dict[int, Statistics]) -> None:
    """Refuse peer statistics that are not valid distributions on ``student``'s alignment graph: a sum of shares
    only in a secure-aggregation run, a summed peer mass only in a run of a summed strategy without it, and
    otherwise every peer's release checked (:func:`~fedalign.wire.check_statistics`).

    Args:
        student: the receiving student.
        peer_statistics: the peers' statistics by peer id, or one summed entry.
    """
    if set(peer_statistics) & set(SUM_PEERS):
        if len(peer_statistics) != 1 or not isinstance(student.release_policy, SecureShareRelease):
            raise StatisticsRejected(
                f"client {student.client_id} got a sum of shares {sorted(peer_statistics)}, "
                "but only a secure-aggregation run sends one, alone"
            )
        (summed,) = peer_statistics.values()
        check_peer_sum(
            summed, student.layout.num_edges, released_arrays(student.cfg.align.strategy, student.depth), counted=True
        )
        return
    if PEER_MASS in peer_statistics:
        cfg = student.cfg
        if (
            len(peer_statistics) != 1
            or cfg.align.strategy not in SUMMED_STRATEGIES
            or isinstance(student.release_policy, SecureShareRelease)
        ):
            raise StatisticsRejected(
                f"client {student.client_id} got a summed peer mass with peers "
                f"{sorted(peer_statistics)}, but only a run of {SUMMED_STRATEGIES} without "
                "secure aggregation sends one, alone"
            )
        check_peer_mass(
            peer_statistics[PEER_MASS],
            student.layout,
            released_arrays(cfg.align.strategy, student.depth),
            cfg.align.statistics_dtype,
            max_peers=cfg.federation.num_clients - 1,
        )
        return
    for pid, stats in peer_statistics.items():
        try:
            arrays = 1 if student.cfg.align.strategy in NODE_STRATEGIES else len(stats)  # peers' depths may differ
            check_statistics(stats, student.layout, arrays, student.cfg.align.statistics_dtype, sender=f"peer {pid}")
        except StatisticsRejected as error:
            raise StatisticsRejected(
                f"{error}; were the clients started with the same data, partition and align config?"
            ) from None
