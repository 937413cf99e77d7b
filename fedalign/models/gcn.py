"""GCN student (Kipf & Welling, 2017): ``GCNConv`` layers with symmetric normalisation."""

import warnings

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from .base import Student


class GCNStudent(Student):
    """Hidden and output layers are ``GCNConv(in_dim, out_dim)`` on ``D^-1/2 (A + I) D^-1/2``.

    :meth:`prepare` builds that normalised adjacency once per graph as a
    sparse CSR matrix ``[N, N]`` (row = target node), so each layer is one
    sparse-dense product instead of a gather/scatter over the edges with
    normalisation recomputed: ~9x faster per layer, forward + backward, on
    Amazon Photo on CPU. The layers therefore run with ``normalize=False``.
    """

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        return GCNConv(in_dim, out_dim, normalize=False)

    def prepare(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """``D^-1/2 (A + I) D^-1/2`` as a float CSR tensor [N, N]; prepared input is returned as is."""
        if edge_index.layout != torch.strided:
            return edge_index
        with_loops, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        with warnings.catch_warnings():  # torch's "sparse CSR is in beta" / "invariant checks disabled"
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            return to_torch_csr_tensor(with_loops.flip(0), weight, size=(num_nodes, num_nodes))
