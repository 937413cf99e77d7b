"""More signal per unit of privacy: a free data-free round 0, fewer releases, the uniform baseline subtracted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fedalign.client import build_student
from fedalign.noise import NoiseSource, seeded_noise
from fedalign.config import config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.privacy import PrivacyLedger, StatisticsMechanism, noise_multiplier_for_epsilon
from fedalign.privacy.mechanism import project_to_distributions, uniform_baseline
from fedalign.schedules import planned_releases, turns

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 2, "rounds": 8},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "output": {"progress": False, "plot": False},
}


def cfg_of(**privacy):
    return config_from_dict({**SMALL, "privacy": {"mechanism": "gaussian", **privacy}})


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def test_round_zero_on_a_public_graph_is_exact_and_free(tmp_path):
    cfg = cfg_of(noise_multiplier=2.0)
    student = build_student(cfg, 0)
    stats, metrics = student.release(0)
    assert metrics == {"epsilon": 0.0, "withheld": 0.0} and student.release_policy.ledger.releases == 0
    for sent, raw in zip(stats, student.statistics()):
        np.testing.assert_array_equal(sent, raw)
    assert planned_releases(cfg, 0) == turns(cfg, 0) == 4
    replicate = config_from_dict({**SMALL, "partition": {"scheme": "replicate"},
                                  "privacy": {"mechanism": "gaussian", "noise_multiplier": 2.0}})
    assert planned_releases(replicate, 0) == 1 + 4  # its alignment graph is private: round 0 is charged
    run_dir, _ = run_inprocess(cfg, tmp_path / "run")
    ledger = PrivacyLedger("prv", 1e-5)
    for row in (r for r in rows_of(run_dir) if r["client"] == 0):
        if row["round"] > 0:
            ledger.record(2.0 / math.sqrt(2))
        assert row["epsilon"] == pytest.approx(ledger.epsilon())


def test_release_every_k_turns_withholds_the_others_and_plans_fewer_releases(tmp_path):
    cfg = cfg_of(target_epsilon=4.0, release_every=2)
    assert planned_releases(cfg, 0) == 2  # turns 2 and 4 of 4
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    client0 = [r for r in rows_of(run_dir) if r["client"] == 0 and r["round"] > 0]
    assert [r["status"] for r in client0] == ["withheld", "ok", "withheld", "ok"]
    z = noise_multiplier_for_epsilon(4.0, 1e-5, 2, accountant="prv")
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(z, steps=2)
    assert summary["clients"]["0"]["epsilon"] == pytest.approx(ledger.epsilon()) and ledger.epsilon() <= 4.0
    fewer = cfg_of(target_epsilon=4.0).privacy  # the same budget over 4 releases needs more noise per release
    assert noise_multiplier_for_epsilon(4.0, 1e-5, 2) < noise_multiplier_for_epsilon(fewer.target_epsilon, 1e-5, 4)


def test_baseline_subtraction_against_a_hand_computation():
    # node 0 has in-edges from 1, 2, 3 (baseline 1/3 each); node 1 from 0 (baseline 1)
    target = torch.tensor([0, 0, 0, 1])
    p = torch.tensor([0.6, 0.3, 0.1, 1.0], dtype=torch.float64)
    baseline = uniform_baseline(target, 2)
    assert torch.allclose(baseline, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    mech = StatisticsMechanism(0.1, 1.5, "release", num_layers=1, centre=True)
    assert mech.sensitivity == pytest.approx(2 * 0.1)  # signed after centring: 2 C
    centred = p - baseline  # [0.2667, -0.0333, -0.2333, 0]: what is clipped
    norm = float(torch.linalg.vector_norm(centred))
    noise = seeded_noise(5).normal((1, 4), 1.5 * 0.1)
    expected = project_to_distributions(centred * (0.1 / norm) + noise[0] + baseline, target, 2)
    (released,) = mech.release([p], target, 2, seeded_noise(5))
    assert torch.allclose(released, expected)
    # the share of the clipped norm that differs from the public uniform baseline: all of it when centred,
    # ||p - b|| / ||p|| = 0.356 / 1.208 = 0.29 without (the rest is spent on what everyone knows)
    plain = StatisticsMechanism(0.1, 1.5, "release", num_layers=1).clip([p])[0]
    scale = float(torch.linalg.vector_norm(plain)) / float(torch.linalg.vector_norm(p))
    share = float(torch.linalg.vector_norm(plain - scale * baseline)) / 0.1
    assert share == pytest.approx(float(torch.linalg.vector_norm(p - baseline) / torch.linalg.vector_norm(p)))
    assert share == pytest.approx(0.2945, abs=1e-3)
    assert float(torch.linalg.vector_norm(mech.clip([centred])[0])) == pytest.approx(0.1)


# ---------------------------------------------------------------- label-level DP


@pytest.mark.parametrize("epsilon,num_classes", [(0.5, 4), (2.0, 8), (1.0, 2)])
def test_randomised_response_flip_rates_match_the_formula(epsilon, num_classes):
    from fedalign.privacy import keep_probability, randomised_response

    n = 200_000
    y = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(0))
    out = randomised_response(y, epsilon, num_classes, False, NoiseSource())
    keep = math.exp(epsilon) / (math.exp(epsilon) + num_classes - 1)
    assert keep_probability(epsilon, num_classes) == pytest.approx(keep)
    assert float((out == y).float().mean()) == pytest.approx(keep, abs=4 * math.sqrt(keep * (1 - keep) / n))
    changed = out[out != y]  # a changed label is any other class, uniformly
    moved = ((changed - y[out != y]) % num_classes).bincount(minlength=num_classes)[1:].float()
    assert float(moved.max() - moved.min()) / float(moved.mean()) < 0.05
    multi = torch.randint(0, 2, (n, 3), generator=torch.Generator().manual_seed(2)).float()
    flipped = randomised_response(multi, epsilon, 3, True, NoiseSource())
    assert float((flipped != multi).float().mean()) == pytest.approx(1 / (1 + math.exp(epsilon)), abs=0.005)


def test_label_dp_randomises_training_labels_once_and_keeps_everything_else(tmp_path):
    cfg = config_from_dict({**SMALL, "partition": {"scheme": "replicate"}, "federation": {"rounds": 2},
                            "privacy": {"unit": "labels", "label_epsilon": 1.0}})
    student = build_student(cfg, 0)
    shared = build_student(cfg, 1).val_split.graph  # the data every client shares in one process
    clean = shared.y[student.train_split.mask]
    noisy = student.train_split.graph.y[student.train_split.mask]
    assert 0 < int((noisy != clean).sum()) < len(clean)  # some, not all, training labels changed
    assert torch.equal(student.train_split.graph.y[~student.train_split.mask], shared.y[~student.train_split.mask])
    assert student.val_split.graph.y is shared.y  # validation and test labels are the true ones
    stats, metrics = student.release(0)
    assert metrics == {"epsilon": 1.0, "withheld": 0.0}
    restored = build_student(cfg, 0)
    restored.load_state_dict(student.state_dict())  # a checkpoint keeps the one draw
    assert torch.equal(restored.train_split.graph.y, student.train_split.graph.y)
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    assert all(set(r) & {"val_metric", "task_loss"} == set() for r in rows_of(run_dir))
    assert summary["metrics_source"].startswith("client evaluation logs") and summary["epsilon"] == 1.0
    with pytest.raises(Exception, match="privacy.label_epsilon"):
        config_from_dict({**SMALL, "privacy": {"label_epsilon": 1.0}})
