"""``train.sparse_features``: GCN's first layer on a CSR copy of the features computes the dense product."""

import pytest
import torch

from fedalign.client import build_student
from fedalign.config import ConfigError, config_from_dict
from fedalign.models import build_network, sparse_input

BASE = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "model": {"hidden_layers": 3, "hidden_dim": 8, "dropout": 0.0},
    "output": {"progress": False, "plot": False},
}


def cfg_with(**sections):
    raw = {**BASE}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return config_from_dict(raw)


def bag_of_words(n=40, f=300, density=0.02, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, f, generator=generator) < density).float()


def test_a_gcn_on_sparse_features_gives_the_dense_outputs_and_gradients():
    x = bag_of_words()
    edge_index = torch.randint(0, 40, (2, 160), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = build_network("gcn", 300, 4, hidden_layers=3, hidden_dim=16, dropout=0.0, residual=False)
    graph = model.prepare(edge_index, 40)
    xs = sparse_input(x)
    assert xs.matrix.layout == torch.sparse_csr and xs.matrix._nnz() == int((x != 0).sum())
    results = {}
    for name, features in (("dense", x), ("sparse", xs)):
        model.zero_grad()
        logits, hiddens = model(features, graph)
        (logits.pow(2).sum() + sum(h.sum() for h in hiddens)).backward()
        results[name] = (logits.detach(), [h.detach() for h in hiddens], [p.grad.clone() for p in model.parameters()])
    (dense_logits, dense_h, dense_g), (sparse_logits, sparse_h, sparse_g) = results["dense"], results["sparse"]
    torch.testing.assert_close(sparse_logits, dense_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(sparse_h, dense_h, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(sparse_g, dense_g, strict=True):  # the first layer's weight gradient is x^T grad, sparse
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("binary", [True, False])
def test_sparse_features_give_the_bits_of_torch_linear_on_the_csr_matrix(binary):
    """The stored transpose only saves autograd's layout conversion: same products, same order, same bits."""
    generator = torch.Generator().manual_seed(2)
    x = bag_of_words(n=60, f=500, density=0.03, seed=3)
    if not binary:
        x = x * torch.randn(60, 500, generator=generator)
    xs = sparse_input(x)
    reference = x.t().contiguous().to_sparse_csr()  # X^T built independently, from the dense matrix
    for ours, theirs in (
        (xs.transpose.crow_indices(), reference.crow_indices()),
        (xs.transpose.col_indices(), reference.col_indices()),
        (xs.transpose.values(), reference.values()),
    ):
        assert torch.equal(ours, theirs)
    assert (xs.size(0), xs.size(1)) == (60, 500)
    weight = torch.randn(16, 500, generator=generator, requires_grad=True)
    upstream = torch.randn(60, 16, generator=generator)
    out_torch = torch.nn.functional.linear(xs.matrix, weight)
    (grad_torch,) = torch.autograd.grad((out_torch * upstream).sum(), weight)
    out_ours = xs.linear(weight)
    (grad_ours,) = torch.autograd.grad((out_ours * upstream).sum(), weight)
    assert torch.equal(out_ours, out_torch) and torch.equal(grad_ours, grad_torch)
    torch.testing.assert_close(out_ours, x @ weight.detach().t(), atol=1e-5, rtol=1e-5)  # and the dense product
    torch.testing.assert_close(grad_ours, upstream.t() @ x, atol=1e-4, rtol=1e-4)


def test_a_student_with_sparse_features_trains_and_releases_as_the_dense_one():
    dense, sparse = build_student(cfg_with(), 0), build_student(cfg_with(train={"sparse_features": True}), 0)
    for student in (dense, sparse):
        student.model.eval()
    with torch.no_grad():
        d_logits, _ = dense.forward(dense.train_split.graph)
        s_logits, _ = sparse.forward(sparse.train_split.graph)
    torch.testing.assert_close(s_logits, d_logits, atol=1e-5, rtol=1e-5)
    d_stats, _ = dense.release(0)
    s_stats, _ = sparse.release(0)
    for a, b in zip(s_stats, d_stats, strict=True):
        assert a.shape == b.shape and abs(a - b).max() < 1e-5
    d_metrics, s_metrics = dense.train({}, 1), sparse.train({}, 1)
    assert s_metrics["task_loss"] == pytest.approx(d_metrics["task_loss"], abs=1e-5)
    for a, b in zip(sparse.model.parameters(), dense.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "sections,words",
    [
        ({"model": {"arch": "gat"}}, "GCN students only"),
        ({"model": {"arch": ["gcn", "sage"]}, "federation": {"num_clients": 2}}, "GCN students only"),
        ({"train": {"batch_size": 32}}, "full-batch"),
        (
            {
                "data": {"name": "synthetic-ppi", "synthetic": {}},
                "partition": {"scheme": "graphs"},
                "privacy": {"dp_sgd": {"enabled": True}},
            },
            "full-batch",
        ),
    ],
)
def test_sparse_features_are_refused_where_no_forward_would_use_them(sections, words):
    sections = {**sections, "train": {**sections.get("train", {}), "sparse_features": True}}
    with pytest.raises(ConfigError, match="train.sparse_features") as error:
        cfg_with(**sections)
    assert words in str(error.value) and "\n" not in str(error.value)
