"""GCN student (Kipf & Welling, 2017): ``GCNConv`` layers with symmetric normalisation."""

from torch import nn
from torch_geometric.nn import GCNConv

from .base import Student


class GCNStudent(Student):
    """Hidden and output layers are ``GCNConv(in_dim, out_dim)`` (self-loops added)."""

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        return GCNConv(in_dim, out_dim)
