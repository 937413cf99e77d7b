"""Per-graph DP-SGD for local training on multi-graph data (one graph = one sample)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from .accounting import PrivacyLedger, check_record

if TYPE_CHECKING:
    from ..noise import NoiseSource

LossFn = Callable[[nn.Module, Data], Tensor]


class DPSGDUnsupported(ValueError):
    """DP-SGD was asked for on data where one sample is not one graph."""


def require_per_graph_samples(num_graphs: int, transductive: bool) -> None:
    """Raise :class:`DPSGDUnsupported` unless the data is several independent graphs.

    Args:
        num_graphs: the number of training graphs of the client.
        transductive: True for node classification on one graph.
    """
    if transductive or num_graphs < 2:
        raise DPSGDUnsupported(
            f"privacy.dp_sgd needs a multi-graph dataset (one graph = one sample); got "
            f"{'a transductive single-graph task' if transductive else f'{num_graphs} training graph(s)'}. "
            "Per-node clipping gives no per-node guarantee here: a node's features and label reach its "
            "neighbours' gradients through message passing. Set privacy.dp_sgd to false and protect the "
            "released statistics with the statistics mechanism, or use a multi-graph dataset (e.g. PPI)."
        )


def _gradients_and_losses(
    model: nn.Module, graphs: Sequence[Data], loss_fn: LossFn
) -> tuple[dict[str, Tensor], Tensor]:
    """Per-graph gradients ``{name: [B, *shape]}`` and losses ``[B]`` (see :func:`per_graph_gradients`)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True; nothing to train")
    rows: dict[str, list[Tensor]] = {name: [] for name in params}
    losses = []
    for graph in graphs:
        loss = loss_fn(model, graph)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar loss for one graph, got shape {tuple(loss.shape)}")
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, p), g in zip(params.items(), grads, strict=True):
            rows[name].append(torch.zeros_like(p) if g is None else g)
        losses.append(loss.detach())
    stacked = {
        name: torch.stack(r) if r else p.new_zeros((0, *p.shape))
        for (name, p), r in zip(params.items(), rows.values(), strict=True)
    }
    return stacked, torch.stack(losses) if losses else torch.zeros(0)


def per_graph_gradients(model: nn.Module, graphs: Sequence[Data], loss_fn: LossFn) -> dict[str, Tensor]:
    """The gradient of ``loss_fn(model, graph)`` for every graph separately.

    A plain autograd loop: one forward and one ``torch.autograd.grad`` per
    graph (graphs differ in size, so ``vmap`` does not apply). Parameters that
    a graph's loss does not reach get a zero gradient.

    Args:
        model: the network; its parameters with ``requires_grad`` are differentiated.
        graphs: B graphs (B may be 0).
        loss_fn: ``(model, graph) -> scalar loss`` of one graph.

    Returns:
        ``{parameter name: float [B, *parameter.shape]}``; ``[0, *shape]`` zeros when B = 0.
    """
    return _gradients_and_losses(model, graphs, loss_fn)[0]


class DPSGDTrainer:
    """DP-SGD over a client's graphs with Poisson sampling and Opacus' ``DPOptimizer``.

    Every :meth:`step` samples each graph with probability ``sample_rate``,
    computes per-graph gradients, hands them to ``DPOptimizer`` as
    ``p.grad_sample`` (it clips, adds noise, divides by the expected batch
    size ``max(1, round(q * num_graphs))``) and records ``(sigma, q)`` in
    ``ledger``. An empty batch still steps (noise only) and is recorded.

    Args:
        model: the network to train (set its train/eval mode yourself).
        optimizer: a plain torch optimizer over the model's trainable parameters.
        loss_fn: ``(model, graph) -> scalar loss`` of one graph.
        num_graphs: the number of training graphs (>= 2).
        sample_rate: q in (0, 1], the Poisson inclusion probability of a graph.
        noise_multiplier: sigma > 0; noise std sigma * max_grad_norm on the
            summed clipped gradients. 0 only with ``clip_only=True`` (no
            privacy, recorded as epsilon = infinity).
        max_grad_norm: per-graph L2 clip bound, in gradient units.
        noise: the source of both the Poisson sampling and the gradient noise
            (:class:`fedalign.noise.NoiseSource`: the OS CSPRNG outside tests); the
            noise is drawn on the CPU in float64 and moved to the parameters' device.
        ledger: where each step is recorded.
        clip_only: the explicit no-noise path.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        num_graphs: int,
        sample_rate: float,
        noise_multiplier: float,
        max_grad_norm: float,
        noise: NoiseSource,
        ledger: PrivacyLedger,
        clip_only: bool = False,
    ) -> None:
        require_per_graph_samples(num_graphs, transductive=False)
        check_record(noise_multiplier, sample_rate, 1)
        if clip_only != (noise_multiplier == 0):
            raise ValueError(
                f"noise_multiplier={noise_multiplier} with clip_only={clip_only}: pass a noise_multiplier > 0 "
                "for DP-SGD, or noise_multiplier=0 together with clip_only=True for clipped SGD without privacy"
            )
        if not (0 < max_grad_norm < math.inf):
            raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm}")
        self.model = model
        self.loss_fn = loss_fn
        self.num_graphs = num_graphs
        self.sample_rate = float(sample_rate)
        self.noise_multiplier = float(noise_multiplier)
        self.noise = noise
        self.ledger = ledger
        self.optimizer = _noise_source_optimizer()(
            optimizer,
            noise,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, round(sample_rate * num_graphs)),
            loss_reduction="mean",
        )

    def sample_batch(self) -> list[int]:
        """Poisson sampling: the indices of the graphs drawn this step (possibly none)."""
        return self.noise.bernoulli((self.num_graphs,), self.sample_rate).nonzero().flatten().tolist()

    def step(self, graphs: Sequence[Data]) -> float:
        """One DP-SGD step on a Poisson sample of ``graphs``; returns the batch's mean loss.

        The returned loss (NaN for an empty batch) is not private: use it for
        local logging only.

        Args:
            graphs: the client's training graphs, exactly ``num_graphs`` of them.
        """
        if len(graphs) != self.num_graphs:
            raise ValueError(
                f"got {len(graphs)} graphs but the trainer was built with num_graphs={self.num_graphs}; "
                "the sample rate accounting assumes a fixed dataset"
            )
        batch = [graphs[i] for i in self.sample_batch()]
        self.optimizer.zero_grad()
        grads, losses = _gradients_and_losses(self.model, batch, self.loss_fn)
        for name, p in self.model.named_parameters():
            if name in grads:
                p.grad_sample = grads[name]  # type: ignore[attr-defined]  # Opacus' per-sample attribute
        self.optimizer.step()
        self.ledger.record(self.noise_multiplier, self.sample_rate)
        return float(losses.mean()) if len(batch) else math.nan


@functools.cache
def _noise_source_optimizer() -> type:
    """Opacus' ``DPOptimizer`` whose gradient noise comes from a :class:`NoiseSource` (the OS CSPRNG)
    instead of a ``torch.Generator`` (at most 64 bits of seed; 32 on the CPU). Built on first use:
    opacus is imported only where DP-SGD runs."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class NoiseSourceDPOptimizer(DPOptimizer):
        def __init__(self, optimizer: torch.optim.Optimizer, noise: NoiseSource, **kwargs) -> None:
            super().__init__(optimizer, **kwargs)
            self.noise = noise

        def add_noise(self) -> None:
            """As ``DPOptimizer.add_noise``: N(0, (sigma C)^2) on every summed clipped gradient."""
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                noise = self.noise.normal(
                    p.summed_grad.shape, std, dtype=p.summed_grad.dtype, device=p.summed_grad.device
                )
                p.grad = (p.summed_grad + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

    return NoiseSourceDPOptimizer
