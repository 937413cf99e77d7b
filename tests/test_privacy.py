"""Tests for fedalign.privacy: statistics mechanism, ledger, per-graph DP-SGD."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv
from torch_geometric.utils import scatter

from fedalign.noise import NoiseSource, seeded_noise

from fedalign.privacy import (
    DPSGDTrainer,
    DPSGDUnsupported,
    PrivacyLedger,
    StatisticsMechanism,
    clip_to_norm,
    noise_multiplier_for_epsilon,
    per_graph_gradients,
    project_to_distributions,
    require_per_graph_samples,
)

# ---------------------------------------------------------------- helpers


def random_graph(num_nodes: int, num_edges: int, seed: int) -> tuple[torch.Tensor, int]:
    """A random edge_index [2, E] in which every node has at least one in-edge."""
    g = torch.Generator().manual_seed(seed)
    extra_src = torch.randint(0, num_nodes, (num_edges - num_nodes,), generator=g)
    extra_dst = torch.randint(0, num_nodes, (num_edges - num_nodes,), generator=g)
    src = torch.cat([torch.roll(torch.arange(num_nodes), 1), extra_src])
    dst = torch.cat([torch.arange(num_nodes), extra_dst])
    return torch.stack([src, dst]), num_nodes


def random_distributions(target: torch.Tensor, num_nodes: int, num_layers: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_layers):
        w = torch.rand(target.numel(), generator=g) + 0.01
        out.append(w / scatter(w, target, dim=0, dim_size=num_nodes, reduce="sum")[target])
    return out


def assert_valid_distributions(p: torch.Tensor, target: torch.Tensor, num_nodes: int) -> None:
    assert (p >= 0).all()
    sums = scatter(p, target, dim=0, dim_size=num_nodes, reduce="sum")
    has_edges = torch.bincount(target, minlength=num_nodes) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum())), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- mechanism


def test_clip_to_norm():
    v = torch.full((10,), 3.0)
    assert math.isclose(float(clip_to_norm(v, 1.0).norm()), 1.0, rel_tol=1e-6)
    small = torch.tensor([0.1, -0.2])
    torch.testing.assert_close(clip_to_norm(small, 1.0), small)
    assert float(clip_to_norm(torch.zeros(5), 1.0).abs().sum()) == 0.0


@pytest.mark.parametrize("scope", ["release", "layer"])
def test_clipped_norm_never_exceeds_bound(scope):
    edge_index, n = random_graph(30, 120, seed=0)
    g = torch.Generator().manual_seed(1)
    mech = StatisticsMechanism(clip_norm=0.5, noise_multiplier=1.0, clip_scope=scope, num_layers=3, nonnegative=False)
    for trial in range(5):
        stats = [torch.randn(edge_index.size(1), generator=g) * 10 ** trial for _ in range(3)]
        clipped = mech.clip(stats)
        assert clipped.shape == (3, edge_index.size(1))
        if scope == "release":
            assert float(clipped.norm()) <= 0.5 * (1 + 1e-5)
        else:
            assert (clipped.norm(dim=1) <= 0.5 * (1 + 1e-5)).all()
    tiny = [torch.full((edge_index.size(1),), 1e-4) for _ in range(3)]
    torch.testing.assert_close(mech.clip(tiny), torch.stack(tiny))  # already inside the ball: untouched


@pytest.mark.parametrize("scope", ["release", "layer"])
def test_noise_has_configured_std(scope):
    sigma, clip = 1.5, 0.7
    mech = StatisticsMechanism(clip, sigma, scope, num_layers=3)
    stats = [torch.zeros(4000) for _ in range(3)]
    noisy = mech.noisy_vector(stats, NoiseSource())
    assert noisy.shape == (3, 4000)
    assert abs(float(noisy.std()) / (sigma * clip) - 1) < 0.03
    assert abs(float(noisy.mean())) < 0.05 * sigma * clip


def test_sensitivity_and_effective_multiplier():
    release = StatisticsMechanism(0.5, 2.0, "release")
    assert release.sensitivity == pytest.approx(math.sqrt(2) * 0.5)  # sqrt(2) C: non-negative releases
    assert release.effective_noise_multiplier == pytest.approx(2.0 / math.sqrt(2))  # sigma / sqrt(2)
    layer = StatisticsMechanism(0.5, 2.0, "layer", num_layers=4)
    assert layer.sensitivity == pytest.approx(math.sqrt(2) * 0.5 * 2)  # sqrt(2) C sqrt(L)
    assert layer.effective_noise_multiplier == pytest.approx(2.0 / (math.sqrt(2) * 2))  # sigma / sqrt(2 L)
    signed = StatisticsMechanism(0.5, 2.0, "release", nonnegative=False)
    assert signed.sensitivity == pytest.approx(1.0) and signed.effective_noise_multiplier == pytest.approx(1.0)


def test_sqrt2_c_is_the_largest_distance_between_clipped_nonnegative_releases():
    """Hand computation: two non-negative vectors of norm C on disjoint supports are sqrt(2) C apart, and no
    pair of clipped non-negative releases is further apart (checked on random pairs)."""
    mech = StatisticsMechanism(0.7, 1.0, "release", num_layers=2)
    disjoint = mech.clip([torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])]) - \
        mech.clip([torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])])
    assert float(torch.linalg.vector_norm(disjoint)) == pytest.approx(math.sqrt(2) * 0.7)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        x = mech.clip([torch.rand(6, generator=generator) * 3 for _ in range(2)])
        y = mech.clip([torch.rand(6, generator=generator) ** 4 for _ in range(2)])
        assert float(torch.linalg.vector_norm(x - y)) <= mech.sensitivity + 1e-9
    with pytest.raises(ValueError, match="negative entries"):
        mech.clip([torch.tensor([0.5, -0.1, 0.0]), torch.zeros(3)])


def test_release_is_valid_distribution_per_target():
    edge_index, n = random_graph(40, 200, seed=3)
    target = edge_index[1]
    stats = random_distributions(target, n, 4, seed=4)
    mech = StatisticsMechanism(1.0, 3.0)  # heavy noise: many groups go entirely negative
    out = mech.release(stats, target, n, seeded_noise(5))
    assert len(out) == 4
    for p in out:
        assert p.shape == target.shape and p.dtype == torch.float32
        assert_valid_distributions(p, target, n)


def test_projection_handles_all_negative_group():
    target = torch.tensor([0, 0, 1, 1, 1, 2])
    values = torch.tensor([0.3, 0.1, -1.0, -0.5, -2.0, -0.1])
    p = project_to_distributions(values, target, num_nodes=4)  # node 3 has no in-edges
    torch.testing.assert_close(p, torch.tensor([0.75, 0.25, 1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert_valid_distributions(p, target, 4)


def test_release_is_deterministic_by_seed():
    edge_index, n = random_graph(20, 80, seed=6)
    stats = random_distributions(edge_index[1], n, 2, seed=7)
    mech = StatisticsMechanism(1.0, 0.5)
    a = mech.release(stats, edge_index[1], n, seeded_noise(11))
    b = mech.release(stats, edge_index[1], n, seeded_noise(11))
    c = mech.release(stats, edge_index[1], n, seeded_noise(12))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert any(not torch.equal(x, z) for x, z in zip(a, c))


def test_zero_noise_needs_the_explicit_clip_only_path():
    with pytest.raises(ValueError, match="clip_only=True"):
        StatisticsMechanism(1.0, 0.0)
    with pytest.raises(ValueError, match="noise_multiplier=0"):
        StatisticsMechanism(1.0, 1.0, clip_only=True)
    mech = StatisticsMechanism(0.1, 0.0, clip_only=True)
    assert mech.effective_noise_multiplier == 0.0
    edge_index, n = random_graph(15, 60, seed=8)
    stats = random_distributions(edge_index[1], n, 3, seed=9)
    # Clipping scales by a positive factor and renormalising undoes it: valid input comes back.
    for p, s in zip(mech.release(stats, edge_index[1], n, noise=None), stats):
        torch.testing.assert_close(p, s)
    ledger = PrivacyLedger()
    ledger.record(mech.effective_noise_multiplier)
    assert ledger.epsilon() == math.inf


def test_mechanism_rejects_bad_configuration():
    with pytest.raises(ValueError, match="num_layers"):
        StatisticsMechanism(1.0, 1.0, "layer")
    with pytest.raises(ValueError, match="clip_scope"):
        StatisticsMechanism(1.0, 1.0, "edge")
    with pytest.raises(ValueError, match="clip_norm"):
        StatisticsMechanism(math.inf, 1.0)
    mech = StatisticsMechanism(1.0, 1.0, num_layers=2)
    with pytest.raises(ValueError, match="num_layers=2"):
        mech.clip([torch.ones(5)] * 3)
    with pytest.raises(ValueError, match="noise source"):
        mech.noisy_vector([torch.ones(5)] * 2, None)
    with pytest.raises(ValueError, match="edges"):
        mech.release([torch.ones(5)] * 2, torch.zeros(4, dtype=torch.long), 1, NoiseSource())


def test_for_budget_reaches_target():
    mech = StatisticsMechanism.for_budget(4.0, 1e-5, releases=20, clip_norm=0.3, clip_scope="layer", num_layers=4)
    ledger = PrivacyLedger()
    ledger.record(mech.effective_noise_multiplier, steps=20)
    assert 4.0 - 0.02 <= ledger.epsilon() <= 4.0
    assert mech.noise_multiplier == pytest.approx(mech.effective_noise_multiplier * math.sqrt(2) * 2)
    assert StatisticsMechanism.for_budget(math.inf, 1e-5, 20, clip_norm=0.3).clip_only


# ---------------------------------------------------------------- accounting


def test_the_default_accountant_is_prv_in_the_library_and_the_config():
    from fedalign.config.sections import PrivacyConfig
    from fedalign.privacy.accounting import DEFAULT_ACCOUNTANT

    assert DEFAULT_ACCOUNTANT == PrivacyConfig().accountant == PrivacyLedger().accountant == "prv"


def test_known_values_rdp_and_prv():
    rdp = PrivacyLedger("rdp", 1e-5)
    for _ in range(50):
        rdp.record(5.0)
    assert rdp.releases == 50
    assert rdp.epsilon() == pytest.approx(7.08, abs=0.01)
    prv = PrivacyLedger("prv", 1e-5)
    prv.record(5.0, sample_rate=1.0, steps=50)
    assert prv.epsilon() == pytest.approx(6.58, abs=0.01)


def test_epsilon_grows_with_releases_and_shrinks_with_noise():
    assert PrivacyLedger().epsilon() == 0.0
    eps = []
    for releases in (1, 10, 100):
        ledger = PrivacyLedger()
        ledger.record(2.0, steps=releases)
        eps.append(ledger.epsilon())
    assert eps[0] < eps[1] < eps[2]
    by_sigma = []
    for sigma in (1.0, 2.0, 4.0):
        ledger = PrivacyLedger()
        ledger.record(sigma, steps=10)
        by_sigma.append(ledger.epsilon())
    assert by_sigma[0] > by_sigma[1] > by_sigma[2]
    subsampled = PrivacyLedger()
    subsampled.record(2.0, sample_rate=0.1, steps=10)
    assert subsampled.epsilon() < by_sigma[1]


def test_zero_noise_record_is_infinite():
    ledger = PrivacyLedger()
    ledger.record(3.0)
    assert ledger.epsilon_if(0.0) == math.inf
    ledger.record(0.0)
    assert ledger.epsilon() == math.inf


def test_epsilon_if_does_not_record():
    ledger = PrivacyLedger()
    ledger.record(3.0, steps=5)
    before = ledger.epsilon()
    predicted = ledger.epsilon_if(2.0, sample_rate=0.5, steps=3)
    assert ledger.epsilon() == before and ledger.releases == 5
    ledger.record(2.0, sample_rate=0.5, steps=3)
    assert ledger.epsilon() == pytest.approx(predicted)


def test_state_dict_round_trip():
    ledger = PrivacyLedger("rdp", 1e-6)
    ledger.record(3.0, steps=4)
    ledger.record(1.5, sample_rate=0.2, steps=7)
    ledger.record(1.5, sample_rate=0.2)
    state = json.loads(json.dumps(ledger.state_dict()))
    assert state["history"] == [[3.0, 1.0, 4], [1.5, 0.2, 8]]
    restored = PrivacyLedger("rdp", 1e-6)
    restored.load_state_dict(state)
    assert restored.epsilon() == ledger.epsilon() and restored.releases == 12
    with pytest.raises(ValueError, match="accountant"):
        PrivacyLedger("prv", 1e-6).load_state_dict(state)


def test_noise_multiplier_for_epsilon():
    sigma = noise_multiplier_for_epsilon(7.08, 1e-5, releases=50, accountant="rdp")
    assert sigma == pytest.approx(5.0, abs=0.02)
    assert noise_multiplier_for_epsilon(6.58, 1e-5, releases=50) == pytest.approx(5.0, abs=0.02)  # PRV: the default
    assert noise_multiplier_for_epsilon(math.inf, 1e-5, releases=50) == 0.0
    with pytest.raises(ValueError, match="accountant"):
        noise_multiplier_for_epsilon(1.0, 1e-5, 10, accountant="gdp")


# ---------------------------------------------------------------- DP-SGD


class TinyGCN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = GCNConv(4, 8)
        self.conv2 = GCNConv(8, 3)

    def forward(self, x, edge_index):
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)


def summed_loss(model: nn.Module, graph: Data) -> torch.Tensor:
    return nn.functional.cross_entropy(model(graph.x, graph.edge_index), graph.y, reduction="sum")


def make_graphs(count: int) -> list[Data]:
    g = torch.Generator().manual_seed(0)
    graphs = []
    for i in range(count):
        n = 5 + 3 * i
        edge_index, _ = random_graph(n, 3 * n, seed=100 + i)
        graphs.append(Data(x=torch.randn(n, 4, generator=g), edge_index=edge_index,
                           y=torch.randint(0, 3, (n,), generator=g)))
    return graphs


def make_model() -> TinyGCN:
    torch.manual_seed(0)
    return TinyGCN()


def test_per_graph_gradients_match_independent_backward():
    model, graphs = make_model(), make_graphs(4)
    grads = per_graph_gradients(model, graphs, summed_loss)
    params = dict(model.named_parameters())
    assert set(grads) == set(params)
    for name, g in grads.items():
        assert g.shape == (4, *params[name].shape)
    for i, graph in enumerate(graphs):
        model.zero_grad()
        summed_loss(model, graph).backward()
        for name, p in params.items():
            torch.testing.assert_close(grads[name][i], p.grad, atol=1e-5, rtol=1e-5)
    model.zero_grad()
    batch = Batch.from_data_list(graphs)
    summed_loss(model, batch).backward()
    for name, p in params.items():
        torch.testing.assert_close(grads[name].sum(0), p.grad, atol=1e-5, rtol=1e-5)
    empty = per_graph_gradients(model, [], summed_loss)
    assert all(g.shape == (0, *params[name].shape) for name, g in empty.items())


def make_trainer(model, *, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=1e6, lr=0.1, ledger=None):
    return DPSGDTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        summed_loss,
        num_graphs=4,
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        noise=seeded_noise(0),
        ledger=ledger if ledger is not None else PrivacyLedger(),
        clip_only=noise_multiplier == 0.0,
    )


def test_noiseless_unclipped_step_equals_plain_sgd_on_mean_loss():
    graphs = make_graphs(4)
    dp_model, plain_model = make_model(), make_model()
    trainer = make_trainer(dp_model)
    loss = trainer.step(graphs)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.1)
    mean_loss = torch.stack([summed_loss(plain_model, g) for g in graphs]).mean()
    mean_loss.backward()
    plain_opt.step()
    assert loss == pytest.approx(float(mean_loss.detach()), rel=1e-5)
    for p, q in zip(dp_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def test_clipping_bounds_each_graph_gradient():
    graphs, model = make_graphs(4), make_model()
    max_norm = 0.5
    grads = per_graph_gradients(model, graphs, summed_loss)
    norms = torch.stack([g.reshape(4, -1).norm(dim=1) for g in grads.values()], dim=1).norm(dim=1)
    assert (norms > max_norm).all()  # the bound is active for every graph
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    assert (norms * factor <= max_norm).all()
    trainer = make_trainer(model, max_grad_norm=max_norm)
    trainer.step(graphs)
    for name, p in model.named_parameters():
        expected = torch.einsum("i,i...", factor, grads[name]) / 4  # mean over the expected batch of 4
        torch.testing.assert_close(p.grad, expected, atol=1e-6, rtol=1e-5)
    total = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.parameters()))
    assert total <= max_norm * (1 + 1e-5)  # mean of 4 clipped gradients


def test_empty_poisson_batch_steps_and_is_recorded():
    graphs = make_graphs(4)
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    ledger = PrivacyLedger()
    trainer = make_trainer(model, sample_rate=1e-9, noise_multiplier=1.0, ledger=ledger)
    assert trainer.sample_batch() == []
    assert math.isnan(trainer.step(graphs))
    assert ledger.releases == 1 and ledger.state_dict()["history"] == [[1.0, 1e-9, 1]]
    changed = [not torch.equal(p, b) for p, b in zip(model.parameters(), before)]
    assert all(changed) and all(torch.isfinite(p).all() for p in model.parameters())  # noise only

    quiet = make_model()
    make_trainer(quiet, sample_rate=1e-9).step(graphs)
    for p, b in zip(quiet.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=0)


def test_trainer_records_every_step():
    ledger = PrivacyLedger()
    trainer = make_trainer(make_model(), sample_rate=0.5, noise_multiplier=1.2, max_grad_norm=1.0, ledger=ledger)
    graphs = make_graphs(4)
    for _ in range(3):
        trainer.step(graphs)
    assert ledger.state_dict()["history"] == [[1.2, 0.5, 3]]
    assert 0 < ledger.epsilon() < math.inf
    with pytest.raises(ValueError, match="clip_only"):
        DPSGDTrainer(make_model(), torch.optim.SGD(make_model().parameters(), lr=0.1), summed_loss,
                     num_graphs=4, sample_rate=0.5, noise_multiplier=0.0, max_grad_norm=1.0,
                     noise=NoiseSource(), ledger=PrivacyLedger())


def test_single_graph_dp_sgd_is_unsupported():
    with pytest.raises(DPSGDUnsupported, match="privacy.dp_sgd") as info:
        require_per_graph_samples(1, transductive=True)
    assert "statistics mechanism" in str(info.value) and "multi-graph" in str(info.value)
    with pytest.raises(DPSGDUnsupported):
        require_per_graph_samples(1, transductive=False)
    require_per_graph_samples(20, transductive=False)
    assert issubclass(DPSGDUnsupported, ValueError)
