"""A client's prepared data on its own disk: its share of the dataset, built once per configuration.

Flower's SuperNode starts a fresh process for every message, and each would otherwise load
the whole dataset and partition it again (about 1.5 s on Amazon Photo here) to keep one
client's share. :func:`prepared_client_data` builds that share once, saves it under
``<state root>/prepared/client-<i>-<key>.pt`` (mode 0600) and later loads only that file.
The key hashes everything that determines the share -- the ``data`` and ``partition``
sections, the seed, the number of clients, the client id -- and the size and modification
time of every raw file it is read from, so a changed config or data file makes a new one.
Only what :class:`~fedalign.data.ClientData` holds is kept: this client's local graph and
the public alignment graph, never another client's data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch_geometric.data import Data

from ..config import ExperimentConfig
from ..data import ClientData, GraphSplit, raw_file_fingerprint
from ..files import replaced_privately
from .local_data import TaskInfo, client_data
from .paths import state_root

log = logging.getLogger("fedalign")

FORMAT = 1  # bump when the saved layout changes


def prepared_key(cfg: ExperimentConfig, client_id: int) -> str:
    """A hash of everything that determines client ``client_id``'s share of the data.

    Raises ``OSError`` when a raw file cannot be read (the caller then loads the data the usual
    way, which says which files are missing).

    Args:
        cfg: the experiment config.
        client_id: the client's index.

    Returns:
        32 hex digits of a SHA-256 hash.
    """
    d = cfg.data
    determinants = {
        "format": FORMAT,
        "client": client_id,
        "clients": cfg.federation.num_clients,
        "seed": cfg.seed,
        "data": {"name": d.name, "split": list(d.split), "synthetic": d.synthetic.options()},
        "partition": cfg.to_dict()["partition"],
        "raw": raw_file_fingerprint(d.name, d.root),
    }
    return hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()[:32]


def prepared_path(state_dir: str | Path | None, cfg: ExperimentConfig, client_id: int) -> Path:
    """``<state root>/prepared/client-<i>-<key>.pt`` (:func:`prepared_key`).

    Args:
        state_dir: the configured state directory, or None (:func:`~fedalign.client.paths.state_root`).
        cfg: the experiment config.
        client_id: the client's index.
    """
    return state_root(state_dir) / "prepared" / f"client-{client_id}-{prepared_key(cfg, client_id)}.pt"


def prepared_client_data(
    cfg: ExperimentConfig, client_id: int, state_dir: str | Path | None
) -> tuple[TaskInfo, ClientData]:
    """Client ``client_id``'s task and data: from its prepared file when there is one, else built
    by :func:`~fedalign.client.local_data.client_data` and saved for the next message.

    Args:
        cfg: the experiment config.
        client_id: the client's index.
        state_dir: the configured state directory, or None.

    Returns:
        ``(task, data)`` as :func:`~fedalign.client.local_data.client_data` gives them.
    """
    try:
        path = prepared_path(state_dir, cfg, client_id)
    except OSError:
        return client_data(cfg, client_id)  # raises the clear "raw files missing" error
    if path.is_file():
        try:
            return _load(path, client_id)
        except Exception as error:  # a torn or foreign file: rebuild it
            log.warning("prepared data %s unreadable (%s: %s); building it again", path, type(error).__name__, error)
    task, data = client_data(cfg, client_id)
    _save(path, task, data)
    return task, data


def _save(path: Path, task: TaskInfo, data: ClientData) -> None:
    graphs: list[Data] = []  # each distinct graph once: splits of a single graph share it

    def index(graph: Data) -> int:
        for i, known in enumerate(graphs):
            if known is graph:
                return i
        graphs.append(graph)
        return len(graphs) - 1

    splits = {
        name: {"graph": index(split.graph), "mask": split.mask}
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
    }
    state = {
        "task": {"num_features": task.num_features, "num_classes": task.num_classes, "multilabel": task.multilabel},
        "splits": splits,
        "alignment": index(data.alignment),
        "graphs": [graph.to_dict() for graph in graphs],
    }
    with replaced_privately(path) as handle:  # a concurrent reader sees the old file or the whole new one
        torch.save(state, handle)


def _load(path: Path, client_id: int) -> tuple[TaskInfo, ClientData]:
    state = torch.load(path, weights_only=True)
    graphs = [Data(**attributes) for attributes in state["graphs"]]
    splits = {name: GraphSplit(graphs[s["graph"]], s["mask"]) for name, s in state["splits"].items()}
    data = ClientData(client_id, splits["train"], splits["val"], splits["test"], graphs[state["alignment"]])
    return TaskInfo(**state["task"]), data
