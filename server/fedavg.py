"""The weight-averaging reference arms over Flower: Flower's own ``FedAvg`` and DP wrapper (a thin adapter).

``align.strategy: fedavg`` runs :class:`flwr.serverapp.strategy.FedAvg` (message API) through its own
``start`` loop; ``dp-fedavg`` wraps it in
:class:`flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping`. The formula and the
in-process twin of this arithmetic: :mod:`fedalign.server.fedavg`.

* Uniform weighting: every client's reply carries ``MetricRecord({"fedalign-weight": 1})``, the key
  ``FedAvg`` weights by (``weighted_by_key``), so its weighted mean is the unweighted mean. Clients reply
  with their locally trained weights w_k (what Flower's FedAvg averages and its DP wrapper clips as
  ``w_k - w_global``); that mean is ``w_global + mean(D_k)``.
* Every client every round: ``fraction_train = 1`` and ``min_train_nodes = min_available_nodes = K``.
  No federated evaluation round (``fraction_evaluate = 0``): each client reports its val/test metrics
  after local training in the train reply (a ``ConfigRecord``, so Flower's reply checks, which want the
  same metric keys from every client, never see them), and ``start``'s ``evaluate_fn`` -- called after
  every round -- writes the round log.
* Server-side clipping, not the client-side variant (``DifferentialPrivacyClientSideFixedClipping`` with
  ``fixedclipping_mod``): with central DP the server is trusted with the individual updates either way
  (it sees every client's clipped update), so clipping there changes no guarantee, keeps one client
  code path for both arms, and is the arithmetic the in-process engine runs. The wrapper's noise std is
  ``compute_stdv(z, C, K)``.
* Noise: Flower's wrapper draws its noise with ``np.random.normal`` (numpy's global, seedable PRNG). Here
  its one noise method, ``_add_noise_to_aggregated_arrays``, is overridden to draw the same
  N(0, compute_stdv(z, C, K)^2) from fedalign's :class:`~fedalign.noise.NoiseSource` (the OS
  CSPRNG; seeded with ``privacy.reproducible_noise``), in the in-process engine's order. This relies on
  a protected method of flwr 1.41 (checked by tests/test_fedavg.py); with Flower's own method the
  noise would come from numpy's PRNG, a limitation of the plain Flower path.
* Accounting: Flower's accountant is not used; the epsilon after each round comes from the project's
  (:class:`~fedalign.privacy.fedavg.WeightPrivacy`), with a dp-fedavg round of fewer than K replies
  dropped (the noise is calibrated to K), as in the in-process engine.
* The initial global model: every client's student as built (``query`` round 0); client 0's is used,
  as in-process (with ``model.init: shared`` they are all equal).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import compute_stdv

from fedalign.config import ExperimentConfig
from fedalign.privacy.fedavg import WeightPrivacy
from fedalign.server.fedavg import WeightReply, payload, round_records
from fedalign.server.records import RoundListener, RoundRecord
from fedalign.weight_arms import run_weight_arm
from fedalign_flower.protocol import ARM, ARM_KEY, ARRAYS, CLIENT_METRICS, CONFIG, META, WEIGHT_KEY

log = logging.getLogger("fedalign")


class WeightLog:
    """Each round's replies, per client, turned into the round log after the round (``evaluate_fn``).

    Args:
        cfg: the experiment config.
        privacy: its calibration (epsilon after each round).
        listeners: called with each round's records.
    """

    def __init__(self, cfg: ExperimentConfig, privacy: WeightPrivacy, listeners: list[RoundListener]) -> None:
        self.cfg, self.privacy, self.listeners = cfg, privacy, listeners
        self.replies: dict[int, WeightReply] = {}
        self.errors: list[str] = []
        self.records: list[RoundRecord] = []

    def take(self, replies: list[Message]) -> None:
        """Remember the round's replies (before any clipping)."""
        for msg in replies:
            if msg.has_error():
                self.errors.append(f"error reply from node {msg.metadata.src_node_id}: {msg.error.reason}")
                continue
            client = int(msg.content[META]["partition-id"])
            metrics = {k: float(v) for k, v in msg.content[CLIENT_METRICS].items()}
            self.replies[client] = WeightReply(client, msg.content[ARRAYS].to_numpy_ndarrays(), metrics)

    def close_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """``start``'s ``evaluate_fn``: write round ``server_round``'s records (round 0: nothing yet)."""
        if server_round == 0:
            return None
        for client in range(self.cfg.federation.num_clients):
            if client not in self.replies and self.errors:
                self.replies[client] = WeightReply(client, error="; ".join(self.errors))
        epsilon = self.privacy.epsilon_after(server_round) if self.privacy.private else None
        records = round_records(
            server_round,
            list(range(self.cfg.federation.num_clients)),
            self.replies,
            payload(arrays.to_numpy_ndarrays()),
            epsilon,
        )
        self.records.extend(records)
        for listener in self.listeners:
            listener.on_round(server_round, self.cfg.federation.rounds, records)
        self.replies, self.errors = {}, []
        return None


class UniformFedAvg(FedAvg):
    """Flower's FedAvg over every client, each weighing 1; remembers the replies when no DP wrapper does."""

    def __init__(self, num_clients: int, weight_log: WeightLog | None) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=num_clients,
            min_evaluate_nodes=0,
            min_available_nodes=num_clients,
            weighted_by_key=WEIGHT_KEY,
        )
        self.weight_log = weight_log

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        if self.weight_log is not None:
            self.weight_log.take(replies)
        return super().aggregate_train(server_round, replies)


class SecureNoiseDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP wrapper, its noise drawn from fedalign's NoiseSource."""

    def __init__(self, strategy: FedAvg, privacy: WeightPrivacy, num_clients: int, weight_log: WeightLog) -> None:
        super().__init__(strategy, privacy.noise_multiplier, privacy.clip_norm, num_clients)
        self.privacy, self.weight_log, self.round = privacy, weight_log, 0

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.weight_log.take(replies)
        self.round = server_round
        if sum(not msg.has_error() for msg in replies) < self.num_sampled_clients:
            log.warning(
                "round %d: fewer than %d replies; the noise is calibrated to %d, so the round's update is dropped",
                server_round,
                self.num_sampled_clients,
                self.num_sampled_clients,
            )
            return None, None
        return super().aggregate_train(server_round, replies)

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        """N(0, compute_stdv(z, C, K)^2) on every coordinate, from :meth:`WeightPrivacy.noise`."""
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        draw = self.privacy.noise(self.round)
        noisy = {}
        for key, array in aggregated_arrays.items():
            value = array.numpy()
            noisy[key] = Array(np.asarray(value.astype(np.float64) + draw(value.shape, std), dtype=value.dtype))
        return ArrayRecord(noisy)


def strategy_for(cfg: ExperimentConfig, privacy: WeightPrivacy, weight_log: WeightLog):
    """FedAvg (fedavg), or FedAvg in the DP wrapper (dp-fedavg)."""
    k = cfg.federation.num_clients
    if not privacy.private:
        return UniformFedAvg(k, weight_log)
    return SecureNoiseDP(UniformFedAvg(k, None), privacy, k, weight_log)


def initial_arrays(grid: Grid, cfg: ExperimentConfig, config: ConfigRecord) -> ArrayRecord:
    """Client 0's initial weights (every connected client is asked; the lowest partition id that answers)."""
    nodes = sorted(grid.get_node_ids())
    messages = [
        Message(
            content=RecordDict({CONFIG: ConfigRecord({**dict(config), "server-round": 0})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    answers = {}
    for msg in grid.send_and_receive(messages, timeout=cfg.federation.timeout):
        if not msg.has_error():
            answers[int(msg.content[META]["partition-id"])] = msg.content.array_records[ARRAYS]
    if not answers:
        raise RuntimeError("no client sent its initial weights (see the clients' logs)")
    return answers[min(answers)]


def wait_for_nodes(grid: Grid, cfg: ExperimentConfig) -> None:
    """Block until every client's SuperNode is connected (Flower's sampling would wait forever)."""
    deadline = time.monotonic() + cfg.federation.timeout
    while len(list(grid.get_node_ids())) < cfg.federation.num_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"fewer than federation.num_clients={cfg.federation.num_clients} SuperNodes "
                f"connected within federation.timeout={cfg.federation.timeout}s"
            )
        time.sleep(0.5)


def serve_fedavg(
    grid: Grid, cfg: ExperimentConfig, run_dir: Path | None = None, resume: bool = False
) -> tuple[Path, dict]:
    """Run a fedavg / dp-fedavg experiment through ``grid``; returns the run folder and summary."""

    def drive(listeners: list[RoundListener], privacy: WeightPrivacy) -> None:
        config = ConfigRecord({"experiment": json.dumps(cfg.to_dict()), ARM_KEY: ARM})
        wait_for_nodes(grid, cfg)
        initial = initial_arrays(grid, cfg, config)
        weight_log = WeightLog(cfg, privacy, listeners)
        strategy_for(cfg, privacy, weight_log).start(
            grid,
            initial,
            num_rounds=cfg.federation.rounds,
            timeout=cfg.federation.timeout,
            train_config=config,
            evaluate_fn=weight_log.close_round,
        )
        if weight_log.records and all(r.status == "missing" for r in weight_log.records):
            raise RuntimeError(f"no client completed any round; first error: {weight_log.records[0].error}")

    return run_weight_arm(cfg, "flower", run_dir, resume, drive)
