"""The student network skeleton shared by every GNN family (:class:`StudentNetwork`).

A student has L >= 2 hidden message-passing layers followed by an output
layer, as in the original Alignahead code (``gat.py``). Hidden layer l maps
``[N, d_{l-1}] -> [N, hidden_dim]`` (``d_0`` is the number of input features):

    z_l = conv_l(h_{l-1}) [+ h_{l-1} if residual and l >= 2]     (pre-activation)
    a_l = act(z_l)                                               (post-activation; ELU or ReLU)
    h_l = dropout(a_l)

and the output layer gives the logits ``conv_out(h_L) [+ W h_L if residual]``
(``[N, num_classes]``; W a bias-free linear map). The residual connection sits
inside the layer, before the activation, on every layer but the first, as
DGL's ``GATConv(residual=True)`` does in the original. ``forward`` returns the
logits and the L representations whose structure is aligned between
students: ``z_l`` (``representation="pre-activation"``, the original) or
``a_l`` (``"post-activation"``).

Every family may precompute what its layers need from a graph once
(:meth:`Student.prepare`: e.g. GCN's normalised sparse adjacency) so that
training on a fixed graph does not redo it every epoch; ``forward`` takes
either a plain ``edge_index`` or the result of ``prepare``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"elu": nn.functional.elu, "relu": nn.functional.relu}
REPRESENTATIONS = ("pre-activation", "post-activation")


class StudentNetwork(nn.Module):
    """Base class: subclasses implement :meth:`make_layer` for one GNN family.

    Args:
        in_channels: number of input features F.
        num_classes: number of output logits C.
        hidden_layers: L >= 2, the number of hidden (aligned) layers.
        hidden_dim: width of every hidden layer.
        dropout: dropout probability on features between layers, in [0, 1).
        residual: skip connections around hidden layers 2..L (identity) and the
            output layer (bias-free linear), added before the activation.
        activation: ``"elu"`` or ``"relu"``.
        representation: which hidden outputs :meth:`forward` returns for
            alignment, one of :data:`REPRESENTATIONS`.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_layers: int = 4,
        hidden_dim: int = 64,
        dropout: float = 0.0,
        residual: bool = False,
        activation: str = "elu",
        representation: str = "pre-activation",
    ) -> None:
        super().__init__()
        if hidden_layers < 2:
            raise ValueError(f"hidden_layers must be >= 2, got {hidden_layers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if representation not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {representation!r}; choose one of {REPRESENTATIONS}")
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.residual = residual
        self.activation = activation
        self.representation = representation
        dims = [in_channels] + [hidden_dim] * hidden_layers
        self.layers = nn.ModuleList(
            self.make_layer(dims[i], dims[i + 1], is_output=False) for i in range(hidden_layers)
        )
        self.output = self.make_layer(hidden_dim, num_classes, is_output=True)
        self.output_skip = nn.Linear(hidden_dim, num_classes, bias=False) if residual else None

    def make_layer(self, in_dim: int, out_dim: int, is_output: bool) -> nn.Module:
        """One message-passing layer ``(x [N, in_dim], edge_index [2, E]) -> [N, out_dim]``.

        Args:
            in_dim: the layer's input width.
            out_dim: the layer's output width.
            is_output: whether it is the output layer (logits).
        """
        raise NotImplementedError

    def prepare(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """What the layers take as the graph, computed once per graph.

        The default is ``edge_index`` itself.

        Args:
            edge_index: long [2, E] (or an already prepared graph: returned unchanged).
            num_nodes: N.
        """
        return edge_index

    def prepare_sampled(self, edge_index: Tensor, num_nodes: int, in_degree: Tensor):
        """:meth:`prepare` for a sampled subgraph whose expanded nodes have all their in-edges.

        The default ignores ``in_degree``: mean aggregation and attention read only a node's own
        in-edges, so a node with all of them gets its exact output. GCN overrides it (its normalisation
        reads the sources' degrees too).

        Args:
            edge_index: long [2, E_s], local ids.
            num_nodes: N_s.
            in_degree: float [N_s], each node's in-degree in the *whole* graph, self loops excluded.
        """
        return self.prepare(edge_index, num_nodes)

    def conv(self, i: int, h: Tensor, graph) -> Tensor:
        """Layer ``i``'s output before its activation: hidden layer i + 1 (``i < L``: ``z``, with the
        residual for ``i >= 1``) or, for ``i == L``, the logits.

        Args:
            i: the layer's index, 0..L.
            h: the layer's input [N, d_i].
            graph: the prepared graph (:meth:`prepare`).
        """
        if i == self.hidden_layers:
            logits = self.output(h, graph)
            return logits + self.output_skip(h) if self.output_skip is not None else logits
        z = self.layers[i](h, graph)
        return z + h if self.residual and i > 0 else z

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The logits and the aligned representations.

        Args:
            x: node features, float [N, F].
            edge_index: long [2, E], or ``prepare(edge_index, N)``.

        Returns:
            logits float [N, C] and the L aligned representations, each [N, hidden_dim].
        """
        graph = self.prepare(edge_index, x.size(0))
        act = ACTIVATIONS[self.activation]
        aligned = []
        h = x
        for i in range(self.hidden_layers):
            z = self.conv(i, h, graph)
            a = act(z)
            aligned.append(z if self.representation == "pre-activation" else a)
            h = nn.functional.dropout(a, p=self.dropout, training=self.training)
        return self.conv(self.hidden_layers, h, graph), aligned
