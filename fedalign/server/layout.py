"""What the server knows of the public alignment graph: how honest releases are laid out."""

from __future__ import annotations

import logging

import numpy as np

from ..alignment import released_arrays
from ..config import ExperimentConfig
from ..data import load_public_graph
from ..queries import query_nodes
from ..wire import ReleaseLayout, release_layout

log = logging.getLogger("fedalign")


def release_layout_of(cfg: ExperimentConfig) -> ReleaseLayout | None:
    """The layout of the experiment's releases, from its public alignment graph.

    The server builds the public graph from the same data and partition config as the
    clients (without dealing out the private data). None, with a warning, when this
    process cannot read the data: releases are then checked for shape, dtype and range
    only, not for per-node sums.
    """
    try:
        dataset, graph = load_public_graph(cfg)
    except FileNotFoundError as error:
        log.warning("the server cannot read the dataset (%s); statistics are checked for shape, dtype and "
                    "range only, not for per-node sums. Give the server data.root to check them fully.", error)
        return None
    queries = query_nodes(cfg.seed, graph.num_nodes, cfg.align.queries)
    return release_layout(cfg.align.strategy, graph.edge_index, graph.num_nodes, dataset.num_classes,
                          dataset.multilabel, None if queries is None else len(queries))


def release_bytes(cfg: ExperimentConfig, client: int, entries: int) -> int:
    """Bytes of an honest release of ``client`` with ``entries`` values per array (the wire dtype)."""
    arrays = released_arrays(cfg.align.strategy, cfg.model.for_client(client)["hidden_layers"])
    return arrays * entries * np.dtype(cfg.align.statistics_dtype).itemsize
