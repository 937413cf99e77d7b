"""GCN student (Kipf & Welling, 2017): ``GCNConv`` layers with symmetric normalisation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import add_remaining_self_loops, to_torch_csr_tensor

from .base import StudentNetwork


@dataclass(frozen=True)
class NormalisedAdjacency:
    """``A_hat = D^-1/2 (A + I) D^-1/2`` and its transpose as sparse CSR matrices ``[N, N]`` (row = target)."""

    matrix: Tensor
    transpose: Tensor

    def matmul(self, x: Tensor) -> Tensor:
        """``A_hat @ x`` for x ``[N, d]``; the backward multiplies by the stored transpose.

        Args:
            x: node features [N, d].
        """
        return _sparse_matmul(self.matrix, self.transpose, x)


def _sparse_matmul(matrix: Tensor, transpose: Tensor, x: Tensor) -> Tensor:
    """CSR ``matrix @ x`` whose backward multiplies by ``transpose`` (both cast to x's dtype where they differ)."""
    if matrix.dtype != x.dtype:  # e.g. a float64 model
        return _SparseMatmul.apply(matrix.to(x.dtype), transpose.to(x.dtype), x)
    return _SparseMatmul.apply(matrix, transpose, x)


class _SparseMatmul(torch.autograd.Function):
    """CSR ``A @ x`` whose backward uses a precomputed ``A^T`` (autograd would re-sort A every call)."""

    @staticmethod
    def forward(ctx, matrix: Tensor, transpose: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(transpose)
        return matrix @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (transpose,) = ctx.saved_tensors
        return None, None, transpose @ grad_out


@dataclass(frozen=True)
class SparseFeatures:
    """Node features ``X`` [N, F] as a sparse CSR matrix and its transpose [F, N] (``train.sparse_features``).

    ``X W^T`` is a sparse-dense product whose cost is the number of nonzeros, not N * F; its gradient with
    respect to W, ``(X^T G)^T``, multiplies by the stored transpose (autograd on a CSR input would convert
    X to another layout on every backward, several times the cost of the forward). Both products sum in
    the same order as ``torch.nn.functional.linear`` on the CSR matrix, so they give its very bits.
    """

    matrix: Tensor
    transpose: Tensor

    def size(self, dim: int) -> int:
        """The size of ``X`` along a dimension, as ``Tensor.size``.

        Args:
            dim: 0 (N nodes) or 1 (F features).
        """
        return self.matrix.size(dim)

    def linear(self, weight: Tensor) -> Tensor:
        """``X W^T`` [N, H] for weight W [H, F] (no bias: a GCN layer adds its own after propagation).

        Args:
            weight: the linear map's weight [H, F].
        """
        return _sparse_matmul(self.matrix, self.transpose, weight.t())  # W's gradient: (X^T G)^T


class _GCNLayer(GCNConv):
    """``GCNConv`` (normalize=False) that also takes a :class:`NormalisedAdjacency`: ``A_hat (x W) + b``,
    and :class:`SparseFeatures` as ``x``."""

    def forward(self, x, edge_index) -> Tensor:
        if not isinstance(edge_index, NormalisedAdjacency):
            return super().forward(x, edge_index)
        out = edge_index.matmul(x.linear(self.lin.weight) if isinstance(x, SparseFeatures) else self.lin(x))
        return out + self.bias if self.bias is not None else out


class GCNStudent(StudentNetwork):
    """Hidden and output layers are ``GCNConv(in_dim, out_dim)`` on ``D^-1/2 (A + I) D^-1/2``.

    :meth:`prepare` builds that normalised adjacency and its transpose once per
    graph as sparse CSR matrices (:class:`NormalisedAdjacency`), so each layer is
    one sparse-dense product instead of a gather/scatter over the edges with
    normalisation recomputed (~9x faster per layer, forward + backward, on Amazon
    Photo on CPU), and the backward needs no re-sorting of the matrix.
    """

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        """A GCN layer without its own normalisation (the prepared :class:`NormalisedAdjacency` carries it)."""
        return _GCNLayer(in_dim, out_dim, normalize=False)

    # GCN's prepared input is its normalised adjacency (not a Tensor): it only ever goes back into this network
    def prepare(self, edge_index, num_nodes: int) -> NormalisedAdjacency:  # type: ignore[override]
        """The :class:`NormalisedAdjacency` of ``edge_index`` ``[2, E]``; prepared input is returned as is.

        Args:
            edge_index: long [2, E], or an already prepared :class:`NormalisedAdjacency`.
            num_nodes: N.
        """
        if isinstance(edge_index, NormalisedAdjacency):
            return edge_index
        with_loops, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        return _adjacency(with_loops, weight, num_nodes)

    def prepare_sampled(self, edge_index: Tensor, num_nodes: int, in_degree: Tensor) -> NormalisedAdjacency:
        """``A_hat`` of a sampled subgraph with the *whole* graph's degrees: edge u -> v weighs
        ``(deg(u) + 1)^-1/2 (deg(v) + 1)^-1/2`` (``in_degree`` float [N_s], self loops excluded), as
        :func:`gcn_norm` on the whole graph, so a node that has all its in-edges gets its exact output.

        Args:
            edge_index: the sampled subgraph's edges, long [2, E_s].
            num_nodes: N_s, the subgraph's nodes.
            in_degree: each subgraph node's in-degree in the whole graph, float [N_s], self loops excluded.
        """
        with_loops, _ = add_remaining_self_loops(edge_index, None, 1.0, num_nodes)
        inv_sqrt = (in_degree.to(torch.get_default_dtype()) + 1).pow(-0.5)
        return _adjacency(with_loops, inv_sqrt[with_loops[0]] * inv_sqrt[with_loops[1]], num_nodes)


def _adjacency(edge_index: Tensor, weight: Tensor, num_nodes: int) -> NormalisedAdjacency:
    """The :class:`NormalisedAdjacency` of weighted edges ``[2, E]`` (row 0 source) on ``num_nodes`` nodes."""
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta" / "invariant checks disabled"
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        size = (num_nodes, num_nodes)
        return NormalisedAdjacency(
            to_torch_csr_tensor(edge_index.flip(0), weight, size=size),
            to_torch_csr_tensor(edge_index, weight, size=size),
        )


def sparse_input(x: Tensor) -> SparseFeatures:
    """:class:`SparseFeatures` of node features ``x`` [N, F] for the first layer (``train.sparse_features``).

    The first layer's ``x W`` becomes a sparse-dense product whose cost is the number of nonzeros, not
    N * F (on bag-of-words features, e.g. Coauthor CS's 0.9 % nonzero, several times faster forward and
    backward); its gradient with respect to W is ``x^T grad``, also sparse. The sums run in another order
    than the dense product's, so outputs agree with dense features to float rounding only.

    Args:
        x: dense node features, float [N, F].
    """
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta"
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        matrix = x.to_sparse_csr()
        by_column = matrix.to_sparse_csc()  # the CSR of X^T, rows in node order within each feature
        transpose = torch.sparse_csr_tensor(
            by_column.ccol_indices(), by_column.row_indices(), by_column.values(), size=(x.size(1), x.size(0))
        )
        return SparseFeatures(matrix, transpose)
