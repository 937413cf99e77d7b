"""Dataset loading: synthetic generators and real graphs through PyG's own classes.

Real raw files are read from a data root (``root`` argument, else
``$FEDALIGN_DATA_ROOT``) that is never written to: the raw files are
symlinked into a cache (``cache_dir`` argument, else ``$FEDALIGN_CACHE_DIR``,
else ``~/.cache/fedalign``) under ``<cache>/datasets/<layout>/raw/`` and PyG
is pointed at the cache, so its ``processed/`` folder lands there. Linking
and processing run under an exclusive file lock per dataset, so concurrent
processes (several clients loading at once) process a dataset only once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.datasets import PPI, Amazon, Coauthor, Planetoid

from . import synthetic as synth

DATASET_NAMES: tuple[str, ...] = (
    "synthetic-csbm",
    "synthetic-ppi",
    "cora",
    "citeseer",
    "pubmed",
    "amazon-computers",
    "amazon-photo",
    "coauthor-cs",
    "coauthor-physics",
    "ppi",
)


@dataclass
class GraphSplit:
    """One split of a dataset: a graph and the nodes whose labels count.

    Attributes:
        graph: ``x`` float32 ``[N, F]``, ``edge_index`` long ``[2, E]`` (row 0
            source, row 1 target), ``y`` long ``[N]`` (multiclass) or float32
            ``[N, C]`` in {0, 1} (multilabel). Multi-graph splits also carry
            ``graph_id`` long ``[N]``: the index, within the split, of the
            graph a node comes from.
        mask: bool ``[N]``, the nodes whose labels belong to this split.
    """

    graph: Data
    mask: torch.Tensor


@dataclass
class GraphDataset:
    """A node-classification dataset split into train/val/test.

    Single-graph (transductive) datasets: the three splits share the same
    ``Data`` object and differ by mask. Multi-graph (inductive) datasets: each
    split's graph is the disjoint union of that split's graphs, mask all True.

    Attributes:
        name: canonical dataset name (one of :data:`DATASET_NAMES`).
        multilabel: True -> labels float32 ``[N, C]``, metric micro-F1;
            False -> labels long ``[N]``, metric accuracy.
        num_features: F, feature dimension.
        num_classes: C, number of classes (multiclass) or labels (multilabel).
    """

    name: str
    multilabel: bool
    num_features: int
    num_classes: int
    train: GraphSplit
    val: GraphSplit
    test: GraphSplit

    @property
    def transductive(self) -> bool:
        """True when all splits live on one graph (``train.graph is val.graph``)."""
        return self.train.graph is self.val.graph


@dataclass(frozen=True)
class _RealSource:
    """Where a real dataset's raw files live and which PyG class reads them."""

    family: str  # "planetoid" | "amazon" | "coauthor" | "ppi"
    pyg_name: str  # `name` argument of the PyG class ("" for PPI)
    folder: str  # relative to the data root; raw files are in <folder>/raw/
    raw_files: tuple[str, ...]


def _planetoid(pyg_name: str) -> _RealSource:
    exts = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    return _RealSource(
        "planetoid", pyg_name, f"Planetoid/{pyg_name}", tuple(f"ind.{pyg_name.lower()}.{ext}" for ext in exts)
    )


_REAL_SOURCES: dict[str, _RealSource] = {
    "cora": _planetoid("Cora"),
    "citeseer": _planetoid("CiteSeer"),
    "pubmed": _planetoid("PubMed"),
    "amazon-computers": _RealSource("amazon", "Computers", "Amazon/Computers", ("amazon_electronics_computers.npz",)),
    "amazon-photo": _RealSource("amazon", "Photo", "Amazon/Photo", ("amazon_electronics_photo.npz",)),
    "coauthor-cs": _RealSource("coauthor", "CS", "Coauthor/CS", ("ms_academic_cs.npz",)),
    "coauthor-physics": _RealSource("coauthor", "Physics", "Coauthor/Physics", ("ms_academic_phy.npz",)),
    "ppi": _RealSource(
        "ppi",
        "",
        "PPI",
        tuple(
            f"{split}_{part}"
            for split, part in product(
                ("train", "valid", "test"), ("graph.json", "feats.npy", "graph_id.npy", "labels.npy")
            )
        ),
    ),
}


def canonical_name(name: str) -> str:
    """Normalise a dataset name (case-insensitive, ``_`` or ``-``); unknown -> ``ValueError``.

    Args:
        name: a dataset name.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return key


def load_dataset(
    name: str,
    root: str | None = None,
    cache_dir: str | None = None,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    synthetic: dict[str, Any] | None = None,
) -> GraphDataset:
    """Load dataset ``name`` (one of :data:`DATASET_NAMES`).

    Args:
        name: dataset name, case-insensitive, ``_`` or ``-``.
        root: data root holding the raw files (real datasets only); default
            ``$FEDALIGN_DATA_ROOT``. Never written to.
        cache_dir: where raw files are linked and PyG writes ``processed/``;
            default ``$FEDALIGN_CACHE_DIR``, else ``~/.cache/fedalign``.
        split: (train, val, test) node fractions of the seeded per-class
            random split used by ``synthetic-csbm``, Amazon and Coauthor;
            positive, summing to at most 1. Planetoid keeps its public split,
            PPI and ``synthetic-ppi`` their graph-level splits.
        seed: seed of the synthetic graphs and of the random split.
        synthetic: options of the synthetic generators
            (:data:`~fedalign.data.synthetic.CSBM_DEFAULTS`,
            :data:`~fedalign.data.synthetic.PPI_LIKE_DEFAULTS`).

    Raises:
        ValueError: unknown name, invalid ``split``, unknown synthetic option,
            or synthetic options given for a real dataset.
        FileNotFoundError: no data root configured, or raw files missing
            under it (the message lists the expected paths).
    """
    key = canonical_name(name)
    fractions = _check_split(split)
    if key == "synthetic-csbm":
        graph = synth.csbm(synthetic, seed)
        return _single_graph(key, graph, *_stratified_masks(graph.y, fractions, seed))
    if key == "synthetic-ppi":
        return _multi_graph(key, synth.multi_graph_multilabel(synthetic, seed))
    if synthetic:
        raise ValueError(
            f"synthetic options {sorted(synthetic)} only apply to synthetic-* datasets, not {key!r}; "
            "remove data.synthetic"
        )
    source = _REAL_SOURCES[key]
    data_root = _data_root(root, key)
    _check_raw_files(data_root, source, key)
    cache_root = _cache_root(cache_dir) / "datasets"
    with _exclusive(cache_root / source.folder / ".fedalign.lock"):
        _link_raw_files(data_root / source.folder / "raw", cache_root / source.folder / "raw", source.raw_files)
        return _load_real(key, source, cache_root, fractions, seed)


def missing_raw_files(name: str, root: str | None = None) -> str | None:
    """Why dataset ``name`` cannot be read from ``root`` (default ``$FEDALIGN_DATA_ROOT``): a message, or None.

    None for built-in synthetic data and for real data whose raw files are all present.
    The message is the one :func:`load_dataset` would raise, on one line.

    Args:
        name: a dataset name.
        root: the data root, or None for ``$FEDALIGN_DATA_ROOT``.
    """
    key = canonical_name(name)
    if key not in _REAL_SOURCES:
        return None
    try:
        _check_raw_files(_data_root(root, key), _REAL_SOURCES[key], key)
    except FileNotFoundError as error:
        return " ".join(str(error).split())
    return None


def raw_file_fingerprint(name: str, root: str | None = None) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of each raw file dataset ``name`` is read from (empty for synthetic
    data, which a config determines): what makes data prepared from them stale when it changes.

    Args:
        name: a dataset name.
        root: the data root, or None for ``$FEDALIGN_DATA_ROOT``.
    """
    key = canonical_name(name)
    if key not in _REAL_SOURCES:
        return []
    source = _REAL_SOURCES[key]
    raw_dir = _data_root(root, key) / source.folder / "raw"
    stats = [(raw_dir / f, (raw_dir / f).stat()) for f in source.raw_files]
    return [(str(path), stat.st_size, stat.st_mtime_ns) for path, stat in stats]


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
        raise ValueError(
            f"split must be three positive fractions (train, val, test) summing to at most 1, "
            f"got {tuple(split)}; e.g. (0.6, 0.2, 0.2)"
        )
    return fractions


def _stratified_masks(
    y: torch.Tensor, fractions: tuple[float, float, float], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded per-class random split of the nodes.

    Within each class of ``n`` nodes (shuffled), the first ``round(f_train n)``
    go to train, up to ``round((f_train + f_val) n)`` to val, up to
    ``round((f_train + f_val + f_test) n)`` to test, so each count is within
    one node of ``fraction * n``. A class with at least 3 nodes gets at least
    one node in each split; a smaller class at least one train node.

    Args:
        y: long ``[N]`` class labels.

    Returns:
        train, val, test masks, bool ``[N]``, disjoint.
    """
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    masks = np.zeros((3, len(labels)), dtype=bool)
    cumulative = np.cumsum(fractions)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        b1, b2, b3 = (int(round(f * n)) for f in cumulative)
        if n >= 3:
            b1 = min(max(b1, 1), n - 2)
            b2 = min(max(b2, b1 + 1), n - 1)
            b3 = min(max(b3, b2 + 1), n)
        else:
            b1 = max(b1, 1)
            b2, b3 = max(b2, b1), max(b3, b1)
        for mask, lo, hi in zip(masks, (0, b1, b2), (b1, b2, b3), strict=True):
            mask[members[lo:hi]] = True
    return torch.from_numpy(masks[0]), torch.from_numpy(masks[1]), torch.from_numpy(masks[2])


def _single_graph(key: str, graph: Data, train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> GraphDataset:
    """A transductive dataset: the three splits share ``graph`` (x, edge_index, y only)."""
    graph = Data(x=graph.x.float(), edge_index=graph.edge_index.long(), y=graph.y.long())
    return GraphDataset(
        key,
        False,
        graph.num_features,
        int(graph.y.max()) + 1,
        GraphSplit(graph, train),
        GraphSplit(graph, val),
        GraphSplit(graph, test),
    )


def _disjoint_union(graphs: list[Data]) -> Data:
    """Disjoint union of ``graphs`` with ``graph_id`` long ``[N]`` = position of a node's graph in the list."""
    batch = Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index, y=g.y) for g in graphs])
    return Data(x=batch.x.float(), edge_index=batch.edge_index, y=batch.y.float(), graph_id=batch.batch)


def _multi_graph(key: str, graphs: dict[str, list[Data]]) -> GraphDataset:
    """An inductive multilabel dataset from ``{"train"|"val"|"test": [Data, ...]}``."""
    splits = {}
    for name, items in graphs.items():
        union = _disjoint_union(items)
        splits[name] = GraphSplit(union, torch.ones(union.num_nodes, dtype=torch.bool))
    train = splits["train"].graph
    return GraphDataset(key, True, train.num_features, train.y.size(1), splits["train"], splits["val"], splits["test"])


def _data_root(root: str | None, key: str) -> Path:
    value = root if root is not None else os.environ.get("FEDALIGN_DATA_ROOT")
    if not value:
        raise FileNotFoundError(
            f"dataset {key!r} needs its raw files but no data root is set; pass root= (data.root in the "
            f"experiment config) or set FEDALIGN_DATA_ROOT to the folder holding e.g. "
            f"{_REAL_SOURCES[key].folder}/raw/"
        )
    return Path(value).expanduser()


def _check_raw_files(data_root: Path, source: _RealSource, key: str) -> None:
    """Raise ``FileNotFoundError`` listing every expected raw file that is missing."""
    raw_dir = data_root / source.folder / "raw"
    missing = [raw_dir / f for f in source.raw_files if not (raw_dir / f).is_file()]
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        raise FileNotFoundError(
            f"dataset {key!r}: {len(missing)} raw file(s) missing under data root {data_root}:\n  {listing}\n"
            f"Place the files there (layout <root>/{source.folder}/raw/<file>, as torch_geometric reads them), "
            f"or point root= / data.root / FEDALIGN_DATA_ROOT at a folder that has them. Nothing is downloaded."
        )


def _cache_root(cache_dir: str | None) -> Path:
    value = cache_dir if cache_dir is not None else os.environ.get("FEDALIGN_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fedalign"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _link_raw_files(source_dir: Path, target_dir: Path, files: tuple[str, ...]) -> None:
    """Make ``target_dir/<f>`` a symlink to ``source_dir/<f>`` for each file (atomic replace)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        source = os.path.abspath(source_dir / name)
        target = target_dir / name
        if target.is_symlink() and os.readlink(target) == source:
            continue
        temporary = target_dir / f".{name}.{os.getpid()}.link"
        temporary.unlink(missing_ok=True)
        os.symlink(source, temporary)
        os.replace(temporary, target)


def _load_real(
    key: str, source: _RealSource, cache_root: Path, fractions: tuple[float, float, float], seed: int
) -> GraphDataset:
    """Build the PyG dataset from the linked cache (raw files present, so PyG never downloads)."""
    if source.family == "ppi":
        root = str(cache_root / source.folder)
        return _multi_graph(key, {s: list(PPI(root, split=s)) for s in ("train", "val", "test")})
    family_root = str((cache_root / source.folder).parent)
    if source.family == "planetoid":
        data = Planetoid(family_root, source.pyg_name)[0]
        return _single_graph(key, data, data.train_mask, data.val_mask, data.test_mask)
    cls = Amazon if source.family == "amazon" else Coauthor
    data = cls(family_root, source.pyg_name)[0]
    return _single_graph(key, data, *_stratified_masks(data.y, fractions, seed))


MULTILABEL_DATASETS: tuple[str, ...] = ("synthetic-ppi", "ppi")

# Inductive datasets made of many graphs (one graph = one sample, e.g. for per-graph DP-SGD);
# every other dataset is a single (transductive) graph.
MULTI_GRAPH_DATASETS: tuple[str, ...] = ("synthetic-ppi", "ppi")


def metric_name(name: str) -> str:
    """The metric reported for dataset ``name``: ``micro_f1`` (multilabel) or ``accuracy``.

    Args:
        name: a dataset name.
    """
    return "micro_f1" if canonical_name(name) in MULTILABEL_DATASETS else "accuracy"
