"""One securely aggregated round over Flower: Flower's own SecAgg+ workflow, driven for fedalign's shares.

Flower 1.41's :class:`~flwr.server.workflow.SecAggPlusWorkflow` runs on a ``LegacyContext`` and takes
its clients and instructions from a Strategy's ``configure_fit``. :class:`_ShareRound` is that
strategy: it hands each node its FitIns (the request, :func:`~fedalign_flower.protocol.encode_share_request`)
and keeps what ``aggregate_fit`` is given -- the sum the workflow unmasked and each contributor's
FitRes, whose parameters the workflow has already replaced by the aggregate. The server never holds
an individual share: what it receives from a client in stage 2 is the share quantised and masked by
``secaggplus_mod``; the client app drops the share itself from the reply before it leaves.

The workflow's parameters for fedalign's shares (:func:`workflow_for`): every client is every other's
neighbour (``num_shares`` = all, i.e. SecAgg with SecAgg+'s dropout recovery); the reconstruction
threshold is the fewest contributors a sum may have (:func:`~fedalign.aggregation.minimum_contributors`),
so a round with more dropouts than ``privacy.max_dropout_share`` cannot be unmasked (each client's
``secaggplus_mod`` refuses to send shares below the threshold); every share weighs 1 (``max_weight`` 1,
``num_examples`` 1); the fixed-point range is :func:`~fedalign.aggregation.share_range`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import FitIns, FitRes, parameters_to_ndarrays
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from fedalign.aggregation import honest_noise_shares, minimum_contributors, share_range
from fedalign.alignment import released_arrays
from fedalign.config import ExperimentConfig
from fedalign.privacy import StatisticsMechanism

log = logging.getLogger("fedalign")

MODULUS_BITS = 32  # SecAgg+'s mask modulus, 2**32 (its largest)


def quantization_bits(num_clients: int) -> int:
    """Bits per quantised coordinate: 22 (SecAgg+'s default), fewer when K shares could overflow 2**32."""
    return min(22, MODULUS_BITS - 1 - math.ceil(math.log2(num_clients + 1)))


def workflow_for(cfg: ExperimentConfig, clip_norm: float | None = None) -> SecAggPlusWorkflow:
    """The SecAgg+ workflow for ``cfg``'s shares (see the module docstring); ``clip_norm``: C of a release
    (:func:`~fedalign.wire.release_clip_norm`; None: ``privacy.clip_norm``). A vote coordinate is 0 or 1, so
    votes' shares are encoded on [-R, R] with R = 1 + 9.5 x the share's noise std (a hostile client's share can
    then move each count by at most R; secure aggregation gives the sum no other integrity)."""
    k, p = cfg.federation.num_clients, cfg.privacy
    c = p.clip_norm if clip_norm is None else clip_norm
    return SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=max(2, minimum_contributors(k, p.max_dropout_share)),
        max_weight=1.0,
        clipping_range=share_range(1.0 if cfg.align.strategy == "votes" else c, share_noise_std(cfg, c)),
        quantization_range=2 ** quantization_bits(k),
        modulus_range=2**MODULUS_BITS,
        timeout=cfg.federation.timeout,
    )


def share_noise_std(cfg: ExperimentConfig, clip_norm: float | None = None) -> float:
    """The largest noise std of a client's share, sigma C / sqrt(n), sigma as the clients solve it
    (``clip_norm``: C of a release; None: ``privacy.clip_norm``)."""
    p, k = cfg.privacy, cfg.federation.num_clients
    c = p.clip_norm if clip_norm is None else clip_norm
    layers = released_arrays(cfg.align.strategy, cfg.model.for_client(0)["hidden_layers"])
    sigma = max(StatisticsMechanism.from_config(cfg, i, layers, c).noise_multiplier for i in range(k))
    return sigma * c / math.sqrt(honest_noise_shares(k, p.max_dropout_share, p.colluders))


class _ShareRound(Strategy):
    """The Strategy a SecAgg+ workflow asks for one round: fixed FitIns per node; keeps the aggregate."""

    def __init__(self, grid: Grid, fitins: dict[int, FitIns]) -> None:
        self.grid, self.fitins = grid, fitins
        self.results: list[tuple[GridClientProxy, FitRes]] | None = None
        self.failures: list = []

    def configure_fit(self, server_round, parameters, client_manager):
        return [(GridClientProxy(node, self.grid, 0), ins) for node, ins in self.fitins.items()]

    def aggregate_fit(self, server_round, results, failures):
        self.results, self.failures = list(results), list(failures)
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_round(
    grid: Grid, cfg: ExperimentConfig, round_number: int, fitins: dict[int, FitIns], clip_norm: float | None = None
) -> tuple[list[np.ndarray] | None, list[tuple[int, FitRes]], list[str]]:
    """Run one SecAgg+ round: ``(sum of the contributors' shares or None, [(node, FitRes)] of the
    contributors, errors)``. The FitRes carry the clients' metrics; their parameters are the aggregate.
    ``clip_norm``: C of a release (:func:`workflow_for`)."""
    strategy = _ShareRound(grid, fitins)
    state = RecordDict(
        {MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: round_number}), MAIN_PARAMS_RECORD: ArrayRecord()}
    )
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}), strategy=strategy)
    workflow_for(cfg, clip_norm)(grid, context)
    if strategy.results is None:
        return (
            None,
            [],
            [f"secure aggregation halted in round {round_number} (too few clients answered; see the server log)"],
        )
    errors = [str(f) for f in strategy.failures]
    contributors = [(proxy.node_id, res) for proxy, res in strategy.results]
    if not contributors:
        return None, [], errors
    mean = parameters_to_ndarrays(contributors[0][1].parameters)  # the workflow's weighted mean, weights 1
    return [np.asarray(m, dtype=np.float64) * len(contributors) for m in mean], contributors, errors
