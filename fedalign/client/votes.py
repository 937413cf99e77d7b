"""Private voting over clients (strategy ``votes``): PATE's noisy plurality, with the clients as the teachers.

Papernot et al. (ICLR 2017; Scalable PATE, ICLR 2018) release only the noisy argmax of teachers' vote
histograms on a few public queries. Here every client is a teacher and the query set is a public sample
of Q nodes of the alignment graph (:func:`fedalign.queries.query_nodes`).

* **Vote** (:func:`vote_vector`): client k's student's argmax on every query node q, one-hot,
  ``v_k in {0, 1}^{Q x C}`` flattened ``[Q C]`` (multilabel: for each (node, label) the one-hot of
  ``(on, off)``, ``[Q C 2]``). Before its first turn a client abstains (all zeros): its untrained
  student, identical on every client under shared initialisation, would vote unanimously for noise.
* **Histogram** (:func:`peer_histogram`): ``H = sum over peers v_k`` -- the plain sum of the peers'
  votes, or under secure aggregation the sum of the shares minus the client's own share (each share
  ``v_k + N(0, sigma^2 C^2 / n)``, :mod:`fedalign.aggregation`), so ``H`` carries the peers' votes
  plus Gaussian noise of std >= ``sigma C``.
* **Answer** (:func:`answer_queries`, Confident-GNMax's consensus check on the same noisy histogram):
  query q is answered with ``argmax_c H[q, c]`` when ``max_c H[q, c] >= T`` (``align.vote_threshold``)
  and ``> 0``; ``T = 0`` answers every query with a positive top count (an all-abstaining round, whose
  histogram is exactly 0, answers nothing). Thresholding and argmax read only the noisy histogram: post-processing,
  free under the data-independent accounting reported here.
* **Learning** (:class:`PublicLabels`): the answered labels are kept on the client across rounds (a
  later answer replaces an earlier one); each turn the student adds ``a`` times the cross-entropy on
  the labelled query nodes, ``(1 / |A|) sum_{q in A} -log s(y_q | q)`` -- the KL of the one-hot label
  against the student, so it is :class:`~fedalign.client.objective.AlignmentTargets` with the labels'
  one-hot mass, entropy 0, one "peer" and divisor ``|A|``.

**Sensitivity** (unit: the client's whole dataset, replace-one-client). A vote vector has exactly one
1 per query: ``||v|| = sqrt(Q)`` (multilabel: ``sqrt(Q C)``), so clipping at ``C = sqrt(Q)`` is the
identity, and two votes of one client differ by at most ``||v - v'|| <= sqrt(2 Q)`` -- the
mechanism's ``sqrt(2) C`` rule for non-negative releases (:class:`fedalign.privacy.StatisticsMechanism`).
Each charged release is recorded in the client's ledger with multiplier ``sigma / sqrt(2)``, like any
statistics release (:func:`fedalign.wire.release_clip_norm` gives C).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..wire import ReleaseLayout
from .objective import AlignmentTargets


def vote_vector(logits: Tensor, multilabel: bool) -> Tensor:
    """The one-hot votes of a student's ``logits`` [Q, C] on the query nodes, float32 flattened.

    Multiclass: ``[Q C]``, a 1 at each node's argmax class. Multilabel: ``[Q C 2]``, for each
    (node, label) ``(1, 0)`` where the logit is > 0 (label on), else ``(0, 1)``.

    Args:
        logits: the student's logits [Q, C] on the query nodes.
        multilabel: whether the task is multilabel.
    """
    if multilabel:
        on = (logits > 0).float()
        return torch.stack([on, 1 - on], dim=-1).reshape(-1)
    return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).float().reshape(-1)


def answer_queries(histogram: np.ndarray, layout: ReleaseLayout, threshold: float) -> np.ndarray:
    """Answers of a (noisy) vote histogram: int64 ``[groups]``, the plurality member or -1 (not answered).

    Args:
        histogram: float ``[groups * members]``, the summed votes in the release layout.
        layout: the votes layout (groups of ``layout.members`` equal-sized, consecutive entries).
        threshold: T; a group is answered when its top (noisy) count is >= T and > 0.
    """
    counts = np.asarray(histogram, dtype=np.float64).reshape(layout.num_nodes, layout.members)
    top = counts.argmax(axis=1)
    best = counts[np.arange(layout.num_nodes), top]
    answered = (best >= threshold) & (best > 0)
    return np.where(answered, top, -1).astype(np.int64)


def peer_histogram(peers: dict[int, list[np.ndarray]]) -> np.ndarray:
    """``H``: the sum of the peers' plain vote arrays (each peer's release is one array).

    Args:
        peers: each peer's release (a list holding one vote array), by peer id.
    """
    return np.sum([np.asarray(arrays[0], dtype=np.float64) for arrays in peers.values()], axis=0)


class PublicLabels:
    """The answered labels of the query nodes, kept on the client across rounds (post-processing).

    Args:
        layout: the votes layout (``num_nodes`` groups of ``members`` entries).
    """

    def __init__(self, layout: ReleaseLayout) -> None:
        self.layout = layout
        self.labels = np.full(layout.num_nodes, -1, dtype=np.int64)

    def update(self, answers: np.ndarray) -> int:
        """Take every answered group of ``answers`` (earlier labels stay where unanswered); returns how many.

        Args:
            answers: one answer per query node, a class or -1 for unanswered (:func:`answer_queries`).
        """
        answered = answers >= 0
        self.labels[answered] = answers[answered]
        return int(answered.sum())

    @property
    def count(self) -> int:
        """|A|: the labelled groups."""
        return int((self.labels >= 0).sum())

    def targets(self, device: torch.device) -> AlignmentTargets:
        """The cross-entropy on the labelled groups as alignment targets (one-hot mass, entropy 0, divisor |A|).

        Args:
            device: the device of the targets' tensors.
        """
        labelled = self.labels >= 0
        if not labelled.any():
            return AlignmentTargets({}, 0.0, 0, 1)
        mass = np.zeros(self.layout.num_edges, dtype=np.float64)
        groups = np.flatnonzero(labelled)
        mass[groups * self.layout.members + self.labels[groups]] = 1.0
        return AlignmentTargets({1: torch.from_numpy(mass).to(device)}, 0.0, 1, int(labelled.sum()))

    def state_dict(self) -> dict[str, Any]:
        """The answered labels, for the client's checkpoint."""
        return {"public_labels": torch.from_numpy(self.labels.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the answered labels, where the checkpoint holds them.

        Args:
            state: the whole client checkpoint.
        """
        if "public_labels" in state:
            self.labels = state["public_labels"].numpy().astype(np.int64)
