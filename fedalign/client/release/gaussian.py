"""The Gaussian mechanism on every release, accounted in the client's ledger, within its budget."""

from __future__ import annotations

from typing import Any

import torch

from ...config import ExperimentConfig
from ...privacy import PrivacyLedger, StatisticsMechanism
from ...schedules import planned_releases
from ...wire import ReleaseLayout
from ..noise import STATISTICS_STREAM, noise_generator
from .base import ReleasePolicy, on_wire


class GaussianRelease(ReleasePolicy):
    """Clip, noise and project every release (:class:`~fedalign.privacy.StatisticsMechanism`).

    Each release is recorded in :attr:`ledger` and reported with ``epsilon`` (spent after it)
    and ``withheld: 0.0``. A release that would take epsilon past ``max_epsilon`` is not made
    and not recorded: ``(None, {"epsilon": spent so far, "withheld": 1.0})``.
    """

    def __init__(self, mechanism: StatisticsMechanism, ledger: PrivacyLedger, layout: ReleaseLayout,
                 max_epsilon: float | None, wire_dtype: str, cfg: ExperimentConfig, client_id: int) -> None:
        self.mechanism, self.ledger, self.layout = mechanism, ledger, layout
        self.max_epsilon, self.wire_dtype = max_epsilon, wire_dtype
        self.cfg, self.client_id = cfg, client_id

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, client_id: int, num_arrays: int, layout: ReleaseLayout
                    ) -> "GaussianRelease":
        """sigma as given, or solved so that the client's planned releases spend ``target_epsilon``."""
        p = cfg.privacy
        if p.target_epsilon is not None:
            mechanism = StatisticsMechanism.for_budget(
                p.target_epsilon, p.delta, planned_releases(cfg, client_id), p.clip_norm, p.clip_scope,
                num_layers=num_arrays, accountant=p.accountant)
        else:
            mechanism = StatisticsMechanism(p.clip_norm, p.noise_multiplier, p.clip_scope, num_layers=num_arrays,
                                            clip_only=p.noise_multiplier == 0)
        return cls(mechanism, PrivacyLedger(p.accountant, p.delta), layout, p.max_epsilon,
                   cfg.align.statistics_dtype, cfg, client_id)

    def release(self, statistics, round_number):
        multiplier = self.mechanism.effective_noise_multiplier
        if self.max_epsilon is not None and self.ledger.epsilon_if(multiplier) > self.max_epsilon:
            return None, {"epsilon": self.ledger.epsilon(), "withheld": 1.0}
        raw = [torch.from_numpy(s).double() for s in statistics()]
        generator = noise_generator(self.cfg, self.client_id, round_number, STATISTICS_STREAM, torch.device("cpu"))
        noisy = self.mechanism.release(raw, torch.from_numpy(self.layout.target), self.layout.num_nodes, generator)
        self.ledger.record(multiplier)
        return on_wire([n.float().numpy() for n in noisy], self.wire_dtype), \
            {"epsilon": self.ledger.epsilon(), "withheld": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"privacy_ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "privacy_ledger" not in state:
            raise ValueError("checkpoint has no 'privacy_ledger' but this client's privacy config needs one; resuming "
                             "would forget the privacy already spent. Start a new run, or resume with the original config")
        self.ledger.load_state_dict(state["privacy_ledger"])
