"""Label-level differential privacy: randomised response on a client's training labels, once, before training.

Unit of privacy: one training label. A multiclass label y among C classes is kept with
probability ``e^eps / (e^eps + C - 1)`` and otherwise replaced by one of the other C - 1
classes uniformly; a multilabel target flips each of its binary labels with probability
``1 / (1 + e^eps)``. Either is eps-DP for that label (the ratio of the probabilities of any
output under two values of the label is at most e^eps). Everything computed afterwards from the
randomised labels -- training, statistics, releases -- is post-processing and costs nothing more.

Not protected: node features, the graph's edges, which nodes a client holds, and the validation
and test labels (they never enter training; the scores computed on them stay on the client).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..noise import NoiseSource


def keep_probability(epsilon: float, num_classes: int) -> float:
    """P(a multiclass label is reported unchanged) under randomised response at ``epsilon``.

    Args:
        epsilon: the per-label epsilon, > 0.
        num_classes: C.
    """
    return math.exp(epsilon) / (math.exp(epsilon) + num_classes - 1)


def flip_probability(epsilon: float) -> float:
    """P(a binary label is flipped) under randomised response at ``epsilon``.

    Args:
        epsilon: the per-label epsilon, > 0.
    """
    return 1.0 / (1.0 + math.exp(epsilon))


def randomised_response(y: Tensor, epsilon: float, num_classes: int, multilabel: bool, noise: NoiseSource) -> Tensor:
    """Randomised labels: ``y`` long [n] (multiclass) or {0,1} float [n, C] (multilabel), same shape,
    on ``y``'s device; every draw from ``noise`` (the OS CSPRNG outside tests).

    Args:
        y: the labels: long [n] (multiclass) or {0,1} float [n, C] (multilabel).
        epsilon: the per-label epsilon, > 0.
        num_classes: C.
        multilabel: whether the labels are multilabel (each flipped independently).
        noise: the source of every draw.
    """
    if not epsilon > 0:
        raise ValueError(f"label epsilon must be > 0, got {epsilon}")
    if multilabel:
        flip = noise.bernoulli(y.shape, flip_probability(epsilon)).to(y.device)
        return torch.where(flip, 1.0 - y, y)
    keep = noise.bernoulli(y.shape, keep_probability(epsilon, num_classes)).to(y.device)
    # another class, uniformly: shift by 1..C-1
    shift = noise.randint(1, num_classes, y.shape).to(y.device)
    return torch.where(keep, y, (y + shift) % num_classes)
