"""One student: its model, optimiser and local data, and what it shares.

:class:`StudentClient` is the whole client side of the method, independent
of how messages travel: the in-process engine calls it directly, the Flower
ClientApp wraps it. It only ever *returns* structure statistics (per-layer
probabilities on the alignment graph) and scalar metrics; weights, features
and labels stay inside.

Statistics travel as float32 numpy arrays of probabilities, one array of
shape ``[E]`` per layer (E = edges of the alignment graph).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from .alignment import layer_pairs
from .config import ExperimentConfig
from .data import ClientData, GraphDataset, GraphSplit, load_dataset, partition_dataset
from .models import Student, build_student
from .statistics import layer_statistics, structure_kl

Statistics = list[np.ndarray]  # one float32 [E] probability array per layer


def derive_seed(*parts: int) -> int:
    """A 31-bit seed determined by integer ``parts`` (e.g. seed, client, round)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


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
        torch.manual_seed(derive_seed(cfg.seed, client_id))
        self.model: Student = build_student(
            model_cfg["arch"], task.num_features, task.num_classes,
            hidden_layers=model_cfg["hidden_layers"], hidden_dim=model_cfg["hidden_dim"],
            dropout=model_cfg["dropout"], residual=model_cfg["residual"], heads=model_cfg["heads"],
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
        # One forward pass serves task and alignment when they share a graph (replicate mode).
        self.shared_forward = self.alignment is self.train_split.graph
        self.epochs_trained = 0

    @property
    def depth(self) -> int:
        """L, the number of hidden layers this student shares statistics for."""
        return self.model.hidden_layers

    # ------------------------------------------------------------ sharing

    @torch.no_grad()
    def statistics(self) -> Statistics:
        """Per-layer probabilities ``p_l(u|v)`` on the alignment graph (eval mode)."""
        self.model.eval()
        _, hiddens = self.model(self.alignment.x, self.alignment.edge_index)
        log_probs = layer_statistics(hiddens, self.alignment.edge_index, self.cfg.align.tau, self.cfg.align.kernel)
        return [lp.exp().float().cpu().numpy() for lp in log_probs]

    def release(self) -> Statistics | None:
        """What this client sends to the server: its statistics, or None when
        the alignment strategy is ``none`` (independent students share nothing)."""
        return None if self.cfg.align.strategy == "none" else self.statistics()

    # ------------------------------------------------------------ training

    def alignment_loss(self, hiddens: list[Tensor], peers: dict[int, list[Tensor]]) -> Tensor:
        """``(1 / #peers) * sum_peers sum_pairs KL(peer layer || student layer)``.

        ``hiddens``: the student's L outputs on the alignment graph; ``peers``:
        each peer's per-layer log-probabilities ``[E]`` on the same graph.
        """
        edge_index = self.alignment.edge_index
        student_log_probs = layer_statistics(hiddens, edge_index, self.cfg.align.tau, self.cfg.align.kernel)
        total = hiddens[0].new_zeros(())
        for peer_log_probs in peers.values():
            for s_layer, p_layer in layer_pairs(self.cfg.align.strategy, self.depth, len(peer_log_probs)):
                total = total + structure_kl(
                    peer_log_probs[p_layer - 1], student_log_probs[s_layer - 1],
                    edge_index[1], self.alignment.num_nodes,
                )
        return total / max(len(peers), 1)

    def train(self, peer_statistics: dict[int, Statistics], round_number: int) -> dict[str, float]:
        """Train ``train.local_epochs`` epochs against frozen peer statistics.

        Args:
            peer_statistics: peer id -> that peer's per-layer probabilities [E].
            round_number: the server round (seeds this call's randomness, so
                results do not depend on which process runs the call).

        Returns:
            metrics of the last epoch: ``task_loss`` and ``align_loss`` (nats),
            plus :meth:`evaluate`'s metrics after training.
        """
        self._check_peer_statistics(peer_statistics)
        torch.manual_seed(derive_seed(self.cfg.seed, self.client_id, round_number))
        peers = {
            pid: [torch.from_numpy(np.asarray(p, dtype=np.float32)).to(self.device).log() for p in stats]
            for pid, stats in peer_statistics.items()
        }
        align_on = self.cfg.align.strategy != "none" and self.cfg.align.weight > 0 and bool(peers)
        split = self.train_split
        self.model.train()
        for _ in range(self.cfg.train.local_epochs):
            self.optimizer.zero_grad()
            logits, hiddens = self.model(split.graph.x, split.graph.edge_index)
            loss_task = task_loss(logits[split.mask], split.graph.y[split.mask], self.task.multilabel)
            loss_align = torch.zeros((), device=self.device)
            if align_on:
                if not self.shared_forward:
                    _, hiddens = self.model(self.alignment.x, self.alignment.edge_index)
                loss_align = self.alignment_loss(hiddens, peers)
            (loss_task + self.cfg.align.weight * loss_align).backward()
            self.optimizer.step()
            self.epochs_trained += 1
        return {"task_loss": loss_task.item(), "align_loss": loss_align.item(), **self.evaluate()}

    def _check_peer_statistics(self, peer_statistics: dict[int, Statistics]) -> None:
        num_edges = self.alignment.edge_index.size(1)
        for pid, stats in peer_statistics.items():
            for layer, p in enumerate(stats):
                if np.shape(p) != (num_edges,):
                    raise ValueError(
                        f"statistics of peer {pid}, layer {layer + 1}: shape {np.shape(p)}, expected "
                        f"({num_edges},) for the {num_edges} edges of the alignment graph; "
                        "were the clients started with the same data and partition config?"
                    )

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
                outputs[key] = self.model(split.graph.x, split.graph.edge_index)[0]
            logits, y = outputs[key][split.mask], split.graph.y[split.mask]
            metrics[f"{name}_metric"] = task_metric(logits, y, self.task.multilabel)
            if name == "val":
                metrics["val_loss"] = task_loss(logits, y, self.task.multilabel).item() if len(y) else float("nan")
        return metrics

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this client: model, optimiser, epoch count."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_trained": self.epochs_trained,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_trained = state["epochs_trained"]


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
        public_fraction=part_cfg["public_fraction"], seed=seed,
    )
    return dataset, clients


def prepare_data(cfg: ExperimentConfig) -> tuple[GraphDataset, list[ClientData]]:
    """Load and partition the dataset (cached per process: every client shares one copy)."""
    from dataclasses import asdict

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
