"""GraphSAGE student (Hamilton et al., 2017): mean-aggregating ``SAGEConv`` layers."""

from torch import nn
from torch_geometric.nn import SAGEConv

from .base import StudentNetwork


class SAGEStudent(StudentNetwork):
    """Hidden and output layers are ``SAGEConv(in_dim, out_dim, aggr="mean")``."""

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        """A mean-aggregating ``SAGEConv``."""
        return SAGEConv(in_dim, out_dim, aggr="mean")
