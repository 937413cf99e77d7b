"""The weight-averaging reference arms, ``align.strategy: fedavg | dp-fedavg``, end to end.

The arithmetic is :mod:`fedalign.server.fedavg` (server: mean, clipping, noise -- the formula is there)
and :mod:`fedalign.client.weights` (client: load, train, return the update), with DP-FedAvg's calibration
(:class:`fedalign.privacy.fedavg.WeightPrivacy`).
Here the in-process engine wires them together (:func:`run_fedavg_inprocess`: every student in this
process, the server loop :class:`~fedalign.server.fedavg.WeightRounds`); the Flower ServerApp
(``server/fedavg.py``) runs the same arithmetic through Flower's ``FedAvg`` and
``DifferentialPrivacyServerSideFixedClipping`` and writes its run folder with :func:`run_weight_arm`.

A run folder of these arms says what left the clients: every round-log line carries
``"shared": "weights"``, and ``summary.json`` ``"shared": "weights"`` with a plain sentence
(``shared_note``), and for dp-fedavg ``noise_multiplier``, ``clip_norm`` and ``epsilon`` (the same for
every client, also per client and per round, as the other private arms report it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import Student, build_student
from .client.weights import get_weights, train_update
from .config import ExperimentConfig
from .data import metric_name
from .outputs import ProgressPrinter, RunWriter, run_dir_for
from .privacy.fedavg import WeightPrivacy
from .server.fedavg import SHARED, Averaging, WeightReply, WeightRounds, shared_note
from .server.records import RoundListener


def summary_notes(cfg: ExperimentConfig, privacy: WeightPrivacy) -> dict:
    """The summary keys of a weight arm: ``shared``, ``shared_note`` and, for dp-fedavg, z and C.

    Args:
        cfg: the experiment config.
        privacy: its :class:`WeightPrivacy`.
    """
    notes: dict[str, Any] = {
        "shared": SHARED,
        "shared_note": shared_note(cfg.align.strategy, privacy.noise_multiplier, privacy.clip_norm),
    }
    if privacy.private:
        notes.update(noise_multiplier=privacy.noise_multiplier, clip_norm=privacy.clip_norm)
    return notes


def averaging_for(cfg: ExperimentConfig, privacy: WeightPrivacy) -> Averaging:
    """The server's aggregation for ``cfg`` (fedavg: plain mean; dp-fedavg: clip, mean, noise).

    Args:
        cfg: the experiment config.
        privacy: the arm's client-level DP settings.
    """
    if not privacy.private:
        return Averaging(cfg.federation.num_clients)
    assert privacy.noise_multiplier is not None  # dp-fedavg
    return Averaging(cfg.federation.num_clients, privacy.clip_norm, privacy.noise_multiplier, privacy.noise)


def run_weight_arm(
    cfg: ExperimentConfig,
    engine: str,
    run_dir: str | Path | None,
    resume: bool,
    drive: Callable[[list[RoundListener], WeightPrivacy], None],
) -> tuple[Path, dict]:
    """Write a weight arm's run folder while ``drive(listeners, privacy)`` runs its rounds.

    Args:
        cfg: a config with ``align.strategy`` fedavg or dp-fedavg.
        engine: the engine's name for ``summary.json``.
        run_dir: the run folder (None: a new one under ``output.dir``).
        resume: refused -- these arms keep no server state to continue from.
        drive: runs every round, calling each listener's ``on_round`` with the round's records.

    On a failure ``summary.json`` is still written (status ``failed``) and the error re-raised.
    """
    run_dir = run_dir_for(cfg, run_dir)
    if resume:
        raise ValueError(
            f"cannot resume {run_dir}: align.strategy {cfg.align.strategy} keeps no server state to "
            "continue from; start a new run"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    privacy = WeightPrivacy(cfg)
    writer = RunWriter(run_dir, cfg, metric_name(cfg.data.name), engine)
    writer.extra = summary_notes(cfg, privacy)
    listeners: list[RoundListener] = [writer]
    if cfg.output.progress:
        listeners.append(ProgressPrinter(writer.metric_name))
    try:
        drive(listeners, privacy)
    except BaseException as error:
        writer.finish(error)
        raise
    return run_dir, writer.finish()


class InProcessWeights:
    """Every client's student in this process, answering weight rounds directly (timed for fedavg only:
    a client's time reveals the size of its data).

    Args:
        clients: client id -> its student.
    """

    def __init__(self, clients: dict[int, Student]) -> None:
        self.clients = clients

    def train_weights(self, global_weights: list, round_number: int) -> dict[int, WeightReply]:
        """Each student loads ``global_weights``, trains and returns its update (:func:`train_update`).

        Args:
            global_weights: the global model's weights, one array per parameter.
            round_number: the round, 1-based.
        """
        replies = {}
        for i, student in self.clients.items():
            started = time.perf_counter()
            update, metrics = train_update(student, global_weights, round_number)
            seconds = time.perf_counter() - started if student.cfg.align.strategy == "fedavg" else None
            replies[i] = WeightReply(i, update, metrics, seconds=seconds)  # dp-fedavg: no per-client time
        return replies


def run_fedavg_inprocess(
    cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False
) -> tuple[Path, dict]:
    """A fedavg / dp-fedavg run with every student in this process (no Flower); returns (run folder, summary).

    The initial global model is client 0's student as built: with ``model.init: shared`` (the default)
    every student starts from these very weights.

    Args:
        cfg: the experiment config (strategy ``fedavg`` or ``dp-fedavg``).
        run_dir: the run folder, or None for a new one.
        resume: continue the run saved in ``run_dir``.
    """

    def drive(listeners: list[RoundListener], privacy: WeightPrivacy) -> None:
        transport = InProcessWeights({i: build_student(cfg, i) for i in range(cfg.federation.num_clients)})
        rounds = WeightRounds(
            cfg.federation.rounds,
            cfg.federation.num_clients,
            transport,
            get_weights(transport.clients[0]),
            averaging_for(cfg, privacy),
            privacy.epsilon_after if privacy.private else None,
            listeners,
        )
        rounds.run()

    return run_weight_arm(cfg, "inprocess", run_dir, resume, drive)
