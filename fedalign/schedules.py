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
    """The clients that train in ``round_number`` (1-based).

    Args:
        schedule: ``"alternating"`` or ``"simultaneous"`` (``federation.schedule``).
        round_number: the round, 1-based.
        num_clients: K.
    """
    if schedule == "alternating":
        return [(round_number - 1) % num_clients]
    if schedule == "simultaneous":
        return list(range(num_clients))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def turns(cfg: ExperimentConfig, client_id: int) -> int:
    """How many rounds client ``client_id`` trains in a full run: ``federation.rounds`` under
    ``simultaneous``; under ``alternating`` the rounds r in 1..R with ``(r - 1) mod K == client_id``,
    i.e. ``ceil((R - client_id) / K)``.

    Args:
        cfg: the experiment config (``federation``).
        client_id: the client's index, 0..K-1.
    """
    rounds, k = cfg.federation.rounds, cfg.federation.num_clients
    if not 0 <= client_id < k:
        raise ValueError(f"client id {client_id} out of range for federation.num_clients={k}")
    if cfg.federation.schedule == "simultaneous":
        return rounds
    return max(0, -(-(rounds - client_id) // k))


def initial_release_is_charged(cfg: ExperimentConfig) -> bool:
    """Whether round 0's release counts against the privacy budget.

    Round 0 comes before any training: the statistics are a function of the initial weights
    (drawn from the config's seed) and the alignment graph. When that graph is a public share
    (every scheme but ``replicate``) the release depends on no private data: it is sent
    without noise and not charged. Under ``replicate`` the alignment graph is the client's
    own training graph, so it is charged like any release; ``privacy.free_initial_release: false``
    charges it anyway.

    Args:
        cfg: the experiment config.
    """
    if cfg.align.strategy == "votes":  # a client abstains before its first turn: its round-0 votes are all zero
        return False
    return cfg.partition.scheme == "replicate" or not cfg.privacy.free_initial_release


def releases_after_turn(cfg: ExperimentConfig, turn: int) -> bool:
    """Whether a client releases after its ``turn``-th turn (1-based): every ``privacy.release_every``-th.

    Args:
        cfg: the experiment config (``privacy.release_every``).
        turn: the turn just trained, 1-based.
    """
    return turn % cfg.privacy.release_every == 0


def skips_final_release(cfg: ExperimentConfig, round_number: int) -> bool:
    """Whether a charged release in ``round_number`` is skipped: with ``privacy.final_release: false``, the run's
    last round, after which nobody trains (a release there would spend privacy and feed no one). The release is
    then withheld (a share of pure noise under secure aggregation).

    Args:
        cfg: the experiment config.
        round_number: the round of the release.
    """
    return not cfg.privacy.final_release and round_number >= cfg.federation.rounds


def planned_releases(cfg: ExperimentConfig, client_id: int) -> int:
    """How many charged releases client ``client_id`` makes in a full run (to plan ``privacy.target_epsilon``).

    Round 0's, when :func:`initial_release_is_charged`, plus one after every
    ``privacy.release_every``-th of its :func:`turns` -- except, with ``privacy.final_release: false``
    (:func:`skips_final_release`), a turn in the final round: under ``simultaneous`` every client's last
    turn, under ``alternating`` the last turn of client ``(R - 1) mod K``.

    Args:
        cfg: the experiment config.
        client_id: the client's index, 0..K-1.
    """
    n = turns(cfg, client_id)
    k, rounds = cfg.federation.num_clients, cfg.federation.rounds
    last_in_final = (
        n > 0
        and not cfg.privacy.final_release
        and (cfg.federation.schedule == "simultaneous" or (rounds - 1) % k == client_id)
    )
    released = n // cfg.privacy.release_every - int(last_in_final and releases_after_turn(cfg, n))
    return int(initial_release_is_charged(cfg)) + released
