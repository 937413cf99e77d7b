"""Privacy accounting: a client's ledger of releases over Opacus' RDP and PRV accountants."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

ACCOUNTANTS = ("rdp", "prv")  # Opacus' RDPAccountant and PRVAccountant (imported when first used: opacus is slow
# to import, and a client without privacy never needs it)
# PRV by default: a numerically tight upper bound on epsilon; RDP's bound is looser (for 20 Gaussian releases at
# epsilon 8 it needs ~6 % more noise: python -m bench.privacy_snr --accountants).
DEFAULT_ACCOUNTANT = "prv"


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    return {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()


def _epsilon(accountant: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of the composition ``history`` [(sigma, q, steps), ...] at ``delta``."""
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    acc = _accountant(accountant)
    acc.history = [tuple(entry) for entry in history]
    # The PRV of a sample rate of 1 takes log(1 - q) = log(0) on purpose; silence numpy's warning.
    with np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {sorted(ACCOUNTANTS)}")


def check_record(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    """Raise ``ValueError`` unless the arguments make a valid ledger record.

    Args:
        noise_multiplier: sigma, finite and >= 0.
        sample_rate: q in (0, 1].
        steps: an int >= 1.
    """
    if not (0 <= noise_multiplier < math.inf):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
    if not (0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


class PrivacyLedger:
    """Every release a client makes, composed by an Opacus accountant.

    Each record is one Gaussian mechanism with noise multiplier sigma (noise
    std / L2 sensitivity), Poisson sample rate q, repeated ``steps`` times.

    Args:
        accountant: ``"rdp"`` (Opacus ``RDPAccountant``) or ``"prv"``
            (``PRVAccountant``, tighter, slower).
        delta: the delta in (0, 1) at which :meth:`epsilon` is reported.
    """

    def __init__(self, accountant: str = DEFAULT_ACCOUNTANT, delta: float = 1e-5) -> None:
        _check_accountant(accountant)
        if not (0 < delta < 1):
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.accountant = accountant
        self.delta = float(delta)
        self._history: list[tuple[float, float, int]] = []
        self._cached: float | None = None

    @property
    def releases(self) -> int:
        """The number of releases (steps) recorded so far."""
        return sum(steps for _, _, steps in self._history)

    def _extended(self, noise_multiplier: float, sample_rate: float, steps: int) -> list[tuple[float, float, int]]:
        check_record(noise_multiplier, sample_rate, steps)
        history = list(self._history)
        entry = (float(noise_multiplier), float(sample_rate))
        if history and history[-1][:2] == entry:
            history[-1] = (*entry, history[-1][2] + steps)
        else:
            history.append((*entry, steps))
        return history

    def record(self, noise_multiplier: float, sample_rate: float = 1.0, steps: int = 1) -> None:
        """Compose ``steps`` releases with multiplier ``noise_multiplier`` at ``sample_rate``.

        ``noise_multiplier == 0`` (no noise) makes :meth:`epsilon` infinite.

        Args:
            noise_multiplier: sigma, noise std / L2 sensitivity, finite and >= 0.
            sample_rate: q in (0, 1], the Poisson sample rate.
            steps: how many such releases, >= 1.
        """
        self._history = self._extended(noise_multiplier, sample_rate, steps)
        self._cached = None

    def epsilon(self) -> float:
        """Epsilon spent so far at the ledger's delta (0.0 before any record)."""
        if self._cached is None:
            self._cached = _epsilon(self.accountant, self._history, self.delta)
        return self._cached

    def epsilon_if(self, noise_multiplier: float, sample_rate: float = 1.0, steps: int = 1) -> float:
        """Epsilon after one more record with these arguments; records nothing.

        Args:
            noise_multiplier: sigma, noise std / L2 sensitivity.
            sample_rate: q in (0, 1].
            steps: how many releases, >= 1.
        """
        return _epsilon(self.accountant, self._extended(noise_multiplier, sample_rate, steps), self.delta)

    def state_dict(self) -> dict:
        """JSON-serialisable state: ``{"accountant", "delta", "history": [[sigma, q, steps], ...]}``."""
        return {
            "accountant": self.accountant,
            "delta": self.delta,
            "history": [[sigma, q, steps] for sigma, q, steps in self._history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the accountant and delta must match this ledger's.

        Args:
            state: a dict made by :meth:`state_dict` (``accountant``, ``delta``, ``history``).
        """
        missing = {"accountant", "delta", "history"} - set(state)
        if missing:
            raise ValueError(f"ledger state lacks {sorted(missing)}; pass a dict made by PrivacyLedger.state_dict()")
        if state["accountant"] != self.accountant or float(state["delta"]) != self.delta:
            raise ValueError(
                f"ledger state is for accountant={state['accountant']!r}, delta={state['delta']}, "
                f"but this ledger has accountant={self.accountant!r}, delta={self.delta}; "
                "build the ledger with the saved accountant and delta"
            )
        history = []
        for entry in state["history"]:
            sigma, q, steps = entry
            check_record(sigma, q, steps)
            history.append((float(sigma), float(q), int(steps)))
        self._history = history
        self._cached = None


@functools.lru_cache(maxsize=64)  # a binary search over the accountant: solved once per process and budget
def noise_multiplier_for_epsilon(
    target_epsilon: float,
    delta: float,
    releases: int,
    sample_rate: float = 1.0,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """The accounting noise multiplier z for which ``releases`` compositions reach ``target_epsilon``.

    z is noise std / L2 sensitivity (for :class:`StatisticsMechanism` use
    :meth:`StatisticsMechanism.for_budget`, which converts it to sigma).
    Found by Opacus' binary search (``get_noise_multiplier``), so the returned
    z gives an epsilon within 0.01 below the target. ``math.inf`` gives 0.0.

    Args:
        target_epsilon: the epsilon to reach, > 0 (``math.inf``: no privacy).
        delta: the delta in (0, 1) at which epsilon is measured.
        releases: the number of compositions, >= 1.
        sample_rate: q in (0, 1] of each composition.
        accountant: ``"rdp"`` or ``"prv"``.
    """
    _check_accountant(accountant)
    if target_epsilon == math.inf:
        return 0.0
    if not (target_epsilon > 0):
        raise ValueError(f"target_epsilon must be > 0 (or math.inf for no privacy), got {target_epsilon}")
    if not isinstance(releases, int) or releases < 1:
        raise ValueError(f"releases must be an int >= 1, got {releases!r}")
    if not (0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    from opacus.accountants.utils import get_noise_multiplier

    # The binary search probes tiny sigmas whose RDP optimum sits at the largest order; that warning
    # concerns the probes, not the answer.
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=releases,
                accountant=accountant,
            )
        )
