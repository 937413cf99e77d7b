"""Graph datasets (synthetic and real, via PyG) and their federated partitions."""

from .datasets import (
    DATASET_NAMES,
    MULTI_GRAPH_DATASETS,
    MULTILABEL_DATASETS,
    GraphDataset,
    GraphSplit,
    load_dataset,
    metric_name,
    missing_raw_files,
)
from .partition import PARTITION_SCHEMES, ClientData, partition_dataset

__all__ = [
    "DATASET_NAMES",
    "MULTI_GRAPH_DATASETS",
    "MULTILABEL_DATASETS",
    "PARTITION_SCHEMES",
    "ClientData",
    "GraphDataset",
    "GraphSplit",
    "load_dataset",
    "metric_name",
    "missing_raw_files",
    "partition_dataset",
]
