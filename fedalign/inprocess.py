"""The in-process engine: every student in this process, the coordinator calling them directly.

The reference engine: no Flower, the same client and server code, the same run folder.
Students answer through :func:`fedalign.client.service.respond`, as in the ClientApp:
with a state folder (``run_inprocess`` uses ``<run folder>/client-state``) each keeps a
checkpoint -- weights, optimiser, privacy ledgers, last reply -- so a resumed run
continues the same students and the privacy they have spent, and its evaluation log; a
student whose checkpoint is missing there (a deleted folder, a run started on the Flower
engine) refuses to release, and the run stops (:mod:`fedalign.ledgers`).
With secure aggregation the shares are summed here directly, without cryptography (every
client lives in this process): the same shares, noise and ledgers as the Flower engines,
where SecAgg+ hides them from the server.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .client import Student, build_student
from .client.checkpoint import Checkpoint, checkpoint_path
from .client.service import EvaluationLog, evaluation_log_path, read_evaluation_logs, respond
from .config import ExperimentConfig
from .runner import run_experiment
from .server import Reply, with_layout_fingerprint
from .wire import PeerSum, Statistics, payload_bytes, private_releases

CLIENT_STATE = "client-state"


class InProcessTransport:
    """Runs every client in this process, one :class:`~fedalign.client.Student` each.

    Args:
        clients: the students, by client id.
        state_dir: where each client keeps its checkpoint and evaluation log (None: in memory only).
    """

    def __init__(self, clients: dict[int, Student], state_dir: Path | None = None) -> None:
        self.clients, self.state_dir = clients, state_dir
        self.checkpoints = {i: Checkpoint(checkpoint_path(state_dir, "", i)) if state_dir else None for i in clients}
        self.logs = {i: EvaluationLog(evaluation_log_path(state_dir, "", i) if state_dir else None) for i in clients}
        self.epsilon_before: dict[int, float] = {}  # set by the coordinator: what each client reported so far

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, state_dir: Path | None = None, restore: bool = False
    ) -> InProcessTransport:
        """The students of ``cfg``; with ``restore``, each continues from its checkpoint in ``state_dir``.

        Args:
            cfg: the experiment config.
            state_dir: where the clients keep their checkpoints and logs, or None (in memory only).
            restore: continue every student from its checkpoint in ``state_dir``.
        """
        transport = cls({i: build_student(cfg, i) for i in range(cfg.federation.num_clients)}, state_dir)
        if restore:
            for i, student in transport.clients.items():
                checkpoint = transport.checkpoints[i]
                assert checkpoint is not None  # restore needs a state_dir
                checkpoint.restore(student)
        return transport

    def evaluation(self) -> list[dict]:
        """Every client's evaluation-log rows (what, with privacy on, its replies did not carry)."""
        if self.state_dir is None:
            return [row for log in self.logs.values() for row in log.rows]
        return read_evaluation_logs([log.path for log in self.logs.values() if log.path is not None])

    def _call(self, client: int, fn: Callable[[], tuple[dict, Statistics | None]], received: int) -> Reply:
        start = time.perf_counter()
        metrics, stats = fn()
        return Reply(client, metrics, stats, None, received, payload_bytes(stats), time.perf_counter() - start)

    def _respond(self, i: int, message_type: str, round_number: int, peers: dict, train: bool):
        return respond(
            self.clients[i],
            f"{message_type}:{round_number}",
            round_number,
            peers,
            train,
            self.checkpoints[i],
            self.logs[i],
            self.epsilon_before.get(i),
        )

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        """Every client in ``clients`` releases (no training): their replies, by client id.

        Args:
            clients: the client ids asked.
            round_number: the round.
        """
        return {
            i: self._call(i, functools.partial(self._respond, i, "query", round_number, {}, False), 0) for i in clients
        }

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        """Every client in ``jobs`` trains a turn on its peers' statistics and releases: their replies, by client id.

        Args:
            jobs: per trainer, its peers' statistics by peer id (or one summed entry).
            round_number: the round.
        """
        return {
            i: self._call(
                i,
                functools.partial(self._respond, i, "train", round_number, peers, True),
                sum(payload_bytes(s) for s in peers.values()),
            )
            for i, peers in jobs.items()
        }

    def query_summed(self, clients: list[int], round_number: int) -> tuple[dict[int, Reply], PeerSum | None]:
        """As :meth:`query`, with the replies' statistics also summed (secure aggregation): ``(replies, sum or
        None)``.

        Args:
            clients: the client ids asked.
            round_number: the round.
        """
        return self._summed(self.query(clients, round_number))

    def train_summed(
        self, jobs: dict[int, dict[int, Statistics]], round_number: int
    ) -> tuple[dict[int, Reply], PeerSum | None]:
        """As :meth:`train`, with the replies' statistics also summed (secure aggregation): ``(replies, sum or
        None)``.

        Args:
            jobs: per trainer, its peers' statistics (the sum of shares).
            round_number: the round.
        """
        return self._summed(self.train(jobs, round_number))

    @staticmethod
    def _summed(replies: dict[int, Reply]) -> tuple[dict[int, Reply], PeerSum | None]:
        """The replies without their shares, and the shares' sum."""
        shares = {i: r.statistics for i, r in replies.items() if r.statistics is not None}
        for reply in replies.values():
            reply.statistics = None
        if not shares:
            return replies, None
        arrays = [sum(layers) for layers in zip(*shares.values(), strict=True)]
        return replies, PeerSum([np.asarray(a, dtype=np.float64) for a in arrays], sorted(shares))


def run_inprocess(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False) -> tuple[Path, dict]:
    """Every student in this process (no Flower): the reference engine.

    The students keep their checkpoints in ``<run folder>/client-state``: ``resume`` continues
    them (weights, optimiser, privacy ledgers) with the server's saved state; a new run starts
    that folder afresh.

    Args:
        cfg: the experiment config.
        run_dir: the run folder, or None for a new one under the outputs folder
            (:func:`~fedalign.outputs.run_dir_for`).
        resume: continue the run in ``run_dir`` from its saved state.

    Returns:
        ``(run folder, summary)``.
    """
    from .alignment import WEIGHT_STRATEGIES
    from .outputs import run_dir_for

    if cfg.align.strategy in WEIGHT_STRATEGIES:  # fedavg / dp-fedavg: weights, not statistics
        from .weight_arms import run_fedavg_inprocess

        return run_fedavg_inprocess(cfg, run_dir, resume)
    cfg = with_layout_fingerprint(cfg)  # federation.public_layout: the server's layout; each student checks it
    run_dir = run_dir_for(cfg, run_dir)
    state_dir = run_dir / CLIENT_STATE
    if not resume:
        shutil.rmtree(state_dir, ignore_errors=True)
    transport = InProcessTransport.from_config(cfg, state_dir, restore=resume)
    evaluation = transport.evaluation if private_releases(cfg) else None
    run_dir, summary = run_experiment(cfg, transport, "inprocess", run_dir, resume, evaluation=evaluation)
    if cfg.align.strategy == "votes" and summary.get("status") == "finished":
        write_vote_label_accuracy(cfg, transport.clients, run_dir)
    return run_dir, summary


def write_vote_label_accuracy(cfg: ExperimentConfig, students: dict[int, Student], run_dir: Path) -> dict:
    """Strategy votes, evaluated by the simulation (which holds every label; no client does): how many query
    nodes each client labelled from its peers' votes and how many of those labels are right. Written to
    ``<run folder>/vote_labels.json``; multiclass, single-graph datasets only.

    Args:
        cfg: the experiment config.
        students: the run's students (with their kept labels, :class:`~fedalign.client.votes.PublicLabels`).
        run_dir: the run folder.
    """
    from .data import load_public_graph, public_node_ids
    from .queries import query_nodes

    dataset, graph = load_public_graph(cfg)
    if dataset.multilabel or not dataset.transductive:
        return {}
    public = public_node_ids(dataset, cfg.partition.public_fraction, cfg.seed)
    queries = query_nodes(cfg.seed, graph.num_nodes, cfg.align.queries)
    truth = dataset.train.graph.y.numpy()[public if queries is None else public[queries]]
    clients = {}
    for cid, student in sorted(students.items()):
        labels = student.public_labels.labels
        labelled = labels >= 0
        correct = int((labels[labelled] == truth[labelled]).sum())
        clients[str(cid)] = {
            "labelled": int(labelled.sum()),
            "correct": correct,
            "accuracy": correct / int(labelled.sum()) if labelled.any() else None,
        }
    accuracies = [c["accuracy"] for c in clients.values() if c["accuracy"] is not None]
    result = {
        "queries": int(len(truth)),
        "mean_labelled": float(np.mean([c["labelled"] for c in clients.values()])),
        "mean_accuracy": float(np.mean(accuracies)) if accuracies else None,
        "clients": clients,
    }
    (run_dir / "vote_labels.json").write_text(json.dumps(result, indent=1))
    return result
