"""One student: the loss it optimises, what it releases, checkpoints."""

import numpy as np
import pytest
import torch

from fedalign.alignment import layer_pairs
from fedalign.config import config_from_dict
from fedalign.statistics import structure_kl, structure_log_probs
from fedalign.client import build_student
from fedalign.client.training import task_metric

BASE = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "model": {"hidden_layers": 3, "hidden_dim": 8, "dropout": 0.0},
}


def cfg_with(**sections):
    raw = {**BASE}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return config_from_dict(raw)


def test_released_statistics_are_distributions_over_in_edges():
    student = build_student(cfg_with(), 0)
    stats, metrics = student.release(0)
    assert metrics == {}  # privacy off: no release metrics
    edge_index = student.alignment.edge_index
    assert len(stats) == 3 and all(s.shape == (edge_index.size(1),) and s.dtype == np.float32 for s in stats)
    for s in stats:
        sums = np.zeros(student.alignment.num_nodes)
        np.add.at(sums, edge_index[1].numpy(), s)
        has_in = np.bincount(edge_index[1].numpy(), minlength=len(sums)) > 0
        np.testing.assert_allclose(sums[has_in], 1.0, rtol=1e-5)


@pytest.mark.parametrize("node_mean", ["all", "with-in-edges"])
def test_alignment_loss_through_summed_peer_mass_equals_the_per_peer_kl_sum(node_mean):
    """Peers enter only as their summed mass per layer: same loss and gradient as sum_k KL_k / K (1e-9)."""
    cfg = cfg_with(federation={"num_clients": 4}, model={"hidden_layers": [3, 3, 2, 4], "init": "independent"},
                   align={"node_mean": node_mean, "tau": 3.0})
    students = [build_student(cfg, i) for i in range(4)]
    me = students[0]
    me.model.double().eval()
    ei, n = me.alignment.edge_index, me.alignment.num_nodes
    peer_stats = {i: [p.astype(np.float64) for p in students[i].statistics()] for i in (1, 2, 3)}
    logits, hiddens = me.model(me.alignment.x.double(), ei)
    ours = me.alignment_loss(logits, hiddens, me.alignment_targets(peer_stats))
    (g_ours,) = torch.autograd.grad(ours, me.model.layers[0].lin.weight)
    logits, hiddens = me.model(me.alignment.x.double(), ei)
    expected = 0.0
    for stats in peer_stats.values():
        for s, p in layer_pairs("alignahead", 3, len(stats)):
            expected = expected + structure_kl(torch.from_numpy(stats[p - 1]).log(),
                                               structure_log_probs(hiddens[s - 1], ei, 3.0), ei[1], n, node_mean)
    expected = expected / 3
    (g_expected,) = torch.autograd.grad(expected, me.model.layers[0].lin.weight)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-9)
    assert torch.allclose(g_ours, g_expected, rtol=1e-9, atol=1e-14)


def test_logits_strategy_shares_class_distributions_and_aligns_them():
    cfg = cfg_with(align={"strategy": "logits", "logit_temperature": 2.0}, model={"init": "independent"})
    a, b = build_student(cfg, 0), build_student(cfg, 1)
    stats, _ = b.release(0)
    n, c = b.alignment.num_nodes, b.task.num_classes
    assert len(stats) == 1 and stats[0].shape == (n * c,)
    np.testing.assert_allclose(stats[0].reshape(n, c).sum(1), 1.0, rtol=1e-5)
    a.model.eval()
    logits, hiddens = a.forward(a.alignment)
    ours = a.alignment_loss(logits, hiddens, a.alignment_targets({1: stats}))
    p = torch.from_numpy(stats[0]).double().view(n, c)
    log_q = torch.log_softmax(logits.double() / 2.0, -1)
    expected = (p * (p.log() - log_q)).sum() / n
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    metrics = a.train({1: stats}, 1)
    assert metrics["align_loss"] > 0 and metrics["align_grad_norm"] > 0


def test_training_reports_both_terms_gradient_norms():
    cfg = cfg_with(align={"weight": 2.0}, train={"local_epochs": 2}, model={"init": "independent"})
    a, b = build_student(cfg, 0), build_student(cfg, 1)
    twin = build_student(cfg, 0)
    metrics = a.train({1: b.statistics()}, 1)
    assert metrics["task_grad_norm"] > 0 and metrics["align_grad_norm"] > 0
    # the measured epoch takes the same step as an unmeasured one: same weights as a plain loop
    twin.model.train()
    targets = twin.alignment_targets({1: b.statistics()})
    split = twin.train_split
    for _ in range(2):
        twin.optimizer.zero_grad()
        logits, hiddens = twin.forward(split.graph)
        loss = torch.nn.functional.cross_entropy(logits[split.mask], split.graph.y[split.mask])
        (loss + 2.0 * twin.alignment_loss(logits, hiddens, targets)).backward()
        twin.optimizer.step()
    for p, q in zip(a.model.parameters(), twin.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_students_of_different_depths_align():
    cfg = cfg_with(model={"hidden_layers": [2, 4]}, federation={"rounds": 2})
    a, b = build_student(cfg, 0), build_student(cfg, 1)
    assert (a.depth, b.depth) == (2, 4)
    assert layer_pairs("alignahead", 2, 4) == [(1, 1), (2, 3)]
    metrics = a.train({1: b.statistics()}, 1)
    assert metrics["align_loss"] > 0
    metrics = b.train({0: a.statistics()}, 2)
    assert metrics["align_loss"] > 0


def test_zero_weight_equals_no_alignment():
    runs = []
    for align in ({"strategy": "alignahead", "weight": 0.0}, {"strategy": "none"}):
        cfg = cfg_with(align=align, federation={"num_clients": 2})
        student, peer = build_student(cfg, 0), build_student(cfg, 1)
        runs.append(student.train({1: peer.statistics()}, 1))
    assert runs[0]["task_loss"] == runs[1]["task_loss"] and runs[0]["val_metric"] == runs[1]["val_metric"]


def test_training_reduces_the_task_loss():
    cfg = cfg_with(train={"local_epochs": 30, "lr": 0.01})
    student = build_student(cfg, 0)
    first = cfg_with(train={"local_epochs": 1, "lr": 0.01})
    one_epoch = build_student(first, 0).train({}, 1)["task_loss"]
    assert student.train({}, 1)["task_loss"] < one_epoch


def test_a_round_is_reproducible_whatever_the_global_rng_state():
    cfg = cfg_with(model={"dropout": 0.5})
    results = []
    for noise in (0, 123):
        torch.manual_seed(noise)
        torch.rand(10)
        student = build_student(cfg, 0)
        results.append(student.train({1: build_student(cfg, 1).statistics()}, 7))
    assert results[0] == results[1]


def test_checkpoint_round_trip_continues_identically(tmp_path):
    cfg = cfg_with(train={"local_epochs": 2})
    a = build_student(cfg, 0)
    a.train({}, 1)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    b = build_student(cfg, 0)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert a.train({}, 2) == b.train({}, 2)
    for x, y in zip(a.statistics(), b.statistics()):
        np.testing.assert_array_equal(x, y)


def test_wrong_peer_shape_is_rejected_with_a_clear_message():
    student = build_student(cfg_with(), 0)
    with pytest.raises(ValueError, match=r"statistics from peer 1 rejected: layer 1 has shape \(5,\), expected"):
        student.train({1: [np.ones(5, dtype=np.float32)]}, 1)


def test_task_metrics_against_hand_computed_values():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert task_metric(logits, torch.tensor([0, 1, 1]), multilabel=False) == pytest.approx(2 / 3)
    ml_logits = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    # tp = 2, fp = 1, fn = 1 -> F1 = 4 / 6
    assert task_metric(ml_logits, y, multilabel=True) == pytest.approx(4 / 6)


def test_float16_wire_statistics_halve_the_bytes_and_round_the_float32_release():
    exact, _ = build_student(cfg_with(), 0).release(0)
    half, _ = build_student(cfg_with(align={"statistics_dtype": "float16"}), 0).release(0)
    assert all(h.dtype == np.float16 and h.nbytes * 2 == e.nbytes for h, e in zip(half, exact))
    for h, e in zip(half, exact):  # float16 keeps 11 significant bits: relative error <= 2^-11
        np.testing.assert_allclose(h.astype(np.float32), e, rtol=2.0 ** -11, atol=6e-8)
    # a peer trains on float16 statistics as on any others
    metrics = build_student(cfg_with(align={"statistics_dtype": "float16"}), 1).train({0: half}, 1)
    assert np.isfinite(metrics["align_loss"]) and metrics["align_loss"] >= 0
