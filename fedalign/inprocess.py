"""The in-process engine: every student in this process, the coordinator calling them directly.

The reference engine: no Flower, the same client and server code, the same run folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .client import Student, build_student
from .config import ExperimentConfig
from .runner import run_experiment
from .server import Reply
from .wire import Statistics, payload_bytes


class InProcessTransport:
    """Runs every client in this process, one :class:`~fedalign.client.Student` each."""

    def __init__(self, clients: dict[int, Student]) -> None:
        self.clients = clients

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "InProcessTransport":
        return cls({i: build_student(cfg, i) for i in range(cfg.federation.num_clients)})

    def _call(self, client: int, fn: Callable[[], tuple[dict, Statistics | None]], received: int) -> Reply:
        start = time.perf_counter()
        metrics, stats = fn()
        return Reply(client, metrics, stats, None, received, payload_bytes(stats), time.perf_counter() - start)

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        def work(i: int):
            stats, release_metrics = self.clients[i].release(round_number)
            return release_metrics, stats

        return {i: self._call(i, lambda i=i: work(i), 0) for i in clients}

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        def work(i: int, peers: dict[int, Statistics]):
            metrics = self.clients[i].train(peers, round_number)
            stats, release_metrics = self.clients[i].release(round_number)
            return {**metrics, **release_metrics}, stats

        return {
            i: self._call(i, lambda i=i, p=peers: work(i, p), sum(payload_bytes(s) for s in peers.values()))
            for i, peers in jobs.items()
        }


def run_inprocess(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False) -> tuple[Path, dict]:
    """Every student in this process (no Flower): the reference engine.

    (Resuming in process restores the server state; the students themselves
    start from fresh weights, as they keep no checkpoints in this engine.)
    """
    return run_experiment(cfg, InProcessTransport.from_config(cfg), "inprocess", run_dir, resume)
