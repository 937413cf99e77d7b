"""Differential privacy for fedalign: the statistics mechanism, accounting, DP-SGD.

Two mechanisms with two different units of privacy live here.

**1. Gaussian mechanism on the released structure statistics** (client level,
:class:`StatisticsMechanism`). Per round a client releases L vectors of shape
``[E]``: for every edge ``u -> v`` of the shared alignment graph and every
hidden layer l, ``p_l(u|v)``.

* Unit of privacy: the client's *whole* local dataset.
* Neighbouring relation (replace-one-client): two datasets D, D' of the same
  client are neighbours when they differ *arbitrarily* (any features, labels,
  edges, any number of nodes or graphs). Only the following are treated as
  public and are not protected: the alignment graph's ``edge_index`` (hence E
  and each edge's target node, which the post-processing uses), L, the clip
  norm C, the noise multiplier sigma, and the number of releases.
* Clipping: scope ``"release"`` scales the concatenation of all L layers,
  ``[L * E]``, to L2 norm <= C; scope ``"layer"`` scales each layer's ``[E]``
  vector to norm <= C, so the whole release has norm <= C * sqrt(L).
* Sensitivity: both neighbouring releases lie in that ball, so the L2
  sensitivity (norm of their difference) is ``2 C`` for scope ``"release"``
  and ``2 C sqrt(L)`` for scope ``"layer"``
  (:attr:`StatisticsMechanism.sensitivity`).
* Noise: i.i.d. ``N(0, (sigma C)^2)`` on every coordinate (both scopes).
* Accounting: a Gaussian mechanism with noise std s and sensitivity S is
  analysed by the accountants as noise multiplier ``s / S``. Hence the
  multiplier to record is ``sigma C / sensitivity``: ``sigma / 2`` for scope
  ``"release"`` and ``sigma / (2 sqrt(L))`` for scope ``"layer"``
  (:attr:`StatisticsMechanism.effective_noise_multiplier`). Every release is
  recorded with sample rate 1 (the whole dataset is used every time):
  ``ledger.record(mechanism.effective_noise_multiplier)``. Rounds compose
  adaptively, which RDP and PRV accounting both allow.
* Post-processing: negatives are clamped to 0 and each target node's in-edge
  group is renormalised to sum 1 (a group that is all zero becomes uniform).
  It reads only the noisy vector and the public targets, so it keeps the DP
  guarantee. Since renormalisation undoes any positive scaling, C only sets the
  noise scale relative to the clipped signal, not the shape of the output.
* sigma = 0 (no noise, epsilon = infinity) is never a silent default: the
  constructor rejects ``noise_multiplier=0`` unless ``clip_only=True`` is passed,
  which names the no-privacy path explicitly; its effective multiplier is 0 and
  a :class:`PrivacyLedger` records it as epsilon = infinity.
* The guarantee covers the statistics only: anything else a client sends that
  depends on its data (weights, metrics) needs its own accounting. Noise is
  drawn with ``torch.normal``; floating-point attacks on the Gaussian sampler
  (Mironov 2012) are not mitigated.

**2. DP-SGD for local training, per graph** (:class:`DPSGDTrainer`), for
multi-graph datasets such as PPI where each graph is one sample.

* Unit of privacy: one graph. Neighbouring relation: add/remove one graph
  (the relation of Opacus' analysis of the Poisson-subsampled Gaussian).
* Each step samples every graph independently with probability q (Poisson
  sampling, seeded generator), clips each graph's gradient to L2 norm
  ``max_grad_norm``, adds ``N(0, (sigma max_grad_norm)^2)`` noise and records
  ``(sigma, q)`` into a :class:`PrivacyLedger`, which is exactly what the
  RDP/PRV accountants assume.
* Statistics computed by a DP-SGD-trained model are DP by post-processing,
  *provided the statistics read only the trained parameters and public inputs*
  (a public alignment graph). Such a client accounts its releases through its
  DP-SGD ledger and need not add statistic noise. Its guarantee is then per
  graph, weaker than the client-level guarantee of the statistics mechanism.
  If the statistics are computed on the client's private graphs, they are not
  post-processing and need the statistics mechanism on top.
* Single-graph (transductive) node classification is not supported: a node's
  features and label reach its neighbours' gradients through message passing,
  so clipping per-node gradients does not bound one node's influence without
  bounded-degree neighbourhood sampling (Daigavane et al., 2021). See
  :func:`require_per_graph_samples`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

ACCOUNTANTS = {"rdp": RDPAccountant, "prv": PRVAccountant}
CLIP_SCOPES = ("release", "layer")

# --------------------------------------------------------------------------
# 1. Gaussian mechanism on the released statistics


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
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        clip_scope: str = "release",
        *,
        num_layers: int | None = None,
        clip_only: bool = False,
    ) -> None:
        if not (0 < clip_norm < math.inf):
            raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm}")
        if clip_scope not in CLIP_SCOPES:
            raise ValueError(f"unknown clip_scope {clip_scope!r}; choose one of {CLIP_SCOPES}")
        if clip_scope == "layer" and num_layers is None:
            raise ValueError(
                "clip_scope='layer' needs num_layers (the number of released layers L): "
                "the sensitivity is 2 * clip_norm * sqrt(L)"
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
        accountant: str = "rdp",
    ) -> StatisticsMechanism:
        """The mechanism whose ``releases`` releases reach ``target_epsilon`` at ``delta``.

        Solves for the accounting multiplier with
        :func:`noise_multiplier_for_epsilon` and converts it back through the
        sensitivity: ``sigma = z * sensitivity / C``. ``target_epsilon =
        math.inf`` gives the ``clip_only`` mechanism.
        """
        z = noise_multiplier_for_epsilon(target_epsilon, delta, releases, accountant=accountant)
        if z == 0.0:
            return cls(clip_norm, 0.0, clip_scope, num_layers=num_layers, clip_only=True)
        unit = cls(clip_norm, 1.0, clip_scope, num_layers=num_layers)  # sigma = 1 gives z = C / sensitivity
        return cls(clip_norm, z / unit.effective_noise_multiplier, clip_scope, num_layers=num_layers)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one release under replace-one-client: 2C or 2C*sqrt(L)."""
        if self.clip_scope == "layer":
            return 2.0 * self.clip_norm * math.sqrt(self.num_layers)
        return 2.0 * self.clip_norm

    @property
    def effective_noise_multiplier(self) -> float:
        """Noise std / sensitivity: the multiplier to record in a :class:`PrivacyLedger`.

        ``sigma / 2`` (scope ``"release"``), ``sigma / (2 sqrt(L))`` (scope
        ``"layer"``), 0 for ``clip_only`` (recorded as epsilon = infinity).
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

    def clip(self, stats: Sequence[Tensor]) -> Tensor:
        """The clipped statistics before noise, float [L, E].

        Scope ``"release"``: the whole [L, E] block has norm <= C; scope
        ``"layer"``: every row has norm <= C.
        """
        self._check(stats)
        stacked = torch.stack(list(stats))
        if self.clip_scope == "release":
            return clip_to_norm(stacked, self.clip_norm)
        return torch.stack([clip_to_norm(row, self.clip_norm) for row in stacked])

    def noisy_vector(self, stats: Sequence[Tensor], generator: torch.Generator | None) -> Tensor:
        """Clipped statistics plus ``N(0, (sigma C)^2)`` noise, before post-processing: float [L, E].

        ``generator`` is the source of the noise; it may be None only for a
        ``clip_only`` mechanism, which draws nothing.
        """
        clipped = self.clip(stats)
        if self.clip_only:
            return clipped
        if generator is None:
            raise ValueError("a noisy release needs a torch.Generator; pass a seeded generator")
        noise = torch.normal(
            0.0,
            self.noise_multiplier * self.clip_norm,
            size=clipped.shape,
            generator=generator,
            dtype=clipped.dtype,
            device=clipped.device,
        )
        return clipped + noise

    def release(
        self,
        stats: Sequence[Tensor],
        target: Tensor,
        num_nodes: int,
        generator: torch.Generator | None,
    ) -> list[Tensor]:
        """What the client shares: L valid distributions per target node.

        Args:
            stats: L float tensors [E], the probabilities ``p_l(u|v)``.
            target: long [E], the target node v of each edge (``edge_index[1]``
                of the public alignment graph).
            num_nodes: N, the number of nodes of the alignment graph.
            generator: the noise source (None only for ``clip_only``).

        Returns:
            L float tensors [E]: non-negative, summing to 1 over each node's
            in-edges. Account each call with
            ``ledger.record(self.effective_noise_multiplier)``.
        """
        noisy = self.noisy_vector(stats, generator)
        if target.shape != noisy.shape[1:]:
            raise ValueError(
                f"target has shape {tuple(target.shape)} but the statistics have {noisy.shape[1]} edges; "
                "pass edge_index[1] of the alignment graph the statistics were computed on"
            )
        if target.numel() and int(target.max()) >= num_nodes:
            raise ValueError(f"target has node id {int(target.max())} >= num_nodes={num_nodes}; pass the graph's N")
        return [project_to_distributions(row, target, num_nodes) for row in noisy]


# --------------------------------------------------------------------------
# 2. Accounting


class BudgetExceeded(RuntimeError):
    """The next release would take a client's epsilon past its budget."""


def _epsilon(accountant: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of the composition ``history`` [(sigma, q, steps), ...] at ``delta``."""
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    acc = ACCOUNTANTS[accountant]()
    acc.history = [tuple(entry) for entry in history]
    # The PRV of a sample rate of 1 takes log(1 - q) = log(0) on purpose; silence numpy's warning.
    with np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {sorted(ACCOUNTANTS)}")


def _check_record(noise_multiplier: float, sample_rate: float, steps: int) -> None:
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

    def __init__(self, accountant: str = "rdp", delta: float = 1e-5) -> None:
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
        _check_record(noise_multiplier, sample_rate, steps)
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
        """
        self._history = self._extended(noise_multiplier, sample_rate, steps)
        self._cached = None

    def epsilon(self) -> float:
        """Epsilon spent so far at the ledger's delta (0.0 before any record)."""
        if self._cached is None:
            self._cached = _epsilon(self.accountant, self._history, self.delta)
        return self._cached

    def epsilon_if(self, noise_multiplier: float, sample_rate: float = 1.0, steps: int = 1) -> float:
        """Epsilon after one more record with these arguments; records nothing."""
        return _epsilon(self.accountant, self._extended(noise_multiplier, sample_rate, steps), self.delta)

    def check_budget(
        self, max_epsilon: float, noise_multiplier: float, sample_rate: float = 1.0, steps: int = 1
    ) -> float:
        """Raise :class:`BudgetExceeded` if the next release would spend more than ``max_epsilon``.

        Returns the epsilon after that release when it fits (nothing is recorded).
        """
        after = self.epsilon_if(noise_multiplier, sample_rate, steps)
        if after > max_epsilon:
            raise BudgetExceeded(
                f"privacy budget exceeded: epsilon spent so far {self.epsilon():.4g}, "
                f"epsilon after this release {after:.4g} > budget max_epsilon={max_epsilon:.4g} "
                f"(delta={self.delta:g}, {self.accountant} accountant, {self.releases} releases so far); "
                "stop releasing, raise the budget, or increase the noise multiplier"
            )
        return after

    def state_dict(self) -> dict:
        """JSON-serialisable state: ``{"accountant", "delta", "history": [[sigma, q, steps], ...]}``."""
        return {
            "accountant": self.accountant,
            "delta": self.delta,
            "history": [[sigma, q, steps] for sigma, q, steps in self._history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the accountant and delta must match this ledger's."""
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
            _check_record(sigma, q, steps)
            history.append((float(sigma), float(q), int(steps)))
        self._history = history
        self._cached = None


def noise_multiplier_for_epsilon(
    target_epsilon: float,
    delta: float,
    releases: int,
    sample_rate: float = 1.0,
    accountant: str = "rdp",
) -> float:
    """The accounting noise multiplier z for which ``releases`` compositions reach ``target_epsilon``.

    z is noise std / L2 sensitivity (for :class:`StatisticsMechanism` use
    :meth:`StatisticsMechanism.for_budget`, which converts it to sigma).
    Found by Opacus' binary search (``get_noise_multiplier``), so the returned
    z gives an epsilon within 0.01 below the target. ``math.inf`` gives 0.0.
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


# --------------------------------------------------------------------------
# 3. DP-SGD for local training, per graph

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
        for (name, p), g in zip(params.items(), grads):
            rows[name].append(torch.zeros_like(p) if g is None else g)
        losses.append(loss.detach())
    stacked = {
        name: torch.stack(r) if r else p.new_zeros((0, *p.shape)) for (name, p), r in zip(params.items(), rows.values())
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
        generator: seeded source of both the sampling and the noise, on the model's device.
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
        generator: torch.Generator,
        ledger: PrivacyLedger,
        clip_only: bool = False,
    ) -> None:
        require_per_graph_samples(num_graphs, transductive=False)
        _check_record(noise_multiplier, sample_rate, 1)
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
        self.generator = generator
        self.ledger = ledger
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, round(sample_rate * num_graphs)),
            loss_reduction="mean",
            generator=generator,
        )

    def sample_batch(self) -> list[int]:
        """Poisson sampling: the indices of the graphs drawn this step (possibly none)."""
        # Drawn on the generator's device: one generator serves sampling and Opacus' noise, which
        # is drawn on the parameters' device, so a CUDA model needs a CUDA generator.
        mask = torch.rand(self.num_graphs, generator=self.generator, device=self.generator.device) < self.sample_rate
        return mask.nonzero().flatten().tolist()

    def step(self, graphs: Sequence[Data]) -> float:
        """One DP-SGD step on a Poisson sample of ``graphs``; returns the batch's mean loss.

        The returned loss (NaN for an empty batch) is not private: use it for
        local logging only.
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
                p.grad_sample = grads[name]
        self.optimizer.step()
        self.ledger.record(self.noise_multiplier, self.sample_rate)
        return float(losses.mean()) if len(batch) else math.nan
