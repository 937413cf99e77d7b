"""The alignment term of a student's loss, with its peers entering only through their summed mass.

For a student with structure log-probabilities ``log s_l`` (layer l, ``[E]``) and
peers k = 1..P whose frozen layer ``q`` is paired with student layer ``l``
(:func:`fedalign.alignment.layer_pairs`), the alignment term is

    (1 / P) sum_k sum_{(l, q)} KL(p_{k,q} || s_l)
      = (1 / (P n)) [ sum_k sum_{(l, q)} sum_e p_{k,q,e} log p_{k,q,e}  -  sum_l sum_e M_{l,e} log s_{l,e} ]

with ``M_l = sum_k sum_{q paired with l} p_{k,q}`` (the peers' summed mass on
student layer l) and n the node count of the mean (N, or the nodes with
in-edges: ``align.node_mean``). The first sum does not depend on the student:
it is computed once per turn, like M (both accumulated in float64), so the
cost of an epoch does not grow with the number of peers. Strategy ``logits``
is the same with one "layer": the class distributions. Outside secure aggregation the server sends M
and the constant already summed (:class:`~fedalign.wire.PeerMass`, :meth:`AlignmentTargets.from_mass`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from ..alignment import mass_pairs
from ..wire import PeerMass, sum_p_log_p


@dataclass
class AlignmentTargets:
    """What a student aligns with during one turn, prepared once from its peers' releases.

    Attributes:
        mass: student layer (1-based) -> the peers' summed probabilities ``[E]`` on it (float64).
        constant: ``sum_k sum_pairs sum_e p log p`` over every peer and pair (nats).
        num_peers: P.
        divisor: n, the node count the per-node sums are averaged over.
    """

    mass: dict[int, Tensor]
    constant: float
    num_peers: int
    divisor: int

    @classmethod
    def from_peers(
        cls, peers: dict[int, list[np.ndarray]], strategy: str, student_depth: int, divisor: int, device: torch.device
    ) -> AlignmentTargets:
        """The targets from the peers' releases.

        Args:
            peers: peer id -> its released probabilities (one array per layer, or the single
                class-distribution array for ``logits``).
            strategy: the alignment strategy (its layer map).
            student_depth: the student's hidden layers L.
            divisor: n.
            device: the device of the targets' tensors.
        """
        mass: dict[int, np.ndarray] = {}
        constant = 0.0
        for stats in peers.values():
            for s_layer, p_layer in mass_pairs(strategy, student_depth, len(stats)):
                p = np.asarray(stats[p_layer - 1], dtype=np.float64)
                constant += sum_p_log_p(p)
                mass[s_layer] = mass[s_layer] + p if s_layer in mass else p.copy()
        return cls({layer: torch.from_numpy(m).to(device) for layer, m in mass.items()}, constant, len(peers), divisor)

    @classmethod
    def from_mass(cls, summed: PeerMass, divisor: int, device: torch.device) -> AlignmentTargets:
        """From the peers' mass as the server summed it (checked: :func:`~fedalign.wire.check_peer_mass`).

        Args:
            summed: one float64 ``[E]`` array per student layer, the constant and the number of peers.
            divisor: n.
            device: where the student trains.
        """
        mass = {
            layer: torch.from_numpy(np.asarray(m, dtype=np.float64)).to(device)
            for layer, m in enumerate(summed.arrays, start=1)
        }
        return cls(mass, summed.constant, summed.num_peers, divisor)

    def loss(self, student_log_probs: list[Tensor]) -> Tensor:
        """The alignment term for the student's log-probabilities (one ``[E]`` tensor per layer), a scalar.

        The cross term is summed in float64: the KL is a small difference of two large sums
        (about N log(degree) each), which float32 would resolve only to ~1e-3 relative.

        Args:
            student_log_probs: the student's log-probabilities, one ``[E]`` tensor per layer (index layer - 1).
        """
        dtype = student_log_probs[0].dtype
        if not self.mass:  # nothing to align with (e.g. no answered vote yet)
            return student_log_probs[0].new_zeros((), dtype=dtype)
        cross = cast(Tensor, sum((m * student_log_probs[layer - 1].double()).sum() for layer, m in self.mass.items()))
        return ((self.constant - cross) / (self.divisor * max(self.num_peers, 1))).to(dtype)
