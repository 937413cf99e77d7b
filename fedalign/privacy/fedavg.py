"""Accounting of DP-FedAvg (``align.strategy: dp-fedavg``): client-level DP of the model updates.

Each round the server adds N(0, (z C)^2) to the sum of the K clipped updates (std z C / K on their
mean, :mod:`fedalign.server.fedavg`). Unit of privacy: one client's whole local dataset; neighbouring
relation add/remove one client, under which the sum of updates clipped to L2 norm C moves by at most C.
So every round is one Gaussian mechanism with noise multiplier z on sensitivity C, every client takes
part (sampling rate 1), and R rounds compose adaptively as R records ``(z, q = 1)`` of a
:class:`~fedalign.privacy.PrivacyLedger` (Opacus' PRV accountant by default, RDP with
``privacy.accountant: rdp``, at ``privacy.delta``)::

    epsilon(r) = accountant([(z, 1, r)], delta)          r = rounds so far

With ``privacy.target_epsilon`` z is solved so that the run's R rounds spend exactly that epsilon
(:func:`~fedalign.privacy.noise_multiplier_for_epsilon`, the solver of the statistics mechanism, within
0.01 below the target). The epsilon is the same for every client: each one's data enters every
round's sum once.

:class:`WeightPrivacy` is that calibration as the servers of both engines use it (the in-process one,
:mod:`fedalign.server.fedavg`, and Flower's DP wrapper in the ServerApp): z, the round's noise draws from
:class:`~fedalign.noise.NoiseSource` (the OS CSPRNG; seeded with ``privacy.reproducible_noise``, which
reports epsilon = inf) and the epsilon reported after each round. The server adds the noise
(server-side fixed clipping): it is trusted with the updates, as in McMahan et al. (ICLR 2018).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import ExperimentConfig
from ..noise import noise_source
from .accounting import PrivacyLedger, noise_multiplier_for_epsilon

log = logging.getLogger("fedalign")

WEIGHT_NOISE_STREAM = 4  # the server's noise on the mean update (streams 1-3: fedalign.noise)


def dp_fedavg_noise_multiplier(cfg: ExperimentConfig) -> float:
    """z of a dp-fedavg run: ``privacy.noise_multiplier``, or solved from ``privacy.target_epsilon``.

    Args:
        cfg: a config with ``align.strategy: dp-fedavg``; R is ``federation.rounds``.
    """
    p = cfg.privacy
    if p.noise_multiplier is not None:
        return float(p.noise_multiplier)
    if p.target_epsilon is None:
        raise ValueError("dp-fedavg needs privacy.noise_multiplier or privacy.target_epsilon")
    return noise_multiplier_for_epsilon(float(p.target_epsilon), p.delta, cfg.federation.rounds, 1.0, p.accountant)


def dp_fedavg_epsilon(cfg: ExperimentConfig, rounds: int, noise_multiplier: float | None = None) -> float:
    """Epsilon spent after ``rounds`` rounds of dp-fedavg (0 before the first; inf when z = 0).

    Args:
        cfg: the experiment config (``privacy.accountant``, ``privacy.delta``).
        rounds: rounds completed, r >= 0.
        noise_multiplier: z (None: :func:`dp_fedavg_noise_multiplier`).
    """
    z = dp_fedavg_noise_multiplier(cfg) if noise_multiplier is None else noise_multiplier
    ledger = PrivacyLedger(cfg.privacy.accountant, cfg.privacy.delta)
    if rounds > 0:
        ledger.record(z, 1.0, rounds)
    return ledger.epsilon()


@dataclass
class WeightPrivacy:
    """DP-FedAvg's calibration for ``cfg`` (fedavg: no noise, no epsilon).

    Args:
        cfg: the experiment config.
    """

    cfg: ExperimentConfig
    _warned: bool = False

    @property
    def private(self) -> bool:
        """Whether the arm adds client-level DP (``dp-fedavg``)."""
        return self.cfg.align.strategy == "dp-fedavg"

    @property
    def noise_multiplier(self) -> float | None:
        """z (None for fedavg)."""
        return dp_fedavg_noise_multiplier(self.cfg) if self.private else None

    @property
    def clip_norm(self) -> float | None:
        """C (None for fedavg)."""
        return float(self.cfg.privacy.clip_norm) if self.private else None

    def noise(self, round_number: int) -> Callable[[tuple[int, ...], float], np.ndarray]:
        """Round ``round_number``'s draw ``(shape, std) -> float64 array`` of N(0, std^2): from the OS CSPRNG,
        or a stream seeded by (seed, K, round, stream) with ``privacy.reproducible_noise``.

        Args:
            round_number: the round the noise is for.
        """
        source = noise_source(self.cfg, self.cfg.federation.num_clients, round_number, WEIGHT_NOISE_STREAM)
        return lambda shape, std: source.normal(tuple(shape), std).numpy()

    def epsilon_after(self, rounds: int) -> float:
        """The epsilon every client has spent after ``rounds`` rounds (inf with ``privacy.reproducible_noise``).

        Args:
            rounds: the number of rounds completed.
        """
        epsilon = dp_fedavg_epsilon(self.cfg, rounds, self.noise_multiplier)
        if self.cfg.privacy.reproducible_noise and epsilon != 0:  # reported_epsilon's rule, said once per run
            if not self._warned:
                log.warning(
                    "dp-fedavg: privacy.reproducible_noise is on: the server's noise can be regenerated "
                    "from the config, so every round reports epsilon = inf (%.4g holds only for secret "
                    "noise); for tests only",
                    epsilon,
                )
                self._warned = True
            return math.inf
        return epsilon
