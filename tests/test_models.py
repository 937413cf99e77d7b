"""Students: shapes, depth, residual connections, per-family layers."""

import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from fedalign.models import build_network

X = torch.randn(30, 12)
EDGE_INDEX = torch.randint(0, 30, (2, 90))


@pytest.mark.parametrize("arch,conv", [("gcn", GCNConv), ("gat", GATConv), ("sage", SAGEConv)])
@pytest.mark.parametrize("depth", [2, 4])
def test_forward_returns_logits_and_every_hidden_layer(arch, conv, depth):
    model = build_network(arch, 12, 5, hidden_layers=depth, hidden_dim=16, dropout=0.0, residual=False, heads=4)
    logits, hiddens = model(X, EDGE_INDEX)
    assert logits.shape == (30, 5)
    assert len(hiddens) == depth and all(h.shape == (30, 16) for h in hiddens)
    assert all(isinstance(layer, conv) for layer in model.layers) and isinstance(model.output, conv)


def test_aligned_outputs_are_pre_activation_by_default_and_post_on_request():
    model = build_network("gcn", 12, 3, hidden_layers=3, hidden_dim=8, dropout=0.0, residual=False)
    _, hiddens = model(X, EDGE_INDEX)
    graph = model.prepare(EDGE_INDEX, 30)
    z1 = model.layers[0](X, graph)
    z2 = model.layers[1](torch.nn.functional.elu(z1), graph)
    assert torch.allclose(hiddens[0], z1) and torch.allclose(hiddens[1], z2)
    model.representation = "post-activation"
    _, post = model(X, EDGE_INDEX)
    assert torch.allclose(post[0], torch.nn.functional.elu(z1)) and torch.allclose(post[1], torch.nn.functional.elu(z2))


def test_relu_activation():
    model = build_network("gcn", 12, 3, hidden_layers=2, hidden_dim=8, dropout=0.0, residual=False,
                          activation="relu", representation="post-activation")
    _, hiddens = model(X, EDGE_INDEX)
    assert torch.allclose(hiddens[0], torch.relu(model.layers[0](X, model.prepare(EDGE_INDEX, 30))))


def test_gcn_prepared_adjacency_equals_pyg_gcnconv():
    """The precomputed sparse propagation computes what a default GCNConv does on edge_index."""
    model = build_network("gcn", 12, 3, hidden_layers=2, hidden_dim=8, dropout=0.0, residual=False)
    reference = GCNConv(12, 8)  # normalize=True, self-loops: the textbook GCN layer
    reference.lin.weight.data.copy_(model.layers[0].lin.weight.data)
    reference.bias.data.copy_(model.layers[0].bias.data)
    graph = model.prepare(EDGE_INDEX, 30)
    assert model.prepare(graph, 30) is graph  # preparing twice is a no-op
    assert torch.allclose(model.layers[0](X, graph), reference(X, EDGE_INDEX), atol=1e-6)
    x = X.clone().requires_grad_()
    (g_fast,) = torch.autograd.grad(model.layers[0](x, graph).pow(2).sum(), x)
    (g_ref,) = torch.autograd.grad(reference(x, EDGE_INDEX).pow(2).sum(), x)
    assert torch.allclose(g_fast, g_ref, atol=1e-5)


def test_residual_skips_sit_inside_layers_2_to_L_and_the_output_before_the_activation():
    """As DGL's GATConv(residual=True) in the original: no skip on the first layer."""
    model = build_network("sage", 12, 3, hidden_layers=3, hidden_dim=8, dropout=0.0, residual=True)
    logits, hiddens = model(X, EDGE_INDEX)
    elu = torch.nn.functional.elu
    z1 = model.layers[0](X, EDGE_INDEX)
    z2 = model.layers[1](elu(z1), EDGE_INDEX) + elu(z1)
    z3 = model.layers[2](elu(z2), EDGE_INDEX) + elu(z2)
    out = model.output(elu(z3), EDGE_INDEX) + model.output_skip(elu(z3))
    for got, want in zip(hiddens, (z1, z2, z3)):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(logits, out, atol=1e-6)


def test_dropout_only_in_training():
    model = build_network("gcn", 12, 3, hidden_layers=2, hidden_dim=8, dropout=0.5, residual=False)
    model.eval()
    a, b = model(X, EDGE_INDEX)[0], model(X, EDGE_INDEX)[0]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    c = model(X, EDGE_INDEX)[0]
    assert not torch.allclose(a, c)


def test_gat_hidden_width_is_split_across_heads():
    model = build_network("gat", 12, 3, hidden_layers=2, hidden_dim=16, dropout=0.0, residual=False, heads=4)
    assert model.layers[0].heads == 4 and model.layers[0].out_channels == 4
    assert model.output.concat is False
    with pytest.raises(ValueError, match="multiple of heads"):
        build_network("gat", 12, 3, hidden_layers=2, hidden_dim=10, dropout=0.0, residual=False, heads=4)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="hidden_layers must be >= 2"):
        build_network("gcn", 12, 3, hidden_layers=1, hidden_dim=8, dropout=0.0, residual=False)
    with pytest.raises(ValueError, match="unknown architecture 'mlp'"):
        build_network("mlp", 12, 3, hidden_layers=2, hidden_dim=8, dropout=0.0, residual=False)
