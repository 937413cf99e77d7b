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

DP-FedAvg's calibration (z, the server's noise, the epsilon reported) is
:class:`fedalign.privacy.fedavg.WeightPrivacy`: the servers of both engines use it, not the clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..seeds import derive_seed
from .training import train_full_batch

if TYPE_CHECKING:
    from .student import Student


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
