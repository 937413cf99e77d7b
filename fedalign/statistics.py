"""Local-structure statistics: what a student shares with its peers.

For a graph with edges ``u -> v`` (``edge_index[0] = u``, the source;
``edge_index[1] = v``, the target) and one layer's node representations
``h`` of shape ``[N, d]`` (by default the layer's output *before* its
activation), the local-structure distribution of node ``v`` is a probability
distribution over the in-edges of ``v``.

**Default: the original Alignahead code** (``align.kernel: lsp``; Guo, Chen
& Wang, IJCNN 2022, ``local_structure.py``: DGL's ``edge_softmax`` of a
kernel value):

    d_uv    = ||h_u - h_v||_1
    e_uv    = exp(-d_uv / tau)                                (tau = 100)
    p(u|v)  = exp(e_uv) / sum_{u' -> v} exp(e_u'v)

a softmax *of the kernel value*, a double exponential: since e is in (0, 1],
the probabilities of two in-edges of the same node differ by a factor of at
most e. The other kernels are a softmax of a similarity divided by tau:
``l1-softmax`` (-d_uv / tau, the LSP kernel of Yang et al., CVPR 2020, and
fedalign's default before the faithful formulation), ``l2sq``
(-||h_u - h_v||_2^2 / tau) and ``cosine`` (cos(h_u, h_v) / tau).

The KL term compares a peer's distribution with the student's, per node
summed over the node's in-edges:

    KL_v = sum_{u -> v} p_peer(u|v) (log p_peer(u|v) - log p_student(u|v))
    KL   = (1 / N) sum_v KL_v                     (node_mean "all", the original)
    KL   = mean over nodes with in-edges of KL_v  (node_mean "with-in-edges")

Everything here works on *log*-probabilities of shape ``[E]`` (one entry per
edge), in log-softmax form so that no kernel value overflows. The same
functions serve any grouping of entries into distributions: for the
class-distribution statistics of strategy ``logits``
(:func:`class_log_probs`) the groups are nodes and the entries classes.

The L1 distance is the cost of every kernel that uses it. It runs compiled by
``torch.compile`` (gather, difference and norm fused into one loop; for ``lsp``
the per-node normalisation too) wherever a compiler works -- an alignahead
epoch on Amazon Photo is 4.2x cheaper than with the blocked kernel -- and
otherwise as a blocked kernel with a hand-written backward (same values).
:func:`l1_backend` says which one runs (a warning says so when the compiler
fails); ``FEDALIGN_COMPILE=0`` forces the eager kernels, and
:func:`eager_kernels` does so within a block.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch_geometric.utils import scatter

log = logging.getLogger("fedalign")

# A kernel maps node representations h [N, d], the edges' source and target
# indices (long [E] each) and the temperature tau to edge logits [E]; the
# distribution of a node is the softmax of the logits of its in-edges.
Kernel = Callable[[Tensor, Tensor, Tensor, float], Tensor]

NODE_MEANS = ("all", "with-in-edges")

# Edges per block in :class:`_BlockedL1Distance`: ~2 MiB of float32 per block at
# d = 64, so each block's [block, d] differences stay in cache.
_L1_BLOCK_ELEMENTS = 1 << 19


class _BlockedL1Distance(torch.autograd.Function):
    """``||h_src - h_dst||_1`` per edge, computed block by block (the fallback).

    Autograd through ``(h[src] - h[dst]).abs().sum(-1)`` materialises several
    ``[E, d]`` float tensors and scatters gradients with ``index_put``; this
    version keeps only the signs of the differences (int8 ``[E, d]``) for
    the backward pass and works on blocks of edges that fit in cache.
    The gradient at a zero difference is 0 (the subgradient ``sign(0)``).
    """

    @staticmethod
    def forward(ctx, h: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        block = max(1, _L1_BLOCK_ELEMENTS // max(h.size(1), 1))
        out = h.new_empty(src.numel())
        signs = (
            torch.empty(src.numel(), h.size(1), dtype=torch.int8, device=h.device) if ctx.needs_input_grad[0] else None
        )
        for start in range(0, src.numel(), block):
            end = start + block
            diff = h.index_select(0, src[start:end]).sub_(h.index_select(0, dst[start:end]))
            torch.linalg.vector_norm(diff, ord=1, dim=-1, out=out[start:end])
            if signs is not None:
                signs[start:end].copy_(diff.sign_())
        ctx.save_for_backward(signs, src, dst)
        ctx.num_nodes = h.size(0)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        signs, src, dst = ctx.saved_tensors
        grad_h = grad_out.new_zeros(ctx.num_nodes, signs.size(1))
        block = max(1, _L1_BLOCK_ELEMENTS // max(signs.size(1), 1))
        for start in range(0, src.numel(), block):
            end = start + block
            grad_edges = signs[start:end].to(grad_out.dtype).mul_(grad_out[start:end].unsqueeze(-1))
            grad_h.index_add_(0, src[start:end], grad_edges)
            grad_h.index_add_(0, dst[start:end], grad_edges, alpha=-1)
        return grad_h, None, None


def blocked_l1_distance(h: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """``||h_u - h_v||_1`` per edge by the blocked kernel. Shapes: h [N, d], src/dst long [E] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
    """
    return _BlockedL1Distance.apply(h, src, dst)


def _plain_l1_distance(h: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    return (h[src] - h[dst]).abs().sum(dim=-1)


def _plain_lsp_log_probs(h: Tensor, src: Tensor, dst: Tensor, num_nodes: int, tau: float) -> Tensor:
    # e in (0, 1], so exp(e) in (1, e]: the per-node sums need no max subtraction
    e = torch.exp(-(h[src] - h[dst]).abs().sum(dim=-1) / tau)
    total = torch.zeros(num_nodes, dtype=h.dtype, device=h.device).index_add_(0, dst, e.exp())
    return e - total.log()[dst]


def _eager_lsp_log_probs(h: Tensor, src: Tensor, dst: Tensor, num_nodes: int, tau: float) -> Tensor:
    return segment_log_softmax(lsp_kernel(h, src, dst, tau), dst, num_nodes)


class _Compiler:
    """Decides once per process whether ``torch.compile`` works here."""

    def __init__(self) -> None:
        self.works: bool | None = None

    def check(self) -> bool:
        if self.works is not None:
            return self.works
        self.works = False
        if os.environ.get("FEDALIGN_COMPILE", "1").strip().lower() in ("0", "false", "off", "no"):
            log.info("structure statistics: eager kernels (FEDALIGN_COMPILE=0)")
            return False
        try:
            probe = torch.compile(_plain_l1_distance, dynamic=True)
            h = torch.randn(4, 3, requires_grad=True)
            with torch.enable_grad():  # the first use may come under no_grad (a release)
                probe(h, torch.tensor([0, 1, 2, 3, 1]), torch.tensor([1, 2, 3, 0, 0])).sum().backward()
        except Exception as error:  # no C compiler, unsupported platform, ...: the eager kernels are exact too
            message = str(error).splitlines()[0] if str(error) else ""
            log.warning(
                "structure statistics: torch.compile is unavailable here (%s: %s); using the eager "
                "kernels (same values, slower alignment on CPU)",
                type(error).__name__,
                message,
            )
            return False
        self.works = True
        log.info("structure statistics: L1 distance and LSP kernel compiled by torch.compile (inductor)")
        return True


_COMPILER = _Compiler()


class _Accelerated:
    """``plain`` compiled by ``torch.compile`` where that works, else ``fallback`` (same values)."""

    forced_eager = False  # set by :func:`eager_kernels`

    def __init__(self, plain: Callable[..., Tensor], fallback: Callable[..., Tensor]) -> None:
        self.plain, self.fallback = plain, fallback
        self.compiled: Callable[..., Tensor] | None = None

    def __call__(self, *args) -> Tensor:
        if _Accelerated.forced_eager:
            return self.fallback(*args)
        if self.compiled is None and _COMPILER.check():
            # single-threaded generated code: its scatter-adds then run in a fixed order, so results are
            # bitwise reproducible (with several threads they are atomic adds in a varying order)
            self.compiled = torch.compile(self.plain, dynamic=True, options={"cpp.threads": 1})
        return (self.compiled or self.fallback)(*args)


_l1_distance = _Accelerated(_plain_l1_distance, lambda h, src, dst: blocked_l1_distance(h, src, dst))
_lsp_log_probs = _Accelerated(_plain_lsp_log_probs, _eager_lsp_log_probs)


@contextlib.contextmanager
def eager_kernels() -> Iterator[None]:
    """Within this block the eager (blocked) kernels run even where the compiled ones work (to compare them)."""
    previous, _Accelerated.forced_eager = _Accelerated.forced_eager, True
    try:
        yield
    finally:
        _Accelerated.forced_eager = previous


def l1_backend() -> str:
    """``"compiled"`` or ``"eager"``: how the L1 distance and the LSP kernel run in this process."""
    return "compiled" if _COMPILER.check() else "eager"


def edge_l1_distance(h: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """``||h_u - h_v||_1`` per edge. Shapes: h [N, d], src/dst long [E] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
    """
    return _l1_distance(h, src, dst)


def lsp_kernel(h: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """The original's edge logits ``exp(-||h_u - h_v||_1 / tau)``, in (0, 1]. [N, d] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
        tau: the temperature, > 0.
    """
    return torch.exp(-edge_l1_distance(h, src, dst) / tau)


def l1_softmax_kernel(h: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """``-||h_u - h_v||_1 / tau``. Shapes: h [N, d], src/dst long [E] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
        tau: the temperature, > 0.
    """
    return -edge_l1_distance(h, src, dst) / tau


def squared_l2_kernel(h: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """``-||h_u - h_v||_2^2 / tau``. Shapes: h [N, d], src/dst long [E] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
        tau: the temperature, > 0.
    """
    return -(h.index_select(0, src) - h.index_select(0, dst)).pow(2).sum(dim=-1) / tau


def cosine_kernel(h: Tensor, src: Tensor, dst: Tensor, tau: float) -> Tensor:
    """``cos(h_u, h_v) / tau``. Shapes: h [N, d], src/dst long [E] -> [E].

    Args:
        h: node representations [N, d].
        src: each edge's source node, long [E].
        dst: each edge's target node, long [E].
        tau: the temperature, > 0.
    """
    return torch.nn.functional.cosine_similarity(h.index_select(0, src), h.index_select(0, dst), dim=-1, eps=1e-8) / tau


KERNELS: dict[str, Kernel] = {
    "lsp": lsp_kernel,
    "l1-softmax": l1_softmax_kernel,
    "l2sq": squared_l2_kernel,
    "cosine": cosine_kernel,
}


def segment_log_softmax(logits: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Log-softmax of ``logits`` [E] within groups given by ``index`` [E].

    Each group (e.g. all edges with the same target node) is normalised
    separately; the max is subtracted per group, so the result is finite
    for any finite logits. Returns a tensor of shape [E].

    Args:
        logits: the values to normalise, [E].
        index: each value's group, long [E] in [0, num_groups).
        num_groups: the number of groups (e.g. N nodes).
    """
    group_max = scatter(logits.detach(), index, dim=0, dim_size=num_groups, reduce="max")
    shifted = logits - group_max[index]
    group_sum = scatter(shifted.exp(), index, dim=0, dim_size=num_groups, reduce="sum")
    return shifted - group_sum.log()[index]


def structure_log_probs(
    h: Tensor,
    edge_index: Tensor,
    tau: float = 100.0,
    kernel: str = "lsp",
) -> Tensor:
    """``log p(u|v)`` for every edge ``u -> v``.

    Args:
        h: node representations of one layer, float [N, d].
        edge_index: long [2, E], row 0 the source u, row 1 the target v.
        tau: temperature (> 0), in the units of the distance.
        kernel: one of :data:`KERNELS`.

    Returns:
        float [E]: the log-probability of each edge within its target's in-edges.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}")
    src, dst = edge_index
    if kernel == "lsp":  # fused: distance, kernel and normalisation in one compiled loop where possible
        return _lsp_log_probs(h, src, dst, h.size(0), tau)
    return segment_log_softmax(KERNELS[kernel](h, src, dst, tau), dst, h.size(0))


def layer_statistics(
    hiddens: list[Tensor],
    edge_index: Tensor,
    tau: float = 100.0,
    kernel: str = "lsp",
) -> list[Tensor]:
    """Log-probabilities ``[E]`` for each of the L layer outputs ``[N, d_l]``.

    Args:
        hiddens: the L layer outputs, each [N, d_l].
        edge_index: long [2, E], row 0 source, row 1 target.
        tau: the kernel's temperature, > 0.
        kernel: one of :data:`KERNELS` (``lsp``, ``l1-softmax``, ``l2sq``, ``cosine``).
    """
    return [structure_log_probs(h, edge_index, tau, kernel) for h in hiddens]


def class_log_probs(logits: Tensor, temperature: float, multilabel: bool) -> Tensor:
    """The class distributions of strategy ``logits`` (deep mutual learning), flattened.

    Multiclass: ``log softmax(z_v / T)`` per node, ``[N, C] -> [N * C]``, one
    distribution per node (:func:`fedalign.wire.release_layout`). Multilabel: each (node, label) is a two-way
    distribution ``(sigmoid(z / T), 1 - sigmoid(z / T))``, ``[N, C] -> [N * C * 2]``.

    Args:
        logits: the logits [N, C].
        temperature: T > 0.
        multilabel: whether each label is its own two-way distribution.
    """
    scaled = logits / temperature
    if multilabel:
        both = torch.stack([torch.nn.functional.logsigmoid(scaled), torch.nn.functional.logsigmoid(-scaled)], -1)
        return both.reshape(-1)
    return torch.log_softmax(scaled, dim=-1).reshape(-1)


def structure_kl(
    peer_log_probs: Tensor,
    student_log_probs: Tensor,
    target: Tensor,
    num_nodes: int,
    node_mean: str = "all",
) -> Tensor:
    """KL(peer || student) summed over each node's in-edges, averaged over nodes.

    Args:
        peer_log_probs: float [E], the (frozen) peer's ``log p(u|v)``; entries
            may be ``-inf`` where the peer's probability is 0.
        student_log_probs: float [E], the student's ``log p(u|v)``.
        target: long [E], the target node v of each edge (``edge_index[1]``);
            more generally the group of each entry.
        num_nodes: N, the number of nodes (groups).
        node_mean: ``"all"`` divides the sum over nodes by N (the original);
            ``"with-in-edges"`` by the number of nodes with at least one in-edge.

    Returns:
        A scalar (nats).
    """
    if node_mean not in NODE_MEANS:
        raise ValueError(f"unknown node_mean {node_mean!r}; choose one of {NODE_MEANS}")
    peer_probs = peer_log_probs.exp()
    # xlogy(p, p) is 0 where p == 0, so zero-probability edges contribute nothing.
    per_edge = torch.xlogy(peer_probs, peer_probs) - peer_probs * student_log_probs
    total = per_edge.sum()
    if node_mean == "all":
        return total / num_nodes
    return total / int(torch.unique(target).numel())
