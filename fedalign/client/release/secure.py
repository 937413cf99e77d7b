"""A client's share of a securely aggregated release, and the peers' distributions from the sum it gets back."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...aggregation import honest_noise_shares
from ...config import ExperimentConfig
from ...noise import STATISTICS_STREAM, noise_source
from ...privacy import project_to_distributions
from ...privacy.mechanism import uniform_baseline
from ...schedules import initial_release_is_charged, skips_final_release
from ...wire import SUM_WITH_OWN, ReleaseLayout, Statistics
from .gaussian import GaussianRelease


class SecureShareRelease(GaussianRelease):
    """``privacy.secure_aggregation``: every release is a share (:mod:`fedalign.aggregation`).

    A charged release is the clipped statistics plus noise of std sigma C / sqrt(n), float64, recorded
    in the ledger with the same multiplier as a release made alone (the sum of n honest shares carries
    sigma C). Round 0's data-free release is the exact statistics, uncharged. A release the budget
    (``max_epsilon``) does not allow is a share of noise alone: it reads no private data, costs
    nothing, and keeps the sum's noise at its planned level; so is the share of the final round under
    ``privacy.final_release: false``, and every charged release of the noise control
    (``privacy.noise_control``), which spends nothing. The last share is kept (and checkpointed):
    the sum a trainer gets back holds it, and :meth:`peer_distributions` subtracts it.
    """

    def __init__(self, *args, parts: int, **kwargs) -> None:
        """Use :meth:`from_config`; the rest as :class:`GaussianRelease`.

        Args:
            *args: :class:`GaussianRelease`'s positional arguments.
            parts: n, the number of honest shares every used sum holds
                (:func:`~fedalign.aggregation.honest_noise_shares`).
            **kwargs: :class:`GaussianRelease`'s keyword arguments.
        """
        super().__init__(*args, **kwargs)
        self.parts = parts
        self.last_share: Statistics | None = None

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        client_id: int,
        num_arrays: int,
        layout: ReleaseLayout,
        clip_norm: float | None = None,
    ) -> SecureShareRelease:
        """As :meth:`GaussianRelease.from_config`, with n from ``federation`` and ``privacy``."""
        base = GaussianRelease.from_config(cfg, client_id, num_arrays, layout, clip_norm)
        p = cfg.privacy
        return cls(
            base.mechanism,
            base.ledger,
            layout,
            base.max_epsilon,
            base.wire_dtype,
            cfg,
            client_id,
            parts=honest_noise_shares(cfg.federation.num_clients, p.max_dropout_share, p.colluders),
        )

    def release(self, statistics, round_number, turn):
        """A share of the statistics (see the class docstring); the share is kept for :meth:`peer_total`."""
        raw = [torch.from_numpy(np.asarray(s)).double() for s in statistics()]
        if self.mechanism.centre:  # privacy.subtract_baseline: every share is a deviation from the public uniform
            raw = [r - self._baseline() for r in raw]
        if turn == 0 and not initial_release_is_charged(self.cfg):
            share = [r.numpy() for r in raw]
            metrics = self._metrics(withheld=False)
        else:
            multiplier = self.mechanism.effective_noise_multiplier
            allowed = (
                self.max_epsilon is None or self.ledger.epsilon_if(multiplier) <= self.max_epsilon
            ) and not skips_final_release(self.cfg, round_number)
            noise = noise_source(self.cfg, self.client_id, round_number, STATISTICS_STREAM)
            control = self.cfg.privacy.noise_control
            if control or not allowed:  # data-free: noise only (the noise control, or a spent budget)
                raw = [torch.zeros_like(r) for r in raw]
            share = [row.numpy() for row in self.mechanism.share(raw, noise, self.parts)]
            if allowed and not control:
                self.ledger.record(multiplier)
            metrics = self._metrics(withheld=not allowed)
        self.last_share = share
        return share, metrics

    def _baseline(self) -> torch.Tensor:
        return uniform_baseline(torch.from_numpy(self.layout.target), self.layout.num_nodes)

    def peer_total(self, peers: dict[int, Statistics]) -> tuple[list[np.ndarray], int] | None:
        """``(sum of the peers' shares, number of peers' shares)`` from the sum of shares (one entry,
        :data:`SUM_WITH_OWN` or :data:`SUM_WITHOUT_OWN`, its last array the number of shares): this
        client's share subtracted when the sum holds it. None when no peer's share is in the sum.

        Args:
            peers: one entry, keyed :data:`SUM_WITH_OWN` or :data:`SUM_WITHOUT_OWN`: the summed arrays, then the
                count.
        """
        ((key, arrays),) = peers.items()
        *summed, count = arrays
        num_peers = int(count[0])
        if key == SUM_WITH_OWN:
            if self.last_share is None:
                raise ValueError(
                    f"client {self.client_id}: the sum holds this client's share, but it has none "
                    "(its checkpoint was lost); it cannot take its own share out"
                )
            summed, num_peers = [s - own for s, own in zip(summed, self.last_share, strict=True)], num_peers - 1
        if num_peers < 1:
            return None
        return [np.asarray(s, dtype=np.float64) for s in summed], num_peers

    def peer_distributions(self, peers: dict[int, Statistics]) -> Statistics | None:
        """The peers' mean distributions from the sum of shares (:meth:`peer_total`), divided by the number
        of peers' shares (the public baseline added back when shares are centred), every group projected to
        a distribution (negatives clamped, renormalised: post-processing). None when no peer's share is in
        the sum.

        Args:
            peers: the sum of shares, as for :meth:`peer_total`.
        """
        total = self.peer_total(peers)
        if total is None:
            return None
        summed, num_peers = total
        target = torch.from_numpy(self.layout.target)
        means = [torch.from_numpy(s) / num_peers for s in summed]
        if self.mechanism.centre:
            means = [m + self._baseline() for m in means]
        return [project_to_distributions(m, target, self.layout.num_nodes).float().numpy() for m in means]

    def state_dict(self) -> dict[str, Any]:
        """As :class:`GaussianRelease`'s, plus the last share."""
        state = super().state_dict()
        if self.last_share is not None:
            state["last_share"] = [torch.from_numpy(s) for s in self.last_share]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As :class:`GaussianRelease`'s, plus the last share."""
        super().load_state_dict(state)
        share = state.get("last_share")
        self.last_share = None if share is None else [t.numpy() for t in share]
