"""The query set of strategies ``logits`` and ``votes``: a public, seeded sample of the alignment graph's nodes.

With ``align.queries: Q`` a client releases its class distributions (``logits``) or its votes
(``votes``) on Q nodes of the public alignment graph only, so a release has D = Q C coordinates
instead of N C. The sample is fixed for the whole run and drawn from the experiment seed alone:
every client and the server derive the same nodes without talking to each other, and it depends
on no private data (the alignment graph's node count is public).
"""

from __future__ import annotations

import numpy as np

from .config import ConfigError
from .seeds import derive_seed

# Mixed into the experiment seed so that the query sample is independent of every other seeded draw.
QUERY_STREAM = 0x9E37


def query_nodes(seed: int, num_nodes: int, queries: int | None) -> np.ndarray | None:
    """The sorted node ids (int64 ``[Q]``) of the query set, or None for every node.

    Args:
        seed: the experiment seed (``seed``).
        num_nodes: N, the number of nodes of the public alignment graph.
        queries: Q (``align.queries``), 1 <= Q <= N; None: no query set (every node).

    Raises:
        ConfigError: Q is larger than the alignment graph.
    """
    if queries is None:
        return None
    if not 1 <= queries <= num_nodes:
        raise ConfigError(
            f"align.queries: {queries} query nodes asked for, but the public alignment graph has "
            f"{num_nodes} nodes; choose 1 <= Q <= {num_nodes}"
        )
    rng = np.random.default_rng(derive_seed(seed, QUERY_STREAM))
    return np.sort(rng.choice(num_nodes, size=queries, replace=False)).astype(np.int64)


def check_query_set(cfg) -> None:
    """Raise :class:`ConfigError` (naming ``align.queries``) if the experiment's query set does not fit its public
    alignment graph; reads the public graph (a no-op without ``align.queries``).

    Args:
        cfg: the experiment config.
    """
    if cfg.align.queries is None:
        return
    from .data import load_public_graph  # reads the dataset: only where a query set is asked for

    _, graph = load_public_graph(cfg)
    query_nodes(cfg.seed, graph.num_nodes, cfg.align.queries)
