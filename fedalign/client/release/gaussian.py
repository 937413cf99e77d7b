"""The Gaussian mechanism on every release, accounted in the client's ledger, within its budget."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ...config import ExperimentConfig
from ...noise import STATISTICS_STREAM, noise_source, reported_epsilon
from ...privacy import PrivacyLedger, StatisticsMechanism
from ...schedules import initial_release_is_charged, planned_releases, releases_after_turn, skips_final_release
from ...wire import ReleaseLayout
from .base import ReleaseMetrics, ReleasePolicy, on_wire

log = logging.getLogger("fedalign")


class GaussianRelease(ReleasePolicy):
    """Clip, noise and project every release (:class:`~fedalign.privacy.StatisticsMechanism`).

    Each release is recorded in :attr:`ledger` and reported with ``epsilon`` (spent after it)
    and ``withheld: 0.0``. Not made, and not recorded -- ``(None, {"epsilon": spent so far,
    "withheld": 1.0})`` -- is a release that would take epsilon past ``max_epsilon``, one
    after a turn that ``privacy.release_every`` skips, or one in the final round under
    ``privacy.final_release: false``. Round 0's release, made before any training on a public alignment
    graph, reads no private data: it goes out exact and uncharged
    (:func:`~fedalign.schedules.initial_release_is_charged`). Under ``privacy.noise_control`` every charged
    release is made from zeros (pure noise of the same sigma) and is not recorded.
    """

    def __init__(
        self,
        mechanism: StatisticsMechanism,
        ledger: PrivacyLedger,
        layout: ReleaseLayout,
        max_epsilon: float | None,
        wire_dtype: str,
        cfg: ExperimentConfig,
        client_id: int,
    ) -> None:
        """Use :meth:`from_config` to build one from the experiment config.

        Args:
            mechanism: clips and noises each release.
            ledger: records every charged release.
            layout: the release layout (its targets and node count go to the mechanism's projection).
            max_epsilon: the epsilon no release may take the client past, or None for no cap.
            wire_dtype: ``"float32"`` or ``"float16"``.
            cfg: the experiment config.
            client_id: the client's index.
        """
        self.mechanism, self.ledger, self.layout = mechanism, ledger, layout
        self.max_epsilon, self.wire_dtype = max_epsilon, wire_dtype
        self.cfg, self.client_id = cfg, client_id

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        client_id: int,
        num_arrays: int,
        layout: ReleaseLayout,
        clip_norm: float | None = None,
    ) -> GaussianRelease:
        """sigma as given, or solved so that the client's planned releases spend ``target_epsilon``.

        Args:
            cfg: the experiment config (its ``privacy`` section).
            client_id: the client's index.
            num_arrays: how many arrays one release holds.
            layout: the release layout.
            clip_norm: C when the release fixes it (votes: :func:`~fedalign.wire.release_clip_norm`),
                else None for ``privacy.clip_norm``.
        """
        p = cfg.privacy
        mechanism = StatisticsMechanism.from_config(cfg, client_id, num_arrays, clip_norm)
        return cls(
            mechanism,
            PrivacyLedger(p.accountant, p.delta),
            layout,
            p.max_epsilon,
            cfg.align.statistics_dtype,
            cfg,
            client_id,
        )

    def release(self, statistics, round_number, turn):
        """Clip, noise and project the statistics, or withhold them (see the class docstring)."""
        if turn == 0 and not initial_release_is_charged(self.cfg):  # data-free: exact and free
            return on_wire(statistics(), self.wire_dtype), self._metrics(withheld=False)
        multiplier = self.mechanism.effective_noise_multiplier
        skipped = turn > 0 and (not releases_after_turn(self.cfg, turn) or skips_final_release(self.cfg, round_number))
        if skipped or (self.max_epsilon is not None and self.ledger.epsilon_if(multiplier) > self.max_epsilon):
            return None, self._metrics(withheld=True)
        raw = [torch.from_numpy(s).double() for s in statistics()]
        if self.cfg.privacy.noise_control:  # pure noise: reads no private data, spends nothing
            raw = [torch.zeros_like(r) for r in raw]
        noise = noise_source(self.cfg, self.client_id, round_number, STATISTICS_STREAM)
        noisy = self.mechanism.release(raw, torch.from_numpy(self.layout.target), self.layout.num_nodes, noise)
        if not self.cfg.privacy.noise_control:
            self.ledger.record(multiplier)
        return on_wire([n.float().numpy() for n in noisy], self.wire_dtype), self._metrics(withheld=False)

    def _metrics(self, withheld: bool) -> ReleaseMetrics:
        """What every release reports: the epsilon spent so far (:func:`reported_epsilon`) and ``withheld``."""
        return {
            "epsilon": reported_epsilon(self.cfg, self.client_id, self.ledger.epsilon()),
            "withheld": 1.0 if withheld else 0.0,
        }

    def state_dict(self) -> dict[str, Any]:
        """The privacy ledger and the noise multiplier sigma."""
        return {"privacy_ledger": self.ledger.state_dict(), "noise_multiplier": self.mechanism.noise_multiplier}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the ledger, and keep the sigma the earlier releases were made with.

        A run extended on resume (more rounds) re-solves ``target_epsilon`` for more releases;
        switching sigma mid-run would not give that epsilon (the earlier releases stay charged at
        the old sigma), so the old sigma stays and the larger epsilon the extension will reach
        is announced as a warning (and reported with every release, as always).

        Args:
            state: the whole client checkpoint (needs ``privacy_ledger``).
        """
        if "privacy_ledger" not in state:
            raise ValueError(
                "checkpoint has no 'privacy_ledger' but this client's privacy config needs one; resuming "
                "would forget the privacy already spent. Start a new run, or resume with the original "
                "config"
            )
        self.ledger.load_state_dict(state["privacy_ledger"])
        saved = state.get("noise_multiplier", self.mechanism.noise_multiplier)
        if saved != self.mechanism.noise_multiplier:
            m = self.mechanism
            self.mechanism = StatisticsMechanism(
                m.clip_norm, saved, m.clip_scope, num_layers=m.num_layers, clip_only=saved == 0, centre=m.centre
            )
            self._announce_extension()

    def _announce_extension(self) -> None:
        planned = planned_releases(self.cfg, self.client_id)
        remaining = planned - self.ledger.releases
        projected = (
            self.ledger.epsilon_if(self.mechanism.effective_noise_multiplier, steps=remaining)
            if remaining > 0
            else self.ledger.epsilon()
        )
        log.warning(
            "client %d: the run was extended after %d releases; sigma stays %.4g (the earlier releases were "
            "made with it), so its %d planned releases spend epsilon %.4g, above privacy.target_epsilon=%g",
            self.client_id,
            self.ledger.releases,
            self.mechanism.noise_multiplier,
            planned,
            projected,
            self.cfg.privacy.target_epsilon,
        )
