"""The student network skeleton shared by every GNN family.

A student has L >= 2 hidden message-passing layers followed by an output
layer. Hidden layer l maps ``[N, d_{l-1}] -> [N, hidden_dim]`` (``d_0`` is the
number of input features), then applies ELU, an optional residual
connection, and dropout. The output layer maps to the ``[N, num_classes]``
logits. The forward pass returns the logits and the L hidden-layer outputs
(after activation and residual, before dropout): those are the
representations whose structure is aligned between students.

Every family may precompute what its layers need from a graph once
(:meth:`Student.prepare`: e.g. GCN's normalised sparse adjacency) so that
training on a fixed graph does not redo it every epoch; ``forward`` takes
either a plain ``edge_index`` or the result of ``prepare``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Student(nn.Module):
    """Base class: subclasses implement :meth:`make_layer` for one GNN family.

    Args:
        in_channels: number of input features F.
        num_classes: number of output logits C.
        hidden_layers: L >= 2, the number of hidden (aligned) layers.
        hidden_dim: width of every hidden layer.
        dropout: dropout probability on features between layers, in [0, 1).
        residual: add a skip connection around every hidden layer (a bias-free
            linear projection on the first, where widths differ).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_layers: int = 4,
        hidden_dim: int = 64,
        dropout: float = 0.5,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if hidden_layers < 2:
            raise ValueError(f"hidden_layers must be >= 2, got {hidden_layers}")
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.residual = residual
        dims = [in_channels] + [hidden_dim] * hidden_layers
        self.layers = nn.ModuleList(
            self.make_layer(dims[i], dims[i + 1], is_output=False) for i in range(hidden_layers)
        )
        self.output = self.make_layer(hidden_dim, num_classes, is_output=True)
        self.input_skip = nn.Linear(in_channels, hidden_dim, bias=False) if residual else None

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        """One message-passing layer ``(x [N, in_dim], edge_index [2, E]) -> [N, out_dim]``."""
        raise NotImplementedError

    def prepare(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """What the layers take as the graph, computed once per graph.

        Args: edge_index long [2, E] (or an already prepared graph: returned
        unchanged); num_nodes N. The default is ``edge_index`` itself.
        """
        return edge_index

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Args: x float [N, F]; edge_index long [2, E], or ``prepare(edge_index, N)``.

        Returns: logits float [N, C] and the L hidden outputs, each [N, hidden_dim].
        """
        graph = self.prepare(edge_index, x.size(0))
        hiddens = []
        h = x
        for i, layer in enumerate(self.layers):
            out = nn.functional.elu(layer(h, graph))
            if self.residual:
                out = out + (self.input_skip(h) if i == 0 else h)
            hiddens.append(out)
            h = nn.functional.dropout(out, p=self.dropout, training=self.training)
        return self.output(h, graph), hiddens

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
