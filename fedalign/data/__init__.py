"""Graph datasets (synthetic and real, via PyG) and their federated partitions."""

from .cache import load_partition, load_public_graph, release_cached_data
from .datasets import (
    DATASET_NAMES,
    MULTI_GRAPH_DATASETS,
    MULTILABEL_DATASETS,
    GraphDataset,
    GraphSplit,
    load_dataset,
    metric_name,
    missing_raw_files,
    raw_file_fingerprint,
)
from .partition import PARTITION_SCHEMES, ClientData, keep_labels, partition_dataset, public_graph, public_node_ids

__all__ = [
    "DATASET_NAMES",
    "MULTI_GRAPH_DATASETS",
    "MULTILABEL_DATASETS",
    "PARTITION_SCHEMES",
    "ClientData",
    "GraphDataset",
    "GraphSplit",
    "keep_labels",
    "public_node_ids",
    "load_dataset",
    "load_partition",
    "load_public_graph",
    "release_cached_data",
    "metric_name",
    "missing_raw_files",
    "partition_dataset",
    "public_graph",
    "raw_file_fingerprint",
]
