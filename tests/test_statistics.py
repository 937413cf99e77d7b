"""Structure statistics against direct, loop-based computations on a hand-made graph."""

import math

import pytest
import torch

from fedalign.statistics import (
    KERNELS, layer_statistics, segment_log_softmax, structure_kl, structure_log_probs,
)

# 5 nodes; node 4 has no in-edges; node 0 has three in-edges, node 3 one.
EDGES = [(1, 0), (2, 0), (3, 0), (0, 1), (2, 1), (0, 2), (4, 3)]
EDGE_INDEX = torch.tensor(EDGES, dtype=torch.long).t()


def loop_probs(h, kernel, tau):
    """p(u|v) by the definition: for each target v, softmax over its in-edges."""
    probs = {}
    for v in range(h.size(0)):
        sources = [u for (u, t) in EDGES if t == v]
        if not sources:
            continue
        if kernel == "l1":
            scores = [-sum(abs(float(a) - float(b)) for a, b in zip(h[u], h[v])) / tau for u in sources]
        elif kernel == "l2sq":
            scores = [-sum((float(a) - float(b)) ** 2 for a, b in zip(h[u], h[v])) / tau for u in sources]
        else:
            scores = []
            for u in sources:
                dot = sum(float(a) * float(b) for a, b in zip(h[u], h[v]))
                nu = math.sqrt(sum(float(a) ** 2 for a in h[u]))
                nv = math.sqrt(sum(float(b) ** 2 for b in h[v]))
                scores.append(dot / (nu * nv) / tau)
        z = sum(math.exp(s) for s in scores)
        for u, s in zip(sources, scores):
            probs[(u, v)] = math.exp(s) / z
    return probs


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("tau", [100.0, 1.0])
def test_log_probs_match_loop(kernel, tau):
    torch.manual_seed(0)
    h = torch.randn(5, 3, dtype=torch.float64) * 4
    log_p = structure_log_probs(h, EDGE_INDEX, tau=tau, kernel=kernel)
    expected = loop_probs(h, kernel, tau)
    for e, (u, v) in enumerate(EDGES):
        assert log_p[e].exp().item() == pytest.approx(expected[(u, v)], rel=1e-9)


def test_default_is_l1_over_tau_100():
    h = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 300.0], [1.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    log_p = structure_log_probs(h, EDGE_INDEX)
    # node 0's in-edges come from nodes 1, 2, 3 at L1 distances 100, 300, 2 -> logits -1, -3, -0.02
    logits = torch.tensor([-1.0, -3.0, -0.02], dtype=torch.float64)
    assert torch.allclose(log_p[:3], logits - torch.logsumexp(logits, 0))
    # node 3 has a single in-edge: probability 1
    assert log_p[6].item() == pytest.approx(0.0, abs=1e-12)


def test_stable_for_huge_distances():
    h = torch.tensor([[0.0], [1e6], [2e6], [3e6], [0.0]])
    log_p = structure_log_probs(h, EDGE_INDEX, tau=1.0)
    assert torch.isfinite(log_p).all()
    sums = torch.zeros(5).index_add_(0, EDGE_INDEX[1], log_p.exp())
    assert torch.allclose(sums[:4], torch.ones(4))


def test_segment_log_softmax_sums_to_one_per_group():
    logits = torch.randn(7, dtype=torch.float64)
    log_p = segment_log_softmax(logits, EDGE_INDEX[1], 5)
    sums = torch.zeros(5, dtype=torch.float64).index_add_(0, EDGE_INDEX[1], log_p.exp())
    assert torch.allclose(sums[[0, 1, 2, 3]], torch.ones(4, dtype=torch.float64))
    assert sums[4] == 0


def test_kl_of_identical_statistics_is_zero():
    h = torch.randn(5, 4)
    log_p = structure_log_probs(h, EDGE_INDEX)
    assert structure_kl(log_p, log_p, EDGE_INDEX[1], 5).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_matches_loop_and_averages_over_nodes_with_in_edges():
    torch.manual_seed(1)
    hp, hs = torch.randn(5, 3, dtype=torch.float64) * 50, torch.randn(5, 3, dtype=torch.float64) * 50
    peer, student = loop_probs(hp, "l1", 100.0), loop_probs(hs, "l1", 100.0)
    per_node = {}
    for (u, v), p in peer.items():
        per_node[v] = per_node.get(v, 0.0) + p * (math.log(p) - math.log(student[(u, v)]))
    expected = sum(per_node.values()) / len(per_node)  # 4 nodes have in-edges, node 4 has none
    kl = structure_kl(structure_log_probs(hp, EDGE_INDEX), structure_log_probs(hs, EDGE_INDEX), EDGE_INDEX[1], 5)
    assert len(per_node) == 4
    assert kl.item() == pytest.approx(expected, rel=1e-9)
    assert kl.item() > 0


def test_kl_handles_zero_peer_probabilities():
    student = structure_log_probs(torch.randn(5, 2), EDGE_INDEX)
    peer = torch.log(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]))  # valid: one-hot per node
    kl = structure_kl(peer, student, EDGE_INDEX[1], 5)
    # only edges with peer probability 1 contribute: -log p_student on those edges
    expected = -(student[0] + student[3] + student[5] + student[6]) / 4
    assert torch.isfinite(kl) and kl.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_flows_to_student_only():
    h_student = torch.randn(5, 3, requires_grad=True)
    h_peer = torch.randn(5, 3)
    peer = structure_log_probs(h_peer, EDGE_INDEX, tau=1.0)
    kl = structure_kl(peer, structure_log_probs(h_student, EDGE_INDEX, tau=1.0), EDGE_INDEX[1], 5)
    kl.backward()
    assert h_student.grad is not None and h_student.grad.abs().sum() > 0


def test_layer_statistics_one_per_layer():
    hiddens = [torch.randn(5, d) for d in (3, 8, 2)]
    stats = layer_statistics(hiddens, EDGE_INDEX)
    assert [s.shape for s in stats] == [torch.Size([7])] * 3
    assert torch.allclose(stats[1], structure_log_probs(hiddens[1], EDGE_INDEX))


def test_unknown_kernel_is_named():
    with pytest.raises(ValueError, match="unknown kernel 'dot'"):
        structure_log_probs(torch.randn(5, 2), EDGE_INDEX, kernel="dot")


@pytest.mark.parametrize("block_elements", [1 << 19, 6])  # one block; many blocks of 2 edges
def test_blocked_l1_kernel_matches_autograd_reference(monkeypatch, block_elements):
    """The hand-written forward/backward of the L1 kernel equals autograd on the plain formula."""
    import fedalign.statistics as statistics

    monkeypatch.setattr(statistics, "_L1_BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(1)
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    src, dst = EDGE_INDEX
    weights = torch.randn(src.numel(), dtype=torch.float64)
    fast = statistics.l1_kernel(h, src, dst)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), h)
    plain = -(h[src] - h[dst]).abs().sum(dim=-1)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), h)
    assert torch.allclose(fast, plain)
    assert torch.allclose(grad_fast, grad_plain)
    assert torch.autograd.gradcheck(lambda t: statistics.l1_kernel(t, src, dst), (h,))
