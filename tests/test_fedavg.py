"""The weight-averaging reference arms, align.strategy fedavg and dp-fedavg: arithmetic, privacy, both engines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedalign.client import build_student
from fedalign.client.weights import get_weights, set_weights, train_update
from fedalign.config import config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.privacy.fedavg import WeightPrivacy, dp_fedavg_noise_multiplier
from fedalign.server.fedavg import Averaging, clip_update, mean_update, noise_std, update_norm

from loopback import LoopbackGrid


def config(strategy: str = "fedavg", rounds: int = 2, **privacy):
    """Three clients with disjoint data (their updates differ), a tiny GCN, two local epochs."""
    return config_from_dict({
        "name": strategy, "seed": 3,
        "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
        "partition": {"scheme": "iid", "public_fraction": 0.1},
        "federation": {"num_clients": 3, "rounds": rounds, "schedule": "simultaneous"},
        "model": {"hidden_layers": 2, "hidden_dim": 8}, "align": {"strategy": strategy},
        "train": {"local_epochs": 2}, "privacy": privacy, "output": {"progress": False, "plot": False},
    })


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


# ------------------------------------------------------------ FedAvg: the mean of the updates


def test_a_client_update_is_its_trained_weights_minus_the_global_ones():
    cfg = config()
    student = build_student(cfg, 1)
    start = [w + 0.01 for w in get_weights(student)]
    update, metrics = train_update(student, start, 1)
    trained = get_weights(student)
    assert all(np.allclose(u, t - s, atol=1e-7) for u, t, s in zip(update, trained, start))
    assert update_norm(update) > 0 and {"task_loss", "val_metric", "test_metric"} <= set(metrics)
    assert "align_loss" not in metrics  # task loss only


def test_fedavg_equals_the_hand_averaged_model(tmp_path):
    """Two rounds by hand -- every client trains from the same global weights, the mean of the updates is
    added -- give the metrics the in-process run logs, and its aggregation the same weights."""
    cfg = config("fedavg", rounds=2)
    students = [build_student(cfg, k) for k in range(3)]
    initial = get_weights(students[0])
    assert all(np.array_equal(a, b) for s in students[1:] for a, b in zip(initial, get_weights(s)))  # shared init
    global_weights, logged = initial, {}
    for r in (1, 2):
        updates = []
        for k, student in enumerate(students):
            update, metrics = train_update(student, global_weights, r)
            updates.append(update)
            logged[(r, k)] = metrics
        by_hand = [g + (u0 + u1 + u2) / 3 for g, u0, u1, u2 in zip(global_weights, *updates)]
        averaged = Averaging(3)(global_weights, updates, r)
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(averaged, by_hand))
        global_weights = by_hand
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    for row in rows(run_dir):
        expected = logged[(row["round"], row["client"])]
        for key in ("task_loss", "val_metric", "test_metric", "val_loss"):
            assert row[key] == pytest.approx(expected[key], abs=1e-5), (key, row)
    assert summary["status"] == "finished" and summary["mean_test_at_best_val"] is not None
    assert "epsilon" not in summary  # fedavg adds no noise and accounts nothing


def test_the_run_folder_says_that_weights_left_the_clients(tmp_path):
    run_dir, summary = run_inprocess(config("fedavg", rounds=1), tmp_path / "run")
    assert summary["shared"] == "weights" and "Model weights left the clients" in summary["shared_note"]
    assert all(row["shared"] == "weights" and row["bytes_sent"] > 0 for row in rows(run_dir))
    assert len(rows(run_dir)) == 3  # every client every round, no round 0


# ------------------------------------------------------------ Flower's FedAvg and DP wrapper


@pytest.mark.parametrize("privacy", [{}, {"noise_multiplier": 0.8, "clip_norm": 0.05, "reproducible_noise": True}],
                         ids=["fedavg", "dp-fedavg-seeded"])
def test_the_flower_path_matches_the_in_process_engine(tmp_path, flower_task_identity, privacy):
    """Flower's FedAvg (in its DP wrapper for dp-fedavg) through the real ClientApp logs what the in-process
    engine logs; with seeded noise both draw the same noise (in the same order), so they agree too."""
    from server.server_app import serve

    cfg = config("dp-fedavg" if privacy else "fedavg", rounds=3, **privacy)
    flower_dir, flower = serve(LoopbackGrid(3, tmp_path / "state"), cfg, tmp_path / "flower")
    local_dir, local = run_inprocess(cfg, tmp_path / "inprocess")
    assert flower["engine"] == "flower" and flower["shared"] == local["shared"] == "weights"
    f_rows, l_rows = rows(flower_dir), rows(local_dir)
    assert len(f_rows) == len(l_rows) == 9
    for f, l in zip(f_rows, l_rows):
        assert (f["round"], f["client"], f["status"], f["bytes_sent"]) == (l["round"], l["client"], l["status"],
                                                                           l["bytes_sent"])
        for key in ("task_loss", "val_metric", "test_metric", "val_loss", "epsilon"):
            if key in l:
                assert f[key] == pytest.approx(l[key], abs=1e-4), (key, f, l)
    assert flower["mean_test_at_best_val"] == pytest.approx(local["mean_test_at_best_val"], abs=1e-4)


def test_flowers_dp_wrapper_is_used_with_fedalign_noise():
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.supercore.differential_privacy import compute_stdv
    from flwr.app import Array, ArrayRecord

    from server.fedavg import SecureNoiseDP, UniformFedAvg, WeightLog, strategy_for

    cfg = config("dp-fedavg", noise_multiplier=1.3, clip_norm=0.7)
    drawn = []

    class Recorded(WeightPrivacy):
        def noise(self, round_number):
            def draw(shape, std):
                drawn.append(std)
                return np.zeros(shape)
            return draw

    privacy = Recorded(cfg)
    strategy = strategy_for(cfg, privacy, WeightLog(cfg, privacy, []))
    assert isinstance(strategy, DifferentialPrivacyServerSideFixedClipping) and isinstance(strategy, SecureNoiseDP)
    assert isinstance(strategy.strategy, FedAvg) and isinstance(strategy.strategy, UniformFedAvg)
    assert (strategy.noise_multiplier, strategy.clipping_norm, strategy.num_sampled_clients) == (1.3, 0.7, 3)
    strategy._add_noise_to_aggregated_arrays(ArrayRecord({"a": Array(np.ones((2, 2), np.float32))}))
    assert drawn == [compute_stdv(1.3, 0.7, 3)]
    assert isinstance(strategy_for(config(), WeightPrivacy(config()), None), UniformFedAvg)


@pytest.mark.slow
def test_flower_simulation_matches_the_in_process_engine(tmp_path):
    from fedalign_flower.runtime import run_flower_simulation

    cfg = config("fedavg", rounds=2)
    flower_dir, flower = run_flower_simulation(cfg, tmp_path / "flower")
    local_dir, local = run_inprocess(cfg, tmp_path / "inprocess")
    for f, l in zip(rows(flower_dir), rows(local_dir)):
        assert (f["round"], f["client"]) == (l["round"], l["client"])
        assert f["val_metric"] == pytest.approx(l["val_metric"], abs=1e-4)
        assert f["task_loss"] == pytest.approx(l["task_loss"], abs=1e-4)
    assert flower["shared"] == "weights"


# ------------------------------------------------------------ DP-FedAvg: clipping, noise, accounting


def test_dp_fedavg_noise_std_is_flowers_compute_stdv():
    from flwr.supercore.differential_privacy import compute_stdv

    stds = []

    def noise(round_number):
        def draw(shape, std):
            stds.append(std)
            return np.zeros(shape)
        return draw

    updates = [[np.full((3, 2), 0.1)], [np.full((3, 2), -0.2)], [np.zeros((3, 2))], [np.ones((3, 2))]]
    Averaging(4, clip_norm=0.5, noise_multiplier=1.7, noise=noise)([np.zeros((3, 2))], updates, 1)
    assert stds == [compute_stdv(1.7, 0.5, 4)] and noise_std(1.7, 0.5, 4) == pytest.approx(1.7 * 0.5 / 4)


def test_dp_fedavg_noise_comes_from_the_noise_source_at_that_std():
    cfg = config("dp-fedavg", noise_multiplier=2.0, clip_norm=0.3)
    averaging = Averaging(3, 0.3, 2.0, WeightPrivacy(cfg).noise)
    zero = [np.zeros(60_000, dtype=np.float32)]
    after = averaging(zero, [zero, zero, zero], 1)[0]
    assert np.std(after) == pytest.approx(2.0 * 0.3 / 3, rel=0.02) and abs(np.mean(after)) < 0.01
    assert not np.array_equal(after, averaging(zero, [zero, zero, zero], 1)[0])  # the OS CSPRNG: never the same
    seeded = WeightPrivacy(config("dp-fedavg", noise_multiplier=2.0, reproducible_noise=True))
    assert np.array_equal(seeded.noise(5)((4,), 1.0), seeded.noise(5)((4,), 1.0))


def test_a_huge_update_is_clipped_to_the_clip_norm():
    from flwr.supercore.differential_privacy import compute_clip_model_update

    huge = [np.full((10, 4), 1e6), np.full(7, -3e5)]
    clipped = clip_update(huge, 0.25)
    assert update_norm(clipped) == pytest.approx(0.25)
    assert len({round(float(r), 12) for c, h in zip(clipped, huge) for r in np.unique(c / h)}) == 1  # one scale for all
    flower = [h.copy() for h in huge]
    compute_clip_model_update(flower, [np.zeros_like(h) for h in huge], 0.25)  # Flower's clipping, in place
    assert all(np.allclose(a, b) for a, b in zip(clipped, flower))
    small = [np.full(3, 0.01)]
    assert np.array_equal(clip_update(small, 0.25)[0], small[0])  # inside the ball: unchanged
    moved = Averaging(1, clip_norm=0.25)([np.zeros((10, 4)), np.zeros(7)], [huge], 1)
    assert update_norm(moved) == pytest.approx(0.25, rel=1e-6)
    assert mean_update([[np.ones(2)], [np.zeros(2)]])[0].tolist() == [0.5, 0.5]  # uniform, unweighted


def test_a_dp_round_with_fewer_replies_than_asked_keeps_the_global_model():
    start = [np.ones(3, dtype=np.float32)]
    assert np.array_equal(Averaging(3, 1.0, 1.0, None)(start, [[np.ones(3)]], 1)[0], start[0])


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_equals_opacus_accountant_run_directly(accountant):
    from opacus.accountants import PRVAccountant, RDPAccountant

    z, rounds, delta = 1.1, 5, 1e-5
    cfg = config("dp-fedavg", rounds=rounds, noise_multiplier=z, accountant=accountant, delta=delta)
    opacus = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]()
    for _ in range(rounds):
        opacus.step(noise_multiplier=z, sample_rate=1.0)
    with np.errstate(divide="ignore"):
        expected = opacus.get_epsilon(delta=delta)
    assert WeightPrivacy(cfg).epsilon_after(rounds) == pytest.approx(expected, rel=1e-6)
    assert WeightPrivacy(cfg).epsilon_after(0) == 0.0


def test_target_epsilon_solves_z_for_the_runs_rounds():
    cfg = config("dp-fedavg", rounds=4, target_epsilon=3.0, accountant="rdp")
    z = dp_fedavg_noise_multiplier(cfg)
    spent = WeightPrivacy(cfg).epsilon_after(4)
    assert z > 0 and 2.98 <= spent <= 3.0


def test_dp_fedavg_run_reports_the_same_epsilon_for_every_client(tmp_path):
    cfg = config("dp-fedavg", rounds=2, noise_multiplier=1.5, clip_norm=0.1, accountant="rdp")
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    expected = WeightPrivacy(cfg).epsilon_after(2)
    assert summary["epsilon"] == pytest.approx(expected)
    assert {summary["clients"][c]["epsilon"] for c in "012"} == {summary["epsilon"]}
    assert [row["epsilon"] for row in rows(run_dir) if row["round"] == 1] == [WeightPrivacy(cfg).epsilon_after(1)] * 3
    assert summary["noise_multiplier"] == 1.5 and summary["clip_norm"] == 0.1
    seeded = config("dp-fedavg", rounds=1, noise_multiplier=1.5, reproducible_noise=True)
    assert run_inprocess(seeded, tmp_path / "seeded")[1]["epsilon"] == math.inf


def test_set_weights_refuses_another_network():
    student = build_student(config(), 0)
    with pytest.raises(ValueError, match="do not fit"):
        set_weights(student, [np.zeros(3)])


# ------------------------------------------------------------ fedalign check


@pytest.mark.parametrize("overrides, words", [
    (["align.strategy=fedavg", "privacy.mechanism=gaussian", "privacy.noise_multiplier=1"],
     "privacy.mechanism: align.strategy fedavg sends model weights"),
    (["align.strategy=dp-fedavg"], "privacy.noise_multiplier: dp-fedavg needs exactly one of"),
])
def test_fedalign_check_refuses_with_one_line(capsys, overrides, words):
    from fedalign_flower.cli import main

    code = main(["check", "simulations/quickstart.yaml", "--set", "federation.schedule=simultaneous",
                 *[a for o in overrides for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
