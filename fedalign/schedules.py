"""Schedules: who trains in which round, and how many releases a client makes in a run.

* ``alternating`` (the paper's): in round r (1-based) client (r - 1) mod K trains
  against the cached statistics of its frozen peers.
* ``simultaneous``: every client trains each round against the statistics all
  peers released in the previous round.

Round 0 collects every client's initial statistics.
"""

from __future__ import annotations

from .config import ExperimentConfig

SCHEDULES = ("alternating", "simultaneous")


def trainers_for_round(schedule: str, round_number: int, num_clients: int) -> list[int]:
    """The clients that train in ``round_number`` (1-based)."""
    if schedule == "alternating":
        return [(round_number - 1) % num_clients]
    if schedule == "simultaneous":
        return list(range(num_clients))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def planned_releases(cfg: ExperimentConfig, client_id: int) -> int:
    """How many statistics releases client ``client_id`` makes in a full run.

    One in round 0 plus one per round it trains: ``federation.rounds`` under the
    ``simultaneous`` schedule; under ``alternating`` the rounds r in 1..R with
    ``(r - 1) mod K == client_id``, i.e. ``ceil((R - client_id) / K)`` (at most
    ``ceil(R / K)``). Used to plan the noise of ``privacy.target_epsilon``.
    """
    rounds, k = cfg.federation.rounds, cfg.federation.num_clients
    if not 0 <= client_id < k:
        raise ValueError(f"client id {client_id} out of range for federation.num_clients={k}")
    if cfg.federation.schedule == "simultaneous":
        return 1 + rounds
    return 1 + max(0, -(-(rounds - client_id) // k))
