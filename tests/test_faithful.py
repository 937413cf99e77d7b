"""The default alignment loss is the original Alignahead code's, checked against an independent implementation.

The reference below is written from the formula (not from ``fedalign.statistics``): dense
matrices, pre-activation outputs computed layer by layer from the students' weights, and

    e_uv = exp(-||h_u - h_v||_1 / 100),  p(u|v) = exp(e_uv) / sum_{u' -> v} exp(e_u'v),
    loss = (1 / (K - 1)) sum_peers sum_pairs (1 / N) sum_v sum_{u -> v} p_peer (log p_peer - log p_student).
"""

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from fedalign.config import config_from_dict
from fedalign.inprocess import InProcessTransport
from fedalign.server import Coordinator
from fedalign.statistics import structure_kl, structure_log_probs
from fedalign.client import build_student

ALIGNAHEAD = {2: [(1, 2), (2, 1)], 4: [(1, 4), (2, 1), (3, 2), (4, 3)]}  # (student layer, peer layer)
ONE_TO_ONE = {2: [(1, 1), (2, 2)], 4: [(1, 1), (2, 2), (3, 3), (4, 4)]}


def dense_adjacency(edge_index, n):
    """mask[u, v] = 1 for an edge u -> v."""
    mask = torch.zeros(n, n, dtype=torch.float64)
    mask[edge_index[0], edge_index[1]] = 1.0
    return mask


def pre_activations(model, x, edge_index):
    """Each hidden layer's output before its activation, from the layers' weights (between layers the original
    code's activations, fedalign's defaults: ReLU in GCN students, ELU in GAT students)."""
    n = x.size(0)
    outs, h = [], x
    if model.__class__.__name__ == "GCNStudent":
        a = dense_adjacency(edge_index, n).t() + torch.eye(n, dtype=torch.float64)  # row = target, self-loops
        a = a.clamp(max=1.0)
        deg = a.sum(1)
        a_hat = a / deg.sqrt().unsqueeze(1) / deg.sqrt().unsqueeze(0)
        for layer in model.layers:
            z = a_hat @ (h @ layer.lin.weight.t()) + layer.bias
            outs.append(z)
            h = torch.nn.functional.relu(z)
    else:  # GAT: PyG's own GATConv on edge_index; residual (identity) from the second layer on
        for i, layer in enumerate(model.layers):
            z = layer(h, edge_index) + (h if i > 0 and model.residual else 0)
            outs.append(z)
            h = torch.nn.functional.elu(z)
    return outs


def original_log_probs(h, mask):
    """log p(u|v) as a dense [N, N] matrix (entries without an edge u -> v are -inf)."""
    distance = torch.cdist(h, h, p=1)  # distance[u, v] = ||h_u - h_v||_1
    e = torch.exp(-distance / 100.0)
    logits = torch.where(mask > 0, e, torch.tensor(-torch.inf, dtype=h.dtype))
    return torch.log_softmax(logits, dim=0)  # normalised over u for every target v (column)


def original_loss(student_h, peers_h, mask, pairs):
    n = mask.size(0)
    total = 0.0
    for peer_h in peers_h:
        for s_layer, p_layer in pairs:
            log_p = original_log_probs(peer_h[p_layer - 1], mask)
            log_s = original_log_probs(student_h[s_layer - 1], mask)
            p = log_p.exp()
            kl_per_node = torch.where(mask > 0, p * (log_p - log_s), torch.zeros_like(p)).sum(0)
            total = total + kl_per_node.sum() / n
    return total / len(peers_h)


@pytest.mark.parametrize("arch", ["gcn", "gat"])
@pytest.mark.parametrize("depth", [2, 4])
@pytest.mark.parametrize("strategy,pairs", [("alignahead", ALIGNAHEAD), ("one-to-one", ONE_TO_ONE)])
def test_default_loss_and_gradient_equal_the_original_formula(arch, depth, strategy, pairs):
    cfg = config_from_dict({
        "seed": 3,
        "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 60, "avg_degree": 4}},
        "federation": {"num_clients": 3},
        "model": {"arch": arch, "hidden_layers": depth, "hidden_dim": 8, "heads": 2, "residual": arch == "gat",
                  "init": "independent"},  # different peers, so the loss is not ~0
        "align": {"strategy": strategy},
    })
    students = [build_student(cfg, i) for i in range(3)]
    for s in students:
        s.model.double().eval()
    # the alignment graph without the in-edges of nodes 0..4: the mean is over all N nodes, these included
    graph = students[0].alignment
    keep = ~torch.isin(graph.edge_index[1], torch.arange(5))
    graph = Data(x=graph.x.double(), edge_index=graph.edge_index[:, keep], num_nodes=graph.num_nodes)
    students[0].alignment = graph
    x, edge_index = graph.x, graph.edge_index
    mask = dense_adjacency(edge_index, graph.num_nodes)
    assert (mask.sum(0) == 0).sum() >= 5
    with torch.no_grad():
        peers_h = [pre_activations(s.model, x, edge_index) for s in students[1:]]
    peer_statistics = {i + 1: [original_log_probs(h, mask).exp()[edge_index[0], edge_index[1]].numpy() for h in ph]
                       for i, ph in enumerate(peers_h)}

    me = students[0]
    logits, hiddens = me.model(x, edge_index)
    ours = me.alignment_loss(logits, hiddens, me.alignment_targets(peer_statistics))
    ours_grad = torch.autograd.grad(ours, list(me.model.parameters()), allow_unused=True)

    reference = original_loss(pre_activations(me.model, x, edge_index), peers_h, mask, pairs[depth])
    reference_grad = torch.autograd.grad(reference, list(me.model.parameters()), allow_unused=True)

    assert reference.item() > 1e-6
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    for g_ours, g_ref in zip(ours_grad, reference_grad):
        if g_ref is None:
            assert g_ours is None or torch.all(g_ours == 0)
            continue
        scale = g_ref.abs().max().item()
        assert (g_ours - g_ref).abs().max().item() <= 1e-6 * scale + 1e-15


def test_shared_init_gives_identical_students_and_independent_does_not():
    base = {"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 60}}, "federation": {"num_clients": 3},
            "model": {"hidden_layers": 2, "hidden_dim": 8}}
    shared = [build_student(config_from_dict(base), i).model.state_dict() for i in range(3)]
    for other in shared[1:]:
        assert all(torch.equal(shared[0][k], other[k]) for k in shared[0])
    independent_cfg = config_from_dict({**base, "model": {**base["model"], "init": "independent"}})
    independent = [build_student(independent_cfg, i).model.state_dict() for i in range(2)]
    assert not all(torch.equal(independent[0][k], independent[1][k]) for k in independent[0])


class SpyTransport(InProcessTransport):
    """Records every request: which statistics each trainer was sent, and every query."""

    def __init__(self, clients):
        super().__init__(clients)
        self.queried, self.sent = [], []

    def query(self, clients, round_number):
        self.queried.append(round_number)
        return super().query(clients, round_number)

    def train(self, jobs, round_number):
        self.sent.extend(peers for peers in jobs.values())
        return super().train(jobs, round_number)


def test_self_never_reads_a_peers_statistics_and_aligns_with_its_own_previous_turn():
    cfg = config_from_dict({
        "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 80}},
        "federation": {"num_clients": 2, "rounds": 4},
        "model": {"hidden_layers": 2, "hidden_dim": 8, "init": "independent"},
        "align": {"strategy": "self", "tau": 1.0},
        "output": {"progress": False},
    })
    transport = SpyTransport(InProcessTransport.from_config(cfg).clients)
    records = Coordinator(cfg, transport).run()
    assert transport.queried == [] and all(peers == {} for peers in transport.sent)
    assert all(r.bytes_sent == 0 and r.bytes_received == 0 for r in records)
    assert all(r.metrics["align_loss"] > 0 for r in records if r.round > 2)  # second turns: a real target

    # the target of a turn is the student's own statistics at the end of its previous turn
    student = transport.clients[0]
    before = [p.copy() for p in student.statistics()]
    assert all(np.array_equal(a, b) for a, b in zip(before, student.own_statistics))
    student.model.eval()
    logits, hiddens = student.forward(student.alignment)
    ours = student.alignment_loss(logits, hiddens, student.alignment_targets({0: before})).item()
    ei, n = student.alignment.edge_index, student.alignment.num_nodes
    expected = sum(structure_kl(torch.from_numpy(before[p - 1]).log(), structure_log_probs(hiddens[s - 1], ei, tau=1.0),
                                ei[1], n).item() for s, p in [(1, 2), (2, 1)])  # the alignahead map on itself
    assert ours == pytest.approx(expected, rel=1e-5) and ours > 0
    with pytest.raises(ValueError, match="never reads a peer's statistics"):
        student.train({1: transport.clients[1].statistics()}, 5)
