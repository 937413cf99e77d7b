"""Federated partitions: replicate, node splits (iid/dirichlet/community), graph splits, errors."""

import copy
from dataclasses import replace

import networkx as nx
import numpy as np
import pytest
import torch

from fedalign.data import PARTITION_SCHEMES, GraphDataset, GraphSplit, load_dataset, partition_dataset

NODE_SCHEMES = ["iid", "dirichlet", "community"]


def public_and_own(clients):
    """Public node ids (from the alignment graph) and each client's own node ids (global)."""
    public = set(clients[0].alignment.global_id.tolist())
    own = [set(c.train.graph.global_id.tolist()) - public for c in clients]
    return public, own


def global_edges(graph, global_id):
    return {(int(global_id[u]), int(global_id[v])) for u, v in graph.edge_index.t().tolist()}


def induced_edges(edge_index, nodes):
    return {(u, v) for u, v in edge_index.t().tolist() if u in nodes and v in nodes}


def label_skew(dataset, clients):
    """Mean total-variation distance between each client's label histogram and the global one."""
    y = dataset.train.graph.y
    overall = torch.bincount(y, minlength=dataset.num_classes).float()
    overall /= overall.sum()
    distances = []
    for c in clients:
        local = c.train.graph
        own = c.train.mask | c.val.mask | c.test.mask
        counts = torch.bincount(local.y[own], minlength=dataset.num_classes).float()
        distances.append(0.5 * (counts / counts.sum() - overall).abs().sum().item())
    return float(np.mean(distances))


# ------------------------------------------------------------------ replicate


@pytest.mark.parametrize("fixture", ["csbm", "synthetic_ppi"])
def test_replicate_gives_everyone_everything(fixture, request):
    ds = request.getfixturevalue(fixture)
    clients = partition_dataset(ds, 3, "replicate", public_fraction=0.0)
    assert [c.client_id for c in clients] == [0, 1, 2]
    for c in clients:
        assert c.alignment is c.train.graph
        assert c.train.graph is ds.train.graph and c.val.graph is ds.val.graph and c.test.graph is ds.test.graph
        assert torch.equal(c.train.mask, ds.train.mask) and torch.equal(c.test.mask, ds.test.mask)


# ------------------------------------------------------------------ node splits


@pytest.mark.parametrize("scheme", NODE_SCHEMES)
def test_node_split_disjoint_covering_and_public_unlabelled(csbm, scheme):
    clients = partition_dataset(csbm, 3, scheme, alpha=1.0, public_fraction=0.2, seed=0)
    n = csbm.train.graph.num_nodes
    public, own = public_and_own(clients)
    assert len(public) == round(0.2 * n)
    assert sum(len(o) for o in own) == n - len(public), "clients' node sets overlap"
    assert set().union(*own) == set(range(n)) - public, "non-public nodes not covered"
    for c, mine in zip(clients, own):
        local = c.train.graph
        gid = local.global_id
        assert c.val.graph is local and c.test.graph is local
        assert set(gid.tolist()) == mine | public
        is_public = torch.tensor([int(g) in public for g in gid])
        for split, full in [(c.train, csbm.train), (c.val, csbm.val), (c.test, csbm.test)]:
            assert not (split.mask & is_public).any(), "a public node's label is used"
            assert torch.equal(split.mask, full.mask[gid] & ~is_public)
        assert c.train.mask.any()
        assert torch.equal(local.x, csbm.train.graph.x[gid]) and torch.equal(local.y, csbm.train.graph.y[gid])
        assert global_edges(local, gid) == induced_edges(csbm.train.graph.edge_index, mine | public)


@pytest.mark.parametrize("scheme", NODE_SCHEMES)
def test_alignment_graph_is_public_induced_subgraph_for_all(csbm, scheme):
    clients = partition_dataset(csbm, 4, scheme, alpha=1.0, seed=1)
    first = clients[0].alignment
    public = set(first.global_id.tolist())
    assert "y" not in first
    assert torch.equal(first.x, csbm.train.graph.x[first.global_id])
    assert global_edges(first, first.global_id) == induced_edges(csbm.train.graph.edge_index, public)
    for c in clients[1:]:
        assert torch.equal(c.alignment.x, first.x) and torch.equal(c.alignment.edge_index, first.edge_index)


@pytest.mark.parametrize("scheme", NODE_SCHEMES + ["graphs"])
def test_partitions_reproducible_by_seed(csbm, synthetic_ppi, scheme):
    ds = synthetic_ppi if scheme == "graphs" else csbm
    a, b, other = (partition_dataset(ds, 3, scheme, alpha=1.0, seed=s) for s in (5, 5, 6))
    ids = [[c.train.graph.global_id for c in p] + [p[0].alignment.global_id] for p in (a, b, other)]
    assert all(torch.equal(x, y) for x, y in zip(ids[0], ids[1]))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ids[0], ids[2]))


def test_dirichlet_small_alpha_skews_labels():
    ds = load_dataset("synthetic-csbm", synthetic={"num_nodes": 1000})
    skewed = label_skew(ds, partition_dataset(ds, 4, "dirichlet", alpha=0.2, seed=0))
    uniform = label_skew(ds, partition_dataset(ds, 4, "dirichlet", alpha=1000.0, seed=0))
    iid = label_skew(ds, partition_dataset(ds, 4, "iid", seed=0))
    assert uniform < 0.05 and iid < 0.1
    assert skewed > 0.3
    assert skewed > 4 * uniform


def test_community_keeps_louvain_communities_whole(csbm):
    clients = partition_dataset(csbm, 3, "community", seed=7)
    public, own = public_and_own(clients)
    private = sorted(set(range(csbm.train.graph.num_nodes)) - public)
    # Independent Louvain: nodes in id order, then the edges among private nodes in edge_index order.
    graph = nx.Graph()
    graph.add_nodes_from(private)
    graph.add_edges_from((u, v) for u, v in csbm.train.graph.edge_index.t().tolist()
                         if u != v and u not in public and v not in public)
    communities = nx.community.louvain_communities(graph, seed=7)
    assert len(communities) > 3
    owner = {node: i for i, mine in enumerate(own) for node in mine}
    for community in communities:
        assert len({owner[node] for node in community}) == 1, "a community was split across clients"
    sizes = [len(mine) for mine in own]
    assert max(sizes) - min(sizes) <= max(len(c) for c in communities), "greedy assignment should balance sizes"


# ------------------------------------------------------------------ graph splits


@pytest.mark.parametrize("scheme", ["graphs", "iid"])
def test_graph_split_disjoint_covering(synthetic_ppi, scheme):
    ds = synthetic_ppi
    clients = partition_dataset(ds, 3, scheme, public_fraction=0.2, seed=0)
    train = ds.train.graph
    alignment = clients[0].alignment
    public = set(alignment.graph_id.tolist())
    assert len(public) == 4  # round(0.2 * 20)
    assert torch.equal(alignment.x, train.x[alignment.global_id]) and "y" not in alignment
    owned = [set(c.train.graph.graph_id.tolist()) for c in clients]
    assert all(owned), "every client needs at least one training graph"
    assert sum(map(len, owned)) + len(public) == 20
    assert set().union(public, *owned) == set(range(20))
    for c, graphs in zip(clients, owned):
        local = c.train.graph
        assert torch.equal(c.alignment.x, alignment.x) and torch.equal(c.alignment.edge_index, alignment.edge_index)
        expected_nodes = torch.isin(train.graph_id, torch.tensor(sorted(graphs))).nonzero().view(-1)
        assert torch.equal(local.global_id, expected_nodes)
        assert torch.equal(local.y, train.y[expected_nodes]) and torch.equal(local.x, train.x[expected_nodes])
        assert global_edges(local, local.global_id) == induced_edges(train.edge_index, set(expected_nodes.tolist()))
        assert c.train.mask.all() and c.val is ds.val and c.test is ds.test


def test_graphs_alias_iid_is_identical(synthetic_ppi):
    a = partition_dataset(synthetic_ppi, 2, "graphs", seed=3)
    b = partition_dataset(synthetic_ppi, 2, "iid", seed=3)
    assert all(torch.equal(x.train.graph.global_id, y.train.graph.global_id) for x, y in zip(a, b))


def test_small_public_fraction_still_gives_one_public_graph(synthetic_ppi):
    clients = partition_dataset(synthetic_ppi, 2, "graphs", public_fraction=0.01)
    assert torch.unique(clients[0].alignment.graph_id).numel() == 1


# ------------------------------------------------------------------ errors


def test_unknown_scheme_and_bad_client_count(csbm):
    with pytest.raises(ValueError, match="unknown partition scheme 'random'") as err:
        partition_dataset(csbm, 2, "random")
    assert all(s in str(err.value) for s in PARTITION_SCHEMES)
    with pytest.raises(ValueError, match="num_clients must be >= 1"):
        partition_dataset(csbm, 0)


@pytest.mark.parametrize("scheme", NODE_SCHEMES)
def test_zero_public_fraction_rejected_outside_replicate(csbm, scheme):
    with pytest.raises(ValueError, match="public_fraction > 0"):
        partition_dataset(csbm, 2, scheme, public_fraction=0.0)
    with pytest.raises(ValueError, match=r"public_fraction must be in \[0, 1\)"):
        partition_dataset(csbm, 2, scheme, public_fraction=1.0)


def test_schemes_checked_against_data_kind(csbm, synthetic_ppi):
    with pytest.raises(ValueError, match="scheme 'graphs' does not apply to single-graph"):
        partition_dataset(csbm, 2, "graphs")
    for scheme in ("dirichlet", "community"):
        with pytest.raises(ValueError, match=f"scheme '{scheme}' does not apply to multi-graph"):
            partition_dataset(synthetic_ppi, 2, scheme)


def test_client_without_training_nodes_rejected(csbm):
    with pytest.raises(ValueError, match="'iid'.*no training node.*fewer clients"):
        partition_dataset(csbm, 300, "iid")
    with pytest.raises(ValueError, match="'dirichlet'.*no training node.*larger alpha"):
        partition_dataset(csbm, 10, "dirichlet", alpha=0.01)
    with pytest.raises(ValueError, match="dirichlet needs alpha > 0"):
        partition_dataset(csbm, 2, "dirichlet", alpha=0.0)


def test_too_many_clients_for_graphs(synthetic_ppi):
    with pytest.raises(ValueError, match="16 non-public training graphs cannot give each of 17 clients"):
        partition_dataset(synthetic_ppi, 17, "graphs", public_fraction=0.2)
    with pytest.raises(ValueError, match="leaves no training graph"):
        partition_dataset(synthetic_ppi, 1, "graphs", public_fraction=0.99)


def test_dirichlet_rejects_multilabel_single_graph(synthetic_ppi):
    union = synthetic_ppi.train
    single = GraphDataset("multilabel-single", True, 16, 12, union, GraphSplit(union.graph, union.mask),
                          GraphSplit(union.graph, union.mask))
    with pytest.raises(ValueError, match="needs single-label classes"):
        partition_dataset(single, 2, "dirichlet")


@pytest.mark.parametrize("scheme", ["replicate", "community"])
def test_label_rate_keeps_a_seeded_per_class_share_of_each_clients_training_labels(scheme):
    dataset = load_dataset("synthetic-csbm", synthetic={"num_nodes": 400}, seed=0)
    full = partition_dataset(dataset, 3, scheme=scheme, public_fraction=0.2, seed=1)
    limited = partition_dataset(dataset, 3, scheme=scheme, public_fraction=0.2, seed=1, label_rate=0.1)
    again = partition_dataset(dataset, 3, scheme=scheme, public_fraction=0.2, seed=1, label_rate=0.1)
    for f, l, a in zip(full, limited, again):
        assert l.train.graph is l.val.graph and torch.equal(l.train.graph.x, f.train.graph.x)  # only the mask shrinks
        assert not (l.train.mask & ~f.train.mask).any()  # a subset of the training nodes
        y = f.train.graph.y
        for c in torch.unique(y[f.train.mask]):
            n_c = int((y[f.train.mask] == c).sum())
            assert int((y[l.train.mask] == c).sum()) == max(1, round(0.1 * n_c))
        assert torch.equal(l.train.mask, a.train.mask)  # reproducible by seed
        assert torch.equal(l.val.mask, f.val.mask) and torch.equal(l.test.mask, f.test.mask)
    if scheme == "replicate":  # every client draws its own labelled share
        assert not torch.equal(limited[0].train.mask, limited[1].train.mask)
        assert limited[0].alignment is limited[0].train.graph


def _with_one_label_changed(dataset, node):
    """``dataset`` whose node ``node`` (a global id) has another label: a new graph object, the rest shared."""
    graph = copy.copy(dataset.train.graph)
    graph.y = graph.y.clone()
    graph.y[node] = (graph.y[node] + 1) % dataset.num_classes
    return replace(dataset, train=GraphSplit(graph, dataset.train.mask), val=GraphSplit(graph, dataset.val.mask),
                   test=GraphSplit(graph, dataset.test.mask))


@pytest.mark.parametrize("scheme", ["replicate", "iid"])
def test_unstratified_labelled_share_does_not_depend_on_any_label(scheme):
    """Label DP: changing one training label must not change which nodes are labelled (the
    stratified draw does: that is the leak of a per-class draw under label DP)."""
    dataset = load_dataset("synthetic-csbm", synthetic={"num_nodes": 400}, seed=0)
    args = dict(scheme=scheme, public_fraction=0.2, seed=1, label_rate=0.05)
    kept = partition_dataset(dataset, 2, stratify_labels=False, **args)
    n = int(partition_dataset(dataset, 2, scheme=scheme, public_fraction=0.2, seed=1)[0].train.mask.sum())
    assert int(kept[0].train.mask.sum()) == max(1, round(0.05 * n))  # a share of all training nodes
    own = kept[0].train.graph.global_id if "global_id" in kept[0].train.graph else torch.arange(400)
    stratified_changed = 0
    for node in own[kept[0].train.mask][:5].tolist():  # labelled nodes: the most telling labels to change
        neighbour = _with_one_label_changed(dataset, node)
        again = partition_dataset(neighbour, 2, stratify_labels=False, **args)
        for a, b in zip(kept, again):
            assert torch.equal(a.train.mask, b.train.mask)
        stratified = [partition_dataset(d, 2, **args) for d in (dataset, neighbour)]
        stratified_changed += not all(torch.equal(a.train.mask, b.train.mask) for a, b in zip(*stratified))
    assert stratified_changed > 0  # the per-class draw is what the unstratified one fixes


def test_label_dp_config_draws_the_labelled_share_without_labels():
    from fedalign.config import ExperimentConfig, SyntheticConfig
    from fedalign.data import load_partition
    from fedalign.seeds import derive_seed

    cfg = ExperimentConfig()
    cfg.data.name, cfg.data.synthetic = "synthetic-csbm", SyntheticConfig(num_nodes=300)
    cfg.federation.num_clients = 2
    cfg.partition.scheme, cfg.partition.label_rate = "replicate", 0.1
    cfg.privacy.unit, cfg.privacy.label_epsilon = "labels", 1.0
    _, private = load_partition(cfg)
    full = partition_dataset(load_dataset("synthetic-csbm", synthetic={"num_nodes": 300}, seed=cfg.seed), 2)[0]
    nodes = full.train.mask.nonzero().view(-1)  # the hand-made draw: a seeded permutation of all training nodes
    chosen = nodes[torch.randperm(len(nodes), generator=torch.Generator().manual_seed(derive_seed(cfg.seed, 0)))]
    expected = torch.zeros_like(full.train.mask)
    expected[chosen[:max(1, round(0.1 * len(nodes)))]] = True
    assert torch.equal(private[0].train.mask, expected)
