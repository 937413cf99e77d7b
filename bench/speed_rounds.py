"""The timed rounds of :mod:`bench.speed`: fedalign's in-process coordinator and the naive implementation,
interleaved round by round, then (optionally) the same rounds on Flower's Simulation Runtime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import common
from .speed_flower import flower_comparison

if TYPE_CHECKING:
    from .speed import SpeedSetup


class Rounds:
    """Timed rounds of fedalign's in-process coordinator and of the naive implementation, one row per round.

    Args:
        run: the set-up.
        coordinator: fedalign's coordinator over ``run.transport`` (round 0 done).
    """

    def __init__(self, run: SpeedSetup, coordinator) -> None:
        self.run, self.coordinator = run, coordinator
        self.fed_rows: list[dict] = []
        self.naive_rows: list[dict] = []

    def fed_round(self, r: int) -> None:
        """Time fedalign's round ``r``.

        Args:
            r: the round.
        """
        load = common.load()
        t = time.perf_counter()
        records = self.coordinator.run_round(r)
        seconds = time.perf_counter() - t
        rec = records[0]
        timer = self.run.timers[rec.client]
        ev, rel = timer["evaluate"].take(), timer["release"].take()
        train_s = rec.seconds - ev - rel
        self.fed_rows.append(
            {
                "round": r,
                "client": rec.client,
                "seconds": seconds,
                "client_call_s": rec.seconds,
                "epoch_s": train_s / self.run.epochs,
                "evaluate_s": ev,
                "release_s": rel,
                "val_metric": rec.metrics.get("val_metric"),
                "align_loss": rec.metrics.get("align_loss"),
                "load": load,
            }
        )

    def naive_round(self, r: int) -> None:
        """Time the naive implementation's round ``r``.

        Args:
            r: the round.
        """
        load = common.load()
        t = time.perf_counter()
        m = self.run.naive.train_round(r)
        seconds = time.perf_counter() - t
        self.naive_rows.append(
            {
                "round": r,
                "client": m["client"],
                "seconds": seconds,
                "epoch_s": m["train_seconds"] / self.run.epochs,
                "evaluate_s": m["evaluate_seconds"],
                "val_metric": m["val_metric"],
                "align_loss": m["align_loss"],
                "load": load,
            }
        )

    def interleaved(self) -> None:
        """Every round of both, the order alternating round by round."""
        for r in range(1, self.run.rounds + 1):
            for fn in (self.fed_round, self.naive_round) if r % 2 else (self.naive_round, self.fed_round):
                fn(r)
            f, n = self.fed_rows[-1], self.naive_rows[-1]
            print(
                f"[speed] round {r:2d} (student {f['client']}): fedalign {f['seconds']:.3f} s "
                f"(epoch {f['epoch_s']:.3f}), naive {n['seconds']:.3f} s (epoch {n['epoch_s']:.3f}); "
                f"load {f['load']}",
                flush=True,
            )


def time_rounds(run: SpeedSetup, tmp: Path, run_flower: bool) -> tuple[Rounds, float, dict, list[dict]]:
    """Round 0 and the interleaved rounds, then (``run_flower``) the Flower run and in-process rounds right after
    it; returns the rounds, round 0's seconds, the Flower result and the rounds after it.

    Args:
        run: the set-up.
        tmp: a scratch folder.
        run_flower: also run on Flower's Simulation Runtime.
    """
    from fedalign.runner import build_coordinator

    run_dir = tmp / "inprocess-run"
    run_dir.mkdir()
    coordinator, writer = build_coordinator(run.cfg, run.transport, run_dir, "inprocess")
    t = time.perf_counter()
    coordinator.initialise()
    init_s = time.perf_counter() - t
    for timer in run.timers.values():
        timer["evaluate"].take(), timer["release"].take()
    rounds = Rounds(run, coordinator)
    rounds.interleaved()
    flower_result: dict = {"skipped": "not requested (--smoke without --flower, or --no-flower)"}
    after_rounds: list[dict] = []
    if run_flower:
        flower_result, after_rounds = flower_comparison(run, rounds, tmp)
    writer.finish()
    return rounds, init_s, flower_result, after_rounds
