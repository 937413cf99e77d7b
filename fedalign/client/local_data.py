"""A client's data: its share of the dataset, on its device, and the task it learns."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from ..config import ExperimentConfig
from ..data import ClientData, GraphSplit, load_partition
from ..noise import LABEL_STREAM, noise_source
from ..privacy import randomised_response


@dataclass
class TaskInfo:
    """What the model needs to know about the dataset."""

    num_features: int
    num_classes: int
    multilabel: bool


def client_data(cfg: ExperimentConfig, client_id: int) -> tuple[TaskInfo, ClientData]:
    """Client ``client_id``'s partition of the experiment's dataset (loaded once per process).

    Args:
        cfg: the experiment config.
        client_id: the client's index, 0..federation.num_clients-1.

    Returns:
        ``(task, data)``: the dataset's task description and the client's partition.
    """
    if not 0 <= client_id < cfg.federation.num_clients:
        raise ValueError(f"client id {client_id} out of range for federation.num_clients={cfg.federation.num_clients}")
    dataset, clients = load_partition(cfg)
    return TaskInfo(dataset.num_features, dataset.num_classes, dataset.multilabel), clients[client_id]


def to_device(data: ClientData, device: torch.device) -> tuple[GraphSplit, GraphSplit, GraphSplit, Data]:
    """The train, val and test splits and the alignment graph on ``device``; a graph that several of
    them share is moved once and stays shared (``replicate``: one forward pass serves two purposes).

    Args:
        data: the client's partition.
        device: the device to move the graphs to.
    """
    moved: dict[int, Data] = {}

    def move(graph: Data) -> Data:
        if id(graph) not in moved:
            moved[id(graph)] = graph.to(device)
        return moved[id(graph)]

    train, val, test = (GraphSplit(move(s.graph), s.mask.to(device)) for s in (data.train, data.val, data.test))
    return train, val, test, move(data.alignment)


def split_into_graphs(split: GraphSplit) -> list[Data]:
    """The graphs of a multi-graph split (by ``graph_id``), each relabelled 0..n-1.

    Every returned ``Data`` has ``x``, ``edge_index``, ``y`` and ``mask`` (the
    split's mask restricted to the graph), in increasing ``graph_id`` order.
    Edges never cross graphs in a disjoint union, so nothing is lost.

    Args:
        split: a split of a multi-graph dataset (its graph has ``graph_id``, one id per node).
    """
    graph = split.graph
    if "graph_id" not in graph:
        raise ValueError("this split has no graph_id: it is a single graph, not a union of graphs")
    graphs = []
    for gid in torch.unique(graph.graph_id).tolist():
        nodes = (graph.graph_id == gid).nonzero().view(-1)
        edge_index, _ = subgraph(nodes, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
        graphs.append(Data(x=graph.x[nodes], edge_index=edge_index, y=graph.y[nodes], mask=split.mask[nodes]))
    return graphs


def randomise_labels(cfg: ExperimentConfig, client_id: int, train: GraphSplit, task: TaskInfo) -> GraphSplit:
    """``train`` on a copy of its graph whose training labels went through randomised response at
    ``privacy.label_epsilon`` (:mod:`fedalign.privacy.labels`); other nodes' labels are untouched
    (validation and test labels never enter training). The shared graph itself is not modified.

    Args:
        cfg: the experiment config (seed and ``privacy.label_epsilon``).
        client_id: the client's index, which seeds its noise stream.
        train: the client's training split.
        task: the dataset's task (number of classes, multi-label or not).
    """
    noise = noise_source(cfg, client_id, 0, LABEL_STREAM)
    graph = copy.copy(train.graph)
    y = graph.y.cpu().clone()
    mask = train.mask.cpu()
    assert cfg.privacy.label_epsilon is not None  # label DP only
    y[mask] = randomised_response(y[mask], cfg.privacy.label_epsilon, task.num_classes, task.multilabel, noise)
    graph.y = y.to(train.graph.y.device)
    return GraphSplit(graph, train.mask)
