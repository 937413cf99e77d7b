"""Mini-batch students (train.batch_size): PyG NeighborLoader batches, the alignment estimator, bounded memory."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedalign.config import ConfigError, config_from_dict
from fedalign.client import build_student
from fedalign.client.minibatch_training import batch_alignment_loss, batch_task_loss, minibatch_loaders
from fedalign.client.sampling import neighbor_loader
from fedalign.client.training import task_loss
from fedalign.data import GraphSplit
from torch_geometric.data import Data

QUICKSTART = str(Path(__file__).resolve().parents[1] / "simulations" / "quickstart.yaml")
BASE = {"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 160}},
        "model": {"hidden_layers": 2, "hidden_dim": 8, "heads": 2, "init": "independent"},
        "partition": {"scheme": "iid", "public_fraction": 0.5}}


def make(batch_size: int | None, model=None, align=None, train=None, partition=None):
    raw = {**BASE, "model": {**BASE["model"], **(model or {})}, "align": align or {},
           "partition": {**BASE["partition"], **(partition or {})},
           "train": {**({"batch_size": batch_size} if batch_size else {}), **(train or {})}}
    cfg = config_from_dict(raw)
    student, peer = build_student(cfg, 0), build_student(cfg, 1)
    stats = {1: peer.statistics()}
    student.model.double()
    doubled: dict[int, Data] = {}

    def double(graph: Data) -> Data:  # a copy: the loaded dataset is shared by every student of the process
        if id(graph) not in doubled:
            doubled[id(graph)] = copy.copy(graph)
            doubled[id(graph)].x = graph.x.double()
        return doubled[id(graph)]

    student.train_split = GraphSplit(double(student.train_split.graph), student.train_split.mask)
    student.alignment = double(student.alignment)
    return student, student.alignment_targets(stats)


def full_losses(student, targets):
    """Task loss and alignment term as train_full_batch computes them (same weights)."""
    split = student.train_split
    logits, _ = student.forward(split.graph)
    loss_task = task_loss(logits[split.mask], split.graph.y[split.mask], student.task.multilabel)
    logits, hiddens = student.forward(student.alignment)
    return loss_task, student.alignment_loss(logits, hiddens, targets)


def grads(loss, student):
    params = list(student.model.parameters())
    found = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]  # unused: the output layer


def assert_same(a, b, what):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9, msg=what)


CASES = [
    ("gcn", {"strategy": "alignahead"}),
    ("sage", {"strategy": "one-to-one", "node_mean": "with-in-edges", "kernel": "l1-softmax", "tau": 2.0}),
    ("gat", {"strategy": "alignahead", "tau": 1.0}),
    ("gcn", {"strategy": "logits", "logit_temperature": 2.0, "queries": 30}),
    ("sage", {"strategy": "logits"}),
]


@pytest.mark.parametrize("arch, align", CASES, ids=lambda c: c if isinstance(c, str) else c["strategy"])
def test_one_batch_of_everything_equals_the_full_batch_loss_and_gradient(arch, align):
    student, targets = make(10_000, {"arch": arch, "residual": arch == "gcn"}, align)
    student.model.train()
    loaders = minibatch_loaders(student)
    assert len(loaders.task) == len(loaders.align) == 1
    params = list(student.model.parameters())
    mini_task = batch_task_loss(student, loaders, next(iter(loaders.task)), params)
    mini_align = batch_alignment_loss(student, loaders, targets, next(iter(loaders.align)))
    full_task, full_align = full_losses(student, targets)
    assert mini_task.item() == pytest.approx(full_task.item(), rel=1e-9)
    assert mini_align.item() == pytest.approx(full_align.item(), rel=1e-6, abs=1e-9)
    assert full_align.item() > 0
    assert_same(grads(mini_task + 1.5 * mini_align, student), grads(full_task + 1.5 * full_align, student), "gradient")


@pytest.mark.parametrize("arch, align", [CASES[0], CASES[2], CASES[3]], ids=["gcn", "gat", "logits"])
def test_the_alignment_estimator_is_unbiased_over_one_pass_of_disjoint_batches(arch, align):
    """sum_T (|T| / N_T) A_T = A and the same for the gradient, with exact representations (num_neighbors None)."""
    student, targets = make(7, {"arch": arch}, align)
    student.model.eval()
    loaders = minibatch_loaders(student)
    assert len(loaders.align) > 3
    total, grad_total, seen = 0.0, None, 0
    for batch in loaders.align:
        estimate = batch_alignment_loss(student, loaders, targets, batch)
        share = batch.batch_size / loaders.population
        total += share * estimate.item()
        g = [share * x for x in grads(estimate, student)]
        grad_total = g if grad_total is None else [a + b for a, b in zip(grad_total, g)]
        seen += batch.batch_size
    assert seen == loaders.population
    _, full = full_losses(student, targets)
    assert total == pytest.approx(full.item(), rel=1e-6, abs=1e-9)
    assert_same(grad_total, grads(full, student), "summed batch gradients")


def test_alignment_batches_carry_every_in_edge_of_their_targets_and_sampled_fanouts_below():
    student, _ = make(16, train={"num_neighbors": [2, 1, 3]})
    loaders = minibatch_loaders(student)
    batch = next(iter(loaders.align))
    graph, size = student.alignment, batch.batch_size
    full_in = torch.bincount(graph.edge_index[1], minlength=graph.num_nodes)
    got_in = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)
    assert torch.equal(got_in[:size], full_in[batch.n_id[:size]])  # the normaliser's support is whole
    assert torch.equal(graph.edge_index[:, batch.e_id], batch.n_id[batch.edge_index])  # e_id names the edges
    assert int(got_in[size:].max()) <= 2  # hop 1 uses the fan-out of the layer below the output (2)


def test_the_torch_sampler_draws_uniform_subsets_of_in_edges():
    torch.manual_seed(0)
    graph = Data(edge_index=torch.tensor([[1, 2, 3, 4, 0], [0, 0, 0, 0, 1]]), num_nodes=5)
    loader = neighbor_loader(graph, torch.tensor([0]), [2], 1, shuffle=False)
    counts: dict[tuple, int] = {}
    for _ in range(1200):
        batch = next(iter(loader))
        pair = tuple(sorted(batch.n_id[batch.edge_index[0]].tolist()))
        counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 6 and all(140 < c < 260 for c in counts.values())  # 6 pairs, 200 each expected


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat"])
def test_releases_and_evaluation_of_a_mini_batch_student_run_layer_wise_with_full_graph_values(arch):
    raw = {**BASE, "model": {**BASE["model"], "arch": arch, "residual": True}}
    mini = build_student(config_from_dict({**raw, "train": {"batch_size": 13}}), 0)
    full = build_student(config_from_dict(raw), 0)
    for ours, theirs in zip(mini.statistics(), full.statistics()):
        torch.testing.assert_close(torch.from_numpy(ours), torch.from_numpy(theirs), rtol=1e-5, atol=1e-7)
    assert mini.evaluate() == pytest.approx(full.evaluate(), rel=1e-5)


def test_mini_batch_training_with_fanouts_is_reproducible_and_learns():
    raw = {**BASE, "train": {"batch_size": 16, "num_neighbors": [3, 3, 3], "local_epochs": 3}}
    runs = []
    for _ in range(2):
        cfg = config_from_dict(raw)
        student, peer = build_student(cfg, 0), build_student(cfg, 1)
        first = student.train({1: peer.statistics()}, 1)
        runs.append((first, student.train({1: peer.statistics()}, 2)))
    assert runs[0] == runs[1]
    first, second = runs[0]
    assert second["task_loss"] < first["task_loss"] and first["align_grad_norm"] > 0
    # A_T carries the peers' constant in proportion, not per node (the client never sees it per node), so a
    # batch's estimate, and with sampled neighbourhoods an epoch's mean of them, may fall below 0 near KL = 0
    assert math.isfinite(first["align_loss"]) and abs(first["align_loss"]) < 0.1


MEMORY_SCRIPT = r"""
import gc, json, os, sys
import torch
torch.set_num_threads(1)
from fedalign.config import config_from_dict
from fedalign.client import build_student

def status(key):
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(key))

train = json.loads(sys.argv[1])
cfg = config_from_dict({"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 4000, "avg_degree": 100.0}},
                        "model": {"arch": "sage", "hidden_layers": 2, "hidden_dim": 128}, "train": train})
student, peer = build_student(cfg, 0), build_student(cfg, 1)
stats = {1: peer.statistics()}
student.train(stats, 1)  # a first turn pages in the code and builds the loaders
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current resident size
base = status("VmRSS:")
student.train(stats, 2)
print(json.dumps({"peak_mb": status("VmHWM:") - base}))
"""


def peak_training_memory(train: dict) -> float:
    env = {**os.environ, "FEDALIGN_COMPILE": "0", "MALLOC_MMAP_THRESHOLD_": "131072"}  # large blocks go back at free
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, json.dumps(train)], capture_output=True, text=True,
                          env=env, timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]


def test_a_mini_batch_turn_stays_under_a_memory_cap_that_a_full_batch_turn_exceeds():
    """A 4000-node graph with 400k edges, SAGE at width 128: a full-batch turn's messages ([E, d] each) take
    over 200 MB above the resident baseline; a mini-batch turn (512 targets, fan-outs 2) stays under it."""
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    cap = 200.0
    mini = peak_training_memory({"batch_size": 512, "num_neighbors": [2, 2, 2]})
    full = peak_training_memory({})
    assert mini < cap < full, (mini, full)


@pytest.mark.parametrize("raw, message", [
    ({"train": {"batch_size": 0}}, "train.batch_size: nodes per mini-batch must be >= 1"),
    ({"train": {"batch_size": 8, "num_neighbors": [5, 5]}}, "train.num_neighbors: one fan-out per message-passing"),
    ({"train": {"batch_size": 8, "num_neighbors": [5, 0, 5]}}, "train.num_neighbors: each fan-out must be >= 1, or -1"),
    ({"train": {"num_neighbors": [5, 5, 5]}}, "train.num_neighbors: fan-outs apply to mini-batch training"),
    ({"train": {"batch_size": 8, "num_neighbors": [5, 5, 5]}, "model": {"hidden_layers": [2, 3]}},
     "train.num_neighbors: one fan-out per message-passing layer (model.hidden_layers + 1 output layer = 4 for client 1)"),
    ({"train": {"batch_size": 8}, "align": {"strategy": "votes"}, "partition": {"scheme": "iid"}},
     "train.batch_size: mini-batch training does not support align.strategy votes"),
    ({"train": {"batch_size": 8}, "align": {"strategy": "fedavg"}, "federation": {"schedule": "simultaneous"}},
     "train.batch_size: mini-batch training does not support align.strategy fedavg"),
    ({"train": {"batch_size": 8}, "data": {"name": "synthetic-ppi"}, "partition": {"scheme": "graphs"},
      "privacy": {"dp_sgd": {"enabled": True}}}, "train.batch_size: mini-batch training is not combined with privacy.dp_sgd"),
])
def test_check_refuses_impossible_mini_batch_settings(raw, message):
    raw = {"model": {"hidden_layers": 2}, **raw}
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert str(error.value).startswith(message)


def test_fedalign_check_names_the_key(capsys):
    from fedalign_flower.cli import main

    assert main(["check", QUICKSTART, "--set", "train.batch_size=0"]) == 2
    assert "config error: train.batch_size: nodes per mini-batch must be >= 1" in capsys.readouterr().err
    assert main(["check", QUICKSTART, "--set", "train.batch_size=64"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["batch_size"] == 64
