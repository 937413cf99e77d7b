"""The weight-averaging reference arms on the server: FedAvg and DP-FedAvg (``align.strategy``).

fedalign's own strategies never send weights (:mod:`fedalign.alignment`); these two arms do, as the
yardstick the literature compares against. Every round t = 1..R every client k receives the global
weights w_t (all parameters of the student network), trains ``train.local_epochs`` full-batch epochs
on its task loss alone and returns its update ``D_k = w_k - w_t``. With n the clients that replied
and K the clients asked (all of them: sampling rate 1)::

    fedavg      w_{t+1} = w_t + (1/n) sum_k D_k
    dp-fedavg   w_{t+1} = w_t + (1/n) sum_k clip(D_k, C) + N(0, (z C / K)^2 I)
                clip(D, C) = D * min(1, C / ||D||_2)   (||.||_2 over all parameters together)

The mean is uniform (unweighted). The noise std ``z C / K`` is Flower's ``compute_stdv(z, C, K)``
(McMahan et al., ICLR 2018: noise z C on the sum of the clipped updates). Adding or removing one
client -- its whole dataset -- changes the sum of clipped updates by at most C in L2, so each round is a
Gaussian mechanism with noise multiplier z on sensitivity C, composed over the R rounds (sampling rate
1) by the project's accountant (:func:`fedalign.privacy.fedavg.dp_fedavg_epsilon`). The noise is calibrated
to K replies: a dp-fedavg round with fewer (n < K) drops its update (the global model stays), as
Flower's accounted DP wrapper refuses such a round.

Everything here is numpy on lists of arrays, the noise drawn by a callable the engine passes in
(``noise(shape, std) -> array``; the engines hand in the OS CSPRNG of
:class:`fedalign.noise.NoiseSource`): the in-process engine runs it through
:class:`WeightRounds`, the Flower ServerApp (``server/fedavg.py``) through Flower's own ``FedAvg`` and
``DifferentialPrivacyServerSideFixedClipping``, both logging rounds with :func:`round_records`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .records import RoundListener, RoundRecord

Weights = list[np.ndarray]
Noise = Callable[[tuple[int, ...], float], np.ndarray]

SHARED = "weights"  # the round log's and summary's "shared" for these arms
WEIGHTS_NOTE = (
    "Model weights left the clients: every round each client sent its whole model update (all "
    "parameters) to the server, which averaged them (reference arm {strategy}; fedalign's own "
    "strategies send statistics, never weights)."
)


def shared_note(strategy: str, noise_multiplier: float | None = None, clip_norm: float | None = None) -> str:
    """The plain sentence a run folder of a weight arm carries (``summary.json``'s ``shared_note``).

    Args:
        strategy: ``fedavg`` or ``dp-fedavg``.
        noise_multiplier: z of dp-fedavg (None for fedavg).
        clip_norm: C of dp-fedavg.
    """
    note = WEIGHTS_NOTE.format(strategy=strategy)
    if noise_multiplier is not None:
        note += (
            f" Each update was clipped to L2 norm C = {clip_norm:.4g} and Gaussian noise of std z C with "
            f"z = {noise_multiplier:.4g} was added to their sum: client-level DP of the model updates only; "
            "the val/test metrics in this log were sent without noise."
        )
    return note


def update_norm(update: Weights) -> float:
    """L2 norm of an update over all its arrays together.

    Args:
        update: one client's update, a list of arrays.
    """
    return float(math.sqrt(sum(float(np.sum(np.square(u, dtype=np.float64))) for u in update)))


def clip_update(update: Weights, clip_norm: float) -> Weights:
    """``update * min(1, C / ||update||_2)`` in float64 (Flower's ``clip_inputs_inplace``, not in place).

    Args:
        update: one client's update.
        clip_norm: C > 0.
    """
    norm = update_norm(update)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [np.asarray(u, dtype=np.float64) * scale for u in update]


def noise_std(noise_multiplier: float, clip_norm: float, num_sampled: int) -> float:
    """Noise std per coordinate of the mean: ``z C / K``, Flower's ``compute_stdv``.

    Args:
        noise_multiplier: z.
        clip_norm: C.
        num_sampled: K, the clients asked in the round.
    """
    return float(noise_multiplier * clip_norm / num_sampled)


def mean_update(updates: list[Weights]) -> Weights:
    """The uniform mean of ``updates`` (each a list of arrays of the same shapes), float64.

    Args:
        updates: at least one client's update.
    """
    if not updates:
        raise ValueError("no update to average")
    shapes = [tuple(np.shape(u) for u in update) for update in updates]
    if len(set(shapes)) != 1:
        raise ValueError("the clients' updates have different shapes: fedavg needs the same model on every client")
    return [np.mean([np.asarray(u[i], dtype=np.float64) for u in updates], axis=0) for i in range(len(updates[0]))]


@dataclass
class Averaging:
    """One round's aggregation: ``w + mean(clip(D_k))`` (+ noise).

    Args:
        num_sampled: K, the clients asked each round.
        clip_norm: C (None: fedavg, no clipping).
        noise_multiplier: z (0: no noise).
        noise: round -> that round's draw ``(shape, std) -> array`` of N(0, std^2) (needed when z > 0).
    """

    num_sampled: int
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    noise: Callable[[int], Noise] | None = field(default=None, repr=False)

    @property
    def private(self) -> bool:
        """Whether the aggregation clips (``dp-fedavg``)."""
        return self.clip_norm is not None

    def __call__(self, global_weights: Weights, updates: list[Weights], round_number: int) -> Weights:
        """The next global weights (float32, the shapes of ``global_weights``); unchanged when no update
        came, or, for dp-fedavg, fewer than K (the noise is calibrated to K)."""
        if not updates or (self.private and len(updates) < self.num_sampled):
            return [np.array(w, dtype=np.float32) for w in global_weights]
        clip_norm = self.clip_norm
        if clip_norm is not None:  # private
            updates = [clip_update(u, clip_norm) for u in updates]
        mean = mean_update(updates)
        if clip_norm is not None and self.noise_multiplier > 0:
            std = noise_std(self.noise_multiplier, clip_norm, self.num_sampled)
            if self.noise is None:
                raise ValueError("dp-fedavg with noise needs a noise source (Averaging.noise)")
            draw = self.noise(round_number)
            mean = [m + draw(m.shape, std) for m in mean]
        return [
            (np.asarray(w, dtype=np.float64) + m).astype(np.float32) for w, m in zip(global_weights, mean, strict=True)
        ]


@dataclass
class WeightReply:
    """One client's answer to a weight round: its update and metrics, or an error."""

    client: int
    update: Weights | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None


class WeightTransport(Protocol):
    def train_weights(self, global_weights: Weights, round_number: int) -> dict[int, WeightReply]:
        """Every client loads ``global_weights``, trains, and returns its update.

        Args:
            global_weights: the global model's weights, one array per parameter.
            round_number: the round, 1-based.
        """


def payload(arrays: Weights | None) -> int:
    """Bytes of a list of arrays (0 for None).

    Args:
        arrays: the arrays, or None.
    """
    return int(sum(np.asarray(a).nbytes for a in arrays)) if arrays else 0


def round_records(
    round_number: int, clients: list[int], replies: dict[int, WeightReply], sent_bytes: int, epsilon: float | None
) -> list[RoundRecord]:
    """The round log's records of one weight round (``shared = "weights"``).

    Args:
        round_number: t >= 1.
        clients: the clients asked.
        replies: client -> its reply (a client without one is ``missing``).
        sent_bytes: bytes of the global weights each client received.
        epsilon: the epsilon spent after this round (dp-fedavg), added to every answering client's metrics.
    """
    records = []
    for client in clients:
        reply = replies.get(client)
        if reply is None or reply.error is not None or reply.update is None:
            error = reply.error if reply is not None and reply.error else "no reply before the timeout"
            records.append(RoundRecord(round_number, client, "missing", [], {}, 0, 0, None, error, shared=SHARED))
            continue
        metrics = dict(reply.metrics) if epsilon is None else {**reply.metrics, "epsilon": float(epsilon)}
        peers = [c for c in clients if c != client]
        records.append(
            RoundRecord(
                round_number,
                client,
                "ok",
                peers,
                metrics,
                sent_bytes,
                payload(reply.update),
                reply.seconds,
                shared=SHARED,
            )
        )
    return records


class WeightRounds:
    """Rounds 1..R of a weight arm over a :class:`WeightTransport` (the in-process engine's loop).

    Args:
        rounds: R.
        num_clients: K.
        transport: how the global weights reach the clients.
        initial: w_1, the shared initialisation.
        averaging: the round's aggregation (:class:`Averaging`).
        epsilon_after: rounds -> the epsilon spent after them (None: fedavg, no accounting).
        listeners: called after every round with its records.
    """

    def __init__(
        self,
        rounds: int,
        num_clients: int,
        transport: WeightTransport,
        initial: Weights,
        averaging: Averaging,
        epsilon_after: Callable[[int], float] | None = None,
        listeners: Sequence[RoundListener] = (),
    ) -> None:
        self.rounds, self.clients = rounds, list(range(num_clients))
        self.transport, self.averaging, self.epsilon_after = transport, averaging, epsilon_after
        self.weights = [np.array(w, dtype=np.float32) for w in initial]
        self.listeners = list(listeners)
        self.records: list[RoundRecord] = []

    def run(self) -> list[RoundRecord]:
        """Every round; returns every record. Raises when no client answered in any round."""
        for r in range(1, self.rounds + 1):
            replies = self.transport.train_weights(self.weights, r)
            updates = [
                update
                for c in self.clients
                if c in replies and replies[c].error is None and (update := replies[c].update) is not None
            ]
            self.weights = self.averaging(self.weights, updates, r)
            epsilon = self.epsilon_after(r) if self.epsilon_after is not None else None
            records = round_records(r, self.clients, replies, payload(self.weights), epsilon)
            self.records.extend(records)
            for listener in self.listeners:
                listener.on_round(r, self.rounds, records)
        if self.records and all(r.status == "missing" for r in self.records):
            raise RuntimeError(f"no client completed any round; first error: {self.records[0].error}")
        return self.records
