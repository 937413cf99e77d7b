"""The speed benchmark on Flower's Simulation Runtime (:mod:`bench.speed`): the same experiment through Ray,
its rounds timed off a growing ``rounds.jsonl``, then in-process rounds right after it for the ratio."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import common

if TYPE_CHECKING:
    from .speed import SpeedSetup
    from .speed_rounds import Rounds


class RoundsWatcher:
    """Polls a growing ``rounds.jsonl`` and notes when each round's last record appears."""

    def __init__(self, path: Path, poll: float = 0.01) -> None:
        self.path, self.poll = path, poll
        self.seen: dict[int, float] = {}  # round -> perf_counter when its (latest) record appeared
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import json

        offset = 0
        while not self._stop.is_set():
            try:
                with self.path.open() as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = ""
            now = time.perf_counter()
            if chunk:
                complete = chunk[: chunk.rfind("\n") + 1]
                offset += len(complete.encode())
                for line in complete.splitlines():
                    row = json.loads(line)
                    self.rows.append(row)
                    self.seen[int(row["round"])] = now
            self._stop.wait(self.poll)

    def __enter__(self) -> RoundsWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(3 * self.poll)
        self._stop.set()
        self._thread.join()


def measure_flower(cfg, k: int, workdir: Path) -> dict:
    """One Flower simulation run of ``cfg``; start-up, per-round and shutdown times."""
    from fedalign_flower.runtime import run_flower_simulation

    os.environ["FEDALIGN_STATE_DIR"] = str(workdir / "client-state")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    run_dir = workdir / "flower-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    load_before = common.load()
    start = time.perf_counter()
    with RoundsWatcher(run_dir / "rounds.jsonl") as watcher:
        _, summary = run_flower_simulation(cfg, run_dir)
        end = time.perf_counter()
    rounds = sorted(watcher.seen)
    done = {r: watcher.seen[r] - start for r in rounds}
    per_round = {r: done[r] - done[r - 1] for r in rounds if r >= 1 and r - 1 in done}
    round0_exchange = max((row["seconds"] for row in watcher.rows if row["round"] == 0), default=float("nan"))
    steady = [per_round[r] for r in per_round if r > k]
    return {
        "status": summary.get("status"),
        "rounds": cfg.federation.rounds,
        "startup_to_round0_done_s": done.get(0),
        "round0_exchange_s": round0_exchange,
        "startup_before_round0_s": done.get(0, float("nan")) - round0_exchange,
        "first_rounds_s": [per_round[r] for r in sorted(per_round) if r <= k],
        "steady_rounds_s": steady,
        "steady_round_median_s": common.median(steady),
        "steady_round_mean_s": common.mean(steady),
        "shutdown_s": end - start - done[rounds[-1]] if rounds else float("nan"),
        "total_s": end - start,
        "trainer_reply_seconds": [row["seconds"] for row in watcher.rows if row["round"] >= 1],
        "mean_test_at_best_val": summary.get("mean_test_at_best_val"),
        "load_before": load_before,
        "load_after": common.load(),
    }


def flower_comparison(run: SpeedSetup, rounds: Rounds, tmp: Path) -> tuple[dict, list[dict]]:
    """The same experiment on Flower's Simulation Runtime, then in-process rounds right after it, under the same
    load, for the Flower / in-process ratio; returns the Flower result and those rounds.

    Args:
        run: the set-up.
        rounds: the in-process rounds so far (the rounds after the Flower run are timed apart).
        tmp: a scratch folder.
    """
    from fedalign.config import config_from_dict

    flower_cfg = config_from_dict(run.raw)
    print("[speed] Flower Simulation Runtime run ...", flush=True)
    try:
        flower_result = measure_flower(flower_cfg, run.k, tmp)
    except Exception as error:  # report, do not lose the in-process figures
        flower_result = {"error": f"{type(error).__name__}: {error}"}
    print(f"[speed] flower: {flower_result}", flush=True)
    first_after = len(rounds.fed_rows)
    for r in range(run.rounds + 1, run.rounds + 1 + max(2 * run.k, 4)):
        rounds.fed_round(r)
    after_rounds = rounds.fed_rows[first_after:]
    rounds.fed_rows = rounds.fed_rows[:first_after]
    return flower_result, after_rounds
