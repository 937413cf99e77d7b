"""PyG's ``NeighborLoader`` for mini-batch students, with a pure-torch sampler where PyG has no compiled one.

``torch_geometric.loader.NeighborLoader`` samples through ``pyg-lib`` or ``torch-sparse``; neither
publishes wheels for every torch on the package index, so without them :func:`neighbor_loader`
hands the same ``NeighborLoader`` a :class:`TorchNeighborSampler`: PyG's ``NeighborSampler`` (its
CSC layout, edge permutation, output filtering, ``n_id`` / ``e_id`` / ``input_id`` / ``batch_size``)
with only the sampling step written in torch. The semantics are PyG's directional sampling:

* the batch's seeds come first in ``n_id``, in the order given (they must be distinct);
* hop i (i = 0 .. len(num_neighbors) - 1) expands every node first reached at hop i (the seeds at
  hop 0): it takes ``num_neighbors[i]`` of the node's in-edges ``u -> v`` uniformly without
  replacement, or all of them (``-1``, or a degree no larger than the fan-out); new sources join
  the next hop;
* the batch holds exactly the sampled edges (``edge_index`` local, ``e_id`` their columns in the
  graph's ``edge_index``), so every expanded node has all its in-edges when its fan-out is -1, and
  the nodes of the last hop have none.

Fan-out ``num_neighbors[0]`` is the hop next to the seeds, i.e. the *last* message-passing layer.
"""

from __future__ import annotations

import warnings

import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.sampler import NeighborSampler, SamplerOutput


class TorchNeighborSampler(NeighborSampler):
    """PyG's homogeneous directional :class:`~torch_geometric.sampler.NeighborSampler`, sampled in torch.

    Args:
        data: the graph (``edge_index`` long [2, E], row 0 source, row 1 target).
        num_neighbors: fan-out per hop, -1 for all in-edges.
    """

    def __init__(self, data: Data, num_neighbors: list[int]) -> None:
        with warnings.catch_warnings():  # PyG's "install pyg-lib" notice: sampling here is this class's own
            warnings.filterwarnings("ignore", message=".*pyg-lib.*")
            super().__init__(data, num_neighbors)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)  # global id -> batch position

    def _sample(self, seed: Tensor, seed_time: Tensor | None = None, **kwargs) -> SamplerOutput:
        if isinstance(seed, dict) or seed_time is not None:
            raise NotImplementedError("TorchNeighborSampler samples homogeneous, static graphs only")
        fanouts = self.num_neighbors.get_mapped_values()
        nodes, rows, cols, edges = [seed], [], [], []
        self._local[seed] = torch.arange(seed.numel())
        frontier, count = torch.arange(seed.numel()), seed.numel()
        counts_nodes, counts_edges = [seed.numel()], []
        try:
            for fanout in fanouts:
                pos, target = self._in_edges(nodes, frontier, int(fanout))
                source = self.row[pos]
                fresh = torch.unique(source[self._local[source] < 0])
                self._local[fresh] = torch.arange(count, count + fresh.numel())
                count += fresh.numel()
                nodes.append(fresh)
                rows.append(self._local[source])
                cols.append(target)
                edges.append(pos)
                counts_nodes.append(fresh.numel())
                counts_edges.append(pos.numel())
                frontier = self._local[fresh]
            node = torch.cat(nodes)
        finally:
            self._local[torch.cat(nodes)] = -1
        empty = seed.new_empty(0)
        return SamplerOutput(
            node=node,
            row=torch.cat(rows) if rows else empty,
            col=torch.cat(cols) if cols else empty,
            edge=torch.cat(edges) if edges else empty,
            batch=None,
            num_sampled_nodes=counts_nodes,
            num_sampled_edges=counts_edges,
        )

    def _in_edges(self, nodes: list[Tensor], frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """CSC positions of the sampled in-edges of the ``frontier`` (batch positions) and their targets."""
        glob = torch.cat(nodes)[frontier]
        start, degree = self.colptr[glob], self.colptr[glob + 1] - self.colptr[glob]
        whole = degree <= fanout if fanout >= 0 else torch.ones_like(degree, dtype=torch.bool)
        taken = torch.where(whole, degree, 0)  # nodes that keep every in-edge
        owner = torch.repeat_interleave(torch.arange(frontier.numel()), taken)
        offset = torch.arange(owner.numel()) - (torch.cumsum(taken, 0) - taken)[owner]
        if not bool(whole.all()):
            many = (~whole).nonzero().view(-1)
            owner = torch.cat([owner, many.repeat_interleave(fanout)])
            offset = torch.cat([offset, _floyd_sample(degree[many], fanout).view(-1)])
        return start[owner] + offset, frontier[owner]


def _floyd_sample(degree: Tensor, k: int) -> Tensor:
    """k distinct offsets in ``[0, degree_i)`` per row, uniformly (Floyd's algorithm, vectorised): long [n, k]."""
    chosen = torch.empty(degree.numel(), k, dtype=torch.long)
    for step in range(k):
        top = degree - k + step  # draw t in [0, top]; if t was taken, take top (not taken yet)
        t = torch.floor(torch.rand(degree.numel(), dtype=torch.double) * (top + 1)).long()
        taken = (chosen[:, :step] == t.unsqueeze(1)).any(1)
        chosen[:, step] = torch.where(taken, top, t)
    return chosen


def neighbor_loader(
    graph: Data, input_nodes: Tensor, num_neighbors: list[int], batch_size: int, shuffle: bool
) -> NeighborLoader:
    """PyG's ``NeighborLoader`` over ``graph`` (on the CPU), through pyg-lib / torch-sparse where installed.

    Args:
        graph: the graph whose node attributes (``x``, ``y``, ...) the batches carry.
        input_nodes: long [S], the distinct seed nodes; each batch takes ``batch_size`` of them.
        num_neighbors: fan-out per hop (-1 = all in-edges), hop 0 next to the seeds.
        batch_size: seeds per batch.
        shuffle: draw the seeds in a fresh random order every pass (torch's global generator).

    Returns:
        The loader; each batch has ``n_id`` (seeds first), ``e_id``, ``input_id`` and ``batch_size``.
    """
    data = Data(**{key: value.cpu() for key, value in graph.items() if isinstance(value, Tensor)})
    data.num_nodes = graph.num_nodes
    compiled = torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE
    sampler = None if compiled else TorchNeighborSampler(data, list(num_neighbors))
    return NeighborLoader(
        data,
        num_neighbors=list(num_neighbors),
        input_nodes=input_nodes.cpu(),
        batch_size=batch_size,
        shuffle=shuffle,
        neighbor_sampler=sampler,
    )
