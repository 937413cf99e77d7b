"""Synthetic graph generators: no files, deterministic by seed.

* :func:`csbm` -- a contextual stochastic block model: one graph whose edges
  follow the classes (homophily) and whose features are noisy class means.
* :func:`multi_graph_multilabel` -- a small PPI-shaped collection of graphs
  with multi-label targets driven by graph communities and node features.

Both draw every random number from one ``numpy.random.Generator`` seeded with
``seed``, so the same seed gives bit-identical tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, to_undirected

CSBM_DEFAULTS: dict[str, Any] = {
    "num_nodes": 400,
    "num_classes": 4,
    "num_features": 32,
    "avg_degree": 8.0,  # expected number of neighbours of a node
    "homophily": 0.8,  # expected fraction of a node's edges that stay within its class
    "signal": 1.0,  # distance between any two class means, in units of the (unit) noise std
}

PPI_LIKE_DEFAULTS: dict[str, Any] = {
    "num_graphs": 24,
    "num_val_graphs": 2,
    "num_test_graphs": 2,  # the rest (default 20) are training graphs
    "min_nodes": 60,
    "max_nodes": 100,  # nodes per graph drawn uniformly from [min_nodes, max_nodes]
    "num_features": 16,
    "num_labels": 12,
    "num_communities": 4,  # planted communities per graph
    "avg_degree": 6.0,
    "homophily": 0.9,  # expected fraction of a node's edges inside its community
    "noise": 1.0,  # std of the Gaussian noise added to the features
}


def resolve_options(defaults: dict[str, Any], options: dict[str, Any] | None, generator: str) -> dict[str, Any]:
    """Merge user ``options`` over ``defaults``; an unknown key raises ``ValueError`` naming it.

    Args:
        defaults: the generator's options and their defaults.
        options: the user's options (``data.synthetic``), or None.
        generator: the generator's name, for the error message.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for the {generator} generator (data.synthetic); "
            f"valid options: {sorted(defaults)}"
        )
    return {**defaults, **options}


def _triangle_pairs(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode row-major indices of the strict upper triangle of an n x n matrix into (i, j), i < j."""
    starts = np.concatenate([[0], np.cumsum(np.arange(n - 1, 0, -1))])  # first code of each row
    i = np.searchsorted(starts, codes, side="right") - 1
    return i, codes - starts[i] + i + 1


def _block_edges(rng: np.random.Generator, nodes: list[np.ndarray], p_within: float, p_between: float) -> torch.Tensor:
    """Sample an undirected SBM over the blocks ``nodes`` (arrays of node ids).

    Every unordered pair inside a block is an edge with probability ``p_within``,
    every pair across two blocks with ``p_between``; the edge count of each block
    pair is drawn from its binomial and the edges themselves without replacement,
    so the cost is O(edges), not O(nodes^2).

    Returns:
        long ``[2, E]``: both directions of every edge, coalesced, no self loops.
    """
    sources, targets = [], []
    for a, block_a in enumerate(nodes):
        n_a = len(block_a)
        pairs = n_a * (n_a - 1) // 2
        codes = rng.choice(pairs, size=rng.binomial(pairs, p_within), replace=False)
        i, j = _triangle_pairs(codes, n_a)
        sources.append(block_a[i])
        targets.append(block_a[j])
        for block_b in nodes[a + 1 :]:
            pairs = n_a * len(block_b)
            codes = rng.choice(pairs, size=rng.binomial(pairs, p_between), replace=False)
            sources.append(block_a[codes // len(block_b)])
            targets.append(block_b[codes % len(block_b)])
    edge_index = torch.from_numpy(np.stack([np.concatenate(sources), np.concatenate(targets)])).long()
    return coalesce(to_undirected(edge_index))


def _edge_probabilities(sizes: list[int], avg_degree: float, homophily: float, what: str) -> tuple[float, float]:
    """Pair probabilities (within, between) giving ``avg_degree`` expected neighbours, a
    ``homophily`` share of them inside the node's own block (exact for equal block sizes)."""
    if not 0 <= homophily <= 1:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    if avg_degree <= 0:
        raise ValueError(f"avg_degree must be > 0, got {avg_degree}")
    n = sum(sizes)
    mean_size = n / len(sizes)
    p_within = homophily * avg_degree / max(mean_size - 1, 1)
    p_between = (1 - homophily) * avg_degree / max(n - mean_size, 1)
    if p_within > 1 or p_between > 1:
        raise ValueError(
            f"avg_degree={avg_degree} with homophily={homophily} is impossible with {len(sizes)} {what} "
            f"of ~{mean_size:.0f} nodes (edge probability > 1); lower avg_degree or use larger {what}"
        )
    return p_within, p_between


def csbm(options: dict[str, Any] | None = None, seed: int = 0) -> Data:
    """Contextual stochastic block model (options and defaults: :data:`CSBM_DEFAULTS`).

    Classes are balanced (sizes differ by at most one) and randomly placed.
    Features are ``x = mu[y] + eps`` with ``eps ~ N(0, I)``; the class means
    ``mu`` are orthogonal with pairwise distance ``signal`` (needs
    ``num_features >= num_classes``).

    Args:
        options: overrides of :data:`CSBM_DEFAULTS`, or None.
        seed: seeds the graph.

    Returns:
        ``Data`` with ``x`` float32 ``[N, F]``, ``edge_index`` long ``[2, E]``
        (undirected, both directions, no self loops or duplicates) and ``y``
        long ``[N]`` in ``[0, num_classes)``.
    """
    opt = resolve_options(CSBM_DEFAULTS, options, "synthetic-csbm")
    n, c, f = int(opt["num_nodes"]), int(opt["num_classes"]), int(opt["num_features"])
    if c < 2 or n < 2 * c:
        raise ValueError(f"synthetic-csbm needs num_classes >= 2 and num_nodes >= 2 * num_classes, got {c} and {n}")
    if f < c:
        raise ValueError(f"synthetic-csbm needs num_features >= num_classes for orthogonal class means, got {f} < {c}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    blocks = [np.flatnonzero(y == k) for k in range(c)]
    p_within, p_between = _edge_probabilities([len(b) for b in blocks], opt["avg_degree"], opt["homophily"], "classes")
    edge_index = _block_edges(rng, blocks, p_within, p_between)
    directions, _ = np.linalg.qr(rng.standard_normal((f, c)))  # orthonormal columns
    means = directions.T * (opt["signal"] / np.sqrt(2.0))  # ||mu_a - mu_b|| = signal
    x = means[y] + rng.standard_normal((n, f))
    return Data(x=torch.from_numpy(x).float(), edge_index=edge_index, y=torch.from_numpy(y).long())


def multi_graph_multilabel(options: dict[str, Any] | None = None, seed: int = 0) -> dict[str, list[Data]]:
    """PPI-shaped collection of graphs (options and defaults: :data:`PPI_LIKE_DEFAULTS`).

    Each graph plants ``num_communities`` communities (SBM edges). A node's
    hidden state is ``h = z[community] + 0.5 * u`` with ``z, u ~ N(0, I_F)``;
    features are ``x = h + noise * eps``; label ``l`` is on when
    ``h . w_l > b_l``, with weights ``w_l`` (scaled to unit-variance logits) and
    thresholds ``b_l`` shared by all graphs, so labels follow both the features
    and the communities (neighbour averaging denoises the community part).

    Args:
        options: overrides of :data:`PPI_LIKE_DEFAULTS`, or None.
        seed: seeds the graphs.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, lists of ``Data``
        with ``x`` float32 ``[n_g, F]``, ``edge_index`` long ``[2, E_g]``
        (undirected, both directions, no self loops) and ``y`` float32
        ``[n_g, num_labels]`` in {0, 1}.
    """
    opt = resolve_options(PPI_LIKE_DEFAULTS, options, "synthetic-ppi")
    num_graphs, num_val, num_test = int(opt["num_graphs"]), int(opt["num_val_graphs"]), int(opt["num_test_graphs"])
    if num_val < 1 or num_test < 1 or num_graphs - num_val - num_test < 1:
        raise ValueError(
            f"synthetic-ppi needs >= 1 graph in each of train/val/test, got num_graphs={num_graphs}, "
            f"num_val_graphs={num_val}, num_test_graphs={num_test}"
        )
    lo, hi, k = int(opt["min_nodes"]), int(opt["max_nodes"]), int(opt["num_communities"])
    if not 2 * k <= lo <= hi:
        raise ValueError(f"synthetic-ppi needs 2 * num_communities <= min_nodes <= max_nodes, got {k}, {lo}, {hi}")
    f, num_labels = int(opt["num_features"]), int(opt["num_labels"])
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((f, num_labels)) / np.sqrt(1.25 * f)  # unit-variance logits
    bias = rng.uniform(-0.5, 1.0, size=num_labels)  # label frequencies between ~16% and ~69%
    graphs = []
    for _ in range(num_graphs):
        n = int(rng.integers(lo, hi + 1))
        community = rng.permutation(np.arange(n) % k)
        blocks = [np.flatnonzero(community == j) for j in range(k)]
        p_within, p_between = _edge_probabilities(
            [len(b) for b in blocks], opt["avg_degree"], opt["homophily"], "communities"
        )
        edge_index = _block_edges(rng, blocks, p_within, p_between)
        hidden = rng.standard_normal((k, f))[community] + 0.5 * rng.standard_normal((n, f))
        x = hidden + opt["noise"] * rng.standard_normal((n, f))
        y = (hidden @ weights > bias).astype(np.float32)
        graphs.append(Data(x=torch.from_numpy(x).float(), edge_index=edge_index, y=torch.from_numpy(y)))
    num_train = num_graphs - num_val - num_test
    return {
        "train": graphs[:num_train],
        "val": graphs[num_train : num_train + num_val],
        "test": graphs[num_train + num_val :],
    }
