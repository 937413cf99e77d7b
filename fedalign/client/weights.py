"""A student's weights for the weight-averaging reference arms (``align.strategy: fedavg | dp-fedavg``).

fedalign's own strategies never let weights leave a client; these arms do (:mod:`fedalign.server.fedavg`
has the formula). One round on client k::

    w_k <- w_global                          (all parameters, in ``named_parameters`` order)
    train.local_epochs full-batch epochs on the task loss alone (no alignment term), Adam state reset
    return D_k = w_k - w_global, and val/test metrics of the locally trained model

The optimiser's state is reset each round (the round starts from the server's weights, not from the
client's last ones), so a client keeps no state between rounds and both engines -- the in-process one
and the Flower ClientApp, which rebuilds its student for every message -- run the same arithmetic.
The round's torch seed is the one :meth:`~fedalign.client.Student.train` uses (seed, client, round).

:class:`WeightPrivacy` is DP-FedAvg's calibration as the servers of both engines use it: z
(:mod:`fedalign.privacy.fedavg`), the noise draws from :class:`~fedalign.client.noise.NoiseSource` (the
OS CSPRNG; seeded with ``privacy.reproducible_noise``, which reports epsilon = inf) and the epsilon
reported after each round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import ExperimentConfig
from ..privacy.fedavg import dp_fedavg_epsilon, dp_fedavg_noise_multiplier
from ..seeds import derive_seed
from .noise import noise_source
from .training import train_full_batch

if TYPE_CHECKING:
    from .student import Student

log = logging.getLogger("fedalign")

WEIGHT_NOISE_STREAM = 4  # the server's noise on the mean update (streams 1-3: fedalign.client.noise)


def weight_names(student: Student) -> list[str]:
    """The names of the student network's parameters, in the order of :func:`get_weights`.

    Args:
        student: the client's student.
    """
    return [name for name, _ in student.model.named_parameters()]


def get_weights(student: Student) -> list[np.ndarray]:
    """Every parameter of the student network as a float32 numpy array (copies, on the CPU).

    Args:
        student: the client's student.
    """
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in student.model.parameters()]


@torch.no_grad()
def set_weights(student: Student, weights: list[np.ndarray]) -> None:
    """Load ``weights`` (the order and shapes of :func:`get_weights`) into the student network.

    Args:
        student: the client's student.
        weights: one array per parameter.
    """
    params = list(student.model.parameters())
    if len(weights) != len(params) or any(
        tuple(np.shape(w)) != tuple(p.shape) for w, p in zip(weights, params, strict=True)
    ):
        raise ValueError(
            f"client {student.client_id}: the global weights do not fit this student network "
            "(fedavg needs the same model on every client)"
        )
    for p, w in zip(params, weights, strict=True):
        p.copy_(torch.as_tensor(np.asarray(w), dtype=p.dtype, device=p.device))


def train_update(
    student: Student, global_weights: list[np.ndarray], round_number: int
) -> tuple[list[np.ndarray], dict[str, float]]:
    """One weight round on this client: ``(D_k = w_k - w_global, metrics)``.

    Args:
        student: the client's student (its weights are replaced by ``global_weights``).
        global_weights: w_global, as :func:`get_weights` orders them.
        round_number: t >= 1 (seeds the round's torch randomness, as :meth:`Student.train` does).

    Returns:
        the update (float32 arrays) and ``task_loss`` of the last epoch with :meth:`Student.evaluate`'s
        ``val_metric``, ``test_metric``, ``val_loss`` after local training.
    """
    set_weights(student, global_weights)
    student.optimizer.state.clear()  # Adam starts afresh from the server's weights
    torch.manual_seed(derive_seed(student.cfg.seed, student.client_id, round_number))
    metrics = train_full_batch(student, None, False)  # task loss only: no alignment targets
    metrics.pop("align_loss", None)
    trained = get_weights(student)
    update = [
        (w - np.asarray(g, dtype=np.float32)).astype(np.float32) for w, g in zip(trained, global_weights, strict=True)
    ]
    return update, {**metrics, **student.evaluate()}


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
