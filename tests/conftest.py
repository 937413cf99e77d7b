"""Shared fixtures: small synthetic datasets and the optional real-data root."""

import os
from pathlib import Path

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
