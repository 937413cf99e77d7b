"""Local-structure statistics: what a student shares with its peers.

For a graph with edges ``u -> v`` (``edge_index[0] = u``, the source;
``edge_index[1] = v``, the target) and one layer's node representations
``h`` of shape ``[N, d]``, the local-structure distribution of node ``v`` is

    p(u | v) = softmax_{u' in N_in(v)} ( k(h_u', h_v) / tau )  evaluated at u,

a probability distribution over the in-edges of ``v`` (the LSP kernel of
Yang et al., CVPR 2020, used by Alignahead). With the default ``"l1"``
kernel, ``k(a, b) = -||a - b||_1`` and ``tau = 100``.

Everything here works on *log*-probabilities of shape ``[E]`` (one entry per
edge), computed in log-softmax form so that large distances never overflow.
The KL term compares a peer's distribution with the student's:

    KL(peer || student) = mean_v  sum_{u in N_in(v)} p_peer(u|v) (log p_peer(u|v) - log p_student(u|v)),

averaged over the nodes that have at least one in-edge.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch_geometric.utils import scatter

# A kernel maps source and target representations [E, d] to similarities [E]
# (larger = closer). It is divided by the temperature tau afterwards.
Kernel = Callable[[Tensor, Tensor], Tensor]


def l1_kernel(h_src: Tensor, h_dst: Tensor) -> Tensor:
    """``-||h_u - h_v||_1`` per edge. Shapes: [E, d], [E, d] -> [E]."""
    return -(h_src - h_dst).abs().sum(dim=-1)


def squared_l2_kernel(h_src: Tensor, h_dst: Tensor) -> Tensor:
    """``-||h_u - h_v||_2^2`` per edge. Shapes: [E, d], [E, d] -> [E]."""
    return -(h_src - h_dst).pow(2).sum(dim=-1)


def cosine_kernel(h_src: Tensor, h_dst: Tensor) -> Tensor:
    """Cosine similarity per edge, in [-1, 1]. Shapes: [E, d], [E, d] -> [E]."""
    return torch.nn.functional.cosine_similarity(h_src, h_dst, dim=-1, eps=1e-8)


KERNELS: dict[str, Kernel] = {
    "l1": l1_kernel,
    "l2sq": squared_l2_kernel,
    "cosine": cosine_kernel,
}


def segment_log_softmax(logits: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Log-softmax of ``logits`` [E] within groups given by ``index`` [E].

    Each group (all edges with the same target node) is normalised
    separately; the max is subtracted per group, so the result is finite
    for any finite logits. Returns a tensor of shape [E].
    """
    group_max = scatter(logits.detach(), index, dim=0, dim_size=num_nodes, reduce="max")
    shifted = logits - group_max[index]
    group_sum = scatter(shifted.exp(), index, dim=0, dim_size=num_nodes, reduce="sum")
    return shifted - group_sum.log()[index]


def structure_log_probs(
    h: Tensor,
    edge_index: Tensor,
    tau: float = 100.0,
    kernel: str = "l1",
) -> Tensor:
    """``log p(u|v)`` for every edge ``u -> v``.

    Args:
        h: node representations of one layer, float [N, d].
        edge_index: long [2, E], row 0 the source u, row 1 the target v.
        tau: temperature (> 0), in the units of the kernel.
        kernel: one of :data:`KERNELS`.

    Returns:
        float [E]: the log-probability of each edge within its target's in-edges.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}")
    src, dst = edge_index
    logits = KERNELS[kernel](h[src], h[dst]) / tau
    return segment_log_softmax(logits, dst, h.size(0))


def layer_statistics(
    hiddens: list[Tensor],
    edge_index: Tensor,
    tau: float = 100.0,
    kernel: str = "l1",
) -> list[Tensor]:
    """Log-probabilities ``[E]`` for each of the L layer outputs ``[N, d_l]``."""
    return [structure_log_probs(h, edge_index, tau, kernel) for h in hiddens]


def structure_kl(
    peer_log_probs: Tensor,
    student_log_probs: Tensor,
    target: Tensor,
    num_nodes: int,
) -> Tensor:
    """KL(peer || student) summed over each node's in-edges, averaged over nodes.

    Args:
        peer_log_probs: float [E], the (frozen) peer's ``log p(u|v)``; entries
            may be ``-inf`` where the peer's probability is 0.
        student_log_probs: float [E], the student's ``log p(u|v)``.
        target: long [E], the target node v of each edge (``edge_index[1]``).
        num_nodes: N, the number of nodes of the alignment graph.

    Returns:
        A scalar: the mean over nodes with at least one in-edge (nats).
    """
    peer_probs = peer_log_probs.exp()
    # xlogy(p, p) is 0 where p == 0, so zero-probability edges contribute nothing.
    per_edge = torch.xlogy(peer_probs, peer_probs) - peer_probs * student_log_probs
    per_node = scatter(per_edge, target, dim=0, dim_size=num_nodes, reduce="sum")
    has_in_edges = torch.bincount(target, minlength=num_nodes) > 0
    return per_node[has_in_edges].mean()
