"""Shared fixtures: small synthetic datasets and the optional real-data root."""

import json
import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from fedalign.data import load_dataset


@pytest.fixture(scope="session")
def csbm():
    """synthetic-csbm with defaults: 400 nodes, 4 classes, 60/20/20 split, seed 0."""
    return load_dataset("synthetic-csbm", seed=0)


@pytest.fixture(scope="session")
def synthetic_ppi():
    """synthetic-ppi with defaults: 20/2/2 graphs, 16 features, 12 labels, seed 0."""
    return load_dataset("synthetic-ppi", seed=0)


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The read-only real-data root ($FEDALIGN_DATA_ROOT, else ../shared/data beside the project); skips when absent."""
    root = Path(os.environ.get("FEDALIGN_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "Planetoid" / "Cora" / "raw").is_dir():
        pytest.skip(f"real data not available: no {root}/Planetoid/Cora/raw (set FEDALIGN_DATA_ROOT)")
    return root


@pytest.fixture
def flower_task_identity(monkeypatch):
    """Outside a Flower runtime, Messages can only be made once the task identity is set."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, getattr(TaskIdentity, attr) or 1)


@pytest.fixture
def tiny_ppi_root(tmp_path):
    """Writes a PPI-format raw folder (4/2/2 ring graphs, 50 features, 121 labels); returns (root, written)."""
    rng = np.random.default_rng(0)
    sizes = {"train": [7, 5, 6, 8], "valid": [5, 6], "test": [4, 7]}
    raw = tmp_path / "ppi_root" / "PPI" / "raw"
    raw.mkdir(parents=True)
    written, first_id = {}, 1
    for split, graph_sizes in sizes.items():
        graph, offset, graph_id = nx.Graph(), 0, []
        for i, n in enumerate(graph_sizes):
            graph.add_nodes_from(range(offset, offset + n))
            graph.add_edges_from((offset + j, offset + (j + 1) % n) for j in range(n))  # ring: every node has edges
            graph.add_edge(offset, offset + n // 2)
            graph_id += [first_id + i] * n
            offset += n
        first_id += len(graph_sizes)
        feats = rng.standard_normal((offset, 50)).astype(np.float32)
        labels = rng.integers(0, 2, size=(offset, 121)).astype(np.int64)
        (raw / f"{split}_graph.json").write_text(json.dumps(nx.node_link_data(graph, edges="links")))
        np.save(raw / f"{split}_feats.npy", feats)
        np.save(raw / f"{split}_graph_id.npy", np.array(graph_id))
        np.save(raw / f"{split}_labels.npy", labels)
        written[split] = (graph, feats, labels, graph_sizes)
    return tmp_path / "ppi_root", written
