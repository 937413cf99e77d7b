"""One request to a client and its answer, as plain data (numpy, no torch).

What a ClientApp hands to the code that answers it -- :func:`fedalign.client.service.answer_request`,
in the ClientApp's own process or in its node's worker (:mod:`fedalign.client.worker`) -- and what
comes back. :func:`encode_request` / :func:`decode_request` (and the same for answers) turn them into
one frame of bytes: a JSON header, then each array's raw bytes (its dtype and shape in the header).
Nothing is pickled.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass
class Request:
    """A message for client ``partition_id``.

    ``experiment`` is the run's config as JSON; ``peers`` peer id -> per-layer statistics;
    ``identify``: only "which client are you?" (no student, no release); ``state_dir`` and
    ``data_root`` come from the node's config (None: defaults); ``epsilon_before``: the largest
    epsilon the server says this client reported so far (None: none; :mod:`fedalign.ledgers`).
    """

    experiment: str
    round_number: int
    run_tag: str
    message_type: str  # "query" or "train"
    partition_id: int
    num_partitions: int | None = None
    identify: bool = False
    state_dir: str | None = None
    data_root: str | None = None
    peers: dict[int, list[np.ndarray]] = field(default_factory=dict)
    epsilon_before: float | None = None


@dataclass
class Answer:
    """What the client sends (``metrics``, ``statistics``), whether it may say how long it worked
    (``send_seconds``: not with privacy on), and how long loading and working took here."""

    metrics: dict[str, float]
    statistics: list[np.ndarray] | None
    send_seconds: bool
    load_seconds: float = 0.0
    work_seconds: float = 0.0


def _plain_fields(obj, arrays_field: str) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.name != arrays_field}


def _frame(header: dict, arrays: list[np.ndarray]) -> bytes:
    header = {**header, "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]}
    encoded = json.dumps(header).encode()
    return b"".join([struct.pack("<I", len(encoded)), encoded, *(np.ascontiguousarray(a).tobytes() for a in arrays)])


def _unframe(frame: bytes) -> tuple[dict, list[np.ndarray]]:
    (length,) = struct.unpack_from("<I", frame)
    header = json.loads(frame[4 : 4 + length])
    arrays, offset = [], 4 + length
    for spec in header.pop("arrays"):
        dtype = np.dtype(spec["dtype"])
        size = int(np.prod(spec["shape"], dtype=np.int64)) * dtype.itemsize
        if offset + size > len(frame):
            raise ValueError("truncated frame")
        arrays.append(
            np.frombuffer(frame, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(spec["shape"]).copy()
        )
        offset += size
    if offset != len(frame):
        raise ValueError("frame longer than its header says")
    return header, arrays


def encode_request(request: Request) -> bytes:
    """The frame that carries ``request`` to a node worker.

    Args:
        request: the request; its peers' arrays go after the JSON header.
    """
    header = _plain_fields(request, "peers")
    layers = [(peer, len(stats)) for peer, stats in request.peers.items()]
    header["peers"] = layers
    return _frame(header, [p for stats in request.peers.values() for p in stats])


def decode_request(frame: bytes) -> Request:
    """The request in ``frame`` (:func:`encode_request`).

    Args:
        frame: the bytes received.
    """
    header, arrays = _unframe(frame)
    peers, start = {}, 0
    for peer, count in header.pop("peers"):
        peers[int(peer)] = arrays[start : start + count]
        start += count
    return Request(**header, peers=peers)


def encode_answer(answer: Answer) -> bytes:
    """The frame that carries ``answer`` back from a node worker.

    Args:
        answer: the answer; its statistics go after the JSON header.
    """
    header = _plain_fields(answer, "statistics")
    header["has_statistics"] = answer.statistics is not None
    return _frame(header, list(answer.statistics or []))


class AnswerFailed(RuntimeError):
    """The code answering a request raised; the message is its error."""


def encode_failure(message: str) -> bytes:
    """The frame that says answering failed, and why (:func:`decode_answer` raises :class:`AnswerFailed`).

    Args:
        message: the error message.
    """
    return _frame({"error": message}, [])


def decode_answer(frame: bytes) -> Answer:
    """The answer in ``frame``; raises :class:`AnswerFailed` for a failure frame (:func:`encode_failure`).

    Args:
        frame: the bytes received.
    """
    header, arrays = _unframe(frame)
    if "error" in header:
        raise AnswerFailed(header["error"])
    has_statistics = header.pop("has_statistics")
    return Answer(**header, statistics=arrays if has_statistics else None)
