"""Bytes per train request against the number of clients K: the peers' summed mass against every peer's release.

    python -m bench.request_size                        # K = 2, 100, 1000 on a 120-node synthetic graph
    python -m bench.request_size --clients 2 3 12 1000 --hidden-layers 4

The coordinator runs over a transport whose K clients release valid random distributions on the public
alignment graph (no student trains, so K = 1000 takes seconds): round 0 fills the cache, round 1 (client 0
trains, alternating schedule) is the request measured -- the payload the coordinator hands the transport
(:func:`fedalign.wire.payload_bytes`), and the same request encoded as a Flower message
(:func:`fedalign_flower.protocol.encode_request`, each array's .npy bytes, header included) -- against
what a request held when it carried each peer's release: (K - 1) x L x E x the wire itemsize.
"""

from __future__ import annotations

import argparse
import time
from typing import cast

import numpy as np

from .common import human_bytes

NAME = "request_size"


def config(num_clients: int, hidden_layers: int, dtype: str) -> dict:
    """The small experiment measured (synthetic-csbm, 120 nodes, iid with a 30 % public graph).

    Args:
        num_clients: K.
        hidden_layers: L of every student.
        dtype: ``align.statistics_dtype``."""
    return {
        "name": f"bench-request-size-{num_clients}",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
        "partition": {"scheme": "iid", "public_fraction": 0.3},
        "federation": {"num_clients": num_clients, "rounds": 1, "schedule": "alternating"},
        "model": {"hidden_layers": hidden_layers, "hidden_dim": 8},
        "align": {"strategy": "alignahead", "statistics_dtype": dtype},
        "output": {"progress": False, "plot": False},
    }


class RandomReleases:
    """A transport whose clients release random distributions on ``layout``; ``jobs``: what trainers were sent.

    Args:
        layout: the public alignment graph's release layout.
        layers: arrays per release.
        dtype: the wire dtype."""

    def __init__(self, layout, layers: int, dtype: str) -> None:
        self.layout, self.layers, self.dtype = layout, layers, dtype
        self.rng = np.random.default_rng(0)
        self.epsilon_before: dict[int, float] = {}
        self.jobs: dict = {}

    def _release(self) -> list[np.ndarray]:
        target = self.layout.target
        stats = []
        for _ in range(self.layers):
            p = self.rng.random(target.size) + 0.1
            stats.append((p / np.bincount(target, weights=p)[target]).astype(self.dtype))
        return stats

    def query(self, clients, round_number):
        from fedalign.server import Reply
        from fedalign.wire import payload_bytes

        replies = {}
        for c in clients:
            stats = self._release()
            replies[c] = Reply(c, {}, stats, bytes_sent=payload_bytes(stats))
        return replies

    def train(self, jobs, round_number):
        self.jobs.update(jobs)
        return self.query(list(jobs), round_number)


def measure(num_clients: int, hidden_layers: int, dtype: str) -> dict:
    """One K: the request of round 1's trainer (client 0), its size handed over and encoded, and what it was.

    Args:
        num_clients: K.
        hidden_layers: L of every student.
        dtype: ``align.statistics_dtype``."""
    from fedalign.config import config_from_dict
    from fedalign.server import Coordinator, Transport, release_layout_of
    from fedalign.wire import PEER_MASS, payload_bytes
    from fedalign_flower.protocol import encode_request, request_bytes

    cfg = config_from_dict(config(num_clients, hidden_layers, dtype))
    layout = release_layout_of(cfg)
    assert layout is not None  # a synthetic graph: the layout is always derivable
    transport = RandomReleases(layout, hidden_layers, dtype)
    coordinator = Coordinator(cfg, cast(Transport, transport), layout=layout)  # a stand-in: releases only
    coordinator.initialise()
    coordinator.run_round(1)
    started = time.perf_counter()
    request = coordinator.job_for(0)  # made again, timed: O(E) whatever K
    seconds = time.perf_counter() - started
    return {
        "clients": num_clients,
        "edges": layout.num_edges,
        "layers": hidden_layers,
        "dtype": dtype,
        "request_bytes": sum(payload_bytes(s) for s in transport.jobs[0].values()),
        "encoded_bytes": request_bytes(encode_request(cfg, 1, "bench", transport.jobs[0])),
        "per_peer_bytes": (num_clients - 1) * hidden_layers * layout.num_edges * np.dtype(dtype).itemsize,
        "summed": PEER_MASS in request,
        "make_request_ms": 1e3 * seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Print bytes per train request for each K (``--clients``).

    Args:
        argv: the command line (None: ``sys.argv``)."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[2, 100, 1000])
    p.add_argument("--hidden-layers", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    args = p.parse_args(argv)
    print(
        "| K | E | L | request (handed to the transport) | Flower message arrays | per-peer releases "
        "(before) | summed | make request |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in args.clients:
        row = measure(k, args.hidden_layers, args.dtype)
        print(
            f"| {k} | {row['edges']} | {row['layers']} | {row['request_bytes']:,} B | {row['encoded_bytes']:,} B "
            f"| {row['per_peer_bytes']:,} B ({human_bytes(row['per_peer_bytes'])}) | {row['summed']} "
            f"| {row['make_request_ms']:.2f} ms |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
