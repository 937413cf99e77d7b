"""fedalign ServerApp: the coordinator of :mod:`fedalign.federation` over Flower messages.

The server sends each client its peers' cached statistics and receives
fresh statistics and scalar metrics; it never receives weights, features or
labels. ``flwr run .`` reads the experiment file named by the run config key
``config`` and the space-separated ``key.path=value`` overrides in ``set``.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from clients.protocol import decode_reply, encode_request
from fedalign.config import ExperimentConfig, load_config
from fedalign.federation import Reply, payload_bytes
from fedalign.outputs import new_run_dir
from fedalign.runner import run_experiment
from fedalign.student import Statistics

PROJECT_DIR = Path(__file__).resolve().parent.parent
TRANSPORT_METRICS = ("partition-id", "client-seconds")


class FlowerTransport:
    """The coordinator's three calls as Flower messages through a ``Grid``.

    Client ids are partition ids; the node of each partition is learnt from
    the replies to a first query. Replies that do not come back within
    ``federation.timeout`` seconds, and error replies, become missing replies.
    """

    def __init__(self, grid: Grid, cfg: ExperimentConfig, run_tag: str) -> None:
        self.grid = grid
        self.cfg = cfg
        self.run_tag = run_tag
        self.node_of: dict[int, int] = {}

    def wait_for_nodes(self, poll_seconds: float = 1.0) -> list[int]:
        """Block until ``num_clients`` SuperNodes are connected (or the timeout passes)."""
        deadline = time.monotonic() + self.cfg.federation.timeout
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.cfg.federation.num_clients:
                return nodes
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(nodes)} of federation.num_clients={self.cfg.federation.num_clients} "
                    f"SuperNodes connected within federation.timeout={self.cfg.federation.timeout}s")
            time.sleep(poll_seconds)

    def _exchange(self, message_type: str, requests: dict[int, tuple[int, dict | None]], round_number: int) -> dict[int, Reply]:
        """``requests``: node id -> (client id or -1 if unknown, peer statistics or None)."""
        messages = [
            Message(content=encode_request(self.cfg, round_number, self.run_tag, peers),
                    dst_node_id=node, message_type=message_type)
            for node, (_, peers) in requests.items()
        ]
        started = time.perf_counter()
        replies: dict[int, Reply] = {}
        self.unattributed_errors: list[str] = []
        for msg in self.grid.send_and_receive(messages, timeout=self.cfg.federation.timeout):
            node = msg.metadata.src_node_id
            client, peers = requests[node]
            received = sum(payload_bytes(s) for s in (peers or {}).values())
            if msg.has_error():
                error = f"error reply from node {node}: {msg.error.reason}"
                if client >= 0:
                    replies[client] = Reply(client, error=error)
                else:  # a node whose partition is not known yet (first contact)
                    self.unattributed_errors.append(error)
                continue
            metrics, stats = decode_reply(msg.content)
            client = int(metrics["partition-id"])
            self.node_of[client] = node
            for key in TRANSPORT_METRICS:
                metrics.pop(key, None)
            replies[client] = Reply(client, metrics, stats, None, received, payload_bytes(stats),
                                    time.perf_counter() - started)
        return replies

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        known = {self.node_of[c]: (c, None) for c in clients if c in self.node_of}
        if len(known) < len(clients):  # first contact: ask every node, learn partitions
            known = {node: (-1, None) for node in self.wait_for_nodes()}
        replies = {c: r for c, r in self._exchange(MessageType.QUERY, known, round_number).items() if c in clients}
        for c in clients:  # clients that failed before saying who they are get the nodes' errors
            if c not in replies and self.unattributed_errors:
                replies[c] = Reply(c, error="; ".join(self.unattributed_errors))
        return replies

    def _ensure_known(self, clients: list[int]) -> None:
        if any(c not in self.node_of for c in clients):
            self.query(clients, 0)

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        self._ensure_known(list(jobs))
        requests = {self.node_of[c]: (c, peers) for c, peers in jobs.items() if c in self.node_of}
        return self._exchange(MessageType.TRAIN, requests, round_number)

    def evaluate(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        self._ensure_known(clients)
        requests = {self.node_of[c]: (c, None) for c in clients if c in self.node_of}
        return self._exchange(MessageType.EVALUATE, requests, round_number)


def serve(grid: Grid, cfg: ExperimentConfig, run_dir: Path | None = None) -> tuple[Path, dict]:
    """Run the experiment through ``grid``; returns the run folder and summary."""
    run_dir = run_dir or new_run_dir(cfg)
    transport = FlowerTransport(grid, cfg, run_tag=run_dir.name)
    return run_experiment(cfg, transport, "flower", run_dir)


def config_from_run_config(run_config: dict) -> ExperimentConfig:
    """The experiment named by run config ``config`` with ``set`` overrides."""
    path = Path(str(run_config.get("config", "simulations/quickstart.yaml")))
    if not path.is_absolute():
        path = PROJECT_DIR / path
    overrides = str(run_config.get("set", "")).split()
    return load_config(path, overrides)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, config_from_run_config(dict(context.run_config)))
