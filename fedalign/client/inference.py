"""Layer-wise inference of a student on a whole graph in chunks of target nodes (PyG's inference pattern).

A full forward pass materialises every layer's messages at once: ``[E, d]`` gathered features for
SAGE's mean and GAT's attention (``[E, heads]`` scores too). :func:`layerwise_forward` computes layer
i for every node before layer i + 1, a chunk of ``chunk`` target nodes at a time, each chunk with all
its in-edges (a ``NeighborLoader`` batch with fan-out ``[-1]``; GCN with the whole graph's degrees),
so its values are the full forward's up to summation order. What it bounds: the message temporaries,
to those of one chunk's in-edges (``O(E_chunk d)``), and the chunks themselves: each layer samples its
chunks again (L + 1 passes of the sampler, the same chunks in the same order) rather than holding every
chunk's subgraph and propagation matrices at once, which took ~220 bytes per edge (11 GB at 50M edges).
What it keeps: every layer's ``[N, d]`` output (releases need all L), the graph and the sampler's CSC
copy of it, ``O(L N d + E)``. Inference only: no gradient, no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..models import StudentNetwork
from ..models.base import ACTIVATIONS
from .minibatch import in_degrees
from .sampling import neighbor_loader


@torch.no_grad()
def layerwise_forward(model: StudentNetwork, graph: Data, chunk: int) -> tuple[Tensor, list[Tensor]]:
    """What ``model(graph.x, graph.edge_index)`` returns in eval mode, computed layer by layer.

    Args:
        model: the student network (put in eval mode by the caller).
        graph: ``x`` float [N, F], ``edge_index`` long [2, E].
        chunk: target nodes per chunk.

    Returns:
        logits [N, C] and the L aligned representations [N, d].
    """
    device = graph.x.device
    structure = Data(edge_index=graph.edge_index.cpu(), num_nodes=graph.num_nodes)
    degree = in_degrees(structure.edge_index, graph.num_nodes)
    loader = neighbor_loader(structure, torch.arange(graph.num_nodes), [-1], chunk, shuffle=False)
    act = ACTIVATIONS[model.activation]

    def layer(i: int, h: Tensor) -> Tensor:
        out, start = None, 0
        for b in loader:  # the seeds in order, chunk after chunk: rows start .. start + batch_size
            n_id = b.n_id.to(device)
            prepared = model.prepare_sampled(b.edge_index.to(device), b.num_nodes, degree[b.n_id].to(device))
            z = model.conv(i, h[n_id], prepared)[: b.batch_size]
            if out is None:
                out = z.new_empty((graph.num_nodes, *z.shape[1:]))
            out[start : start + b.batch_size] = z
            start += b.batch_size
        if out is None:
            raise ValueError("layer-wise inference on a graph without nodes")
        return out

    h, aligned = graph.x, []
    for i in range(model.hidden_layers):
        z = layer(i, h)
        h = act(z)
        aligned.append(z if model.representation == "pre-activation" else h)
    return layer(model.hidden_layers, h), aligned
