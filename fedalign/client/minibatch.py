"""The alignment term estimated on a batch of target nodes of the alignment graph (``train.batch_size``).

The full-batch term (:class:`~fedalign.client.objective.AlignmentTargets`) is, with P peers, the
peers' summed mass ``M_l`` [E] on student layer l, the student's ``log s_l`` [E] and n its divisor
(``align.node_mean``):

    A   = (1 / n) sum_v KL_v
    KL_v = (1 / P) [ c_v - sum_l sum_{e: u -> v} M_{l,e} log s_{l,e} ]        (c_v: the peers' entropy part)

A node without in-edges has KL_v = 0, so the sum runs over the *population* V_T of N_T nodes that can
contribute: the nodes with in-edges (structure strategies) or the query nodes, all N without a query
set (``logits``, whose groups are nodes and entries classes). For a batch T of b nodes drawn uniformly
from V_T (PyG's ``NeighborLoader`` with shuffling cuts a random permutation of V_T into batches, so
every batch is a uniform subset of its size) the estimate is

    A_T = (1 / (P n)) [ C - (N_T / b) sum_{v in T} sum_l sum_{e -> v} M_{l,e} log s_{l,e} ]
        = (N_T / (b n)) sum_{v in T} KL_v  +  (1 / (P n)) [ C - (N_T / b) sum_{v in T} c_v ]

with C = sum_v c_v, the constant :attr:`AlignmentTargets.constant`. The second part does not depend
on the student (zero gradient) and has mean zero, so the gradient of A_T is exactly that of the
per-node estimator ``(1 / b) (N_T / n) sum_{v in T} KL_v``, and E[A_T] = A: **unbiased** whenever
``log s`` is exact. Over one pass of disjoint batches the b-weighted mean ``sum_T (b_T / N_T) A_T``
equals A (at fixed weights); with one batch holding all of V_T, A_T = A. The constant enters in
proportion to the batch, not as the batch's own ``c_v``, because a client holds only C: the peers'
entropies per node are never sent (the server may send the mass and C already summed). So a single
A_T is not a sum of KLs and may be slightly negative where the KL is near 0; its mean is the KL.

``log s_{l,e}`` for e = u -> v needs the student's layer-l representations of v and of every source u
of an in-edge of v, and the softmax normaliser needs every in-edge of v: the batch is sampled from T
with fan-out -1 at the first hop (all in-edges of T) and then ``train.num_neighbors`` for the L layers
below (:func:`alignment_fanouts`). With ``num_neighbors`` None every expanded node keeps all its
in-edges, so the representations of T and of its in-neighbours are the full-graph ones (GCN with the
whole graph's degrees: :meth:`~fedalign.models.base.StudentNetwork.prepare_sampled`) and A_T is
unbiased. With fan-outs, the in-neighbours' representations are computed on sampled neighbourhoods
(a random h~ instead of h); the kernel ``exp(-||h~_u - h~_v|| / tau)`` and the log-softmax are
nonlinear in h~, so E[log s~] != log s: the estimate is **biased** (a bias that vanishes as the
fan-outs reach the degrees; GCN's sampled sums keep the full-graph weights, so they also shrink). The
support of each distribution is still exact: T's in-edges are never sampled.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from ..models import StudentNetwork
from ..statistics import class_log_probs, structure_log_probs
from .objective import AlignmentTargets


def in_degrees(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Each node's in-degree, self loops excluded, as float [N] (what GCN's normalisation counts, less the loop).

    Args:
        edge_index: long [2, E], edges as (source, target) rows.
        num_nodes: N, the number of nodes.
    """
    keep = edge_index[0] != edge_index[1]
    return scatter(
        torch.ones(int(keep.sum()), device=edge_index.device), edge_index[1][keep], 0, dim_size=num_nodes, reduce="sum"
    )


def alignment_fanouts(num_neighbors: list[int] | None, strategy_is_structure: bool, hidden_layers: int) -> list[int]:
    """Fan-outs of an alignment batch, hop 0 next to the targets T.

    Args:
        num_neighbors: ``train.num_neighbors`` (L + 1 entries, the last layer first) or None (all).
        strategy_is_structure: structure strategies need the L hidden layers at T's in-neighbours
            (all in-edges of T, then L hops); ``logits`` the output layer at T (L + 1 hops).
        hidden_layers: L.
    """
    fanouts = list(num_neighbors) if num_neighbors is not None else [-1] * (hidden_layers + 1)
    return [-1] + fanouts[:hidden_layers] if strategy_is_structure else fanouts


def batch_forward(
    model: StudentNetwork, batch: Data, in_degree: Tensor, device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """The student on a sampled batch: logits [N_s, C] and the L representations [N_s, d], seeds first.

    Args:
        model: the student network.
        batch: a ``NeighborLoader`` batch (``x``, local ``edge_index``, ``n_id``).
        in_degree: float [N], in-degrees of the whole graph (:func:`in_degrees`).
        device: where the student lives.
    """
    edge_index = batch.edge_index.to(device)
    graph = model.prepare_sampled(edge_index, batch.num_nodes, in_degree[batch.n_id.to(in_degree.device)].to(device))
    return model(batch.x.to(device), graph)


def structure_batch_loss(
    targets: AlignmentTargets, hiddens: list[Tensor], batch: Data, population: int, tau: float, kernel: str
) -> Tensor:
    """A_T for structure strategies: the batch's targets are its first ``batch.batch_size`` nodes.

    Args:
        targets: the peers' mass ``[E]`` per student layer (full graph) and the constant.
        hiddens: the student's L representations on the batch, each [N_s, d].
        batch: the alignment batch (``edge_index`` local, ``e_id`` the edges' columns in the graph).
        population: N_T, the number of nodes the targets are drawn from.
        tau: ``align.tau``, the kernel's temperature.
        kernel: ``align.kernel``, one of :data:`~fedalign.statistics.KERNELS`.

    Returns:
        A scalar in the dtype of ``hiddens``.
    """
    device = hiddens[0].device
    into = batch.edge_index[1] < batch.batch_size  # exactly the in-edges of T (sampled with fan-out -1)
    edge_index, e_id = batch.edge_index[:, into].to(device), batch.e_id[into].to(device)
    cross = hiddens[0].new_zeros((), dtype=torch.float64)
    for layer, mass in targets.mass.items():
        log_s = structure_log_probs(hiddens[layer - 1], edge_index, tau, kernel)
        cross = cross + (mass[e_id] * log_s.double()).sum()
    return _estimate(targets, cross, population, batch.batch_size).to(hiddens[0].dtype)


def class_batch_loss(
    targets: AlignmentTargets, logits: Tensor, batch: Data, population: int, temperature: float, multilabel: bool
) -> Tensor:
    """A_T for strategy ``logits``: the class distributions of the batch's targets.

    Args:
        targets: the peers' summed class distributions ``mass[1]`` ([Q * C], or [Q * C * 2] multilabel).
        logits: the student's logits on the batch [N_s, C].
        batch: the alignment batch; ``input_id`` holds the targets' positions in the query set.
        population: N_T = Q (or N without a query set).
        temperature: ``align.logit_temperature``.
        multilabel: the task's kind (multilabel or not).
    """
    size = batch.batch_size
    log_q = class_log_probs(logits[:size], temperature, multilabel)
    mass = targets.mass[1].view(population, -1)[batch.input_id.to(logits.device)].reshape(-1)
    cross = (mass * log_q.double()).sum()
    return _estimate(targets, cross, population, size).to(logits.dtype)


def _estimate(targets: AlignmentTargets, cross: Tensor, population: int, size: int) -> Tensor:
    """``(C - (N_T / b) cross) / (P n)`` in float64."""
    return (targets.constant - cross * (population / size)) / (targets.divisor * max(targets.num_peers, 1))
