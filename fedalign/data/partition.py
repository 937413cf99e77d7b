"""Splitting a dataset among federated clients.

Schemes (:data:`PARTITION_SCHEMES`):

* ``replicate`` -- every client gets the whole dataset (the paper's setting);
  the alignment graph is the training graph itself.
* ``iid``, ``dirichlet``, ``community`` -- single-graph data. A seeded
  ``public_fraction`` of all nodes forms the public set P (labels never
  used); its induced subgraph is the alignment graph shared by all clients.
  The other nodes are split among clients (uniformly at random, by per-class
  Dirichlet label skew, or by whole Louvain communities); client i trains on
  the subgraph induced by its own nodes and P, with the dataset's masks
  restricted to its own nodes.
* ``graphs`` (``iid`` is an alias on multi-graph data) -- a
  ``public_fraction`` share of the training graphs forms the alignment graph;
  the other training graphs are dealt to clients whole; every client
  evaluates on the dataset's val/test graphs.

With ``label_rate`` < 1 every client then keeps the labels of only that share
of its training nodes (:func:`keep_labels`), drawn per client: per class by
default, or uniformly over the training nodes, independently of their labels
(``stratify=False``, what label DP needs: a labelled set chosen by class would
itself depend on the private labels).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from ..seeds import derive_seed
from .datasets import GraphDataset, GraphSplit

PARTITION_SCHEMES: tuple[str, ...] = ("replicate", "iid", "dirichlet", "community", "graphs")
_NODE_SCHEMES = ("iid", "dirichlet", "community")
_GRAPH_SCHEMES = ("graphs", "iid")


@dataclass
class ClientData:
    """One client's view of the data.

    Attributes:
        client_id: index in ``[0, num_clients)``.
        train, val, test: the client's splits; outside ``replicate`` they share
            one local ``Data`` for single-graph data. Local graphs made by a
            split carry ``global_id`` long ``[N_i]``: the node's index in the
            dataset's graph (single-graph) or in ``dataset.train.graph``
            (multi-graph training graphs).
        alignment: the graph on which structure statistics are computed
            (``x`` float32 ``[N_a, F]``, ``edge_index`` long ``[2, E_a]``),
            identical for all clients. In ``replicate`` mode it is the very
            object ``train.graph``; otherwise it also carries ``global_id``
            long ``[N_a]`` and no labels.
    """

    client_id: int
    train: GraphSplit
    val: GraphSplit
    test: GraphSplit
    alignment: Data


def partition_dataset(
    dataset: GraphDataset,
    num_clients: int,
    scheme: str = "replicate",
    alpha: float = 0.5,
    public_fraction: float = 0.2,
    seed: int = 0,
    label_rate: float = 1.0,
    stratify_labels: bool = True,
) -> list[ClientData]:
    """Split ``dataset`` among ``num_clients`` clients (module docstring: schemes).

    Args:
        dataset: the loaded dataset.
        num_clients: K.
        scheme: the partition scheme (``partition.scheme``; the module docstring lists them).
        alpha: Dirichlet concentration of ``dirichlet`` (> 0; small -> strong label skew).
        public_fraction: share in [0, 1) of nodes (single-graph) or training
            graphs (multi-graph, at least one graph) forming the alignment
            graph; must be > 0 outside ``replicate``, ignored by it.
        seed: seeds the public draw, the split and Louvain; same seed -> same partition.
        label_rate: share in (0, 1] of each client's training nodes that keep their
            label (:func:`keep_labels`); the others stay in the client's graph unlabelled.
        stratify_labels: draw the labelled share per class (True) or uniformly over the
            training nodes, independently of their labels (False: label DP).

    Returns:
        ``num_clients`` :class:`ClientData`, ordered by ``client_id``.

    Raises:
        ValueError: unknown scheme, scheme not applicable to the data kind,
            ``num_clients < 1``, invalid ``alpha``/``public_fraction``, or a
            client left without training data.
    """
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; valid schemes: {', '.join(PARTITION_SCHEMES)}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not 0 < label_rate <= 1:
        raise ValueError(f"label_rate must be in (0, 1], got {label_rate}")
    clients = _partition(dataset, num_clients, scheme, alpha, public_fraction, seed)
    if label_rate < 1:
        clients = [
            replace(
                c,
                train=keep_labels(
                    c.train,
                    label_rate,
                    derive_seed(seed, c.client_id),
                    stratify=stratify_labels and not dataset.multilabel,
                ),
            )
            for c in clients
        ]
    return clients


def keep_labels(split: GraphSplit, rate: float, seed: int, stratify: bool) -> GraphSplit:
    """``split`` with only a seeded random share ``rate`` of its nodes left in the mask (same graph object).

    ``stratify`` (multiclass only): per class, ``max(1, round(rate * n_c))`` of its n_c nodes
    (so every class that had a labelled node keeps one). Otherwise ``max(1, round(rate * n))``
    of the n nodes, drawn from the node ids and ``seed`` alone: the labelled set does not
    depend on any label (required under label DP, where the labels are the private unit).

    Args:
        split: the split whose mask is thinned.
        rate: the share of labelled nodes to keep, in (0, 1].
        seed: seeds the draw.
        stratify: draw per class (multiclass only).
    """
    nodes = split.mask.nonzero().view(-1)
    generator = torch.Generator().manual_seed(seed)  # a public selection, not privacy noise
    groups = [nodes[split.graph.y[nodes] == c] for c in torch.unique(split.graph.y[nodes])] if stratify else [nodes]
    kept = [g[torch.randperm(len(g), generator=generator)[: max(1, round(rate * len(g)))]] for g in groups if len(g)]
    mask = torch.zeros_like(split.mask)
    if kept:
        mask[torch.cat(kept)] = True
    return GraphSplit(split.graph, mask)


def public_graph(dataset: GraphDataset, scheme: str = "replicate", public_fraction: float = 0.2, seed: int = 0) -> Data:
    """The alignment graph of :func:`partition_dataset` with the same arguments, without dealing
    out the private data (what a server needs to check releases). Labels are never included.

    Args:
        dataset: the loaded dataset.
        scheme: the partition scheme (``partition.scheme``); ``replicate`` aligns on the whole training graph.
        public_fraction: the share of nodes (transductive) or training graphs (inductive) made public.
        seed: seeds the public draw.
    """
    if scheme == "replicate":
        return dataset.train.graph
    _check_scheme(dataset, scheme, 0.5, public_fraction)
    rng = np.random.default_rng(seed)
    graph = dataset.train.graph
    if dataset.transductive:
        return _induced(graph, torch.from_numpy(public_node_ids(dataset, public_fraction, seed)), with_labels=False)
    public, _ = _draw_public(torch.unique(graph.graph_id).numpy(), public_fraction, "training graph", rng)
    return _union_of(graph, public, with_labels=False)


def public_node_ids(dataset: GraphDataset, public_fraction: float, seed: int) -> np.ndarray:
    """The sorted ids (in the whole graph) of the public alignment share of a single-graph dataset: node i of the
    alignment graph is node ``public_node_ids(...)[i]`` (what an evaluation holding the labels needs).

    Args:
        dataset: a transductive (single-graph) dataset.
        public_fraction: ``partition.public_fraction``.
        seed: the experiment seed.
    """
    graph = dataset.train.graph
    public, _ = _draw_public(np.arange(graph.num_nodes), public_fraction, "node", np.random.default_rng(seed))
    return np.sort(public)


def _partition(
    dataset: GraphDataset, num_clients: int, scheme: str, alpha: float, public_fraction: float, seed: int
) -> list[ClientData]:
    if scheme == "replicate":
        return [
            ClientData(i, dataset.train, dataset.val, dataset.test, dataset.train.graph) for i in range(num_clients)
        ]
    _check_scheme(dataset, scheme, alpha, public_fraction)
    rng = np.random.default_rng(seed)
    if dataset.transductive:
        return _split_nodes(dataset, num_clients, scheme, alpha, public_fraction, seed, rng)
    return _split_graphs(dataset, num_clients, public_fraction, rng)


def _check_scheme(dataset: GraphDataset, scheme: str, alpha: float, public_fraction: float) -> None:
    if not 0 <= public_fraction < 1:
        raise ValueError(f"public_fraction must be in [0, 1), got {public_fraction}")
    if public_fraction == 0:
        raise ValueError(
            f"scheme {scheme!r} builds the alignment graph from a public share of the data, so it needs "
            "public_fraction > 0 (only 'replicate' works without one)"
        )
    allowed = _NODE_SCHEMES if dataset.transductive else _GRAPH_SCHEMES
    if scheme not in allowed:
        raise ValueError(
            f"scheme {scheme!r} does not apply to {'single' if dataset.transductive else 'multi'}-graph dataset "
            f"{dataset.name!r}: single-graph data takes replicate/{'/'.join(_NODE_SCHEMES)}, multi-graph data "
            f"takes replicate/graphs (alias iid)"
        )
    if scheme == "dirichlet" and not alpha > 0:
        raise ValueError(f"dirichlet needs alpha > 0, got {alpha}")


def _induced(graph: Data, nodes: torch.Tensor, with_labels: bool) -> Data:
    """Subgraph induced by ``nodes`` (sorted long ``[n]``), relabelled 0..n-1, with ``global_id = nodes``."""
    edge_index, _ = subgraph(nodes, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
    out = Data(x=graph.x[nodes], edge_index=edge_index, global_id=nodes)
    if with_labels:
        out.y = graph.y[nodes]
    if "graph_id" in graph:
        out.graph_id = graph.graph_id[nodes]
    return out


def _draw_public(
    units: np.ndarray, fraction: float, unit: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random ``fraction`` of ``units`` (nodes or graph ids) as public, the rest private (in drawn order).

    The public share is ``round(fraction * total)``, at least 1, leaving at least one ``unit`` for the clients.
    """
    count = max(1, round(fraction * len(units)))
    if count >= len(units):
        raise ValueError(f"public_fraction={fraction} leaves no {unit} for the clients out of {len(units)}; lower it")
    order = rng.permutation(units)
    return order[:count], order[count:]


def _union_of(graph: Data, graph_ids: np.ndarray, with_labels: bool) -> Data:
    """The subgraph of a multi-graph union made of the graphs ``graph_ids``."""
    nodes = torch.from_numpy(np.isin(graph.graph_id.numpy(), graph_ids)).nonzero().view(-1)
    return _induced(graph, nodes, with_labels)


def _split_nodes(
    dataset: GraphDataset,
    num_clients: int,
    scheme: str,
    alpha: float,
    public_fraction: float,
    seed: int,
    rng: np.random.Generator,
) -> list[ClientData]:
    graph = dataset.train.graph
    public, private = _draw_public(np.arange(graph.num_nodes), public_fraction, "node", rng)
    public = np.sort(public)
    if scheme == "iid":
        parts = np.array_split(private, num_clients)
    elif scheme == "dirichlet":
        if dataset.multilabel:
            raise ValueError(f"dirichlet label skew needs single-label classes; {dataset.name!r} is multilabel")
        parts = _dirichlet_parts(private, graph.y.numpy()[private], num_clients, alpha, rng)
    else:
        parts = _community_parts(graph.edge_index, private, num_clients, seed)

    alignment = _induced(graph, torch.from_numpy(public), with_labels=False)
    clients = []
    for i, own in enumerate(parts):
        if not dataset.train.mask[torch.from_numpy(own)].any():
            hint = ", a larger alpha" if scheme == "dirichlet" else ""
            raise ValueError(
                f"partition scheme {scheme!r}: client {i} of {num_clients} receives no training node "
                f"({len(own)} own nodes, none in the train split); use fewer clients{hint} or a smaller "
                f"public_fraction"
            )
        nodes = torch.from_numpy(np.union1d(own, public))
        local = _induced(graph, nodes, with_labels=True)
        is_own = torch.from_numpy(np.isin(nodes.numpy(), own))
        train, val, test = (
            GraphSplit(local, split.mask[nodes] & is_own) for split in (dataset.train, dataset.val, dataset.test)
        )
        clients.append(ClientData(i, train, val, test, alignment))
    return clients


def _dirichlet_parts(
    nodes: np.ndarray, labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, deal the class's ``nodes`` to clients in proportions drawn from ``Dir(alpha * 1)``."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        members = rng.permutation(nodes[labels == c])
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.append(chunk)
    return [np.concatenate(p) for p in parts]


def _community_graph(edge_index: torch.Tensor, nodes: np.ndarray) -> nx.Graph:
    """Undirected networkx graph induced by ``nodes`` (ids kept), the input of Louvain.

    Nodes are added in increasing id order, then edges in ``edge_index``
    column order (self loops dropped): Louvain's result depends on insertion
    order, so this construction is part of the ``community`` scheme.
    """
    src, dst = edge_index.numpy()
    keep = np.isin(src, nodes) & np.isin(dst, nodes) & (src != dst)
    graph = nx.Graph()
    graph.add_nodes_from(np.sort(nodes).tolist())
    graph.add_edges_from(zip(src[keep].tolist(), dst[keep].tolist(), strict=True))
    return graph


def _community_parts(edge_index: torch.Tensor, nodes: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
    """Louvain communities of the graph induced by ``nodes``, dealt whole, largest first, to the smallest client."""
    communities = nx.community.louvain_communities(_community_graph(edge_index, nodes), seed=seed)
    communities = sorted((sorted(c) for c in communities), key=lambda c: (-len(c), c[0]))
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for community in communities:
        smallest = min(range(num_clients), key=lambda i: len(parts[i]))
        parts[smallest].extend(community)
    return [np.array(p, dtype=np.int64) for p in parts]


def _split_graphs(
    dataset: GraphDataset, num_clients: int, public_fraction: float, rng: np.random.Generator
) -> list[ClientData]:
    train = dataset.train.graph
    public, private = _draw_public(torch.unique(train.graph_id).numpy(), public_fraction, "training graph", rng)
    if len(private) < num_clients:
        raise ValueError(
            f"partition scheme 'graphs': {len(private)} non-public training graphs cannot give each of "
            f"{num_clients} clients at least one graph; use fewer clients or a smaller public_fraction"
        )

    alignment = _union_of(train, public, with_labels=False)
    clients = []
    for i, ids in enumerate(np.array_split(private, num_clients)):
        local = _union_of(train, ids, with_labels=True)
        clients.append(
            ClientData(
                i,
                GraphSplit(local, torch.ones(local.num_nodes, dtype=torch.bool)),
                dataset.val,
                dataset.test,
                alignment,
            )
        )
    return clients
