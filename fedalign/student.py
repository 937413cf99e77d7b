"""One student: its model, optimiser and local data, and what it shares.

:class:`StudentClient` is the whole client side of the method, independent
of how messages travel: the in-process engine calls it directly, the Flower
ClientApp wraps it. It only ever *returns* structure statistics (per-layer
probabilities on the alignment graph) and scalar metrics; weights, features
and labels stay inside.

Statistics travel as numpy arrays of probabilities, one array of shape
``[E]`` per layer (E = edges of the alignment graph), in float32 or, with
``align.statistics_dtype: float16``, in float16 (half the bytes).

Differential privacy (``privacy`` config section, :mod:`fedalign.privacy`):

* ``privacy.mechanism: gaussian`` -- every release goes through a
  :class:`~fedalign.privacy.StatisticsMechanism` (clip, Gaussian noise,
  projection back to distributions) and is recorded in the client's
  :class:`~fedalign.privacy.PrivacyLedger`; the release metrics carry the
  ledger's ``epsilon`` (client-level: the whole local dataset is the unit).
  A release that would take epsilon past ``privacy.max_epsilon`` is withheld.
  The noise comes from OS entropy. With ``privacy.reproducible_noise`` it is
  drawn from a generator seeded with ``derive_seed(seed, client, r, 1)``, so
  both engines release the same values; but anyone who knows the config seed
  (the server does) can then regenerate and subtract the noise, so use that
  only for tests and comparisons.
* ``privacy.dp_sgd.enabled`` (multi-graph data, scheme ``graphs``) -- local
  training takes per-graph DP-SGD steps on the task loss; the alignment term,
  computed on the public alignment graph, is added to the noisy gradient
  without clipping or noise (see :meth:`StudentClient._train_dp_sgd`). The
  statistics then read only the DP-SGD model and the public graph, so they
  are DP by post-processing: with the statistics mechanism off, ``epsilon``
  in the release metrics is the DP-SGD ledger's epsilon (unit: one training
  graph), and ``dp_sgd_epsilon`` is reported in the train metrics.

Only the statistics are covered: the scalar metrics a client reports
(losses, validation/test scores) are not privatised.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from .alignment import shares_statistics
from .config import ExperimentConfig, planned_releases
from .data import ClientData, GraphDataset, GraphSplit, load_dataset, partition_dataset
from .models import Student, build_student
from .seeds import derive_seed
from .privacy import DPSGDTrainer, PrivacyLedger, StatisticsMechanism, require_per_graph_samples
from .objective import AlignmentTargets
from .statistics import class_log_probs, layer_statistics
from .validation import StatisticsRejected, check_statistics, release_spec

Statistics = list[np.ndarray]  # one [E] probability array per layer (float32 or float16)
ReleaseMetrics = dict[str, float]  # "epsilon" (when privacy is on) and "withheld" (0.0 / 1.0)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=64)
def statistics_mechanism(
    clip_norm: float,
    clip_scope: str,
    num_layers: int,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float,
    releases: int,
    accountant: str,
) -> StatisticsMechanism:
    """The statistics mechanism of one client (cached: solving for a target epsilon takes a search).

    With ``target_epsilon`` the noise is solved for ``releases`` releases
    (:meth:`StatisticsMechanism.for_budget`; ``inf`` = clip only); otherwise
    ``noise_multiplier`` is sigma itself (0 = clip only, by explicit request).
    """
    if target_epsilon is not None:
        return StatisticsMechanism.for_budget(target_epsilon, delta, releases, clip_norm, clip_scope,
                                              num_layers=num_layers, accountant=accountant)
    return StatisticsMechanism(clip_norm, noise_multiplier, clip_scope, num_layers=num_layers,
                               clip_only=noise_multiplier == 0)


def split_into_graphs(split: GraphSplit) -> list[Data]:
    """The graphs of a multi-graph split (by ``graph_id``), each relabelled 0..n-1.

    Every returned ``Data`` has ``x``, ``edge_index``, ``y`` and ``mask`` (the
    split's mask restricted to the graph), in increasing ``graph_id`` order.
    Edges never cross graphs in a disjoint union, so nothing is lost.
    """
    graph = split.graph
    if "graph_id" not in graph:
        raise ValueError("this split has no graph_id: it is a single graph, not a union of graphs")
    graphs = []
    for gid in torch.unique(graph.graph_id).tolist():
        nodes = (graph.graph_id == gid).nonzero().view(-1)
        edge_index, _ = subgraph(nodes, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
        graphs.append(Data(x=graph.x[nodes], edge_index=edge_index, y=graph.y[nodes], mask=split.mask[nodes]))
    return graphs


@dataclass
class TaskInfo:
    """What the model needs to know about the dataset."""

    num_features: int
    num_classes: int
    multilabel: bool


def task_metric(logits: Tensor, y: Tensor, multilabel: bool) -> float:
    """Accuracy (multiclass, ``y`` long [N]) or micro-F1 (multilabel, ``y`` {0,1} [N, C])."""
    if logits.numel() == 0:
        return float("nan")
    if not multilabel:
        return (logits.argmax(dim=-1) == y).float().mean().item()
    pred = logits > 0
    truth = y > 0.5
    tp = (pred & truth).sum().item()
    fp = (pred & ~truth).sum().item()
    fn = (~pred & truth).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def task_loss(logits: Tensor, y: Tensor, multilabel: bool) -> Tensor:
    """Cross-entropy (multiclass) or binary cross-entropy with logits (multilabel)."""
    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    return torch.nn.functional.cross_entropy(logits, y)


class StudentClient:
    """A student GNN on one client.

    Args:
        cfg: the experiment config.
        client_id: 0..K-1.
        data: this client's local data and the alignment graph.
        task: dataset dimensions.
    """

    def __init__(self, cfg: ExperimentConfig, client_id: int, data: ClientData, task: TaskInfo) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.task = task
        self.device = resolve_device(cfg.device)
        model_cfg = cfg.model.for_client(client_id)
        # shared init: every student draws its weights from the same seed (identical students start
        # identical, as the original's deep copies of one model); independent: one seed per student
        torch.manual_seed(derive_seed(cfg.seed) if cfg.model.init == "shared" else derive_seed(cfg.seed, client_id))
        self.model: Student = build_student(
            model_cfg["arch"], task.num_features, task.num_classes,
            hidden_layers=model_cfg["hidden_layers"], hidden_dim=model_cfg["hidden_dim"],
            dropout=model_cfg["dropout"], residual=model_cfg["residual"], heads=model_cfg["heads"],
            activation=model_cfg["activation"], representation=cfg.align.representation,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        # Move each graph once, keeping identity where splits share a graph.
        moved: dict[int, Data] = {}

        def to_device(graph: Data) -> Data:
            if id(graph) not in moved:
                moved[id(graph)] = graph.to(self.device)
            return moved[id(graph)]

        self.train_split, self.val_split, self.test_split = (
            GraphSplit(to_device(s.graph), s.mask.to(self.device)) for s in (data.train, data.val, data.test)
        )
        self.alignment = to_device(data.alignment)
        self._prepared: dict[int, Tensor] = {}  # id(graph) -> model.prepare(graph's edges), built once
        self.alignment_spec = release_spec(cfg.align.strategy, self.alignment.edge_index, self.alignment.num_nodes,
                                           task.num_classes, task.multilabel)
        # strategy self: this student's own statistics from the end of its previous turn
        self.own_statistics: Statistics | None = None
        # One forward pass serves task and alignment when they share a graph (replicate mode).
        self.shared_forward = self.alignment is self.train_split.graph
        self.epochs_trained = 0
        self._setup_privacy()

    def _setup_privacy(self) -> None:
        privacy = self.cfg.privacy
        self.mechanism: StatisticsMechanism | None = None
        self.ledger: PrivacyLedger | None = None  # the statistics mechanism's releases
        self.dp_sgd_ledger: PrivacyLedger | None = None  # the DP-SGD steps
        self.private_graphs: list[Data] = []
        if privacy.mechanism == "gaussian":
            self.mechanism = statistics_mechanism(
                privacy.clip_norm, privacy.clip_scope, self.depth, privacy.noise_multiplier,
                privacy.target_epsilon, privacy.delta, planned_releases(self.cfg, self.client_id),
                privacy.accountant,
            )
            self.ledger = PrivacyLedger(privacy.accountant, privacy.delta)
        if privacy.dp_sgd.enabled:
            if self.shared_forward or "graph_id" not in self.train_split.graph:
                raise ValueError(
                    "privacy.dp_sgd needs a multi-graph dataset partitioned with scheme 'graphs', so that the "
                    "statistics are computed on a public alignment graph separate from the training graphs"
                )
            self.private_graphs = split_into_graphs(self.train_split)
            require_per_graph_samples(len(self.private_graphs), transductive=False)
            self.dp_sgd_ledger = PrivacyLedger(privacy.accountant, privacy.delta)

    def _forward(self, graph: Data) -> tuple[Tensor, list[Tensor]]:
        """The model on one of this client's graphs, its propagation structure prepared once."""
        if id(graph) not in self._prepared:
            self._prepared[id(graph)] = self.model.prepare(graph.edge_index, graph.num_nodes)
        return self.model(graph.x, self._prepared[id(graph)])

    @property
    def depth(self) -> int:
        """L, the number of hidden layers this student shares statistics for."""
        return self.model.hidden_layers

    # ------------------------------------------------------------ sharing

    @torch.no_grad()
    def statistics(self) -> Statistics:
        """What this student's strategy aligns, on the alignment graph (eval mode), as probabilities.

        Structure strategies: per hidden layer l, ``p_l(u|v)`` ``[E]``; ``logits``: one array of the
        class distributions (:func:`~fedalign.statistics.class_log_probs`).
        """
        self.model.eval()
        logits, hiddens = self._forward(self.alignment)
        return [lp.exp().float().cpu().numpy() for lp in self._log_statistics(logits, hiddens)]

    def _log_statistics(self, logits: Tensor, hiddens: list[Tensor]) -> list[Tensor]:
        """Log-probabilities of :meth:`statistics`, differentiable (student side of the KL)."""
        align = self.cfg.align
        if align.strategy == "logits":
            return [class_log_probs(logits, align.logit_temperature, self.task.multilabel)]
        return layer_statistics(hiddens, self.alignment.edge_index, align.tau, align.kernel)

    def _noise_generator(self, device: torch.device, round_number: int, stream: int) -> torch.Generator:
        """Privacy noise source: OS entropy unless ``privacy.reproducible_noise`` (then from the seed)."""
        generator = torch.Generator(device=device)
        if self.cfg.privacy.reproducible_noise:
            return generator.manual_seed(derive_seed(self.cfg.seed, self.client_id, round_number, stream))
        generator.seed()  # non-deterministic
        return generator

    def release(self, round_number: int) -> tuple[Statistics | None, ReleaseMetrics]:
        """What this client sends to the server in ``round_number``, and release metrics.

        Returns ``(statistics, metrics)``:

        * alignment strategy ``none`` or ``self``: ``(None, {})`` (nothing is shared);
        * no privacy: the raw :meth:`statistics` and ``{}``;
        * ``privacy.mechanism: gaussian``: the clipped, noised, re-projected
          statistics (noise from :meth:`_noise_generator`),
          recorded in :attr:`ledger`, with ``epsilon`` (the ledger's epsilon after this
          release) and ``withheld: 0.0``. When the release would take epsilon past
          ``privacy.max_epsilon``, nothing is released or recorded: ``(None,
          {"epsilon": spent so far, "withheld": 1.0})``;
        * DP-SGD only: the raw statistics (DP by post-processing) with ``epsilon`` =
          the DP-SGD ledger's epsilon and ``withheld: 0.0``.

        Released arrays are in ``align.statistics_dtype`` (float32 or float16).
        """
        if not shares_statistics(self.cfg.align.strategy):
            return None, {}
        if self.mechanism is None:
            if self.dp_sgd_ledger is None:
                return self._on_wire(self.statistics()), {}
            return self._on_wire(self.statistics()), {"epsilon": self.dp_sgd_ledger.epsilon(), "withheld": 0.0}
        multiplier = self.mechanism.effective_noise_multiplier
        budget = self.cfg.privacy.max_epsilon
        if budget is not None and self.ledger.epsilon_if(multiplier) > budget:
            return None, {"epsilon": self.ledger.epsilon(), "withheld": 1.0}
        raw = [torch.from_numpy(s).double() for s in self.statistics()]
        generator = self._noise_generator(torch.device("cpu"), round_number, 1)
        groups = torch.from_numpy(self.alignment_spec.target)
        noisy = self.mechanism.release(raw, groups, self.alignment_spec.num_nodes, generator)
        self.ledger.record(multiplier)
        return self._on_wire([n.float().numpy() for n in noisy]), {"epsilon": self.ledger.epsilon(), "withheld": 0.0}

    def _on_wire(self, statistics: Statistics) -> Statistics:
        """The statistics in the wire precision ``align.statistics_dtype``."""
        dtype = np.dtype(self.cfg.align.statistics_dtype)
        return [p.astype(dtype, copy=False) for p in statistics]

    # ------------------------------------------------------------ training

    def alignment_loss(self, logits: Tensor, hiddens: list[Tensor], targets: AlignmentTargets) -> Tensor:
        """``(1 / #peers) * sum_peers sum_pairs KL(peer || student)`` (:mod:`fedalign.objective`).

        ``logits``, ``hiddens``: the student's outputs on the alignment graph; ``targets``:
        its peers' statistics prepared by :meth:`alignment_targets`.
        """
        return targets.loss(self._log_statistics(logits, hiddens))

    def alignment_targets(self, peer_statistics: dict[int, Statistics]) -> AlignmentTargets:
        """The peers' released statistics as the alignment loss needs them, built once per turn.

        The per-node KL sums are averaged over all N nodes of the alignment graph
        (``align.node_mean: all``; always for ``logits``) or over the nodes with in-edges.
        """
        align = self.cfg.align
        if align.strategy == "logits" or align.node_mean == "all":
            divisor = self.alignment.num_nodes
        else:
            divisor = int(self.alignment_spec.has_in_edges.sum())
        return AlignmentTargets.from_peers(peer_statistics, align.strategy, self.depth, divisor, self.device)

    def train(self, peer_statistics: dict[int, Statistics], round_number: int) -> dict[str, float]:
        """Train ``train.local_epochs`` epochs against frozen peer statistics.

        Args:
            peer_statistics: peer id -> that peer's released probabilities (per layer
                ``[E]``, or the class distributions for strategy ``logits``). Strategy
                ``self`` takes none: it aligns with this student's own statistics from
                the end of its previous turn (before its first turn: its initial ones).
            round_number: the server round (seeds this call's randomness, so
                results do not depend on which process runs the call).

        Returns:
            metrics of the last epoch: ``task_loss`` and ``align_loss`` (nats), and
            when the alignment term is on, ``task_grad_norm`` and ``align_grad_norm``
            (L2 norms over all parameters of the gradients of the task loss and of
            ``align.weight * align_loss``); plus :meth:`evaluate`'s metrics after
            training; with DP-SGD, also ``dp_sgd_epsilon`` (the DP-SGD ledger's epsilon
            after this call), and ``task_loss`` is the mean over the last Poisson batch
            (NaN if empty).
        """
        self._check_peer_statistics(peer_statistics)
        if self.cfg.align.strategy == "self":
            if peer_statistics:
                raise ValueError(f"client {self.client_id}: strategy 'self' never reads a peer's statistics, but "
                                 f"statistics of peers {sorted(peer_statistics)} were sent")
            if self.own_statistics is None:
                self.own_statistics = self.statistics()
            peer_statistics = {self.client_id: self.own_statistics}
        torch.manual_seed(derive_seed(self.cfg.seed, self.client_id, round_number))
        targets = self.alignment_targets(peer_statistics)
        align_on = self.cfg.align.strategy != "none" and self.cfg.align.weight > 0 and bool(peer_statistics)
        if self.dp_sgd_ledger is not None:
            metrics = self._train_dp_sgd(targets, align_on, round_number)
        else:
            metrics = self._train_full_batch(targets, align_on)
        if self.cfg.align.strategy == "self":
            self.own_statistics = self.statistics()
        return metrics

    def _train_full_batch(self, targets: AlignmentTargets, align_on: bool) -> dict[str, float]:
        """Local epochs of full-batch training on task loss + ``align.weight`` x alignment loss."""
        split = self.train_split
        weight = self.cfg.align.weight
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        norms: dict[str, float] = {}
        epochs = self.cfg.train.local_epochs
        for epoch in range(epochs):
            self.optimizer.zero_grad()
            logits, hiddens = self._forward(split.graph)
            loss_task = task_loss(logits[split.mask], split.graph.y[split.mask], self.task.multilabel)
            loss_align = torch.zeros((), device=self.device)
            if align_on:
                if not self.shared_forward:
                    logits, hiddens = self._forward(self.alignment)
                loss_align = self.alignment_loss(logits, hiddens, targets)
            if align_on and epoch == epochs - 1:  # measure both terms' gradients once per turn
                norms = self._backward_measured(loss_task, weight * loss_align, params)
            else:
                (loss_task + weight * loss_align).backward()
            self.optimizer.step()
            self.epochs_trained += 1
        return {"task_loss": loss_task.item(), "align_loss": loss_align.item(), **norms, **self.evaluate()}

    @staticmethod
    def _backward_measured(loss_task: Tensor, align_term: Tensor, params: list[Tensor]) -> dict[str, float]:
        """Set ``p.grad`` to the gradient of ``loss_task + align_term``; return both gradients' norms."""
        task_grads = torch.autograd.grad(loss_task, params, retain_graph=True, allow_unused=True)
        align_grads = torch.autograd.grad(align_term, params, allow_unused=True)
        for p, gt, ga in zip(params, task_grads, align_grads):
            if gt is None and ga is None:
                continue
            p.grad = gt if ga is None else (ga if gt is None else gt + ga)

        def norm(grads) -> float:
            return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

        return {"task_grad_norm": norm(task_grads), "align_grad_norm": norm(align_grads)}

    def _graph_task_loss(self, model: Student, graph: Data) -> Tensor:
        """The task loss of one private training graph (the DP-SGD sample)."""
        logits = model(graph.x, graph.edge_index)[0]
        return task_loss(logits[graph.mask], graph.y[graph.mask], self.task.multilabel)

    def _train_dp_sgd(self, targets: AlignmentTargets, align_on: bool, round_number: int) -> dict[str, float]:
        """Local epochs of per-graph DP-SGD on the task loss, plus the public alignment term.

        Each epoch takes ``round(1 / sample_rate)`` :class:`~fedalign.privacy.DPSGDTrainer`
        steps (Poisson sampling of the private graphs, per-graph clipping, noise; each
        step recorded in :attr:`dp_sgd_ledger`). The alignment loss reads only the model,
        the public alignment graph and the peers' released statistics, so its gradient
        needs no clipping or noise: it is computed at the same parameters before each
        step and added, times ``align.weight``, to the private gradient by a
        ``DPOptimizer`` step hook, which Opacus runs after clipping, noising and
        averaging and before the wrapped optimiser's step. The update is thus
        ``Adam(noisy mean clipped task gradient + a * alignment gradient)``.
        """
        dp = self.cfg.privacy.dp_sgd
        params = [p for p in self.model.parameters() if p.requires_grad]
        align_grads: list[Tensor | None] = []

        def add_alignment_gradient(_optimizer) -> None:
            for p, g in zip(params, align_grads):
                if g is not None:
                    p.grad.add_(g)

        trainer = DPSGDTrainer(
            self.model, self.optimizer, self._graph_task_loss,
            num_graphs=len(self.private_graphs), sample_rate=dp.sample_rate,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            generator=self._noise_generator(self.device, round_number, 2),
            ledger=self.dp_sgd_ledger, clip_only=dp.noise_multiplier == 0,
        )
        trainer.optimizer.attach_step_hook(add_alignment_gradient)
        steps = max(1, round(1 / dp.sample_rate))
        self.model.train()
        loss_task, loss_align = float("nan"), torch.zeros((), device=self.device)
        for _ in range(self.cfg.train.local_epochs):
            for _ in range(steps):
                align_grads.clear()
                if align_on:
                    logits, hiddens = self._forward(self.alignment)
                    loss_align = self.alignment_loss(logits, hiddens, targets)
                    align_grads.extend(torch.autograd.grad(self.cfg.align.weight * loss_align, params,
                                                           allow_unused=True))
                loss_task = trainer.step(self.private_graphs)
            self.epochs_trained += 1
        return {"task_loss": loss_task, "align_loss": loss_align.item(),
                "dp_sgd_epsilon": self.dp_sgd_ledger.epsilon(), **self.evaluate()}

    def _check_peer_statistics(self, peer_statistics: dict[int, Statistics]) -> None:
        """Refuse peer statistics that are not valid distributions on this alignment graph."""
        for pid, stats in peer_statistics.items():
            try:
                check_statistics(stats, self.alignment_spec, len(stats), self.cfg.align.statistics_dtype,
                                 sender=f"peer {pid}")
            except StatisticsRejected as error:
                raise StatisticsRejected(f"{error}; were the clients started with the same data, partition and "
                                         "align config?") from None

    # ------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``val_metric``, ``test_metric`` (accuracy or micro-F1) and ``val_loss``."""
        self.model.eval()
        metrics: dict[str, float] = {}
        outputs: dict[int, Tensor] = {}
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            key = id(split.graph)
            if key not in outputs:
                outputs[key] = self._forward(split.graph)[0]
            logits, y = outputs[key][split.mask], split.graph.y[split.mask]
            metrics[f"{name}_metric"] = task_metric(logits, y, self.task.multilabel)
            if name == "val":
                metrics["val_loss"] = task_loss(logits, y, self.task.multilabel).item() if len(y) else float("nan")
        return metrics

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this client: model, optimiser, epoch count, the
        privacy ledgers (``privacy_ledger``, ``dp_sgd_ledger``) when privacy is on, and
        ``own_statistics`` (strategy ``self``) once it has any."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_trained": self.epochs_trained,
        }
        if self.own_statistics is not None:
            state["own_statistics"] = [torch.from_numpy(np.array(p)) for p in self.own_statistics]
        if self.ledger is not None:
            state["privacy_ledger"] = self.ledger.state_dict()
        if self.dp_sgd_ledger is not None:
            state["dp_sgd_ledger"] = self.dp_sgd_ledger.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_trained = state["epochs_trained"]
        own = state.get("own_statistics")
        self.own_statistics = None if own is None else [t.numpy() for t in own]
        for key, ledger in (("privacy_ledger", self.ledger), ("dp_sgd_ledger", self.dp_sgd_ledger)):
            if ledger is not None:
                if key not in state:
                    raise ValueError(
                        f"checkpoint has no {key!r} but this client's privacy config needs one; resuming would "
                        "forget the privacy already spent. Start a new run, or resume with the original config"
                    )
                ledger.load_state_dict(state[key])


# ---------------------------------------------------------------- construction


@functools.lru_cache(maxsize=4)
def _prepared_data(data_json: str, partition_json: str, num_clients: int, seed: int) -> tuple[GraphDataset, list[ClientData]]:
    data_cfg = json.loads(data_json)
    part_cfg = json.loads(partition_json)
    dataset = load_dataset(
        data_cfg["name"], root=data_cfg["root"], cache_dir=data_cfg["cache_dir"],
        split=tuple(data_cfg["split"]), seed=seed, synthetic=data_cfg["synthetic"] or None,
    )
    clients = partition_dataset(
        dataset, num_clients, scheme=part_cfg["scheme"], alpha=part_cfg["alpha"],
        public_fraction=part_cfg["public_fraction"], seed=seed, label_rate=part_cfg["label_rate"],
    )
    return dataset, clients


def prepare_data(cfg: ExperimentConfig) -> tuple[GraphDataset, list[ClientData]]:
    """Load and partition the dataset (cached per process: every client shares one copy)."""
    return _prepared_data(
        json.dumps(asdict(cfg.data), sort_keys=True), json.dumps(asdict(cfg.partition), sort_keys=True),
        cfg.federation.num_clients, cfg.seed,
    )


def build_client(cfg: ExperimentConfig, client_id: int) -> StudentClient:
    """The student of client ``client_id`` with freshly initialised weights."""
    if not 0 <= client_id < cfg.federation.num_clients:
        raise ValueError(f"client id {client_id} out of range for federation.num_clients={cfg.federation.num_clients}")
    dataset, clients = prepare_data(cfg)
    task = TaskInfo(dataset.num_features, dataset.num_classes, dataset.multilabel)
    return StudentClient(cfg, client_id, clients[client_id], task)
