"""The statistics codecs of the communication benchmark (:mod:`bench.communication`, part 3), and a transport
that sends every release through one of them (part 2's ``int8`` arm). No library code uses them."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np


class Graph:
    """What a codec may use: the public alignment graph's targets and in-degrees."""

    def __init__(self, target: np.ndarray, num_nodes: int) -> None:
        self.target = target
        self.num_nodes = num_nodes
        self.degree = np.bincount(target, minlength=num_nodes)
        self.edge_degree = self.degree[target].astype(np.float64)
        # The last in-edge of every node (by position): dropped by "drop one entry per node".
        last = np.full(num_nodes, -1)
        last[target] = np.arange(target.shape[0])
        self.last_edge = last[self.degree > 0]

    def renormalise(self, p: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.target, weights=p, minlength=self.num_nodes)
        return p / sums[self.target]


def float16(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    q = p.astype(np.float16)
    return q.astype(np.float64), q.nbytes


def float16_deviation(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    d = (p.astype(np.float64) * g.edge_degree - 1.0).astype(np.float16)
    return (1.0 + d.astype(np.float64)) / g.edge_degree, d.nbytes


def drop_one_per_node(p: np.ndarray, g: Graph, dtype=np.float32) -> tuple[np.ndarray, int]:
    keep = np.ones(p.shape[0], dtype=bool)
    keep[g.last_edge] = False
    sent = p[keep].astype(dtype)
    out = np.zeros(p.shape[0])
    out[keep] = sent
    others = np.bincount(g.target[keep], weights=sent.astype(np.float64), minlength=g.num_nodes)
    out[g.last_edge] = 1.0 - others[g.target[g.last_edge]]
    return out, sent.nbytes


def int8_log_ratio(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    r = np.log(np.maximum(p.astype(np.float64), 1e-30) * g.edge_degree)
    scale = max(np.abs(r).max(), 1e-12) / 127.0
    q = np.clip(np.rint(r / scale), -127, 127).astype(np.int8)
    decoded = np.exp(q.astype(np.float64) * np.float32(scale)) / g.edge_degree
    return g.renormalise(decoded), q.nbytes + 4


def zlib_of(dtype) -> Callable[[np.ndarray, Graph], tuple[np.ndarray, int]]:
    def codec(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
        raw = p.astype(dtype)
        return raw.astype(np.float64), len(zlib.compress(raw.tobytes(), 6))

    return codec


CODECS = {
    "float32 (library default)": lambda p, g: (p.astype(np.float64), p.astype(np.float32).nbytes),
    "float16 (align.statistics_dtype)": float16,
    "float16 deviation p*deg-1": float16_deviation,
    "float32, drop one entry per node": drop_one_per_node,
    "float16, drop one entry per node": lambda p, g: drop_one_per_node(p, g, np.float16),
    "int8 log-ratio + per-layer scale": int8_log_ratio,
    "zlib(float32)": zlib_of(np.float32),
    "zlib(float16)": zlib_of(np.float16),
}


def codec_errors(statistics: list[np.ndarray], g: Graph) -> list[dict]:
    """Bytes per entry and errors of every codec on one release (all layers)."""
    rows = []
    entries = sum(p.shape[0] for p in statistics)
    has = g.degree > 0
    for name, codec in CODECS.items():
        nbytes, abs_err, kl, dev_rel = 0, [], [], []
        for p in statistics:
            p64 = p.astype(np.float64)
            decoded, size = codec(p, g)
            nbytes += size
            err = np.abs(decoded - p64)
            abs_err.append(err)
            deviation = np.abs(p64 - 1.0 / g.edge_degree)
            dev_rel.append(np.median(err[deviation > 0] / deviation[deviation > 0]) if (deviation > 0).any() else 0)
            # KL against the decoded distribution renormalised per node (what a careful receiver would use).
            safe = np.maximum(g.renormalise(np.maximum(decoded, 0.0)), 1e-30)
            per_node = np.bincount(g.target, weights=p64 * (np.log(p64) - np.log(safe)), minlength=g.num_nodes)
            kl.append(per_node[has].mean())
        err = np.concatenate(abs_err)
        rows.append(
            {
                "codec": name,
                "bytes": int(nbytes),
                "bytes_per_entry": nbytes / entries,
                "vs_float32": nbytes / (4 * entries),
                "max_abs_err": float(err.max()),
                "median_abs_err": float(np.median(err)),
                "median_err_over_deviation": float(np.median(dev_rel)),
                "kl_per_node_mean": float(np.mean(kl)),
            }
        )
    return rows


class CodecTransport:
    """Wraps a transport: every release is encoded with ``codec`` and decoded before the server sees it.

    ``bytes_sent`` becomes the encoded size, ``bytes_received`` the encoded size of the peers' releases.
    """

    def __init__(self, inner, codec, graph: Graph) -> None:
        self.inner, self.codec, self.graph = inner, codec, graph
        self.size: dict[int, int] = {}

    def _apply(self, replies: dict) -> dict:
        for client, reply in replies.items():
            if reply.statistics is not None:
                decoded, sizes = [], 0
                for p in reply.statistics:
                    d, size = self.codec(p, self.graph)
                    decoded.append(d.astype(np.float32))
                    sizes += size
                reply.statistics = decoded
                reply.bytes_sent = sizes
                self.size[client] = sizes
        return replies

    def query(self, clients, round_number):
        return self._apply(self.inner.query(clients, round_number))

    def train(self, jobs, round_number):
        from fedalign.wire import PEER_MASS, payload_bytes

        replies = self.inner.train(jobs, round_number)
        for client, reply in replies.items():
            peers = jobs[client]  # the peers' summed mass (fedalign.wire.PEER_MASS) travels as it is
            reply.bytes_received = (
                payload_bytes(peers[PEER_MASS]) if PEER_MASS in peers else sum(self.size.get(peer, 0) for peer in peers)
            )
        return self._apply(replies)
