"""How a student trains in one turn: full-batch epochs, or per-graph DP-SGD steps, on task + alignment loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..config import ExperimentConfig
from ..data import GraphSplit
from ..noise import DP_SGD_STREAM, noise_source, reported_epsilon
from ..privacy import DPSGDTrainer, PrivacyLedger, require_per_graph_samples
from .local_data import split_into_graphs
from .objective import AlignmentTargets

if TYPE_CHECKING:
    from .student import Student


def task_metric(logits: Tensor, y: Tensor, multilabel: bool) -> float:
    """Accuracy (multiclass, ``y`` long [N]) or micro-F1 (multilabel, ``y`` {0,1} [N, C]).

    Args:
        logits: the logits [N, C] of the evaluated nodes.
        y: the labels: long [N] (multiclass) or {0,1} [N, C] (multilabel).
        multilabel: whether the task is multilabel.
    """
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
    """Cross-entropy (multiclass) or binary cross-entropy with logits (multilabel).

    Args:
        logits: the logits [N, C] of the training nodes.
        y: the labels: long [N] (multiclass) or {0,1} float [N, C] (multilabel).
        multilabel: whether the task is multilabel.
    """
    if multilabel:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    return torch.nn.functional.cross_entropy(logits, y)


def train_full_batch(student: Student, targets: AlignmentTargets | None, align_on: bool) -> dict[str, float]:
    """``train.local_epochs`` full-batch epochs on task loss + ``align.weight`` x alignment loss.

    The last epoch measures both terms' gradient norms (:func:`backward_measured`).

    Args:
        student: the student to train.
        targets: the peers' alignment targets for this turn.
        align_on: whether the alignment term is on in this turn.

    Returns:
        the turn's training metrics (losses, gradient norms).
    """
    split = student.train_split
    weight = student.cfg.align.weight
    params = [p for p in student.model.parameters() if p.requires_grad]
    student.model.train()
    norms: dict[str, float] = {}
    epochs = student.cfg.train.local_epochs
    for epoch in range(epochs):
        student.optimizer.zero_grad()
        logits, hiddens = student.forward(split.graph)
        loss_task = task_loss(logits[split.mask], split.graph.y[split.mask], student.task.multilabel)
        loss_align = torch.zeros((), device=student.device)
        if align_on:
            assert targets is not None  # alignment needs its targets
            if not student.shared_forward:
                logits, hiddens = student.forward(student.alignment)
            loss_align = student.alignment_loss(logits, hiddens, targets)
        if align_on and epoch == epochs - 1:  # measure both terms' gradients once per turn
            norms = backward_measured(loss_task, weight * loss_align, params)
        else:
            (loss_task + weight * loss_align).backward()
        student.optimizer.step()
        student.epochs_trained += 1
    return {"task_loss": loss_task.item(), "align_loss": loss_align.item(), **norms}


def backward_measured(loss_task: Tensor, align_term: Tensor, params: Sequence[Tensor]) -> dict[str, float]:
    """Set ``p.grad`` to the gradient of ``loss_task + align_term``; return both gradients' L2 norms.

    Args:
        loss_task: the task loss, a scalar.
        align_term: the weighted alignment loss, a scalar.
        params: the parameters to differentiate (``p.grad`` is set on each).
    """
    task_grads = torch.autograd.grad(loss_task, params, retain_graph=True, allow_unused=True)
    align_grads = torch.autograd.grad(align_term, params, allow_unused=True)
    for p, gt, ga in zip(params, task_grads, align_grads, strict=True):
        if gt is not None or ga is not None:
            p.grad = gt if ga is None else (ga if gt is None else gt + ga)

    def norm(grads) -> float:
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

    return {"task_grad_norm": norm(task_grads), "align_grad_norm": norm(align_grads)}


class DPSGDTraining:
    """Per-graph DP-SGD for a client whose training data are several graphs (``privacy.dp_sgd``).

    Args:
        cfg: the experiment config (``privacy.dp_sgd``, ``train``, ``align``).
        train_split: the client's training union of graphs (split into samples here).
        shared_forward: True when the alignment graph is the training graph (then refused).
    """

    def __init__(self, cfg: ExperimentConfig, train_split: GraphSplit, shared_forward: bool) -> None:
        if shared_forward or "graph_id" not in train_split.graph:
            raise ValueError(
                "privacy.dp_sgd needs a multi-graph dataset partitioned with scheme 'graphs', so that the "
                "statistics are computed on a public alignment graph separate from the training graphs"
            )
        self.graphs: list[Data] = split_into_graphs(train_split)
        require_per_graph_samples(len(self.graphs), transductive=False)
        self.ledger = PrivacyLedger(cfg.privacy.accountant, cfg.privacy.delta)

    def train(self, student: Student, targets: AlignmentTargets, align_on: bool, round_number: int) -> dict[str, float]:
        """Local epochs of DP-SGD on the task loss, plus the public alignment term.

        Each epoch takes ``round(1 / sample_rate)`` :class:`~fedalign.privacy.DPSGDTrainer`
        steps (Poisson sampling of the private graphs, per-graph clipping, noise; each
        step recorded in :attr:`ledger`). The alignment loss reads only the model,
        the public alignment graph and the peers' released statistics, so its gradient
        needs no clipping or noise: it is computed at the same parameters before each
        step and added, times ``align.weight``, to the private gradient by a
        ``DPOptimizer`` step hook, which Opacus runs after clipping, noising and
        averaging and before the wrapped optimiser's step. The update is thus
        ``Adam(noisy mean clipped task gradient + a * alignment gradient)``.

        Args:
            student: the student to train.
            targets: the peers' alignment targets for this turn.
            align_on: whether the alignment term is on in this turn.
            round_number: the round being trained.
        """
        cfg, dp = student.cfg, student.cfg.privacy.dp_sgd
        params = [p for p in student.model.parameters() if p.requires_grad]
        align_grads: list[Tensor | None] = []

        trainer = self._trainer(student, round_number, params, align_grads)
        student.model.train()
        loss_task, loss_align = float("nan"), torch.zeros((), device=student.device)
        for _ in range(cfg.train.local_epochs):
            for _ in range(max(1, round(1 / dp.sample_rate))):
                align_grads.clear()
                if align_on:
                    logits, hiddens = student.forward(student.alignment)
                    loss_align = student.alignment_loss(logits, hiddens, targets)
                    align_grads.extend(torch.autograd.grad(cfg.align.weight * loss_align, params, allow_unused=True))
                loss_task = trainer.step(self.graphs)
            student.epochs_trained += 1
        epsilon = reported_epsilon(cfg, student.client_id, self.ledger.epsilon())
        metrics = {"align_loss": loss_align.item(), "dp_sgd_epsilon": epsilon}
        if not math.isnan(loss_task):  # an empty last Poisson batch has no task loss: leave it out
            metrics["task_loss"] = loss_task
        return metrics

    def _trainer(
        self, student: Student, round_number: int, params: Sequence[Tensor], align_grads: list[Tensor | None]
    ) -> DPSGDTrainer:
        """The DP-SGD trainer of a turn, with the hook that adds ``align_grads`` (filled before each step) to
        the privatised gradient of ``params``."""
        cfg, dp = student.cfg, student.cfg.privacy.dp_sgd

        def add_alignment_gradient(_optimizer) -> None:
            for p, g in zip(params, align_grads, strict=False):  # empty while the alignment term is off
                if g is not None:
                    assert p.grad is not None  # set by the task loss's backward pass
                    p.grad.add_(g)

        def graph_task_loss(model, graph: Data) -> Tensor:
            logits = model(graph.x, graph.edge_index)[0]
            return task_loss(logits[graph.mask], graph.y[graph.mask], student.task.multilabel)

        trainer = DPSGDTrainer(
            student.model,
            student.optimizer,
            graph_task_loss,
            num_graphs=len(self.graphs),
            sample_rate=dp.sample_rate,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            noise=noise_source(cfg, student.client_id, round_number, DP_SGD_STREAM),
            ledger=self.ledger,
            clip_only=dp.noise_multiplier == 0,
        )
        trainer.optimizer.attach_step_hook(add_alignment_gradient)
        return trainer

    def state_dict(self) -> dict:
        """The DP-SGD ledger, for the client's checkpoint."""
        return {"dp_sgd_ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the DP-SGD ledger; a checkpoint without one is refused (``ValueError``).

        Args:
            state: the whole client checkpoint.
        """
        if "dp_sgd_ledger" not in state:
            raise ValueError(
                "checkpoint has no 'dp_sgd_ledger' but this client's privacy config needs one; resuming "
                "would forget the privacy already spent. Start a new run, or resume with the original "
                "config"
            )
        self.ledger.load_state_dict(state["dp_sgd_ledger"])
