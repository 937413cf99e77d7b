"""The wire format between the fedalign ServerApp and ClientApp, on Flower's records.

Requests (``RecordDict``):

* ``"config"`` (ConfigRecord): ``experiment`` (the resolved experiment
  config as JSON), ``round`` (int, 0 = initial query), ``run-tag`` (str, names
  the run; clients key their checkpoints by it), and ``epsilon-before`` (float, once
  the client has reported an epsilon: the largest it reported so far; a client without a
  ledger that holds it releases nothing, :mod:`fedalign.ledgers`);
* ``"peers"`` (ArrayRecord, ``train`` only): ``"<peer id>.<layer>"`` ->
  [E] probabilities (float32, or float16 with ``align.statistics_dtype``),
  layers numbered from 1. A trainer of a summed strategy gets instead one entry under the peer id
  :data:`~fedalign.wire.PEER_MASS` (``-3``, :class:`~fedalign.wire.PeerMass`): ``"-3.<l>"`` -> the peers'
  summed mass on student layer l, float64 [E], for l = 1..L_s, then ``"-3.<L_s + 1>"`` -> ``[peers,
  constant]`` (float64 [2]); its size does not depend on the number of clients.

* round ``-1`` (``query`` only) asks a node which client it is: the reply
  carries ``partition-id`` and nothing else (no release, no training).

Replies:

* ``"statistics"`` (ArrayRecord, when the client releases): ``"<layer>"`` ->
  [E] probabilities in the wire dtype;
* ``"metrics"`` (MetricRecord): scalar metrics named in
  :data:`fedalign.wire.REPLY_METRICS`;
* ``"meta"`` (ConfigRecord): which client replied (``partition-id``) and, when
  privacy is off, how long it worked (``client-seconds``: a time depends on the
  size of the private data, so a private client does not send it).

Nothing else travels: no weights, features or labels. Both ends enforce it:
:func:`encode_reply` refuses other metrics, and :func:`decode_reply` raises
:class:`ProtocolError` on any other record, metric name, metadata or array layout.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedalign.wire import REPLY_METADATA, REPLY_METRICS, REQUIRED_METADATA, Statistics

if TYPE_CHECKING:  # fedalign.config imports torch; a ClientApp that forwards to its worker never needs it
    from fedalign.config import ExperimentConfig

CONFIG, PEERS, STATISTICS, METRICS, META = "config", "peers", "statistics", "metrics", "meta"
EPSILON_BEFORE = "epsilon-before"
# The weight arms (fedavg / dp-fedavg; clients/fedavg.py writes, server/fedavg.py reads) use their own records:
ARRAYS, CLIENT_METRICS = "arrays", "client-metrics"
ARM_KEY, ARM = "fedalign-arm", "weights"  # a request's config: this message is for the weight arms
WEIGHT_KEY = "fedalign-weight"  # the MetricRecord key Flower's FedAvg weights by: 1 for every client
IDENTIFY_ROUND = -1


class ProtocolError(ValueError):
    """A message that does not follow this wire format; the message says what is wrong."""


def encode_request(
    cfg: ExperimentConfig,
    round_number: int,
    run_tag: str,
    peers: dict[int, list[np.ndarray]] | None = None,
    epsilon_before: float | None = None,
) -> RecordDict:
    """A plain request's content: the experiment config as JSON, round, run tag, epsilon before and peers' arrays.

    Args:
        cfg: the experiment config.
        round_number: the round.
        run_tag: the run's tag (names the clients' checkpoints).
        peers: the peers' statistics by peer id, or None (a query).
        epsilon_before: the largest epsilon the server says this client reported so far, or None.
    """
    config = {"experiment": json.dumps(cfg.to_dict()), "round": round_number, "run-tag": run_tag}
    if epsilon_before is not None:
        config[EPSILON_BEFORE] = float(epsilon_before)
    content = RecordDict({CONFIG: ConfigRecord(config)})
    if peers is not None:
        content[PEERS] = ArrayRecord(
            {
                f"{peer}.{layer}": Array(np.ascontiguousarray(p))
                for peer, stats in peers.items()
                for layer, p in enumerate(stats, start=1)
            }
        )
    return content


def decode_request(content: RecordDict) -> tuple[ExperimentConfig, int, str, dict[int, list[np.ndarray]]]:
    """(config, round, run tag, peer statistics) from a request.

    Args:
        content: the request message's content.
    """
    from fedalign.config import config_from_dict

    experiment, round_number, run_tag, peers = request_fields(content)
    return config_from_dict(json.loads(experiment)), round_number, run_tag, peers


def request_fields(content: RecordDict) -> tuple[str, int, str, dict[int, list[np.ndarray]]]:
    """(config as JSON, round, run tag, peer statistics) from a request, the config left unparsed.

    Args:
        content: the request message's content.
    """
    record = content[CONFIG]
    peers: dict[int, dict[int, np.ndarray]] = {}
    if PEERS in content:
        for key, array in content[PEERS].items():
            peer, layer = (int(part) for part in key.split("."))
            peers.setdefault(peer, {})[layer] = array.numpy()
    ordered = {peer: [layers[layer] for layer in sorted(layers)] for peer, layers in peers.items()}
    return str(record["experiment"]), int(record["round"]), str(record["run-tag"]), ordered


def request_bytes(content: RecordDict) -> int:
    """The bytes of a request's peer statistics as Flower holds them (each array's .npy bytes, header
    included); 0 for a request without peers.

    Args:
        content: a request made by :func:`encode_request`."""
    if PEERS not in content:
        return 0
    return sum(len(array.data) for array in content.array_records[PEERS].values())


def epsilon_before_of(content: RecordDict) -> float | None:
    """The request's ``epsilon-before`` (plain or secure-aggregation request); None when it has none.

    Args:
        content: the request message's content.
    """
    if is_share_request(content):
        value = content.config_records["fitins.config"].get(EPSILON_BEFORE)
    else:
        value = content.config_records[CONFIG].get(EPSILON_BEFORE) if CONFIG in content else None
    return None if value is None else float(value)


def _refuse_unlisted(metrics: dict[str, float]) -> None:
    """A client's own check before a reply leaves: only :data:`~fedalign.wire.REPLY_METRICS`."""
    unexpected = sorted(set(metrics) - REPLY_METRICS)
    if unexpected:
        raise ProtocolError(f"refusing to send metrics {unexpected}: a client sends only {sorted(REPLY_METRICS)}")


def _allow_listed(metrics: dict) -> dict:
    """``metrics`` as received, if every name is allow-listed and every value a scalar; else :class:`ProtocolError`."""
    unexpected = sorted(set(metrics) - REPLY_METRICS)
    if unexpected:
        raise ProtocolError(f"reply carries unexpected metrics {unexpected}")
    if not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise ProtocolError("reply metrics must be scalars")
    return metrics


def encode_reply(
    metrics: dict[str, float], statistics: Statistics | None, partition_id: int, seconds: float | None
) -> RecordDict:
    """A client's reply: its allow-listed metrics, its release (or none), who it is, and (``seconds``
    not None) how long it worked.

    Args:
        metrics: the metrics to send (allow-listed only).
        statistics: the release, or None.
        partition_id: the client's partition id.
        seconds: how long the client worked, or None (not sent).
    """
    _refuse_unlisted(metrics)
    meta = {"partition-id": int(partition_id)} | ({} if seconds is None else {"client-seconds": float(seconds)})
    content = RecordDict({METRICS: MetricRecord({k: float(v) for k, v in metrics.items()}), META: ConfigRecord(meta)})
    if statistics is not None:
        content[STATISTICS] = ArrayRecord(
            {str(layer): Array(np.ascontiguousarray(p)) for layer, p in enumerate(statistics, start=1)}
        )
    return content


def decode_reply(content: RecordDict) -> tuple[dict[str, float], Statistics | None, dict]:
    """(metrics, statistics or None, metadata) from a client's reply; :class:`ProtocolError` if it is not one.

    Args:
        content: the reply message's content.
    """
    unexpected = sorted(set(content.keys()) - {METRICS, STATISTICS, META})
    if unexpected:
        raise ProtocolError(
            f"reply carries unexpected records {unexpected}; a client sends only "
            f"{METRICS!r}, {META!r} and {STATISTICS!r}"
        )
    meta = _decode_meta(content)
    if not isinstance(content.get(METRICS), MetricRecord):
        raise ProtocolError(f"reply has no {METRICS!r} MetricRecord")
    metrics = _allow_listed(dict(content[METRICS]))
    if STATISTICS not in content:
        return metrics, None, meta
    arrays = content[STATISTICS]
    if not isinstance(arrays, ArrayRecord):
        raise ProtocolError(f"{STATISTICS!r} must be an ArrayRecord")
    keys = list(arrays.keys())
    if sorted(keys) != [str(layer) for layer in range(1, len(keys) + 1)] or not keys:
        raise ProtocolError(f"statistics keys must be the layers '1'..'L', got {sorted(keys)[:5]}")
    statistics = []
    for key in sorted(keys, key=int):
        array = arrays[key]
        if len(array.shape) != 1 or array.dtype not in ("float32", "float16"):
            raise ProtocolError(
                f"statistics layer {key}: expected a 1-D float32/float16 array, "
                f"got shape {tuple(array.shape)} dtype {array.dtype}"
            )
        statistics.append(array.numpy())
    return metrics, statistics, meta


NPY_HEADER_BYTES = 1024  # Flower keeps each array as .npy bytes: its data plus a header of ~128 bytes


def statistics_bytes(content: RecordDict) -> int:
    """The bytes of a reply's statistics as their arrays declare them (shape x dtype), read from
    Flower's arrays without converting them, so an oversized reply is refused before any copy.
    :class:`ProtocolError` if an array holds more bytes than it declares.

    Args:
        content: the reply message's content.
    """
    arrays = content.get(STATISTICS) if STATISTICS in content else None
    if not isinstance(arrays, ArrayRecord):
        return 0
    total = 0
    for key, array in arrays.items():
        try:
            declared = int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
        except TypeError as error:
            raise ProtocolError(f"statistics layer {key}: unreadable dtype {array.dtype!r}") from error
        if len(array.data) > declared + NPY_HEADER_BYTES:
            raise ProtocolError(f"statistics layer {key} holds {len(array.data)} bytes but declares {declared}")
        total += declared
    return total


def _decode_meta(content: RecordDict) -> dict:
    record = content.get(META)
    if not isinstance(record, ConfigRecord):
        raise ProtocolError(f"reply has no {META!r} ConfigRecord saying which client sent it")
    meta = dict(record)
    if not set(REQUIRED_METADATA) <= set(meta) <= set(REPLY_METADATA):
        raise ProtocolError(
            f"reply metadata must be {list(REQUIRED_METADATA)} and optionally "
            f"{sorted(set(REPLY_METADATA) - set(REQUIRED_METADATA))}, got {sorted(meta)}"
        )
    if not isinstance(meta["partition-id"], int) or not isinstance(meta.get("client-seconds", 0.0), (int, float)):
        raise ProtocolError("reply metadata: partition-id must be an int and client-seconds a number")
    return meta


# ---------------------------------------------------------------- secure aggregation (SecAgg+ rounds)
#
# In a securely aggregated round (privacy.secure_aggregation) the request and the reply travel as the
# FitIns / FitRes of a Flower SecAgg+ round: the FitIns' config holds "experiment", "round", "run-tag",
# "message-type" ("query" or "train") and, for a trainer that has one, "peer" (SUM_WITH_OWN or
# SUM_WITHOUT_OWN); its parameters the last sum of shares, one float64 [E] array per layer. The FitRes'
# parameters are the client's share -- which Flower's secaggplus_mod masks and never sends as such --
# and its metrics the accounted metrics plus "partition-id"; num_examples is 1 (every share weighs the same).

SHARE_CONFIG = ("experiment", "round", "run-tag", "message-type")


def encode_share_request(
    cfg: ExperimentConfig,
    round_number: int,
    run_tag: str,
    message_type: str,
    peers: dict[int, list[np.ndarray]],
    epsilon_before: float | None = None,
):
    """The FitIns of one client in a SecAgg+ round.

    Args:
        cfg: the experiment config (sent as JSON).
        round_number: the round.
        run_tag: the run's tag (names the clients' checkpoints).
        message_type: ``"query"`` or ``"train"``.
        peers: {} or one sum under its peer id.
        epsilon_before: as in :func:`encode_request`.
    """
    from flwr.common import FitIns, ndarrays_to_parameters

    config = {
        "experiment": json.dumps(cfg.to_dict()),
        "round": round_number,
        "run-tag": run_tag,
        "message-type": message_type,
    }
    if epsilon_before is not None:
        config[EPSILON_BEFORE] = float(epsilon_before)
    arrays: list[np.ndarray] = []
    if peers:
        ((peer, arrays),) = peers.items()
        config["peer"] = int(peer)
    return FitIns(ndarrays_to_parameters([np.ascontiguousarray(a, dtype=np.float64) for a in arrays]), config)


def is_share_request(content: RecordDict) -> bool:
    """Whether ``content`` is a SecAgg+ round's FitIns rather than a plain request.

    Args:
        content: the request message's content.
    """
    return "fitins.config" in content.config_records


def share_request_fields(content: RecordDict) -> tuple[str, int, str, str, dict[int, list[np.ndarray]]]:
    """(config as JSON, round, run tag, message type, peers) from a SecAgg+ round's FitIns.

    Args:
        content: the request message's content.
    """
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import recorddict_to_fitins

    fitins = recorddict_to_fitins(content, keep_input=True)
    config = fitins.config
    if not set(SHARE_CONFIG) <= set(config):
        raise ProtocolError(f"a secure-aggregation request needs {list(SHARE_CONFIG)}, got {sorted(config)}")
    arrays = parameters_to_ndarrays(fitins.parameters)
    peers = {int(config["peer"]): arrays} if "peer" in config else {}
    return (str(config["experiment"]), int(config["round"]), str(config["run-tag"]), str(config["message-type"]), peers)


def encode_share_reply(metrics: dict[str, float], share: Statistics | None, partition_id: int) -> RecordDict:
    """A client's FitRes in a SecAgg+ round: its share as parameters (masked by secaggplus_mod before it
    leaves), its allow-listed metrics and its partition id.

    Args:
        metrics: the metrics to send (allow-listed only).
        share: the client's share, or None.
        partition_id: the client's partition id.
    """
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    _refuse_unlisted(metrics)
    if share is None:
        raise ProtocolError("a secure-aggregation round needs a share from every client that answers")
    fitres = FitRes(
        Status(Code.OK, ""),
        ndarrays_to_parameters([np.ascontiguousarray(s) for s in share]),
        1,
        {**{k: float(v) for k, v in metrics.items()}, "partition-id": int(partition_id)},
    )
    return fitres_to_recorddict(fitres, keep_input=False)


def decode_share_metrics(metrics: dict) -> tuple[dict[str, float], int]:
    """(metrics, partition id) from a SecAgg+ round's FitRes metrics; :class:`ProtocolError` otherwise.

    Args:
        metrics: the FitRes metrics (with ``partition-id``).
    """
    if not isinstance(metrics.get("partition-id"), int):
        raise ProtocolError("a secure-aggregation reply must say its partition-id (an int)")
    values = _allow_listed({k: v for k, v in metrics.items() if k != "partition-id"})
    return {k: float(v) for k, v in values.items()}, int(metrics["partition-id"])
