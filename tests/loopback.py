"""A Flower ``Grid`` stand-in that delivers messages to the real ClientApp in this process.

It lets tests drive the real ServerApp transport (:class:`server.flower_transport.FlowerTransport`)
and the real ClientApp (checkpoints, idempotent replies) without starting a SuperLink, and
lets them do what a network does: lose a node, bring it back under a new node id, or tamper
with replies.
"""

from __future__ import annotations

import copy
from typing import Callable

from flwr.app import Context, Error, Message, RecordDict

from clients.client_app import app as client_app


class LoopbackGrid:
    """Nodes ``node_id -> partition id``; every node keeps its checkpoints under ``state_dir``.

    ``tamper(message, reply) -> reply`` may replace a reply before the server sees it.
    ``crash_before_round``: raise :class:`ServerCrash` when a request of that round is sent.
    ``raise_errors=False``: an exception in the ClientApp becomes an error reply, as Flower's runtime does.
    ``fail(message, pid) -> bool``: when true, the node answers that message with an error (it dropped out).
    Each node keeps its ``Context.state`` between messages, as a SuperNode does (SecAgg+ keeps its keys there).
    """

    def __init__(self, num_clients: int, state_dir, tamper: Callable[[Message, Message], Message] | None = None,
                 crash_before_round: int | None = None, raise_errors: bool = True,
                 node_config: dict | None = None, fail: Callable[[Message, int], bool] | None = None) -> None:
        self.raise_errors = raise_errors
        self.node_config = node_config or {}  # added to every node's config (e.g. a worker socket)
        self.state_dir = str(state_dir)
        self.num_clients = num_clients
        self.nodes = {100 + pid: pid for pid in range(num_clients)}
        self.tamper = tamper
        self.crash_before_round = crash_before_round
        self.fail = fail
        self.states: dict[int, RecordDict] = {}
        self.sent: list[Message] = []
        self.replies: list[Message] = []  # delivered, not yet pulled

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def disconnect(self, pid: int) -> None:
        self.nodes = {n: p for n, p in self.nodes.items() if p != pid}

    def reconnect(self, pid: int) -> int:
        """The client comes back as a new node (a restarted SuperNode gets a new node id)."""
        node = max(self.nodes, default=100) + 1000
        self.nodes[node] = pid
        return node

    def push_messages(self, messages):
        """Deliver each message now (its reply waits for :meth:`pull_messages`); returns the message ids."""
        ids = []
        for msg in messages:
            config = msg.content["config"] if "config" in msg.content else None  # weight arms: Flower's server-round
            round_number = int(config.get("round", config.get("server-round", 0))) if config is not None \
                else int(msg.metadata.group_id)
            if self.crash_before_round is not None and round_number >= self.crash_before_round:
                raise ServerCrash(f"simulated server crash before round {round_number}")
            self.sent.append(msg)
            msg.metadata.__dict__["_message_id"] = message_id = f"message-{len(self.sent)}"
            ids.append(message_id)
            node = msg.metadata.dst_node_id
            if node not in self.nodes:  # a lost node: no reply before the timeout
                continue
            msg.metadata._message_type = msg.metadata.message_type  # noqa: SLF001 - the runtime's job
            context = Context(run_id=1, node_id=node, node_config={
                "partition-id": self.nodes[node], "num-partitions": self.num_clients, "state-dir": self.state_dir,
                **self.node_config,
            }, state=self.states.setdefault(node, RecordDict()), run_config={})
            try:
                if self.fail is not None and self.fail(msg, self.nodes[node]):
                    raise ConnectionError(f"node {node} dropped out")
                reply = client_app(copy.deepcopy(msg), context)  # a network delivers a copy, never the object
            except Exception as error:
                if self.raise_errors:
                    raise
                reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=msg)
            reply.metadata._src_node_id = node  # noqa: SLF001
            if self.tamper is not None:
                reply = self.tamper(msg, reply)
            self.replies.append(reply)
        return ids

    def send_and_receive(self, messages, *, timeout=None):
        """Flower's blocking call (the SecAgg+ workflow uses it): push, then pull every reply."""
        messages = list(messages)
        return self.pull_messages(self.push_messages(messages))

    def pull_messages(self, message_ids):
        wanted = set(message_ids)
        pulled = [r for r in self.replies if r.metadata.reply_to_message_id in wanted]
        self.replies = [r for r in self.replies if r not in pulled]
        return pulled


class ServerCrash(RuntimeError):
    """Raised by :class:`LoopbackGrid` to simulate the server process dying mid-run."""
