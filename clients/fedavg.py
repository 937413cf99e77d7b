"""The ClientApp's side of the weight-averaging reference arms (``align.strategy: fedavg | dp-fedavg``).

A request of these arms is what Flower's ``FedAvg`` sends (``server/fedavg.py``): ``"arrays"``
(ArrayRecord: the global weights, one array per parameter of the student network, by name) and
``"config"`` (ConfigRecord: ``experiment`` -- the config as JSON --, ``fedalign-arm = "weights"`` and
Flower's ``server-round``). A ``train`` request loads the weights into the client's student, trains it
(:func:`fedalign.client.weights.train_update`, the very code of the in-process engine) and replies:

* ``"arrays"``: the locally trained weights w_k = w_global + D_k (what Flower's FedAvg averages and its
  DP wrapper clips as ``w_k - w_global``): **the weights leave the client**, which fedalign's own
  strategies never let happen;
* ``"metrics"``: ``{"fedalign-weight": 1}``, the weight of a uniform FedAvg;
* ``"client-metrics"``: the val/test metrics after local training (what the round log shows);
* ``"meta"``: ``partition-id``.

A ``query`` request (round 0) answers the student's initial weights, untrained: the server's initial
global model. The student is rebuilt for every message (it keeps no state between rounds: the round
starts from the server's weights, with a fresh optimiser), from the node's ``partition-id`` (and
``data-root``); the node's worker, if any, is not used.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedalign_flower.protocol import ARM, ARM_KEY, ARRAYS, CLIENT_METRICS, CONFIG, META, METRICS, WEIGHT_KEY


def is_weight_request(content: RecordDict) -> bool:
    """True for a request of the weight arms (its config says ``fedalign-arm = weights``)."""
    return CONFIG in content.config_records and content[CONFIG].get(ARM_KEY) == ARM


def _student(content: RecordDict, context: Context):
    from fedalign.client import build_student
    from fedalign.client.service import check_partition
    from fedalign.config import config_from_dict

    node = context.node_config
    if "partition-id" not in node:
        raise ValueError(
            "this SuperNode has no partition-id: start it with --node-config 'partition-id=<i> num-partitions=<K>'"
        )
    cfg = config_from_dict(json.loads(str(content[CONFIG]["experiment"])))
    if "data-root" in node:
        cfg.data.root = str(node["data-root"])
    pid = int(node["partition-id"])
    check_partition(cfg, pid, int(node["num-partitions"]) if "num-partitions" in node else None)
    return build_student(cfg, pid)


def answer_weights(msg: Message, context: Context) -> Message:
    """The reply to a weight request: initial weights (``query``) or locally trained ones (``train``).

    Args:
        msg: the request from Flower's FedAvg (or the initial query).
        context: the node's context (``partition-id``, ``num-partitions``, ``data-root``).
    """
    from fedalign.client.weights import get_weights, train_update, weight_names

    student = _student(msg.content, context)
    names = weight_names(student)
    metrics: dict[str, float] = {}
    if msg.metadata.message_type == "train":
        received = msg.content[ARRAYS]
        _, metrics = train_update(
            student, [received[name].numpy() for name in names], int(msg.content[CONFIG]["server-round"])
        )
    weights = get_weights(student)
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({name: Array(np.ascontiguousarray(w)) for name, w in zip(names, weights, strict=True)}),
            METRICS: MetricRecord({WEIGHT_KEY: 1}),
            CLIENT_METRICS: ConfigRecord({k: float(v) for k, v in metrics.items()}),
            META: ConfigRecord({"partition-id": student.client_id}),
        }
    )
    return Message(content=content, reply_to=msg)
