"""What the server knows of the public alignment graph: how honest releases are laid out.

With ``federation.public_layout`` the server reads it from the public layout artefact
(:mod:`fedalign.public_layout`, made where the data is by ``fedalign layout``) and never opens
the data root; without it, from the data, as the clients do; with neither, it checks releases
for shape, dtype and range only (with a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..alignment import released_arrays
from ..config import ExperimentConfig
from ..data import load_public_graph
from ..public_layout import PublicLayout, check_artefact, load_public_layout
from ..queries import query_nodes
from ..wire import ReleaseLayout, release_layout

log = logging.getLogger("fedalign")


def public_layout_artefact(cfg: ExperimentConfig) -> PublicLayout | None:
    """The artefact named by ``federation.public_layout``, checked against ``cfg``; None when none is named.

    Raises:
        PublicLayoutMismatch: the file is unreadable, changed, or made for another experiment or fingerprint.

    Args:
        cfg: the experiment config (``federation.public_layout``).
    """
    if cfg.federation.public_layout is None:
        return None
    path = Path(cfg.federation.public_layout).expanduser()
    return check_artefact(load_public_layout(path), cfg, str(path))


def with_layout_fingerprint(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``federation.public_layout_sha256`` filled from its artefact (checked), so that every
    client checks its own data against it; ``cfg`` itself when it names no artefact or already pins one.

    Args:
        cfg: the experiment config.
    """
    artefact = public_layout_artefact(cfg)
    if artefact is None or cfg.federation.public_layout_sha256 is not None:
        return cfg
    federation = cfg.federation.model_copy(update={"public_layout_sha256": artefact.fingerprint})
    return cfg.model_copy(update={"federation": federation})


def release_layout_of(cfg: ExperimentConfig) -> ReleaseLayout | None:
    """The layout of the experiment's releases: from the public layout artefact when the config names
    one (``federation.public_layout``: the data root is never opened), else from the public alignment graph.

    Without an artefact the server builds the public graph from the same data and partition config as
    the clients (without dealing out the private data). None, with a warning, when this process cannot
    read the data: releases are then checked for shape, dtype and range only, not for per-node sums.

    Args:
        cfg: the experiment config.
    """
    artefact = public_layout_artefact(cfg)
    if artefact is not None:
        return artefact.release_layout()
    try:
        dataset, graph = load_public_graph(cfg)
    except FileNotFoundError as error:
        log.warning(
            "the server cannot read the dataset (%s); statistics are checked for shape, dtype and "
            "range only, not for per-node sums. Give the server a public layout artefact "
            "(federation.public_layout, made by `fedalign layout`) or data.root to check them fully.",
            error,
        )
        return None
    queries = query_nodes(cfg.seed, graph.num_nodes, cfg.align.queries)
    return release_layout(
        cfg.align.strategy,
        graph.edge_index,
        graph.num_nodes,
        dataset.num_classes,
        dataset.multilabel,
        None if queries is None else len(queries),
    )


def release_bytes(cfg: ExperimentConfig, client: int, entries: int) -> int:
    """Bytes of an honest release of ``client`` with ``entries`` values per array (the wire dtype).

    Args:
        cfg: the experiment config (strategy, model depth, ``align.statistics_dtype``).
        client: the client's index.
        entries: the number of values in each array.
    """
    arrays = released_arrays(cfg.align.strategy, cfg.model.for_client(client)["hidden_layers"])
    return arrays * entries * np.dtype(cfg.align.statistics_dtype).itemsize
