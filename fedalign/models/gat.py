"""GAT student (Velickovic et al., 2018): multi-head ``GATConv`` layers."""

from torch import nn
from torch_geometric.nn import GATConv

from .base import StudentNetwork


class GATStudent(StudentNetwork):
    """Multi-head attention student.

    Hidden layers concatenate ``heads`` heads of ``hidden_dim // heads``
    channels each, so every hidden output is ``[N, hidden_dim]``; the output
    layer averages ``heads`` heads of ``num_classes`` channels. Attention
    dropout uses the model's ``dropout``.
    """

    def __init__(self, *args, heads: int = 4, **kwargs) -> None:
        """As :class:`StudentNetwork`, with ``heads`` attention heads.

        Args:
            *args: :class:`StudentNetwork`'s positional arguments.
            heads: attention heads, >= 1; ``hidden_dim`` must be a multiple of it.
            **kwargs: :class:`StudentNetwork`'s keyword arguments.
        """
        hidden_dim = kwargs.get("hidden_dim", 64)
        if heads < 1 or hidden_dim % heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a positive multiple of heads ({heads})")
        self.heads = heads
        super().__init__(*args, **kwargs)

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        """A ``GATConv``: concatenated heads in a hidden layer, averaged heads in the output layer."""
        if is_output:
            return GATConv(in_dim, out_dim, heads=self.heads, concat=False, dropout=self.dropout)
        return GATConv(in_dim, out_dim // self.heads, heads=self.heads, dropout=self.dropout)
