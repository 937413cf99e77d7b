"""One student on one client: its network, optimiser and local data, and what it shares.

:class:`Student` is the whole client side of the method, independent of how
messages travel: the in-process engine calls it directly, the Flower ClientApp
wraps it. It only ever *returns* statistics (the probabilities its strategy
aligns, on the public alignment graph) and scalar metrics; weights, features
and labels stay inside. How a release is made -- raw, or through a privacy
mechanism -- is its :attr:`Student.release_policy`
(:mod:`fedalign.client.release`); how it trains is :mod:`fedalign.client.training`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from ..alignment import NODE_STRATEGIES, released_arrays
from ..config import ExperimentConfig
from ..data import ClientData
from ..models import StudentNetwork, build_network, sparse_input
from ..public_layout import check_client_layout
from ..queries import query_nodes
from ..seeds import derive_seed
from ..statistics import class_log_probs, layer_statistics
from ..wire import (
    PEER_MASS,
    SUM_PEERS,
    SUM_WITH_OWN,
    PeerMass,
    Statistics,
    release_layout,
)
from .inference import layerwise_forward
from .local_data import TaskInfo, client_data, randomise_labels, to_device
from .minibatch_training import train_mini_batch
from .objective import AlignmentTargets
from .peer_checks import check_peer_statistics
from .release import SecureShareRelease, build_release_policy
from .release.base import ReleaseMetrics
from .training import DPSGDTraining, task_loss, task_metric, train_full_batch
from .votes import PublicLabels, answer_queries, peer_histogram, vote_vector


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"`` or any other torch device name (the config's ``device``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


class Student:
    """A student GNN on one client.

    Args:
        cfg: the experiment config.
        client_id: 0..K-1.
        data: this client's local data and the alignment graph.
        task: dataset dimensions.
    """

    def __init__(self, cfg: ExperimentConfig, client_id: int, data: ClientData, task: TaskInfo) -> None:
        self.cfg, self.client_id, self.task = cfg, client_id, task
        self.device = resolve_device(cfg.device)
        m = cfg.model.for_client(client_id)
        # shared init: every student draws its weights from the same seed (identical students start
        # identical, as the original's deep copies of one model); independent: one seed per student
        torch.manual_seed(derive_seed(cfg.seed) if cfg.model.init == "shared" else derive_seed(cfg.seed, client_id))
        self.model: StudentNetwork = build_network(
            m["arch"],
            task.num_features,
            task.num_classes,
            hidden_layers=m["hidden_layers"],
            hidden_dim=m["hidden_dim"],
            dropout=m["dropout"],
            residual=m["residual"],
            heads=m["heads"],
            activation=m["activation"],
            representation=cfg.align.representation,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.train_split, self.val_split, self.test_split, self.alignment = to_device(data, self.device)
        if cfg.privacy.unit == "labels":  # randomised response on the training labels, once, before training
            self.train_split = randomise_labels(cfg, client_id, self.train_split, task)
        self._prepared: dict[int, Any] = {}  # id(graph) -> (model.prepare(its edges), its features), built once
        queries = (
            query_nodes(cfg.seed, self.alignment.num_nodes, cfg.align.queries)
            if cfg.align.strategy in NODE_STRATEGIES
            else None
        )
        self.queries = None if queries is None else torch.from_numpy(queries).to(self.device)
        self.layout = release_layout(
            cfg.align.strategy,
            self.alignment.edge_index,
            self.alignment.num_nodes,
            task.num_classes,
            task.multilabel,
            None if queries is None else len(queries),
        )
        check_client_layout(
            cfg, client_id, self.alignment.edge_index, self.alignment.num_nodes, task.num_classes, task.multilabel
        )  # federation.public_layout_sha256: the server's layout is this data's
        self.public_labels = PublicLabels(self.layout) if cfg.align.strategy == "votes" else None
        self.answered = 0  # votes: queries answered by the last histogram
        self.own_statistics: Statistics | None = None  # strategy self: its statistics at the end of its last turn
        self.shared_forward = self.alignment is self.train_split.graph  # replicate: one forward serves both
        self.epochs_trained = 0
        self.dp_sgd = DPSGDTraining(cfg, self.train_split, self.shared_forward) if cfg.privacy.dp_sgd.enabled else None
        self.release_policy = build_release_policy(
            cfg,
            client_id,
            released_arrays(cfg.align.strategy, self.depth),
            self.layout,
            self.dp_sgd.ledger if self.dp_sgd else None,
        )

    def forward(self, graph: Data) -> tuple[Tensor, list[Tensor]]:
        """The network on one of this client's graphs, its propagation structure prepared once (a
        mini-batch student's inference runs layer-wise in chunks: :mod:`fedalign.client.inference`).

        Args:
            graph: one of this client's graphs (a split's graph or the alignment graph).

        Returns:
            ``(logits [N, C], hidden representations, one [N, d] tensor per hidden layer)``.
        """
        if self.cfg.train.batch_size is not None and not self.model.training and not torch.is_grad_enabled():
            return layerwise_forward(self.model, graph, self.cfg.train.batch_size)
        if id(graph) not in self._prepared:
            features = sparse_input(graph.x) if self.cfg.train.sparse_features else graph.x
            self._prepared[id(graph)] = (self.model.prepare(graph.edge_index, graph.num_nodes), features)
        prepared, features = self._prepared[id(graph)]
        return self.model(features, prepared)

    @property
    def depth(self) -> int:
        """L, the number of hidden layers this student aligns."""
        return self.model.hidden_layers

    # ------------------------------------------------------------ sharing

    @torch.no_grad()
    def statistics(self) -> Statistics:
        """What this student's strategy aligns, on the alignment graph (eval mode), as probabilities.

        Structure strategies: per hidden layer l, ``p_l(u|v)`` ``[E]``; ``logits``: one array of the
        class distributions (:func:`~fedalign.statistics.class_log_probs`).
        """
        self.model.eval()
        logits, hiddens = self.forward(self.alignment)
        if self.cfg.align.strategy == "votes":  # one-hot votes on the query set; abstain before the first turn
            votes = vote_vector(self.on_queries(logits), self.task.multilabel)
            return [(votes if self.epochs_trained > 0 else torch.zeros_like(votes)).cpu().numpy()]
        return [lp.exp().float().cpu().numpy() for lp in self.log_statistics(logits, hiddens)]

    def on_queries(self, logits: Tensor) -> Tensor:
        """The rows of ``logits`` [N, C] on the query set (all N without one).

        Args:
            logits: the student's logits [N, C] on the alignment graph.
        """
        return logits if self.queries is None else logits.index_select(0, self.queries)

    def log_statistics(self, logits: Tensor, hiddens: list[Tensor]) -> list[Tensor]:
        """Log-probabilities of :meth:`statistics` from outputs on the alignment graph, differentiable
        (``votes``: the student's class distributions on the query set, which its cross-entropy reads).

        Args:
            logits: the student's logits [N, C] on the alignment graph.
            hiddens: its hidden representations on the alignment graph, one [N, d] tensor per hidden layer.
        """
        align = self.cfg.align
        if align.strategy in NODE_STRATEGIES:
            temperature = align.logit_temperature if align.strategy == "logits" else 1.0
            return [class_log_probs(self.on_queries(logits), temperature, self.task.multilabel)]
        return layer_statistics(hiddens, self.alignment.edge_index, align.tau, align.kernel)

    def release(self, round_number: int) -> tuple[Statistics | None, ReleaseMetrics]:
        """What this client sends in ``round_number`` and the release metrics (:attr:`release_policy`).

        Args:
            round_number: the round the release is made in.
        """
        turn = self.epochs_trained // self.cfg.train.local_epochs
        return self.release_policy.release(self.statistics, round_number, turn)

    # ------------------------------------------------------------ training

    def alignment_targets(self, peer_statistics: dict[int, Statistics]) -> AlignmentTargets:
        """The peers' released statistics as the alignment loss needs them, built once per turn.

        The per-node KL sums are averaged over all N nodes of the alignment graph
        (``align.node_mean: all``; always for ``logits``) or over the nodes with in-edges.

        Args:
            peer_statistics: the peers' released statistics by peer id, or one summed entry (secure aggregation's sum
                of shares, or the server's summed peer mass).
        """
        align = self.cfg.align
        if align.strategy == "votes":
            return self.vote_targets(peer_statistics)
        if set(peer_statistics) & set(SUM_PEERS):  # secure aggregation: the sum of every contributor's share
            assert isinstance(self.release_policy, SecureShareRelease)
            mean = self.release_policy.peer_distributions(peer_statistics)
            peer_statistics = {} if mean is None else {SUM_WITH_OWN: mean}
        if align.strategy == "logits":
            divisor = self.alignment.num_nodes if self.queries is None else int(self.queries.numel())
        elif align.node_mean == "all":
            divisor = self.alignment.num_nodes
        else:
            divisor = int(self.layout.has_in_edges.sum())
        if PEER_MASS in peer_statistics:  # the peers' mass, summed by the server
            return AlignmentTargets.from_mass(PeerMass.from_job(peer_statistics[PEER_MASS]), divisor, self.device)
        return AlignmentTargets.from_peers(peer_statistics, align.strategy, self.depth, divisor, self.device)

    def vote_targets(self, peer_statistics: dict[int, Statistics]) -> AlignmentTargets:
        """Strategy ``votes``: answer the queries from the peers' (noisy) vote histogram, keep the answers
        (:class:`~fedalign.client.votes.PublicLabels`), and return the cross-entropy on every labelled query.

        Args:
            peer_statistics: the peers' vote arrays by peer id, or secure aggregation's sum of shares.
        """
        assert self.public_labels is not None  # strategy votes
        self.answered = 0
        if set(peer_statistics) & set(SUM_PEERS):
            assert isinstance(self.release_policy, SecureShareRelease)
            total = self.release_policy.peer_total(peer_statistics)
            histogram = None if total is None else total[0][0]
        else:
            histogram = peer_histogram(peer_statistics) if peer_statistics else None
        if histogram is not None:
            self.answered = self.public_labels.update(
                answer_queries(histogram, self.layout, self.cfg.align.vote_threshold)
            )
        return self.public_labels.targets(self.device)

    def alignment_loss(self, logits: Tensor, hiddens: list[Tensor], targets: AlignmentTargets) -> Tensor:
        """``(1 / #peers) * sum_peers sum_pairs KL(peer || student)`` (:mod:`fedalign.client.objective`).

        Args:
            logits: the student's logits [N, C] on the alignment graph.
            hiddens: its hidden representations on the alignment graph, one [N, d] tensor per hidden layer.
            targets: the peers' targets for this turn (:meth:`alignment_targets`).
        """
        return targets.loss(self.log_statistics(logits, hiddens))

    def train(self, peer_statistics: dict[int, Statistics], round_number: int) -> dict[str, float]:
        """Train one turn against frozen peer statistics; returns its metrics.

        Args:
            peer_statistics: peer id -> that peer's released probabilities. Strategy
                ``self`` takes none: it aligns with this student's own statistics from
                the end of its previous turn (before its first turn: its initial ones).
            round_number: the server round (seeds this call's randomness, so
                results do not depend on which process runs the call).

        Returns:
            metrics of the last epoch: ``task_loss`` and ``align_loss`` (nats), and when
            the alignment term is on ``task_grad_norm`` and ``align_grad_norm`` (L2 norms
            over all parameters of the gradients of the task loss and of ``align.weight *
            align_loss``); then :meth:`evaluate`'s metrics; with DP-SGD ``dp_sgd_epsilon``,
            and ``task_loss`` is the mean over the last Poisson batch (left out when it was empty).
        """
        self.check_peer_statistics(peer_statistics)
        if self.cfg.align.strategy == "self":
            if peer_statistics:
                raise ValueError(
                    f"client {self.client_id}: strategy 'self' never reads a peer's statistics, but "
                    f"statistics of peers {sorted(peer_statistics)} were sent"
                )
            if self.own_statistics is None:
                self.own_statistics = self.statistics()
            peer_statistics = {self.client_id: self.own_statistics}
        torch.manual_seed(derive_seed(self.cfg.seed, self.client_id, round_number))
        targets = self.alignment_targets(peer_statistics)
        # votes learn from their kept labels even in a round that brought no new histogram
        received = bool(peer_statistics) or self.cfg.align.strategy == "votes"
        align_on = self.cfg.align.strategy != "none" and self.cfg.align.weight > 0 and received and bool(targets.mass)
        if self.dp_sgd is not None:
            metrics = self.dp_sgd.train(self, targets, align_on, round_number)
        elif self.cfg.train.batch_size is not None:
            metrics = train_mini_batch(self, targets, align_on)
        else:
            metrics = train_full_batch(self, targets, align_on)
        if self.cfg.align.strategy == "self":
            self.own_statistics = self.statistics()
        if self.public_labels is not None:  # kept on the client (fedalign.wire.split_metrics): they read its votes
            metrics.update(answered_queries=float(self.answered), labelled_queries=float(self.public_labels.count))
        return {**metrics, **self.evaluate()}

    def check_peer_statistics(self, peer_statistics: dict[int, Statistics]) -> None:
        """Refuse peer statistics that are not valid distributions on this alignment graph
        (:func:`~fedalign.client.peer_checks.check_peer_statistics`).

        Args:
            peer_statistics: the peers' statistics by peer id, or one summed entry.
        """
        check_peer_statistics(self, peer_statistics)

    # ------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``val_metric``, ``test_metric`` (accuracy or micro-F1) and ``val_loss``; a split this
        client has no nodes of is left out (never reported as NaN)."""
        self.model.eval()
        metrics: dict[str, float] = {}
        outputs: dict[int, Tensor] = {}
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            if not bool(split.mask.any()):
                continue
            key = id(split.graph)
            if key not in outputs:
                outputs[key] = self.forward(split.graph)[0]
            logits, y = outputs[key][split.mask], split.graph.y[split.mask]
            metrics[f"{name}_metric"] = task_metric(logits, y, self.task.multilabel)
            if name == "val":
                metrics["val_loss"] = task_loss(logits, y, self.task.multilabel).item()
        return metrics

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this client: network, optimiser, epoch count, the release
        policy's and DP-SGD's privacy ledgers, and ``own_statistics`` (strategy ``self``)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_trained": self.epochs_trained,
            **self.release_policy.state_dict(),
        }
        if self.dp_sgd is not None:
            state.update(self.dp_sgd.state_dict())
        if self.own_statistics is not None:
            state["own_statistics"] = [torch.from_numpy(np.array(p)) for p in self.own_statistics]
        if self.public_labels is not None:
            state.update(self.public_labels.state_dict())
        if self.cfg.privacy.unit == "labels":  # the randomised labels are drawn once per run, never again
            state["randomised_labels"] = self.train_split.graph.y.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the student from its checkpoint (model, optimiser, epochs, release policy, labels, ledgers).

        Args:
            state: the client checkpoint, as saved by :meth:`state_dict`.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_trained = state["epochs_trained"]
        own = state.get("own_statistics")
        self.own_statistics = None if own is None else [t.numpy() for t in own]
        if self.cfg.privacy.unit == "labels":
            self.train_split.graph.y = state["randomised_labels"].to(self.device)
        self.release_policy.load_state_dict(state)
        if self.public_labels is not None:
            self.public_labels.load_state_dict(state)
        if self.dp_sgd is not None:
            self.dp_sgd.load_state_dict(state)


def build_student(cfg: ExperimentConfig, client_id: int, data: tuple[TaskInfo, ClientData] | None = None) -> Student:
    """The student of client ``client_id`` with freshly initialised weights, on its share of the data.

    Args:
        cfg: the experiment config.
        client_id: the client's index, 0..K-1.
        data: ``(task, data)`` when the caller has them (e.g. :mod:`fedalign.client.prepared`), else None
            to load the client's partition (:func:`~fedalign.client.local_data.client_data`).
    """
    task, client = data if data is not None else client_data(cfg, client_id)
    return Student(cfg, client_id, client, task)
