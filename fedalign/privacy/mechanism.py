"""The Gaussian mechanism on released statistics: clip, noise, project back to distributions.

Unit, neighbouring relation, sensitivity and accounting: see :mod:`fedalign.privacy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..config import ExperimentConfig
from ..schedules import planned_releases
from .accounting import DEFAULT_ACCOUNTANT, noise_multiplier_for_epsilon

if TYPE_CHECKING:
    from ..noise import NoiseSource

CLIP_SCOPES = ("release", "layer")


def clip_to_norm(vec: Tensor, clip_norm: float) -> Tensor:
    """``vec`` scaled down, if needed, to L2 norm <= ``clip_norm``.

    Args:
        vec: float tensor of any shape; its norm is taken over all entries.
        clip_norm: C > 0, in the units of ``vec``.

    Returns:
        A tensor of the same shape: ``vec * min(1, C / ||vec||_2)``. A zero
        vector is returned unchanged.
    """
    norm = float(torch.linalg.vector_norm(vec.double()))
    if norm <= clip_norm:
        return vec.clone()
    return vec * (clip_norm / norm)


def project_to_distributions(values: Tensor, target: Tensor, num_nodes: int) -> Tensor:
    """Turn ``values`` [E] into a probability distribution per target node.

    Negatives are clamped to 0, then each node's in-edge group (the edges with
    the same ``target``) is divided by its sum. A group whose entries are all
    zero after clamping becomes uniform, ``1 / in-degree``.

    Args:
        values: float [E].
        target: long [E], the target node v of each edge.
        num_nodes: N > max(target).

    Returns:
        float [E], non-negative, summing to 1 over every node's in-edges.
    """
    clamped = values.clamp(min=0)
    group_sum = scatter(clamped, target, dim=0, dim_size=num_nodes, reduce="sum")[target]
    in_degree = torch.bincount(target, minlength=num_nodes)[target].to(values.dtype)
    uniform = 1.0 / in_degree
    return torch.where(group_sum > 0, clamped / group_sum.clamp(min=torch.finfo(values.dtype).tiny), uniform)


def uniform_baseline(target: Tensor, num_nodes: int) -> Tensor:
    """``1 / in-degree(v)`` for every edge ``u -> v``: the uniform distribution over each node's in-edges,
    float64 [E]. It depends only on the public alignment graph.

    Args:
        target: each edge's target node, long [E].
        num_nodes: N.
    """
    return 1.0 / torch.bincount(target, minlength=num_nodes)[target].double()


class StatisticsMechanism:
    """Clip, noise and post-process one client's structure statistics.

    See the module docstring for the neighbouring relation and the accounting.

    Args:
        clip_norm: C > 0 (finite), the L2 bound of the release (scope
            ``"release"``) or of every layer's vector (scope ``"layer"``), in
            probability units.
        noise_multiplier: sigma > 0; the noise std per coordinate is sigma * C.
            0 only together with ``clip_only=True``.
        clip_scope: ``"release"`` or ``"layer"``.
        num_layers: L, the number of layers released; required for scope
            ``"layer"`` (the sensitivity depends on it), optional otherwise.
            When given, :meth:`release` checks ``len(stats) == L``.
        clip_only: the explicit no-privacy path: clip and post-process, add no
            noise (epsilon = infinity). Requires ``noise_multiplier == 0``.
        nonnegative: the released vectors are non-negative (probabilities: the
            default); then any two clipped releases differ by at most sqrt(2) C,
            not 2 C (:attr:`sensitivity`), and a negative input is refused.
        centre: subtract the public uniform baseline ``1 / in-degree(v)`` from every
            edge before clipping and add it back after the noise (:meth:`release`):
            the clipped norm then carries only how the distributions differ from
            uniform. The centred vector is signed, so the sensitivity is 2 C.
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        clip_scope: str = "release",
        *,
        num_layers: int | None = None,
        clip_only: bool = False,
        nonnegative: bool = True,
        centre: bool = False,
    ) -> None:
        if not (0 < clip_norm < math.inf):
            raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm}")
        if clip_scope not in CLIP_SCOPES:
            raise ValueError(f"unknown clip_scope {clip_scope!r}; choose one of {CLIP_SCOPES}")
        if clip_scope == "layer" and num_layers is None:
            raise ValueError(
                "clip_scope='layer' needs num_layers (the number of released layers L): "
                "the sensitivity is clip_norm * sqrt(2 L) (non-negative releases)"
            )
        if num_layers is not None and num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not (0 <= noise_multiplier < math.inf):
            raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
        if clip_only and noise_multiplier != 0:
            raise ValueError(
                f"clip_only=True adds no noise, but noise_multiplier={noise_multiplier} was given; "
                "pass noise_multiplier=0 for the no-privacy path, or clip_only=False for DP"
            )
        if not clip_only and noise_multiplier == 0:
            raise ValueError(
                "noise_multiplier=0 gives no privacy (epsilon = infinity); pass a noise_multiplier > 0, "
                "or clip_only=True to release clipped statistics without noise on purpose"
            )
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.clip_scope = clip_scope
        self.num_layers = num_layers
        self.clip_only = clip_only
        self.centre = centre
        self.nonnegative = nonnegative and not centre

    @classmethod
    def for_budget(
        cls,
        target_epsilon: float,
        delta: float,
        releases: int,
        clip_norm: float,
        clip_scope: str = "release",
        *,
        num_layers: int | None = None,
        accountant: str = DEFAULT_ACCOUNTANT,
        centre: bool = False,
    ) -> StatisticsMechanism:
        """The mechanism whose ``releases`` releases reach ``target_epsilon`` at ``delta``.

        Solves for the accounting multiplier with
        :func:`noise_multiplier_for_epsilon` and converts it back through the
        sensitivity: ``sigma = z * sensitivity / C``. ``target_epsilon =
        math.inf`` gives the ``clip_only`` mechanism.

        Args:
            target_epsilon: the epsilon to reach, > 0 (``math.inf``: the ``clip_only`` mechanism).
            delta: the delta in (0, 1).
            releases: the number of releases, >= 1.
            clip_norm: C > 0.
            clip_scope: ``"release"`` or ``"layer"``.
            num_layers: L, required for scope ``"layer"``.
            accountant: ``"rdp"`` or ``"prv"``.
            centre: subtract the public uniform baseline before clipping (see the class).
        """
        z = noise_multiplier_for_epsilon(target_epsilon, delta, releases, accountant=accountant)
        if z == 0.0:
            return cls(clip_norm, 0.0, clip_scope, num_layers=num_layers, clip_only=True, centre=centre)
        unit = cls(clip_norm, 1.0, clip_scope, num_layers=num_layers, centre=centre)  # sigma = 1: z = C / sensitivity
        return cls(clip_norm, z / unit.effective_noise_multiplier, clip_scope, num_layers=num_layers, centre=centre)

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, client_id: int, num_layers: int, clip_norm: float | None = None
    ) -> StatisticsMechanism:
        """Client ``client_id``'s mechanism for ``cfg.privacy``: ``noise_multiplier`` as given, or
        solved (:meth:`for_budget`) so that the client's planned releases spend ``target_epsilon``.

        Args:
            cfg: the experiment config (its ``privacy`` section).
            client_id: the client's index (its planned releases).
            num_layers: L, the number of arrays released.
            clip_norm: C where the release fixes it (votes), else None for ``privacy.clip_norm``.
        """
        p = cfg.privacy
        c = p.clip_norm if clip_norm is None else clip_norm
        if p.target_epsilon is not None:
            return cls.for_budget(
                p.target_epsilon,
                p.delta,
                max(1, planned_releases(cfg, client_id)),
                c,
                p.clip_scope,
                num_layers=num_layers,
                accountant=p.accountant,
                centre=p.subtract_baseline,
            )
        assert p.noise_multiplier is not None  # check_config: exactly one of noise_multiplier, target_epsilon
        return cls(
            c,
            p.noise_multiplier,
            p.clip_scope,
            num_layers=num_layers,
            clip_only=p.noise_multiplier == 0,
            centre=p.subtract_baseline,
        )

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one release under replace-one-client.

        Any two vectors x, y in the ball of radius C differ by at most 2C. If both are
        also non-negative (probabilities, and clipping by scaling keeps them so), then
        <x, y> >= 0 and ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y> <= 2 C^2: the bound is
        sqrt(2) C, reached by two releases of norm C on disjoint edges. Scope ``"layer"``
        bounds every layer so, hence a factor sqrt(L) over the release.
        """
        per_ball = (math.sqrt(2.0) if self.nonnegative else 2.0) * self.clip_norm
        if self.clip_scope != "layer":
            return per_ball
        assert self.num_layers is not None  # required for scope layer (checked in __init__)
        return per_ball * math.sqrt(self.num_layers)

    @property
    def effective_noise_multiplier(self) -> float:
        """Noise std / sensitivity: the multiplier to record in a :class:`PrivacyLedger`.

        ``sigma / sqrt(2)`` (scope ``"release"``, non-negative releases), ``sigma / 2``
        (signed), divided by ``sqrt(L)`` for scope ``"layer"``; 0 for ``clip_only``
        (recorded as epsilon = infinity).
        """
        return self.noise_multiplier * self.clip_norm / self.sensitivity

    def _check(self, stats: Sequence[Tensor]) -> None:
        if len(stats) == 0:
            raise ValueError("stats is empty; pass one [E] tensor per released layer")
        if self.num_layers is not None and len(stats) != self.num_layers:
            raise ValueError(
                f"got {len(stats)} layers of statistics but the mechanism was built with "
                f"num_layers={self.num_layers}; build it with the number of layers the client releases"
            )
        num_edges = stats[0].shape
        for layer, s in enumerate(stats):
            if s.dim() != 1 or s.shape != num_edges:
                raise ValueError(
                    f"layer {layer} has shape {tuple(s.shape)}, expected {tuple(num_edges)}: "
                    "every layer must be a 1-D [E] tensor over the same edges"
                )
            if not torch.isfinite(s).all():
                raise ValueError(f"layer {layer} has NaN or infinite entries; fix the statistics before release")
            if self.nonnegative and (s < 0).any():
                raise ValueError(
                    f"layer {layer} has negative entries, but the mechanism's sensitivity assumes "
                    "non-negative releases; build it with nonnegative=False for signed vectors"
                )

    def clip(self, stats: Sequence[Tensor]) -> Tensor:
        """The clipped statistics before noise, float [L, E].

        Scope ``"release"``: the whole [L, E] block has norm <= C; scope
        ``"layer"``: every row has norm <= C.

        Args:
            stats: the raw statistics, one [E] tensor per layer.
        """
        self._check(stats)
        stacked = torch.stack(list(stats))
        if self.clip_scope == "release":
            return clip_to_norm(stacked, self.clip_norm)
        return torch.stack([clip_to_norm(row, self.clip_norm) for row in stacked])

    def noisy_vector(self, stats: Sequence[Tensor], noise: NoiseSource | None) -> Tensor:
        """Clipped statistics plus ``N(0, (sigma C)^2)`` noise, before post-processing: float [L, E].

        Args:
            stats: the raw statistics, one [E] tensor per layer.
            noise: the source of the noise (:class:`fedalign.noise.NoiseSource`: the OS
                CSPRNG); it may be None only for a ``clip_only`` mechanism, which draws nothing.
        """
        return self._noised(self.clip(stats), self.noise_multiplier * self.clip_norm, noise)

    def share(self, stats: Sequence[Tensor], noise: NoiseSource | None, parts: int) -> Tensor:
        """One client's share of a distributed release (:mod:`fedalign.aggregation`): the clipped
        statistics plus ``N(0, (sigma C)^2 / parts)`` noise, float [L, E], not post-processed (the sum of
        ``parts`` honest shares carries noise sigma C; the receiver projects the sum).

        Args:
            stats: the raw statistics, one [E] tensor per layer.
            noise: the source of the noise; None only for a ``clip_only`` mechanism.
            parts: n >= 1, the number of honest shares the sum holds.
        """
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        return self._noised(self.clip(stats), self.noise_multiplier * self.clip_norm / math.sqrt(parts), noise)

    def _noised(self, clipped: Tensor, std: float, noise: NoiseSource | None) -> Tensor:
        if self.clip_only:
            return clipped
        if noise is None:
            raise ValueError("a noisy release needs a noise source; pass fedalign.noise.NoiseSource()")
        return clipped + noise.normal(clipped.shape, std, dtype=clipped.dtype, device=clipped.device)

    def release(
        self,
        stats: Sequence[Tensor],
        target: Tensor,
        num_nodes: int,
        noise: NoiseSource | None,
    ) -> list[Tensor]:
        """What the client shares: L valid distributions per target node.

        Args:
            stats: L float tensors [E], the probabilities ``p_l(u|v)``.
            target: long [E], the target node v of each edge (``edge_index[1]``
                of the public alignment graph).
            num_nodes: N, the number of nodes of the alignment graph.
            noise: the noise source (None only for ``clip_only``).

        Returns:
            L float tensors [E]: non-negative, summing to 1 over each node's
            in-edges (with ``centre``: projected from clip(p - baseline) + noise +
            baseline). Account each call with ``ledger.record(self.effective_noise_multiplier)``.
        """
        baseline = uniform_baseline(target, num_nodes).to(stats[0].dtype) if self.centre else None
        if baseline is not None:
            stats = [s - baseline for s in stats]
        noisy = self.noisy_vector(stats, noise)
        if baseline is not None:
            noisy = noisy + baseline
        if target.shape != noisy.shape[1:]:
            raise ValueError(
                f"target has shape {tuple(target.shape)} but the statistics have {noisy.shape[1]} edges; "
                "pass edge_index[1] of the alignment graph the statistics were computed on"
            )
        if target.numel() and int(target.max()) >= num_nodes:
            raise ValueError(f"target has node id {int(target.max())} >= num_nodes={num_nodes}; pass the graph's N")
        return [project_to_distributions(row, target, num_nodes) for row in noisy]
