"""An experiment's dataset and partition, loaded once per process (clients of one simulation share one copy)."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

from torch_geometric.data import Data

from .datasets import GraphDataset, load_dataset
from .partition import ClientData, partition_dataset, public_graph

if TYPE_CHECKING:
    from ..config import ExperimentConfig


@functools.lru_cache(maxsize=4)
def _dataset(
    name: str, root: str | None, cache_dir: str | None, split: tuple[float, ...], seed: int, synthetic: str
) -> GraphDataset:
    return load_dataset(
        name, root=root, cache_dir=cache_dir, split=split, seed=seed, synthetic=json.loads(synthetic) or None
    )


def _dataset_key(cfg: ExperimentConfig) -> tuple:
    d = cfg.data
    return d.name, d.root, d.cache_dir, tuple(d.split), cfg.seed, json.dumps(d.synthetic.options(), sort_keys=True)


@functools.lru_cache(maxsize=4)
def _partition(
    dataset_key: tuple,
    num_clients: int,
    scheme: str,
    alpha: float,
    public_fraction: float,
    label_rate: float,
    stratify_labels: bool,
) -> list[ClientData]:
    return partition_dataset(
        _dataset(*dataset_key),
        num_clients,
        scheme=scheme,
        alpha=alpha,
        public_fraction=public_fraction,
        seed=dataset_key[4],
        label_rate=label_rate,
        stratify_labels=stratify_labels,
    )


def release_cached_data() -> None:
    """Forget every cached dataset, partition and public graph of this process.

    A sweep calls it before each cell: the caches keep up to four partitions, and a partition holds every
    client's local graph with its own copy of the public nodes' features (Coauthor CS, K = 100: ~10 GB), so
    a process moving from one seed's cells to the next would otherwise hold both while it builds the new one.
    Reloading costs seconds; the data, and so every result, is the same (loading is deterministic).
    """
    _partition.cache_clear()
    _public.cache_clear()
    _dataset.cache_clear()


def load_partition(cfg: ExperimentConfig) -> tuple[GraphDataset, list[ClientData]]:
    """The dataset of ``cfg`` and every client's share of it (``partition`` section). Under label DP
    (``privacy.unit: labels``) the labelled share is drawn independently of the labels.

    Args:
        cfg: the experiment config (``data``, ``partition``, ``federation.num_clients``, ``seed``, ``privacy.unit``).
    """
    p = cfg.partition
    key = _dataset_key(cfg)
    return _dataset(*key), _partition(
        key,
        cfg.federation.num_clients,
        p.scheme,
        p.alpha,
        p.public_fraction,
        p.label_rate,
        cfg.privacy.unit != "labels",
    )


@functools.lru_cache(maxsize=4)
def _public(dataset_key: tuple, scheme: str, public_fraction: float) -> Data:
    return public_graph(_dataset(*dataset_key), scheme, public_fraction, dataset_key[4])


def load_public_graph(cfg: ExperimentConfig) -> tuple[GraphDataset, Data]:
    """The dataset of ``cfg`` and its public alignment graph, without partitioning the private data
    (built once per process: the server's transport and coordinator both check releases against it).

    Args:
        cfg: the experiment config (``data``, ``partition``, ``seed``).
    """
    key, p = _dataset_key(cfg), cfg.partition
    return _dataset(*key), _public(key, p.scheme, p.public_fraction)
