"""Dataset loading: synthetic generators, real loaders (Cora), PPI-format loading, errors."""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from fedalign.data import DATASET_NAMES, load_dataset


def edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


def tree_listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with (size, mtime_ns), to detect any write."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            stat = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (stat.st_size, stat.st_mtime_ns)
    return out


def train_gcn(graph, train_mask, loss_fn, out_dim, steps=100, hidden=32):
    """Full-batch 2-layer GCN with Adam; returns the trained forward function."""
    torch.manual_seed(0)
    conv1, conv2 = GCNConv(graph.num_features, hidden), GCNConv(hidden, out_dim)
    params = list(conv1.parameters()) + list(conv2.parameters())
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)

    def forward(g):
        return conv2(torch.relu(conv1(g.x, g.edge_index)), g.edge_index)

    for _ in range(steps):
        opt.zero_grad()
        out = forward(graph)
        loss_fn(out[train_mask], graph.y[train_mask]).backward()
        opt.step()
    return forward


# ------------------------------------------------------------------ names


def test_names_normalised_and_unknown_rejected():
    assert load_dataset("Synthetic_CSBM").name == "synthetic-csbm"
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as err:
        load_dataset("mnist")
    for name in DATASET_NAMES:
        assert name in str(err.value)


# ------------------------------------------------------------------ synthetic-csbm


def test_csbm_shapes_and_dtypes(csbm):
    g = csbm.train.graph
    assert (csbm.name, csbm.multilabel, csbm.num_features, csbm.num_classes) == ("synthetic-csbm", False, 32, 4)
    assert g.x.shape == (400, 32) and g.x.dtype == torch.float32
    assert g.y.shape == (400,) and g.y.dtype == torch.long
    assert g.edge_index.dtype == torch.long
    assert csbm.transductive and csbm.val.graph is g and csbm.test.graph is g


def test_csbm_deterministic_by_seed(csbm):
    again = load_dataset("synthetic-csbm", seed=0)
    for a, b in [(csbm.train.graph.x, again.train.graph.x), (csbm.train.graph.edge_index, again.train.graph.edge_index),
                 (csbm.train.graph.y, again.train.graph.y), (csbm.train.mask, again.train.mask),
                 (csbm.val.mask, again.val.mask), (csbm.test.mask, again.test.mask)]:
        assert torch.equal(a, b)
    other = load_dataset("synthetic-csbm", seed=1)
    assert not torch.equal(csbm.train.graph.x, other.train.graph.x)
    assert edge_set(csbm.train.graph.edge_index) != edge_set(other.train.graph.edge_index)


def test_csbm_edges_undirected_simple_and_as_configured(csbm):
    g = csbm.train.graph
    pairs = g.edge_index.t().tolist()
    edges = set(map(tuple, pairs))
    assert len(edges) == len(pairs), "duplicate edges"
    assert all(u != v for u, v in edges), "self loops"
    assert all((v, u) in edges for u, v in edges), "an edge is stored in one direction only"
    src, dst = g.edge_index
    assert len(pairs) / g.num_nodes == pytest.approx(8.0, rel=0.15)  # avg_degree
    assert (g.y[src] == g.y[dst]).float().mean().item() == pytest.approx(0.8, abs=0.05)  # homophily


def test_csbm_options_override_and_unknown_option_rejected():
    ds = load_dataset("synthetic-csbm", synthetic={"num_nodes": 150, "num_classes": 3, "num_features": 8,
                                                   "avg_degree": 4, "homophily": 0.5})
    g = ds.train.graph
    assert g.x.shape == (150, 8) and ds.num_classes == 3
    assert g.edge_index.size(1) / 150 == pytest.approx(4.0, rel=0.25)
    with pytest.raises(ValueError, match="num_node"):
        load_dataset("synthetic-csbm", synthetic={"num_node": 10})
    with pytest.raises(ValueError, match="edge probability > 1"):
        load_dataset("synthetic-csbm", synthetic={"num_nodes": 40, "avg_degree": 30})


def test_csbm_classes_balanced_and_split_stratified(csbm):
    y = csbm.train.graph.y
    assert torch.bincount(y).tolist() == [100, 100, 100, 100]
    masks = torch.stack([csbm.train.mask, csbm.val.mask, csbm.test.mask])
    assert masks.sum(0).eq(1).all(), "train/val/test must be disjoint and cover every node for fractions summing to 1"
    for c in range(4):
        counts = masks[:, y == c].sum(1).tolist()
        assert counts == [60, 20, 20]


@pytest.mark.parametrize("split", [(0.5, 0.25, 0.25), (0.1, 0.1, 0.3), (0.33, 0.33, 0.34)])
def test_split_fractions_respected_per_class(split):
    ds = load_dataset("synthetic-csbm", split=split, seed=3, synthetic={"num_nodes": 303, "num_classes": 3})
    y = ds.train.graph.y
    masks = torch.stack([ds.train.mask, ds.val.mask, ds.test.mask])
    assert masks.sum(0).le(1).all()
    for c in range(3):
        n = int((y == c).sum())
        for mask, fraction in zip(masks, split):
            assert abs(int(mask[y == c].sum()) - fraction * n) <= 1


@pytest.mark.parametrize("split", [(0.7, 0.3, 0.2), (0.5, 0.0, 0.5), (0.5, 0.5)])
def test_invalid_split_rejected(split):
    with pytest.raises(ValueError, match="split must be three positive fractions"):
        load_dataset("synthetic-csbm", split=split)


def test_csbm_learnable_by_gcn_and_graph_helps(csbm):
    g, train, test = csbm.train.graph, csbm.train.mask, csbm.test.mask
    forward = train_gcn(g, train, F.cross_entropy, csbm.num_classes)
    gcn_acc = (forward(g).argmax(1) == g.y)[test].float().mean().item()
    # Independent feature-only baseline: nearest class mean estimated on the train nodes.
    means = torch.stack([g.x[train & (g.y == c)].mean(0) for c in range(4)])
    nearest_acc = (torch.cdist(g.x, means).argmin(1) == g.y)[test].float().mean().item()
    assert gcn_acc > 0.7
    assert gcn_acc > nearest_acc + 0.15


# ------------------------------------------------------------------ synthetic-ppi


def test_synthetic_ppi_structure(synthetic_ppi):
    ds = synthetic_ppi
    assert ds.multilabel and not ds.transductive
    assert (ds.num_features, ds.num_classes) == (16, 12)
    for split, num_graphs in [(ds.train, 20), (ds.val, 2), (ds.test, 2)]:
        g = split.graph
        assert torch.unique(g.graph_id).tolist() == list(range(num_graphs))
        sizes = torch.bincount(g.graph_id)
        assert sizes.min() >= 60 and sizes.max() <= 100
        assert g.x.shape == (g.num_nodes, 16) and g.x.dtype == torch.float32
        assert g.y.shape == (g.num_nodes, 12) and g.y.dtype == torch.float32
        assert set(g.y.unique().tolist()) <= {0.0, 1.0}
        assert split.mask.dtype == torch.bool and split.mask.all()
        src, dst = g.edge_index
        assert torch.equal(g.graph_id[src], g.graph_id[dst]), "edges must stay inside one graph"
        assert (src != dst).all()
        assert edge_set(g.edge_index) == edge_set(g.edge_index.flip(0))


def test_synthetic_ppi_deterministic(synthetic_ppi):
    again = load_dataset("synthetic-ppi", seed=0)
    other = load_dataset("synthetic-ppi", seed=1)
    for name in ("train", "val", "test"):
        a, b = getattr(synthetic_ppi, name).graph, getattr(again, name).graph
        for key in ("x", "edge_index", "y", "graph_id"):
            assert torch.equal(a[key], b[key])
    assert synthetic_ppi.train.graph.num_nodes != other.train.graph.num_nodes or not torch.equal(
        synthetic_ppi.train.graph.x, other.train.graph.x)


def test_synthetic_ppi_learnable(synthetic_ppi):
    ds = synthetic_ppi
    train, test = ds.train.graph, ds.test.graph
    forward = train_gcn(train, ds.train.mask, F.binary_cross_entropy_with_logits, ds.num_classes, hidden=64)
    with torch.no_grad():
        predicted = (forward(test) > 0).float()
    micro_f1 = (2 * (predicted * test.y).sum() / (predicted.sum() + test.y.sum())).item()
    positive_rate = test.y.mean().item()
    all_ones_f1 = 2 * positive_rate / (1 + positive_rate)  # micro-F1 of predicting every label
    assert micro_f1 > all_ones_f1 + 0.1


def test_synthetic_options_rejected_for_real_dataset(tmp_path):
    with pytest.raises(ValueError, match="only apply to synthetic"):
        load_dataset("cora", root=str(tmp_path), synthetic={"num_nodes": 10})


# ------------------------------------------------------------------ real data: Cora


def test_cora_loads_into_cache_without_writing_data_root(real_data_root, tmp_path):
    before = tree_listing(real_data_root)
    cache = tmp_path / "cache"
    ds = load_dataset("cora", root=str(real_data_root), cache_dir=str(cache))
    g = ds.train.graph
    assert (g.num_nodes, g.edge_index.size(1), ds.num_features, ds.num_classes) == (2708, 10556, 1433, 7)
    assert [int(s.mask.sum()) for s in (ds.train, ds.val, ds.test)] == [140, 500, 1000]
    assert ds.transductive and not ds.multilabel and g.y.dtype == torch.long
    assert tree_listing(real_data_root) == before, "the data root was modified"

    processed = cache / "datasets" / "Planetoid" / "Cora" / "processed" / "data.pt"
    assert processed.is_file()
    link = cache / "datasets" / "Planetoid" / "Cora" / "raw" / "ind.cora.x"
    assert link.is_symlink() and link.resolve() == (real_data_root / "Planetoid/Cora/raw/ind.cora.x").resolve()

    mtime = processed.stat().st_mtime_ns
    again = load_dataset("CORA", root=str(real_data_root), cache_dir=str(cache))
    assert processed.stat().st_mtime_ns == mtime, "a second load must not reprocess"
    assert torch.equal(again.train.graph.x, g.x) and torch.equal(again.test.mask, ds.test.mask)


def test_data_root_from_environment(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDALIGN_DATA_ROOT", str(real_data_root))
    monkeypatch.setenv("FEDALIGN_CACHE_DIR", str(tmp_path))
    assert load_dataset("cora").train.graph.num_nodes == 2708
    assert (tmp_path / "datasets" / "Planetoid" / "Cora" / "processed" / "data.pt").is_file()


# ------------------------------------------------------------------ missing files


def test_missing_raw_files_listed_with_full_paths(tmp_path):
    root, cache = tmp_path / "empty", tmp_path / "cache"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cora", root=str(root), cache_dir=str(cache))
    message = str(err.value)
    for ext in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"):
        assert str(root / "Planetoid" / "Cora" / "raw" / f"ind.cora.{ext}") in message
    assert "FEDALIGN_DATA_ROOT" in message
    assert not cache.exists(), "nothing may be linked or downloaded when files are missing"

    raw = root / "Amazon" / "Photo" / "raw"
    with pytest.raises(FileNotFoundError, match=str(raw / "amazon_electronics_photo.npz")):
        load_dataset("amazon-photo", root=str(root), cache_dir=str(cache))


def test_partially_present_raw_files_only_missing_listed(tmp_path):
    raw = tmp_path / "PPI" / "raw"
    raw.mkdir(parents=True)
    (raw / "train_feats.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("ppi", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert str(raw / "train_feats.npy") not in str(err.value)
    assert str(raw / "test_labels.npy") in str(err.value)
    assert "11 raw file(s) missing" in str(err.value)


def test_no_data_root_configured(monkeypatch):
    monkeypatch.delenv("FEDALIGN_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="FEDALIGN_DATA_ROOT"):
        load_dataset("cora")


# ------------------------------------------------------------------ PPI format


def test_ppi_format_loads_as_disjoint_unions(tiny_ppi_root, tmp_path):
    root, written = tiny_ppi_root
    before = tree_listing(root)
    ds = load_dataset("ppi", root=str(root), cache_dir=str(tmp_path / "cache"))
    assert ds.multilabel and not ds.transductive
    assert (ds.num_features, ds.num_classes) == (50, 121)
    for split, raw_split in [(ds.train, "train"), (ds.val, "valid"), (ds.test, "test")]:
        graph, feats, labels, sizes = written[raw_split]
        g = split.graph
        assert torch.bincount(g.graph_id).tolist() == sizes
        assert torch.equal(g.x, torch.from_numpy(feats))
        assert g.y.dtype == torch.float32 and torch.equal(g.y, torch.from_numpy(labels).float())
        expected = {(u, v) for u, v in graph.edges} | {(v, u) for u, v in graph.edges}
        assert edge_set(g.edge_index) == expected
        assert split.mask.all()
    assert tree_listing(root) == before
    assert (tmp_path / "cache" / "datasets" / "PPI" / "processed" / "train.pt").is_file()


def test_concurrent_loads_share_one_cache(tiny_ppi_root, tmp_path):
    root, _ = tiny_ppi_root
    cache = str(tmp_path / "cache")
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: load_dataset("ppi", root=str(root), cache_dir=cache), range(2))
    assert torch.equal(first.train.graph.x, second.train.graph.x)
    assert torch.equal(first.test.graph.edge_index, second.test.graph.edge_index)
