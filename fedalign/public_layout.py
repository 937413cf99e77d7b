"""The public layout artefact: what the server needs of the public alignment graph, without the data.

The server checks every release against how an honest release is laid out
(:func:`fedalign.wire.release_layout`): for the structure strategies the target node of every
edge of the public alignment graph and its node count; for ``logits`` and ``votes`` the node
count, the number of classes, whether the task is multilabel and the query set
(:mod:`fedalign.queries`). :class:`PublicLayout` is exactly that part, derived once where the
data is (``fedalign layout <experiment> --out layout.npz``, :func:`public_layout_from_data`)
and saved as a small ``.npz`` (:func:`save_public_layout`) that the server loads instead of
opening the data root (``federation.public_layout``).

Its :attr:`PublicLayout.fingerprint` is a SHA-256 over the config keys that determine it
(:func:`determining_keys`) and its canonical bytes. The server recomputes it from the file and
its own config (:func:`check_artefact`); every client recomputes it from its own data
(:func:`check_client_layout`) and refuses to start on another one
(``federation.public_layout_sha256``, which the server fills from the artefact it loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .alignment import NODE_STRATEGIES, SHARING_STRATEGIES
from .config import ConfigError, ExperimentConfig
from .queries import query_nodes
from .wire import ReleaseLayout, release_layout

FORMAT = 1  # of the file and of the fingerprinted bytes
_DOMAIN = b"fedalign-public-layout/1\n"


class PublicLayoutMismatch(ConfigError):
    """A public layout artefact (or its fingerprint) that does not fit this experiment or this data."""


def determining_keys(cfg: ExperimentConfig) -> dict:
    """The config keys a public layout depends on (data, split and seed, the partition's public part,
    strategy and query set); where the data lives (``data.root``, ``data.cache_dir``) is not one.

    Args:
        cfg: the experiment config.
    """
    return {
        "data.name": cfg.data.name,
        "data.split": [float(s) for s in cfg.data.split],
        "data.synthetic": cfg.data.synthetic.options(),
        "seed": int(cfg.seed),
        "partition.scheme": cfg.partition.scheme,
        "partition.public_fraction": float(cfg.partition.public_fraction),
        "align.strategy": cfg.align.strategy,
        "align.queries": cfg.align.queries,
    }


@dataclass(frozen=True)
class PublicLayout:
    """The public part of an experiment's release layout.

    Attributes:
        keys: :func:`determining_keys` of the experiment it was made for.
        num_nodes: N, the alignment graph's node count.
        target: int64 [E], ``edge_index[1]`` of the alignment graph (structure strategies; None for
            ``logits`` / ``votes``).
        num_classes: C (``logits`` / ``votes``; None otherwise).
        multilabel: whether the task is multilabel (``logits`` / ``votes``; None otherwise).
        queries: int64 [Q], the query node ids (``logits`` / ``votes`` with ``align.queries``; else None).
    """

    keys: dict
    num_nodes: int
    target: np.ndarray | None = None
    num_classes: int | None = None
    multilabel: bool | None = None
    queries: np.ndarray | None = None

    @property
    def header(self) -> dict:
        """The scalars, and the arrays' lengths, as one JSON-able dict."""
        return {
            "format": FORMAT,
            "num_nodes": int(self.num_nodes),
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "edges": None if self.target is None else int(self.target.shape[0]),
            "queries": None if self.queries is None else int(self.queries.shape[0]),
        }

    def canonical_bytes(self) -> bytes:
        """The header (sorted JSON), then the target row and the query ids as little-endian int64."""
        arrays = [a for a in (self.target, self.queries) if a is not None]
        return (
            json.dumps(self.header, sort_keys=True).encode()
            + b"\n"
            + b"".join(np.ascontiguousarray(a, dtype="<i8").tobytes() for a in arrays)
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over the determining keys and :meth:`canonical_bytes`."""
        digest = hashlib.sha256(_DOMAIN)
        digest.update(json.dumps(self.keys, sort_keys=True).encode() + b"\n")
        digest.update(self.canonical_bytes())
        return digest.hexdigest()

    def release_layout(self) -> ReleaseLayout:
        """The :class:`~fedalign.wire.ReleaseLayout` the server checks releases against."""
        if self.target is not None:
            return ReleaseLayout(int(self.num_nodes), self.target)
        queries = None if self.queries is None else len(self.queries)
        assert self.num_classes is not None  # a layout without target is a logits / votes one
        return release_layout(
            self.keys["align.strategy"], None, self.num_nodes, int(self.num_classes), bool(self.multilabel), queries
        )


def public_layout_of(
    cfg: ExperimentConfig, edge_index, num_nodes: int, num_classes: int, multilabel: bool
) -> PublicLayout:
    """The public layout of ``cfg`` from its alignment graph (``edge_index`` long [2, E], tensor or array).

    Args:
        cfg: the experiment config (strategy, seed and query set are read from it).
        edge_index: the alignment graph's edges.
        num_nodes: N, the alignment graph's node count.
        num_classes: C of the task.
        multilabel: whether the task is multilabel.

    Raises:
        ConfigError: the strategy releases no statistics (no layout to check), or Q does not fit N.
    """
    strategy = cfg.align.strategy
    if strategy not in SHARING_STRATEGIES:
        raise ConfigError(
            f"align.strategy: {strategy} releases no statistics, so it has no public layout "
            f"(one of {', '.join(SHARING_STRATEGIES)} does)"
        )
    keys = determining_keys(cfg)
    if strategy in NODE_STRATEGIES:
        return PublicLayout(
            keys,
            int(num_nodes),
            None,
            int(num_classes),
            bool(multilabel),
            query_nodes(cfg.seed, int(num_nodes), cfg.align.queries),
        )
    row = edge_index[1]
    target = np.asarray(row.cpu() if hasattr(row, "cpu") else row, dtype=np.int64)
    return PublicLayout(keys, int(num_nodes), target)


def public_layout_from_data(cfg: ExperimentConfig) -> PublicLayout:
    """The public layout of ``cfg``, derived from its dataset (reads the data: run it where the data is).

    Args:
        cfg: the experiment config.
    """
    from .data import load_public_graph  # the one place this module touches the data

    dataset, graph = load_public_graph(cfg)
    return public_layout_of(cfg, graph.edge_index, graph.num_nodes, dataset.num_classes, dataset.multilabel)


def save_public_layout(layout: PublicLayout, path: str | Path) -> Path:
    """Write ``layout`` to ``path`` (``.npz``: a JSON header with its keys and fingerprint, and its
    arrays), replacing it atomically; returns the path.

    Args:
        layout: the public layout.
        path: the ``.npz`` file to write (its folder is created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**layout.header, "keys": layout.keys, "fingerprint": layout.fingerprint}
    arrays = {
        name: np.ascontiguousarray(a, dtype=np.int64)
        for name, a in (("target", layout.target), ("queries", layout.queries))
        if a is not None
    }
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, allow_pickle=True, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    os.replace(partial, path)
    return path


def load_public_layout(path: str | Path) -> PublicLayout:
    """The public layout saved at ``path``; its stored fingerprint must match its content.

    Raises:
        PublicLayoutMismatch: the file is missing, not a public layout, or its content does not
            give the fingerprint it records (changed or truncated).

    Args:
        path: the ``.npz`` file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {name: npz[name].astype(np.int64) for name in ("target", "queries") if name in npz.files}
        layout = PublicLayout(
            meta["keys"],
            int(meta["num_nodes"]),
            arrays.get("target"),
            meta["num_classes"],
            meta["multilabel"],
            arrays.get("queries"),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PublicLayoutMismatch(
            f"federation.public_layout: cannot read a public layout from {path} ({error}); "
            "make it with `fedalign layout <experiment> --out <file>`"
        ) from None
    if meta.get("format") != FORMAT or layout.header != {k: meta.get(k) for k in layout.header}:
        raise PublicLayoutMismatch(f"federation.public_layout: {path} is not a format-{FORMAT} public layout")
    if meta.get("fingerprint") != layout.fingerprint:
        raise PublicLayoutMismatch(
            f"federation.public_layout: {path} records fingerprint {meta.get('fingerprint')} "
            f"but its content gives {layout.fingerprint}: the file was changed or damaged"
        )
    return layout


def check_artefact(layout: PublicLayout, cfg: ExperimentConfig, where: str = "the artefact") -> PublicLayout:
    """``layout`` if it was made for ``cfg`` (its determining keys, its query set, the configured
    ``federation.public_layout_sha256``), else :class:`PublicLayoutMismatch` naming the difference.

    Args:
        layout: the loaded public layout.
        cfg: the experiment config.
        where: what the layout came from, for the message.
    """
    expected = determining_keys(cfg)
    differ = sorted(k for k in expected.keys() | layout.keys.keys() if expected.get(k) != layout.keys.get(k))
    if differ:
        diffs = ", ".join(f"{k}: {layout.keys.get(k)!r} there, {expected.get(k)!r} here" for k in differ)
        raise PublicLayoutMismatch(
            f"federation.public_layout: {where} was made for another experiment ({diffs}); "
            "make it again with `fedalign layout` from this experiment's config"
        )
    if cfg.align.strategy in NODE_STRATEGIES:
        drawn = query_nodes(cfg.seed, layout.num_nodes, cfg.align.queries)
        if (drawn is None) != (layout.queries is None) or (
            drawn is not None and layout.queries is not None and not np.array_equal(drawn, layout.queries)
        ):
            raise PublicLayoutMismatch(
                f"federation.public_layout: {where} holds another query set than "
                f"seed {cfg.seed} and align.queries {cfg.align.queries} draw"
            )
    check_fingerprint(cfg, layout.fingerprint, where)
    return layout


def check_fingerprint(cfg: ExperimentConfig, actual: str, who: str) -> None:
    """Raise :class:`PublicLayoutMismatch` if ``federation.public_layout_sha256`` is set and is not ``actual``.

    Args:
        cfg: the experiment config (``federation.public_layout_sha256``).
        actual: the fingerprint found.
        who: what gave ``actual``, for the message.
    """
    expected = cfg.federation.public_layout_sha256
    if expected is not None and expected.lower() != actual:
        raise PublicLayoutMismatch(
            f"federation.public_layout_sha256: {who} gives public layout fingerprint {actual}, but the run expects "
            f"{expected}: the server's layout artefact and this data differ (another dataset, split, seed, partition, "
            "strategy or query set); make the artefact again with `fedalign layout` from the same data and config"
        )


def check_client_layout(
    cfg: ExperimentConfig, client_id: int, edge_index, num_nodes: int, num_classes: int, multilabel: bool
) -> None:
    """A client's check at start: its own public layout must give ``federation.public_layout_sha256``
    (a no-op when the run names none, or the strategy shares no statistics).

    Args:
        cfg: the experiment config as the server sent it.
        client_id: this client, for the message.
        edge_index: the client's alignment graph's edges.
        num_nodes: N of its alignment graph.
        num_classes: C of its task.
        multilabel: whether its task is multilabel.
    """
    if cfg.federation.public_layout_sha256 is None or cfg.align.strategy not in SHARING_STRATEGIES:
        return
    layout = public_layout_of(cfg, edge_index, num_nodes, num_classes, multilabel)
    check_fingerprint(cfg, layout.fingerprint, f"client {client_id}'s data")
