"""Privacy noise that cannot be re-made: every draw from the OS CSPRNG, no seed on any privacy path.

The attack these tests close (a release re-made bit-exactly after searching torch's 2^32 CPU
seeds) needs the noise to be a function of a short seed. Here it is a function of fresh OS bytes only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fedalign.noise as noise_module
from fedalign.client import build_student
from fedalign.noise import NoiseSource, noise_source, seeded_noise
from fedalign.config import ConfigError, config_from_dict
from fedalign.privacy import StatisticsMechanism, keep_probability, randomised_response
from fedalign.seeds import derive_seed

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 2, "rounds": 2},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "output": {"progress": False, "plot": False},
}


class CountingBytes:
    """os.urandom, recording how many bytes each draw asked for."""

    def __init__(self, real):
        self.real, self.requests = real, []

    def __call__(self, n):
        self.requests.append(n)
        return self.real(n)


def test_every_draw_reads_fresh_os_entropy_and_nothing_else(monkeypatch):
    """All the randomness of a draw is OS bytes read for it: with os.urandom replaced by a constant
    the draws repeat exactly (no hidden torch or numpy state), and each draw reads >= 16 bytes
    (128 bits) -- in fact 8 bytes per uniform, 4 Gaussians per output coordinate."""
    counting = CountingBytes(noise_module.os.urandom)
    monkeypatch.setattr(noise_module.os, "urandom", counting)
    source = NoiseSource()
    first, second = source.normal((2, 50), 1.0), source.normal((2, 50), 1.0)
    assert not torch.equal(first, second)
    assert counting.requests == [8 * 4 * 100, 8 * 4 * 100]  # 400 Gaussians = 200 pairs = 400 uniforms each
    assert all(n >= 16 for n in counting.requests)
    monkeypatch.setattr(noise_module.os, "urandom", lambda n: bytes(range(256)) * (n // 256) + bytes(range(n % 256)))
    torch.manual_seed(0)
    a = NoiseSource().normal((3, 7), 2.0)
    torch.manual_seed(1)  # torch's (and numpy's) global state play no part
    np.random.seed(1)
    b = NoiseSource().normal((3, 7), 2.0)
    assert torch.equal(a, b)


def test_noise_does_not_depend_on_torch_or_numpy_seeds():
    torch.manual_seed(7)
    np.random.seed(7)
    a = NoiseSource().normal((1000,), 1.0)
    torch.manual_seed(7)
    np.random.seed(7)
    b = NoiseSource().normal((1000,), 1.0)
    assert not torch.equal(a, b)


def test_two_clients_and_two_rounds_get_unrelated_noise_that_no_small_seed_regenerates():
    """The attacker holds the config (seed, client, round): neither the config-derived seed, nor any of
    2^16 small seeds, through torch's CPU generator or the reproducible stream, re-makes a release's noise."""
    cfg = config_from_dict({**SMALL, "privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0}})
    mechanism = StatisticsMechanism(1.0, 1.0)
    zeros = [torch.zeros(64, dtype=torch.float64)]
    noises = {(c, r): mechanism.noisy_vector(zeros, noise_source(cfg, c, r, noise_module.STATISTICS_STREAM))[0]
              for c in (0, 1) for r in (1, 2)}
    values = list(noises.values())
    assert all(not torch.allclose(a, b) for i, a in enumerate(values) for b in values[i + 1:])
    for (client, round_number), noise in noises.items():
        derived = derive_seed(cfg.seed, client, round_number, noise_module.STATISTICS_STREAM)
        guesses = [seeded_noise(derived).normal((64,), 1.0),
                   torch.normal(0.0, 1.0, (64,), generator=torch.Generator().manual_seed(derived), dtype=torch.float64)]
        assert all(not torch.allclose(noise, g) for g in guesses)
    target = noises[(0, 1)][:4].float()
    generator = torch.Generator()
    for seed in range(2 ** 16):  # the start of the 32-bit space the old generator drew from
        generator.manual_seed(seed)
        assert not torch.equal(torch.randn(4, generator=generator), target)


def test_no_torch_generator_seed_on_any_privacy_path():
    """Static check beside the behavioural ones: the privacy code draws nothing from torch's RNGs."""
    privacy_paths = [*(ROOT / "fedalign" / "privacy").glob("*.py"), *(ROOT / "fedalign" / "client" / "release").glob("*.py"),
                     ROOT / "fedalign" / "noise.py", ROOT / "fedalign" / "client" / "local_data.py",
                     ROOT / "fedalign" / "client" / "training.py", ROOT / "fedalign" / "aggregation.py",
                     ROOT / "fedalign" / "server" / "fedavg.py", ROOT / "server" / "fedavg.py"]
    forbidden = re.compile(r"\.seed\(\)|torch\.Generator\(|manual_seed\(|torch\.(rand|randn|randint|normal|bernoulli|"
                           r"randperm|multinomial)\(|generator=")
    for path in privacy_paths:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may name what is not used
        assert not forbidden.search(code), f"{path.relative_to(ROOT)}: {forbidden.search(code).group(0)}"


def test_gaussians_have_the_configured_moments_and_tails():
    z = NoiseSource().standard_normal(200_000)
    assert z.dtype == torch.float64
    assert abs(float(z.mean())) < 4 / math.sqrt(200_000)
    assert float(z.std()) == pytest.approx(1.0, abs=0.01)
    assert float((z.abs() > 1.959964).double().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((z.abs() > 3).double().mean()) == pytest.approx(0.0027, abs=0.0006)
    scaled = NoiseSource().normal((4, 5), 3.0, dtype=torch.float32)
    assert scaled.shape == (4, 5) and scaled.dtype == torch.float32
    assert torch.equal(NoiseSource().normal((3,), 0.0), torch.zeros(3, dtype=torch.float64))


def test_randint_is_uniform_without_modulo_bias_and_bernoulli_has_its_rate():
    values = NoiseSource().randint(1, 8, (70_000,))
    counts = torch.bincount(values, minlength=8)
    assert counts[0] == 0 and int(counts.sum()) == 70_000
    assert float((counts[1:].double() / 10_000 - 1).abs().max()) < 0.05
    assert float(NoiseSource().bernoulli((100_000,), 0.3).double().mean()) == pytest.approx(0.3, abs=0.006)


@pytest.mark.parametrize("epsilon,num_classes", [(1.0, 4), (0.5, 8)])
def test_randomised_response_of_one_changed_label_stays_within_e_to_the_epsilon(epsilon, num_classes):
    """Neighbours: one training label y = 0 or y' = 1. Every output's probability under y and y', from the
    formula and measured on secure draws, and their ratio bounded by e^eps."""
    n = 120_000
    keep = keep_probability(epsilon, num_classes)
    expected = {y: [keep if o == y else (1 - keep) / (num_classes - 1) for o in range(num_classes)] for y in (0, 1)}
    assert max(a / b for a, b in zip(expected[0], expected[1])) == pytest.approx(math.exp(epsilon))
    for y in (0, 1):
        out = randomised_response(torch.full((n,), y), epsilon, num_classes, False, NoiseSource())
        measured = torch.bincount(out, minlength=num_classes).double() / n
        for o in range(num_classes):
            p = expected[y][o]
            assert float(measured[o]) == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))


def test_reproducible_noise_reports_infinite_epsilon_on_every_release(caplog):
    cfg = config_from_dict({**SMALL, "privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0,
                                                 "reproducible_noise": True, "free_initial_release": False}})
    student = build_student(cfg, 0)
    with caplog.at_level("WARNING", logger="fedalign"):
        epsilons = [student.release(r)[1]["epsilon"] for r in (0, 1, 2)]
    assert epsilons == [math.inf] * 3
    warnings = [r for r in caplog.records if "reproducible_noise" in r.getMessage()]
    assert len(warnings) == 3 and all("epsilon = inf" in r.getMessage() for r in warnings)
    assert 0 < student.release_policy.ledger.epsilon() < math.inf  # what the same noise would give were it secret


@pytest.mark.parametrize("privacy", [
    {"mechanism": "gaussian", "target_epsilon": 2.0},
    {"mechanism": "gaussian", "noise_multiplier": 1.0, "max_epsilon": 5.0},
    {"unit": "labels", "label_epsilon": 1.0},
])
def test_reproducible_noise_with_an_epsilon_target_needs_insecure_ok(privacy):
    with pytest.raises(ConfigError, match="privacy.reproducible_noise: .*insecure_ok"):
        config_from_dict({**SMALL, "privacy": {**privacy, "reproducible_noise": True}})
    cfg = config_from_dict({**SMALL, "privacy": {**privacy, "reproducible_noise": True, "insecure_ok": True}})
    assert cfg.privacy.insecure_ok
    config_from_dict({**SMALL, "privacy": privacy})  # secret noise: fine


def test_secure_aggregation_refuses_zero_colluders():
    secure = {"federation": {"num_clients": 4, "rounds": 2, "schedule": "simultaneous"},
              "privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0, "secure_aggregation": True,
                          "colluders": 0}}
    with pytest.raises(ConfigError, match="privacy.colluders: secure aggregation needs privacy.colluders >= 1"):
        config_from_dict({**SMALL, **secure})
    secure["privacy"]["colluders"] = 1
    config_from_dict({**SMALL, **secure})
