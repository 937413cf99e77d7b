"""Structure statistics against direct, loop-based computations on a hand-made graph."""

import logging
import math

import pytest
import torch

from fedalign import statistics
from fedalign.statistics import (
    KERNELS, class_log_probs, layer_statistics, segment_log_softmax, structure_kl, structure_log_probs,
)

# 5 nodes; node 4 has no in-edges; node 0 has three in-edges, node 3 one.
EDGES = [(1, 0), (2, 0), (3, 0), (0, 1), (2, 1), (0, 2), (4, 3)]
EDGE_INDEX = torch.tensor(EDGES, dtype=torch.long).t()


def loop_probs(h, kernel, tau):
    """p(u|v) by the definition: for each target v, softmax over its in-edges of the edge logits."""
    probs = {}
    for v in range(h.size(0)):
        sources = [u for (u, t) in EDGES if t == v]
        if not sources:
            continue
        scores = []
        for u in sources:
            l1 = sum(abs(float(a) - float(b)) for a, b in zip(h[u], h[v]))
            if kernel == "lsp":  # the original: a softmax of the kernel value exp(-d / tau)
                scores.append(math.exp(-l1 / tau))
            elif kernel == "l1-softmax":
                scores.append(-l1 / tau)
            elif kernel == "l2sq":
                scores.append(-sum((float(a) - float(b)) ** 2 for a, b in zip(h[u], h[v])) / tau)
            else:
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


def test_default_is_the_original_double_exponential():
    h = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 300.0], [1.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    log_p = structure_log_probs(h, EDGE_INDEX)
    # node 0's in-edges come from nodes 1, 2, 3 at L1 distances 100, 300, 2 -> e = exp(-1), exp(-3), exp(-0.02)
    e = torch.exp(torch.tensor([-1.0, -3.0, -0.02], dtype=torch.float64))
    assert torch.allclose(log_p[:3], e - torch.logsumexp(e, 0))
    # probabilities of one node's in-edges differ by a factor of at most e
    assert (log_p[:3].max() - log_p[:3].min()).item() < 1.0
    # node 3 has a single in-edge: probability 1
    assert log_p[6].item() == pytest.approx(0.0, abs=1e-12)
    assert structure_kl(log_p, log_p, EDGE_INDEX[1], 5).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_sums_over_in_edges_and_averages_over_all_nodes_or_those_with_in_edges():
    torch.manual_seed(1)
    hp, hs = torch.randn(5, 3, dtype=torch.float64) * 50, torch.randn(5, 3, dtype=torch.float64) * 50
    peer, student = loop_probs(hp, "lsp", 100.0), loop_probs(hs, "lsp", 100.0)
    per_node = {}
    for (u, v), p in peer.items():
        per_node[v] = per_node.get(v, 0.0) + p * (math.log(p) - math.log(student[(u, v)]))
    assert len(per_node) == 4  # node 4 has no in-edges
    lp, ls = structure_log_probs(hp, EDGE_INDEX), structure_log_probs(hs, EDGE_INDEX)
    all_nodes = structure_kl(lp, ls, EDGE_INDEX[1], 5)
    assert all_nodes.item() == pytest.approx(sum(per_node.values()) / 5, rel=1e-9)
    with_in = structure_kl(lp, ls, EDGE_INDEX[1], 5, node_mean="with-in-edges")
    assert with_in.item() == pytest.approx(sum(per_node.values()) / 4, rel=1e-9)
    assert all_nodes.item() > 0


def test_kl_handles_zero_peer_probabilities():
    student = structure_log_probs(torch.randn(5, 2), EDGE_INDEX)
    peer = torch.log(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]))  # valid: one-hot per node
    kl = structure_kl(peer, student, EDGE_INDEX[1], 5, node_mean="with-in-edges")
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


def test_segment_log_softmax_normalises_each_group():
    logits = torch.tensor([1.0, 2.0, 3.0, 500.0, -500.0, 0.0, 7.0])
    out = segment_log_softmax(logits, EDGE_INDEX[1], 5)
    assert torch.isfinite(out).all()
    for v in range(4):
        assert out[EDGE_INDEX[1] == v].exp().sum().item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("block_elements", [1 << 19, 6])  # one block; many blocks of 2 edges
def test_blocked_l1_distance_matches_autograd_reference(monkeypatch, block_elements):
    """The hand-written forward/backward of the fallback L1 kernel equals autograd on the plain formula."""
    monkeypatch.setattr(statistics, "_L1_BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(1)
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    src, dst = EDGE_INDEX
    weights = torch.randn(src.numel(), dtype=torch.float64)
    fast = statistics.blocked_l1_distance(h, src, dst)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), h)
    plain = (h[src] - h[dst]).abs().sum(dim=-1)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), h)
    assert torch.allclose(fast, plain)
    assert torch.allclose(grad_fast, grad_plain)
    assert torch.autograd.gradcheck(lambda t: statistics.blocked_l1_distance(t, src, dst), (h,))


@pytest.mark.parametrize("kernel", ["lsp", "l1-softmax"])
def test_compiled_and_eager_kernels_agree_in_value_and_gradient(kernel):
    """Where torch.compile works the fused kernels run; they equal the eager ones (and are deterministic)."""
    torch.manual_seed(2)
    num_nodes, edges = 60, torch.randint(0, 60, (2, 400))
    h = torch.randn(num_nodes, 16, requires_grad=True)
    weights = torch.randn(400)
    compiled = structure_log_probs(h, edges, 3.0, kernel)
    (g_compiled,) = torch.autograd.grad((compiled * weights).sum(), h)
    again = structure_log_probs(h, edges, 3.0, kernel)
    eager = segment_log_softmax(statistics.KERNELS[kernel](h, edges[0], edges[1], 3.0) if kernel != "lsp" else
                                torch.exp(-statistics.blocked_l1_distance(h, *edges) / 3.0), edges[1], num_nodes)
    (g_eager,) = torch.autograd.grad((eager * weights).sum(), h)
    assert statistics.l1_backend() in ("compiled", "eager")
    assert torch.equal(compiled, again)
    assert torch.allclose(compiled, eager, atol=1e-5) and torch.allclose(g_compiled, g_eager, atol=1e-4)


def test_without_a_compiler_the_eager_kernels_run_and_say_so(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(statistics, "_COMPILER", statistics._Compiler())
    monkeypatch.setattr(statistics, "_lsp_log_probs",
                        statistics._Accelerated(statistics._plain_lsp_log_probs, statistics._eager_lsp_log_probs))
    monkeypatch.setattr(torch, "compile", broken)
    h = torch.randn(5, 3, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="fedalign"):
        log_p = structure_log_probs(h, EDGE_INDEX)
    assert statistics.l1_backend() == "eager"
    assert "torch.compile is unavailable here (RuntimeError: no C compiler)" in caplog.text
    expected = loop_probs(h, "lsp", 100.0)
    assert all(log_p[e].exp().item() == pytest.approx(expected[edge], rel=1e-9) for e, edge in enumerate(EDGES))


def test_class_distributions_for_mutual_learning():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    multiclass = class_log_probs(logits, 2.0, multilabel=False)
    assert multiclass.shape == (6,)
    assert torch.allclose(multiclass.view(2, 3), torch.log_softmax(logits / 2.0, -1))
    multilabel = class_log_probs(logits, 1.0, multilabel=True).view(2, 3, 2).exp()
    assert torch.allclose(multilabel[..., 0], torch.sigmoid(logits))
    assert torch.allclose(multilabel.sum(-1), torch.ones(2, 3))
