"""The wire format between the fedalign ServerApp and ClientApp.

Requests (``RecordDict``):

* ``"config"`` (ConfigRecord): ``experiment`` (the resolved experiment
  config as JSON), ``round`` (int, 0 = initial query), ``run-tag`` (str, names
  the run; clients key their checkpoints by it);
* ``"peers"`` (ArrayRecord, ``train`` only): ``"<peer id>.<layer>"`` ->
  [E] probabilities (float32, or float16 with ``align.statistics_dtype``),
  layers numbered from 1.

Replies:

* ``"statistics"`` (ArrayRecord, when the client releases): ``"<layer>"`` ->
  [E] probabilities in the wire dtype;
* ``"metrics"`` (MetricRecord): scalar metrics, always including
  ``partition-id``.

Nothing else travels: no weights, features or labels.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedalign.config import ExperimentConfig, config_from_dict

CONFIG, PEERS, STATISTICS, METRICS = "config", "peers", "statistics", "metrics"


def encode_request(cfg: ExperimentConfig, round_number: int, run_tag: str,
                   peers: dict[int, list[np.ndarray]] | None = None) -> RecordDict:
    content = RecordDict({
        CONFIG: ConfigRecord({"experiment": json.dumps(cfg.to_dict()), "round": round_number, "run-tag": run_tag})
    })
    if peers is not None:
        content[PEERS] = ArrayRecord({
            f"{peer}.{layer}": Array(np.ascontiguousarray(p))
            for peer, stats in peers.items() for layer, p in enumerate(stats, start=1)
        })
    return content


def decode_request(content: RecordDict) -> tuple[ExperimentConfig, int, str, dict[int, list[np.ndarray]]]:
    """(config, round, run tag, peer statistics) from a request."""
    record = content[CONFIG]
    cfg = config_from_dict(json.loads(record["experiment"]))
    peers: dict[int, dict[int, np.ndarray]] = {}
    if PEERS in content:
        for key, array in content[PEERS].items():
            peer, layer = (int(part) for part in key.split("."))
            peers.setdefault(peer, {})[layer] = array.numpy()
    ordered = {peer: [layers[l] for l in sorted(layers)] for peer, layers in peers.items()}
    return cfg, int(record["round"]), str(record["run-tag"]), ordered


def encode_reply(metrics: dict[str, float], statistics: list[np.ndarray] | None) -> RecordDict:
    content = RecordDict({METRICS: MetricRecord({k: float(v) for k, v in metrics.items()})})
    if statistics is not None:
        content[STATISTICS] = ArrayRecord({
            str(layer): Array(np.ascontiguousarray(p)) for layer, p in enumerate(statistics, start=1)
        })
    return content


def decode_reply(content: RecordDict) -> tuple[dict[str, float], list[np.ndarray] | None]:
    metrics = dict(content[METRICS]) if METRICS in content else {}
    statistics = None
    if STATISTICS in content:
        arrays = content[STATISTICS]
        statistics = [arrays[key].numpy() for key in sorted(arrays.keys(), key=int)]
    return metrics, statistics
