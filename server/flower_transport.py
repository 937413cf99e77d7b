"""The coordinator's transport over Flower: requests and replies as Flower messages through a ``Grid``."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedalign.config import ExperimentConfig
from fedalign.server import Reply, release_layout_of
from fedalign.server.layout import release_bytes
from fedalign.wire import PeerSum, Statistics, payload_bytes, private_releases, release_clip_norm
from fedalign_flower.protocol import (
    IDENTIFY_ROUND,
    ProtocolError,
    decode_reply,
    decode_share_metrics,
    encode_request,
    encode_share_request,
    statistics_bytes,
)

from .secure_aggregation import secure_round

log = logging.getLogger("fedalign")

# How often the ServerApp asks for replies: after 0.01 s, then twice as long each time, at most
# REPLY_POLL_SECONDS. Flower's own ``GrpcGrid.send_and_receive`` sleeps 3 s between pulls
# (flwr/superlink/grid/http_grid.py), which adds up to 3 s to every round in deployment; quick
# replies (simulation) are picked up within milliseconds, slow ones cost one small RPC per 0.2 s.
FIRST_POLL_SECONDS, REPLY_POLL_SECONDS = 0.01, 0.2


class FlowerTransport:
    """The coordinator's three calls as Flower messages through a ``Grid``.

    Client ids are partition ids. The transport learns which node runs which
    client by asking new nodes (a ``query`` for round -1: the reply carries
    only the partition id), and asks again whenever a client's node has left
    the grid, so a restarted SuperNode (a new node id) is picked up in the
    next round. Replies that do not come back within ``federation.timeout``
    seconds, and error replies, become missing replies; replies of another
    message type or content outside the wire format (:func:`decode_reply`)
    are rejected, logged, and never decoded into statistics; so are replies whose
    statistics are larger than an honest release of this run (:attr:`max_release_bytes`),
    before any array is converted.

    How early a reply can be bounded: Flower 1.41's ``Grid.pull_messages`` pulls a reply's
    objects and inflates them into a ``Message`` (flwr/superlink/grid/http_grid.py,
    ``pull_messages`` -> ``pull_objects``) before returning it, and its API shows no size
    before that; the object tree that arrives first holds ids only. The first point an app
    holds a reply is here, and the check runs before the arrays are decoded.

    With privacy on (:func:`~fedalign.wire.private_releases`) replies carry no ``seconds``: how long a
    client took reveals the size of its private data, so the server keeps no per-client time.
    """

    def __init__(self, grid: Grid, cfg: ExperimentConfig, run_tag: str) -> None:
        self.grid = grid
        self.cfg = cfg
        self.run_tag = run_tag
        self.node_of: dict[int, int] = {}
        self.node_errors: list[str] = []  # errors of nodes whose client is unknown
        self.epsilon_before: dict[int, float] = {}  # set by the coordinator; sent to each client (fedalign.ledgers)
        self.timed = not private_releases(cfg)  # per-client times only without privacy
        self._clip_norm_value: float | None = None  # see _clip_norm

    @functools.cached_property
    def max_release_bytes(self) -> int | None:
        """The most bytes an honest release of this run holds (any client's); None when this process
        cannot read the public graph (the coordinator then bounds releases after decoding)."""
        layout = release_layout_of(self.cfg)
        if layout is None:
            return None
        return max(release_bytes(self.cfg, c, layout.num_edges) for c in range(self.cfg.federation.num_clients))

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
                    f"SuperNodes connected within federation.timeout={self.cfg.federation.timeout}s"
                )
            time.sleep(poll_seconds)

    def _locate(self, clients: list[int]) -> None:
        """Make sure ``node_of`` knows the current node of each client, if it is connected."""
        if not self.node_of:
            connected = set(self.wait_for_nodes())
        else:
            connected = set(self.grid.get_node_ids())
        for client, node in list(self.node_of.items()):
            if node not in connected:  # that SuperNode left; it may come back under a new node id
                del self.node_of[client]
        unknown = sorted(connected - set(self.node_of.values()))
        if unknown and any(c not in self.node_of for c in clients):
            self._exchange(MessageType.QUERY, {node: (-1, None) for node in unknown}, IDENTIFY_ROUND)

    def _decoded(self, msg: Message, message_type: str) -> tuple[dict, Statistics | None, dict]:
        """(metrics, statistics, metadata) of a reply of type ``message_type``; raises :class:`ProtocolError`
        for another type, or statistics larger than an honest release (refused before decoding)."""
        if msg.metadata.message_type != message_type:
            raise ProtocolError(f"unexpected message type {msg.metadata.message_type!r} in reply to {message_type!r}")
        size = statistics_bytes(msg.content)
        limit = self.max_release_bytes if size else None  # no public graph needed for empty replies
        if limit is not None and size > limit:
            raise ProtocolError(
                f"statistics of {size} bytes, more than the {limit} bytes of an honest "
                "release of this run (refused before decoding)"
            )
        return decode_reply(msg.content)

    def _exchange(
        self, message_type: str, requests: dict[int, tuple[int, dict | None]], round_number: int
    ) -> dict[int, Reply]:
        """``requests``: node id -> (client id or -1 if unknown, peer statistics or None)."""
        messages = [  # a request not delivered within the timeout expires (never reaches a restarted node late)
            Message(
                content=encode_request(self.cfg, round_number, self.run_tag, peers, self.epsilon_before.get(client)),
                dst_node_id=node,
                message_type=message_type,
                ttl=self.cfg.federation.timeout,
            )
            for node, (client, peers) in requests.items()
        ]
        started = time.perf_counter()
        replies: dict[int, Reply] = {}
        self.node_errors = []
        # Match replies to requests by message id: an error reply the SuperLink makes itself (e.g.
        # "Node Unavailable" for a node that missed its heartbeats) comes from the SuperLink's node id.
        asked = {
            message_id: m.metadata.dst_node_id
            for message_id, m in zip(self.grid.push_messages(messages), messages, strict=True)
            if message_id
        }
        answers = self._collect(set(asked))
        for msg in answers:
            node = asked.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            if node not in requests:
                log.warning("ignored a reply from node %s, which was not asked", node)
                continue
            client, peers = requests[node]
            received = sum(payload_bytes(s) for s in (peers or {}).values())
            if msg.has_error():
                self._fail(replies, client, Reply(client, error=f"error reply from node {node}: {msg.error.reason}"))
                continue
            try:
                metrics, stats, meta = self._decoded(msg, message_type)
            except ProtocolError as error:
                self._fail(replies, client, Reply(client, rejected=f"reply from node {node} rejected: {error}"))
                continue
            said = meta["partition-id"]
            if client >= 0 and said != client:
                rejection = f"reply from node {node} rejected: it answered for client {said} instead of client {client}"
                self._fail(replies, client, Reply(client, rejected=rejection))
                continue
            client = said
            self.node_of[client] = node
            replies[client] = Reply(
                client,
                metrics,
                stats,
                bytes_received=received,
                bytes_sent=payload_bytes(stats),
                seconds=self._since(started),
            )
        return replies

    def _collect(self, message_ids: set[str]) -> list[Message]:
        """The replies to ``message_ids`` that arrive within ``federation.timeout`` (pulled after
        :data:`FIRST_POLL_SECONDS`, backing off to every :data:`REPLY_POLL_SECONDS`)."""
        deadline = time.monotonic() + self.cfg.federation.timeout
        pending, answers, wait = set(message_ids), [], FIRST_POLL_SECONDS
        while pending:
            for msg in self.grid.pull_messages(pending):
                answers.append(msg)
                pending.discard(msg.metadata.reply_to_message_id)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            time.sleep(min(wait, remaining))
            wait = min(2 * wait, REPLY_POLL_SECONDS)
        return answers

    def _since(self, started: float) -> float | None:
        """Seconds since ``started``, or None with privacy on."""
        return time.perf_counter() - started if self.timed else None

    def _fail(self, replies: dict[int, Reply], client: int, reply: Reply) -> None:
        """Record a failed reply: for its client, or, if the node's client is unknown, in ``node_errors``.

        Logged here unless the coordinator logs it: it logs each rejection it records, so a rejected
        reply of a known client is logged there, once."""
        if reply.rejected is None or client < 0:
            log.warning("%s", reply.error or reply.rejected)
        if client >= 0:
            replies[client] = reply
        else:
            self.node_errors.append(reply.error or reply.rejected or "")

    def _send(self, message_type: str, jobs: Mapping[int, dict | None], round_number: int) -> dict[int, Reply]:
        self._locate(list(jobs))
        requests = {self.node_of[c]: (c, peers) for c, peers in jobs.items() if c in self.node_of}
        replies = self._exchange(message_type, requests, round_number)
        for client in jobs:
            if client not in replies and client not in self.node_of:
                reason = "; ".join(self.node_errors) or "no connected SuperNode says it is this client"
                replies[client] = Reply(client, error=f"client {client} unreachable: {reason}")
        return replies

    def query(self, clients: list[int], round_number: int) -> dict[int, Reply]:
        return self._send(MessageType.QUERY, {c: None for c in clients}, round_number)

    def train(self, jobs: dict[int, dict[int, Statistics]], round_number: int) -> dict[int, Reply]:
        return self._send(MessageType.TRAIN, jobs, round_number)

    # ------------------------------------------------------------ secure aggregation (SecAgg+)

    def query_summed(self, clients: list[int], round_number: int) -> tuple[dict[int, Reply], PeerSum | None]:
        return self._summed("query", {c: {} for c in clients}, round_number)

    def train_summed(
        self, jobs: dict[int, dict[int, Statistics]], round_number: int
    ) -> tuple[dict[int, Reply], PeerSum | None]:
        return self._summed("train", jobs, round_number)

    def _clip_norm(self) -> float:
        """C of a release (votes: sqrt of the query groups, read off the public layout artefact when
        ``federation.public_layout`` names one, else off the public alignment graph); worked out once."""
        if self._clip_norm_value is None:
            self._clip_norm_value = self._release_clip_norm()
        return self._clip_norm_value

    def _release_clip_norm(self) -> float:
        if self.cfg.align.strategy != "votes":
            return self.cfg.privacy.clip_norm
        layout = release_layout_of(self.cfg)
        if layout is None:
            raise RuntimeError(
                "secure aggregation of votes needs the public alignment graph's size on the server: "
                "give it the public layout artefact (federation.public_layout, made by `fedalign "
                "layout`) or the data (data.root)"
            )
        return release_clip_norm(self.cfg.privacy.clip_norm, layout)

    def _summed(
        self, message_type: str, jobs: dict[int, dict], round_number: int
    ) -> tuple[dict[int, Reply], PeerSum | None]:
        """One SecAgg+ round (:func:`~server.secure_aggregation.secure_round`) over the clients of ``jobs``."""
        self._locate(list(jobs))
        client_of = {self.node_of[c]: c for c in jobs if c in self.node_of}
        fitins = {
            node: encode_share_request(
                self.cfg, round_number, self.run_tag, message_type, jobs[c], self.epsilon_before.get(c)
            )
            for node, c in client_of.items()
        }
        started = time.perf_counter()
        replies: dict[int, Reply] = {}
        total, contributors, errors = (
            secure_round(self.grid, self.cfg, round_number, fitins, self._clip_norm())
            if len(fitins) >= 2
            else (None, [], ["fewer than 2 clients reachable"])
        )
        included = []
        for node, fitres in contributors:
            client = client_of.get(node, -1)
            included.append(client)  # its share is in the sum, whatever its metrics say
            try:
                metrics, said = decode_share_metrics(dict(fitres.metrics))
                if said != client:
                    raise ProtocolError(f"node {node} answered for client {said} instead of client {client}")
            except ProtocolError as error:
                self._fail(replies, client, Reply(client, rejected=f"reply from node {node} rejected: {error}"))
                continue
            received = sum(payload_bytes(s) for s in jobs[client].values())
            replies[client] = Reply(
                client,
                metrics,
                None,
                bytes_received=received,
                bytes_sent=payload_bytes(total),
                seconds=self._since(started),
            )
        reason = "; ".join(dict.fromkeys(errors)) or "no reply before the timeout"
        for client in jobs:
            if client not in replies:
                replies[client] = Reply(client, error=f"client {client} left the secure round: {reason}")
        if total is None or -1 in included:
            return replies, None
        return replies, PeerSum(total, sorted(included))
