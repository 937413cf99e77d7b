"""How a mini-batch student trains one turn (``train.batch_size``): PyG ``NeighborLoader`` batches.

Each step takes one batch of the client's labelled training nodes (the seeds: ``split.mask``; fan-outs
``train.num_neighbors``, all neighbours when None) for the task loss -- the mean over the batch's
seeds, an unbiased estimate of the full-batch mean when the neighbourhoods are complete -- and, when
the alignment term is on, one batch of target nodes of the alignment graph for its estimate A_T
(:mod:`fedalign.client.minibatch`). An epoch is one pass over the larger of the two (the other loader
starts a fresh shuffled pass when it runs out), so every labelled node and every alignment target is
seen at least once per epoch; with one batch each, a step is exactly a full-batch epoch. The loaders
are built once per student and graph and shuffle with torch's global generator (seeded per turn by
:meth:`~fedalign.client.student.Student.train`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader

from ..alignment import NODE_STRATEGIES
from ..config import ExperimentConfig
from ..data import GraphSplit
from .minibatch import alignment_fanouts, batch_forward, class_batch_loss, in_degrees, structure_batch_loss
from .objective import AlignmentTargets
from .sampling import neighbor_loader
from .training import backward_measured, task_loss

if TYPE_CHECKING:
    from .student import Student


@dataclass
class MiniBatchLoaders:
    """A student's loaders and the whole graphs' in-degrees they need.

    Attributes:
        task: batches of labelled training nodes (None when the client has none).
        align: batches of alignment targets (None for strategy ``none``).
        task_degree, align_degree: float [N] in-degrees of the training and alignment graphs.
        population: N_T, the number of alignment targets the batches are drawn from.
        built_from: the tensors the loaders were built from (rebuilt when one is replaced).
    """

    task: NeighborLoader | None
    align: NeighborLoader | None
    task_degree: Tensor
    align_degree: Tensor
    population: int
    built_from: tuple[Tensor, ...]


_LOADERS: weakref.WeakKeyDictionary[Student, MiniBatchLoaders] = weakref.WeakKeyDictionary()


def _sources(student: Student) -> tuple[Tensor, ...]:
    graph, align = student.train_split.graph, student.alignment
    return (graph.x, graph.y, graph.edge_index, student.train_split.mask, align.x, align.edge_index)


def minibatch_loaders(student: Student) -> MiniBatchLoaders:
    """The student's :class:`MiniBatchLoaders`, built on first use (and again if its graphs changed).

    Args:
        student: the student training in mini-batches (``train.batch_size`` set).
    """
    cached = _LOADERS.get(student)
    if cached is not None and all(a is b for a, b in zip(cached.built_from, _sources(student), strict=True)):
        return cached
    loaders = build_loaders(student.cfg, student.train_split, student.alignment, student.queries, student.depth)
    loaders.built_from = _sources(student)
    _LOADERS[student] = loaders
    return loaders


def build_loaders(
    cfg: ExperimentConfig, split: GraphSplit, graph: Data, queries: Tensor | None, depth: int
) -> MiniBatchLoaders:
    """The loaders of a mini-batch student holding ``split`` and the alignment graph ``graph`` (not cached).

    Args:
        cfg: the experiment config (``train.batch_size`` set; ``train.num_neighbors``, ``align.strategy``).
        split: the student's training split (its graph and labelled mask).
        graph: the alignment graph.
        queries: the query nodes of a node strategy (None: every node).
        depth: L, the student's hidden layers.
    """
    assert cfg.train.batch_size is not None  # mini-batch students only
    fanouts = cfg.train.num_neighbors or [-1] * (depth + 1)
    seeds = split.mask.nonzero().view(-1)
    task = neighbor_loader(split.graph, seeds, fanouts, cfg.train.batch_size, shuffle=True) if seeds.numel() else None
    structure = cfg.align.strategy not in NODE_STRATEGIES
    if structure:
        targets = torch.unique(graph.edge_index[1].cpu())  # the nodes with in-edges: others have KL_v = 0
    else:
        targets = queries.cpu() if queries is not None else torch.arange(graph.num_nodes)
    align = None
    if cfg.align.strategy != "none":
        align = neighbor_loader(
            graph,
            targets,
            alignment_fanouts(cfg.train.num_neighbors, structure, depth),
            cfg.train.batch_size,
            shuffle=True,
        )
    degree = in_degrees(graph.edge_index.cpu(), graph.num_nodes)
    task_degree = degree if split.graph is graph else in_degrees(split.graph.edge_index.cpu(), split.graph.num_nodes)
    return MiniBatchLoaders(task, align, task_degree, degree, int(targets.numel()), ())


def _cycle(loader: NeighborLoader | None) -> Iterator[Data | None]:
    """The loader's batches, pass after pass (a fresh shuffle each); None forever for no loader."""
    while True:
        if loader is None:
            yield None
        else:
            yield from loader


def train_mini_batch(student: Student, targets: AlignmentTargets, align_on: bool) -> dict[str, float]:
    """``train.local_epochs`` epochs of mini-batch steps on task loss + ``align.weight`` x A_T.

    Args:
        student: the student (its ``cfg.train.batch_size`` is set).
        targets: the peers' mass, prepared once per turn (:meth:`Student.alignment_targets`).
        align_on: whether the alignment term enters the loss.

    Returns:
        ``task_loss`` and ``align_loss``: the means over the last epoch's steps (``align_loss`` estimates
        the KL term without bias with exact representations, but a step's A_T carries the peers' constant
        in proportion to its batch, not per node, so it may fall slightly below 0 where the KL is near 0: it
        is reported as max(0, estimate), the KL's own bound, which the server's metric check requires);
        with the alignment term, ``task_grad_norm`` and ``align_grad_norm`` of the last step
        (:func:`backward_measured`).
    """
    loaders = minibatch_loaders(student)
    weight = student.cfg.align.weight
    params = [p for p in student.model.parameters() if p.requires_grad]
    lengths = [len(loaders.task) if loaders.task is not None else 0]
    if align_on and loaders.align is not None:
        lengths.append(len(loaders.align))
    steps = max(max(lengths), 1)
    task_batches, align_batches = _cycle(loaders.task), _cycle(loaders.align if align_on else None)
    student.model.train()
    norms: dict[str, float] = {}
    epochs = student.cfg.train.local_epochs
    for epoch in range(epochs):
        totals = [0.0, 0.0]
        for step in range(steps):
            student.optimizer.zero_grad()
            loss_task = batch_task_loss(student, loaders, next(task_batches), params)
            align_batch = next(align_batches)
            loss_align = (
                torch.zeros((), device=student.device)
                if align_batch is None
                else batch_alignment_loss(student, loaders, targets, align_batch)
            )
            if align_batch is not None and epoch == epochs - 1 and step == steps - 1:
                norms = backward_measured(loss_task, weight * loss_align, params)
            else:
                (loss_task + weight * loss_align).backward()
            student.optimizer.step()
            totals[0] += loss_task.item()
            totals[1] += loss_align.item()
        student.epochs_trained += 1
    return {"task_loss": totals[0] / steps, "align_loss": max(0.0, totals[1] / steps), **norms}


def batch_task_loss(
    student: Student, loaders: MiniBatchLoaders, batch: Data | None, params: Sequence[Tensor]
) -> Tensor:
    """The task loss on a batch's seeds (a zero with a graph when the client has no labelled node).

    Args:
        student: the student being trained.
        loaders: its mini-batch loaders (their in-degrees).
        batch: a training batch or None.
        params: the trained weights.
    """
    if batch is None:
        return cast(Tensor, sum(p.sum() * 0 for p in params))
    logits, _ = batch_forward(student.model, batch, loaders.task_degree, student.device)
    size = batch.batch_size
    return task_loss(logits[:size], batch.y[:size].to(student.device), student.task.multilabel)


def batch_alignment_loss(student: Student, loaders: MiniBatchLoaders, targets: AlignmentTargets, batch: Data) -> Tensor:
    """A_T on one alignment batch (:mod:`fedalign.client.minibatch`).

    Args:
        student: the student being trained.
        loaders: its mini-batch loaders (population and in-degrees).
        targets: the peers' mass.
        batch: alignment targets.
    """
    align = student.cfg.align
    logits, hiddens = batch_forward(student.model, batch, loaders.align_degree, student.device)
    if align.strategy in NODE_STRATEGIES:
        return class_batch_loss(
            targets, logits, batch, loaders.population, align.logit_temperature, student.task.multilabel
        )
    return structure_batch_loss(targets, hiddens, batch, loaders.population, align.tau, align.kernel)
