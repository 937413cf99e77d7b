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
"""

from __future__ import annotations

from ..config import ExperimentConfig
from .accounting import PrivacyLedger, noise_multiplier_for_epsilon


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
