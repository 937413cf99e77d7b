"""The peers' summed mass, kept by the server per student depth, so that a train request does not grow with K.

A trainer of a summed strategy (:data:`~fedalign.alignment.SUMMED_STRATEGIES`) needs of its peers only
``M_l = sum_k sum_{q paired with l} p_{k,q}`` per student layer l and the constant
``sum_k sum_pairs sum_e p log p`` (:mod:`fedalign.client.objective`). Students of different depths pair
differently (:func:`~fedalign.alignment.mass_pairs`), so :class:`PeerMassTotals` keeps one total per
student depth over every cached release, in float64, updated in O(E) when a client's release replaces its
last (:meth:`PeerMassTotals.replace`). Trainer i's request is the total of its depth minus its own release's
part (:meth:`PeerMassTotals.request_for`): O(E) per request, whatever the number of clients. Subtracting
rounds at the level of float64's precision (about 1e-16 of the total); an entry that rounds below zero
is set to zero.
"""

from __future__ import annotations

import numpy as np

from ..alignment import NODE_STRATEGIES, mass_pairs
from ..wire import MASS_DTYPE, PeerMass, Statistics, sum_p_log_p


class PeerMassTotals:
    """Per student depth, the summed mass and constant of every cached release.

    Args:
        strategy: the alignment strategy (one of :data:`~fedalign.alignment.SUMMED_STRATEGIES`).
        depths: client id -> its student's hidden layers (``model.hidden_layers``, per client).
    """

    def __init__(self, strategy: str, depths: dict[int, int]) -> None:
        self.strategy = strategy
        self.key_of = {c: 1 if strategy in NODE_STRATEGIES else d for c, d in depths.items()}
        self.mass: dict[int, list[np.ndarray]] = {}  # student depth -> one float64 [E] array per student layer
        self.constant: dict[int, float] = {key: 0.0 for key in set(self.key_of.values())}
        self.entropy: dict[int, list[float]] = {}  # cached client -> sum p log p of each of its arrays
        self.clients: set[int] = set()

    def _part(self, key: int, stats: Statistics) -> list[tuple[int, np.ndarray]]:
        """(student layer, peer array) for each pair a release adds to the total of student depth ``key``."""
        return [(layer, stats[q - 1]) for layer, q in mass_pairs(self.strategy, key, len(stats))]

    def _add(self, client: int, stats: Statistics, sign: float) -> None:
        entropy = self.entropy[client]
        for key in self.constant:
            if key not in self.mass:
                self.mass[key] = [np.zeros(stats[0].shape[0], dtype=MASS_DTYPE) for _ in range(key)]
            for layer, p in self._part(key, stats):
                self.mass[key][layer - 1] += sign * p.astype(MASS_DTYPE)
            self.constant[key] += sign * sum(entropy[q - 1] for _, q in mass_pairs(self.strategy, key, len(stats)))

    def replace(self, client: int, old: Statistics | None, new: Statistics) -> None:
        """``client``'s release ``new`` replaces ``old`` (None: it had none cached) in every total: O(E).

        Args:
            client: the client whose cached release changes.
            old: its previous cached release, or None.
            new: its new release (checked: :func:`~fedalign.wire.check_statistics`).
        """
        if old is not None:
            self._add(client, old, -1.0)
        self.entropy[client] = [sum_p_log_p(p) for p in new]
        self._add(client, new, 1.0)
        self.clients.add(client)

    def rebuild(self, cache: dict[int, Statistics]) -> None:
        """Every total afresh, e.g. after a resume.

        Args:
            cache: client -> its cached (checked) release."""
        self.mass, self.entropy, self.clients = {}, {}, set()
        self.constant = dict.fromkeys(self.constant, 0.0)
        for client in sorted(cache):
            self.replace(client, None, cache[client])

    def request_for(self, client: int, cache: dict[int, Statistics]) -> PeerMass | None:
        """What trainer ``client`` gets: its depth's total minus its own cached release's part, or None when
        no other client has a release cached.

        Args:
            client: the trainer.
            cache: the coordinator's cache (the same releases as the totals were made of).
        """
        key = self.key_of[client]
        peers = len(self.clients - {client})
        if peers == 0:
            return None
        mass, constant = [m.copy() for m in self.mass[key]], self.constant[key]
        if client in self.clients:
            own = cache[client]
            for layer, p in self._part(key, own):
                mass[layer - 1] -= p.astype(MASS_DTYPE)
            constant -= sum(self.entropy[client][q - 1] for _, q in mass_pairs(self.strategy, key, len(own)))
            for m in mass:
                np.maximum(m, 0.0, out=m)
        return PeerMass(mass, constant, peers)
