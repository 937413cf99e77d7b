"""Differential privacy wired into the run: config, releases, ledgers, budgets, DP-SGD, checkpoints."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedalign.config import ConfigError, config_from_dict
from fedalign.schedules import planned_releases
from fedalign.inprocess import InProcessTransport
from fedalign.schedules import trainers_for_round
from fedalign.server import Coordinator
from fedalign.outputs import ProgressPrinter
from fedalign.privacy import PrivacyLedger, StatisticsMechanism, noise_multiplier_for_epsilon
from fedalign.inprocess import run_inprocess
from fedalign.runner import run_experiment
from fedalign.client import build_student
from fedalign.client.training import task_loss
from fedalign.seeds import derive_seed
from fedalign.noise import seeded_noise

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 2, "rounds": 4},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "output": {"progress": False, "plot": False},
}
PPI = {
    "data": {"name": "synthetic-ppi", "synthetic": {"num_graphs": 12, "min_nodes": 30, "max_nodes": 40}},
    "partition": {"scheme": "graphs", "public_fraction": 0.2},
    "federation": {"num_clients": 2, "rounds": 2},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "output": {"progress": False, "plot": False},
}


def config(base=SMALL, **sections):
    """The tests here check the accounting of every release, round 0's included: they charge it
    (``free_initial_release: false``; its default is tested in test_privacy_leaks_and_budgets.py)."""
    raw = json.loads(json.dumps(base))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    if raw.get("privacy", {}).get("mechanism") == "gaussian":
        raw["privacy"].setdefault("free_initial_release", False)
    return config_from_dict(raw)


def read_rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def assert_distributions(stats, edge_index, num_nodes):
    target = edge_index[1].numpy()
    has_in = np.bincount(target, minlength=num_nodes) > 0
    for s in stats:
        assert s.dtype == np.float32 and (s >= 0).all()
        sums = np.zeros(num_nodes)
        np.add.at(sums, target, s)
        np.testing.assert_allclose(sums[has_in], 1.0, rtol=1e-5)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("privacy,key,words", [
    ({"mechanism": "gaussian", "noise_multiplier": -1.0}, "privacy.noise_multiplier", ">= 0"),
    ({"mechanism": "gaussian", "target_epsilon": 0}, "privacy.target_epsilon", "> 0"),
    ({"mechanism": "gaussian", "target_epsilon": -2}, "privacy.target_epsilon", "> 0"),
    ({"mechanism": "gaussian", "target_epsilon": 1, "delta": 0}, "privacy.delta", "(0, 1)"),
    ({"mechanism": "gaussian", "target_epsilon": 1, "delta": 1.0}, "privacy.delta", "(0, 1)"),
    ({"mechanism": "gaussian", "target_epsilon": 1, "clip_norm": 0}, "privacy.clip_norm", "> 0"),
    ({"mechanism": "gaussian"}, "privacy.noise_multiplier", "exactly one of"),
    ({"mechanism": "gaussian", "noise_multiplier": 1.0, "target_epsilon": 1.0}, "privacy.noise_multiplier",
     "exactly one of"),
    ({"mechanism": "gaussian", "target_epsilon": 1, "max_epsilon": 0}, "privacy.max_epsilon", "> 0"),
    ({"target_epsilon": 1.0}, "privacy.target_epsilon", "mechanism is 'none'"),
    ({"max_epsilon": 1.0}, "privacy.max_epsilon", "mechanism is 'none'"),
    ({"mechanism": "laplace"}, "privacy.mechanism", "must be one of"),
    ({"accountant": "moments"}, "privacy.accountant", "must be one of"),
    ({"clip_scope": "edge"}, "privacy.clip_scope", "must be one of"),
    ({"dp_sgd": {"sample_rate": 0}}, "privacy.dp_sgd.sample_rate", "(0, 1]"),
    ({"dp_sgd": {"sample_rate": 1.5}}, "privacy.dp_sgd.sample_rate", "(0, 1]"),
    ({"dp_sgd": {"max_grad_norm": 0}}, "privacy.dp_sgd.max_grad_norm", "> 0"),
    ({"dp_sgd": {"noise_multiplier": -0.5}}, "privacy.dp_sgd.noise_multiplier", ">= 0"),
    ({"dp_sgd": {"enabled": True}}, "privacy.dp_sgd", "multi-graph dataset"),
    ({"dp_sgd": {"enable": True}}, "privacy.dp_sgd.enable", "unknown key"),
])
def test_bad_privacy_configs_fail_naming_the_key(privacy, key, words):
    with pytest.raises(ConfigError) as err:
        config(privacy=privacy)
    assert str(err.value).startswith(key + ":") and words in str(err.value)


def test_dp_sgd_single_graph_message_explains_why():
    with pytest.raises(ConfigError) as err:
        config(privacy={"reproducible_noise": True, "dp_sgd": {"enabled": True}})
    message = str(err.value)
    assert "no honest per-node guarantee" in message and "statistics mechanism" in message


def test_dp_sgd_needs_the_graphs_scheme():
    with pytest.raises(ConfigError) as err:
        config(PPI, partition={"scheme": "replicate"}, privacy={"reproducible_noise": True, "dp_sgd": {"enabled": True}})
    assert str(err.value).startswith("privacy.dp_sgd:") and "post-processing" in str(err.value)
    assert config(PPI, partition={"scheme": "iid"}, privacy={"dp_sgd": {"enabled": True}}).privacy.dp_sgd.enabled


def test_infinite_target_epsilon_is_allowed_and_clips_only():
    cfg = config(privacy={"mechanism": "gaussian", "target_epsilon": math.inf})
    student = build_student(cfg, 0)
    assert student.release_policy.mechanism.clip_only
    stats, metrics = student.release(0)
    assert metrics == {"epsilon": math.inf, "withheld": 0.0}
    for noisy, raw in zip(stats, student.statistics()):  # renormalisation undoes the clipping scale
        np.testing.assert_allclose(noisy, raw, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", ["alternating", "simultaneous"])
@pytest.mark.parametrize("rounds,clients", [(1, 2), (5, 2), (6, 3), (2, 3), (7, 1)])
def test_planned_releases_count_round_zero_and_the_rounds_a_client_trains(schedule, rounds, clients):
    cfg = config_from_dict({"federation": {"num_clients": clients, "rounds": rounds, "schedule": schedule},
                            "align": {"strategy": "none" if clients == 1 else "alignahead"}})
    for c in range(clients):
        trained = sum(c in trainers_for_round(schedule, r, clients) for r in range(1, rounds + 1))
        assert planned_releases(cfg, c) == 1 + trained
        assert planned_releases(cfg, c) <= 1 + (math.ceil(rounds / clients) if schedule == "alternating" else rounds)


# ---------------------------------------------------------------- statistics mechanism in the client


def test_gaussian_release_is_noisy_valid_and_matches_an_independent_mechanism():
    cfg = config(privacy={"mechanism": "gaussian", "reproducible_noise": True, "noise_multiplier": 0.5, "clip_norm": 1.0})
    student = build_student(cfg, 1)
    raw = student.statistics()
    stats, metrics = student.release(3)
    edge_index = student.alignment.edge_index
    assert_distributions(stats, edge_index, student.alignment.num_nodes)
    assert any(not np.allclose(s, r, atol=1e-3) for s, r in zip(stats, raw))
    # independently: the same mechanism and the documented noise seed
    mechanism = StatisticsMechanism(1.0, 0.5, "release", num_layers=2)
    noise = seeded_noise(derive_seed(cfg.seed, 1, 3, 1))
    expected = mechanism.release([torch.from_numpy(r).double() for r in raw], edge_index[1],
                                 student.alignment.num_nodes, noise)
    for s, e in zip(stats, expected):
        np.testing.assert_allclose(s, e.float().numpy(), rtol=1e-6, atol=1e-7)
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(0.5 / math.sqrt(2))  # sigma / sqrt(2) for scope release
    assert metrics == {"epsilon": math.inf, "withheld": 0.0}  # regenerable noise: no privacy claimed
    assert student.release_policy.ledger.epsilon() == pytest.approx(ledger.epsilon())  # what secret noise would give
    assert student.release_policy.ledger.releases == 1


def test_no_alignment_releases_nothing_even_with_privacy():
    cfg = config(align={"strategy": "none"}, privacy={"mechanism": "gaussian", "noise_multiplier": 1.0})
    student = build_student(cfg, 0)
    assert student.release(0) == (None, {})
    assert student.release_policy.state_dict() == {}  # no ledger: nothing is released, nothing spent


@pytest.mark.parametrize("scope", ["release", "layer"])
def test_epsilon_in_the_round_log_grows_and_matches_an_independent_ledger(tmp_path, scope):
    sigma = 3.0
    cfg = config(privacy={"mechanism": "gaussian", "noise_multiplier": sigma, "clip_scope": scope})
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    rows = read_rounds(run_dir)
    z = sigma / math.sqrt(2) if scope == "release" else sigma / math.sqrt(2 * 2)  # L = 2 layers, sqrt(2) C per ball
    for client in (0, 1):
        epsilons = [r["epsilon"] for r in rows if r["client"] == client]
        assert len(epsilons) == planned_releases(cfg, client) == 3
        assert all(a < b for a, b in zip(epsilons, epsilons[1:]))
        ledger = PrivacyLedger("prv", 1e-5)
        for k, eps in enumerate(epsilons, start=1):
            ledger.record(z)
            assert eps == pytest.approx(ledger.epsilon(), rel=1e-9), k
        assert summary["clients"][str(client)]["epsilon"] == pytest.approx(epsilons[-1])
    assert summary["epsilon"] == max(summary["clients"][c]["epsilon"] for c in ("0", "1"))
    assert summary["withheld_rounds"] == []


def test_runs_without_privacy_report_no_epsilon(tmp_path):
    run_dir, summary = run_inprocess(config(federation={"rounds": 2}), tmp_path / "run")
    assert "epsilon" not in summary and all("epsilon" not in r for r in read_rounds(run_dir))


@pytest.mark.parametrize("schedule,accountant", [("alternating", "rdp"), ("simultaneous", "rdp"),
                                                 ("alternating", "prv")])
def test_target_epsilon_is_reached_after_the_planned_releases(tmp_path, schedule, accountant):
    target = 2.0
    cfg = config(federation={"rounds": 5 if schedule == "alternating" else 2, "schedule": schedule},
                 privacy={"mechanism": "gaussian", "target_epsilon": target, "accountant": accountant})
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    rows = read_rounds(run_dir)
    for client in (0, 1):
        releases = [r for r in rows if r["client"] == client]
        assert len(releases) == planned_releases(cfg, client)
        final = releases[-1]["epsilon"]
        assert final <= target and final == pytest.approx(target, abs=0.05)
        # independent: the accountant's noise for this many releases, recorded that many times
        z = noise_multiplier_for_epsilon(target, 1e-5, len(releases), accountant=accountant)
        ledger = PrivacyLedger(accountant, 1e-5)
        ledger.record(z, steps=len(releases))
        assert final == pytest.approx(ledger.epsilon(), rel=1e-6)


# ---------------------------------------------------------------- budget


def budget_between(multiplier: float, releases: int) -> float:
    """A max_epsilon that admits exactly ``releases`` releases at ``multiplier``."""
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(multiplier, steps=releases)
    fits = ledger.epsilon()
    ledger.record(multiplier)
    return (fits + ledger.epsilon()) / 2


class RecordingTransport(InProcessTransport):
    """Keeps every statistics payload that comes back, by (round, client)."""

    def __init__(self, clients):
        super().__init__(clients)
        self.released = {}

    def _keep(self, replies, round_number):
        for c, r in replies.items():
            self.released[(round_number, c)] = r.statistics
        return replies

    def query(self, clients, round_number):
        return self._keep(super().query(clients, round_number), round_number)

    def train(self, jobs, round_number):
        return self._keep(super().train(jobs, round_number), round_number)


def test_an_exhausted_budget_withholds_the_release_and_the_run_finishes(tmp_path, capsys):
    sigma = 4.0
    cfg = config(federation={"rounds": 5},
                 privacy={"mechanism": "gaussian", "noise_multiplier": sigma,
                          "max_epsilon": budget_between(sigma / math.sqrt(2), 2)},
                 output={"progress": True})
    transport = RecordingTransport({i: build_student(cfg, i) for i in range(2)})
    run_dir, summary = run_experiment(cfg, transport, "inprocess", tmp_path / "run", evaluation=transport.evaluation)
    rows = read_rounds(run_dir)
    evaluated = {(r["round"], r["client"]) for r in transport.evaluation() if "val_metric" in r}
    status = {(r["round"], r["client"]): r["status"] for r in rows}
    # 2 releases each fit (round 0 and the first training round), the next ones are withheld
    assert status == {(0, 0): "ok", (0, 1): "ok", (1, 0): "ok", (2, 1): "ok",
                      (3, 0): "withheld", (4, 1): "withheld", (5, 0): "withheld"}
    withheld = [r for r in rows if r["status"] == "withheld"]
    assert all(r["withheld"] == 1.0 and r["bytes_sent"] == 0 and "val_metric" not in r for r in withheld)
    assert all((r["round"], r["client"]) in evaluated for r in withheld)  # trained and evaluated, kept on the client
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(sigma / math.sqrt(2), steps=2)
    assert all(r["epsilon"] == pytest.approx(ledger.epsilon()) for r in withheld)  # nothing more charged
    assert all(transport.clients[c].release_policy.ledger.releases == 2 for c in (0, 1))
    assert summary["status"] == "finished" and summary["rounds_completed"] == 5
    assert summary["withheld_rounds"] == [{"round": 3, "client": 0}, {"round": 4, "client": 1},
                                          {"round": 5, "client": 0}]
    assert summary["clients"]["0"]["rounds_trained"] == 3  # withheld rounds still count as training
    err = capsys.readouterr().err
    assert f"client 0 withheld its release (privacy budget or release_every, ε={ledger.epsilon():.4g})" in err


def test_a_withheld_release_keeps_the_previous_statistics_in_the_cache():
    sigma = 4.0
    cfg = config(federation={"rounds": 4},
                 privacy={"mechanism": "gaussian", "noise_multiplier": sigma,
                          "max_epsilon": budget_between(sigma / math.sqrt(2), 2)})
    transport = RecordingTransport({i: build_student(cfg, i) for i in range(2)})
    coordinator = Coordinator(cfg, transport)
    coordinator.run()
    for client, last_ok in ((0, 1), (1, 2)):
        assert transport.released[(last_ok + 2, client)] is None
        for cached, released in zip(coordinator.cache[client], transport.released[(last_ok, client)]):
            np.testing.assert_array_equal(cached, released)


def test_progress_line_shows_epsilon():
    from fedalign.server import RoundRecord

    stream = io.StringIO()
    printer = ProgressPrinter("accuracy", stream)
    metrics = {"task_loss": 1.0, "align_loss": 0.5, "val_metric": 0.7, "test_metric": 0.6, "epsilon": 1.25}
    printer.on_round(1, 4, [RoundRecord(1, 0, "ok", [1], metrics, 0, 0, 0.0)])
    printer.on_round(2, 4, [RoundRecord(2, 1, "withheld", [0], {**metrics, "withheld": 1.0}, 0, 0, 0.0)])
    first, second = stream.getvalue().splitlines()
    assert first.endswith("test 0.6000 ε 1.25")
    assert second.endswith("client 1 withheld its release (privacy budget or release_every, ε=1.25)")


# ---------------------------------------------------------------- determinism and checkpoints


def test_same_seed_gives_identical_noisy_statistics():
    cfg = config(federation={"rounds": 3}, privacy={"mechanism": "gaussian", "reproducible_noise": True, "noise_multiplier": 1.0})
    runs = []
    for _ in range(2):
        transport = RecordingTransport({i: build_student(cfg, i) for i in range(2)})
        records = Coordinator(cfg, transport).run()
        runs.append((transport.released, [(r.round, r.client, r.metrics) for r in records]))
    (first, first_records), (second, second_records) = runs
    assert first.keys() == second.keys() and len(first) == 2 + 3
    for key in first:
        for a, b in zip(first[key], second[key]):
            np.testing.assert_array_equal(a, b)
    assert first_records == second_records
    other = config(seed=1, federation={"rounds": 3}, privacy={"mechanism": "gaussian", "reproducible_noise": True, "noise_multiplier": 1.0})
    assert not np.array_equal(build_student(other, 0).release(0)[0][0], first[(0, 0)][0])


def test_checkpoint_round_trip_restores_the_ledger(tmp_path):
    cfg = config(privacy={"mechanism": "gaussian", "reproducible_noise": True, "noise_multiplier": 2.0})
    a = build_student(cfg, 0)
    a.release(0)
    a.train({}, 1)
    a.release(1)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    b = build_student(cfg, 0)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert b.release_policy.ledger.state_dict() == a.release_policy.ledger.state_dict() and b.release_policy.ledger.releases == 2
    assert b.release_policy.ledger.epsilon() == a.release_policy.ledger.epsilon() > 0
    (stats_a, metrics_a), (stats_b, metrics_b) = a.release(3), b.release(3)
    assert metrics_a == metrics_b
    for x, y in zip(stats_a, stats_b):
        np.testing.assert_array_equal(x, y)
    plain = build_student(config(), 0).state_dict()
    with pytest.raises(ValueError, match="privacy_ledger"):
        build_student(cfg, 0).load_state_dict(plain)


def test_flower_client_app_keeps_the_ledger_across_calls(tmp_path, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    from clients.client_app import app as client_app
    from fedalign_flower.protocol import decode_reply, encode_request

    for attr in ("_run_id", "_task_id", "_node_id"):  # outside a Flower runtime, say which task this is
        monkeypatch.setattr(TaskIdentity, attr, getattr(TaskIdentity, attr) or 1)

    cfg = config(privacy={"mechanism": "gaussian", "noise_multiplier": 2.0})
    peer = build_student(cfg, 1).statistics()

    def call(message_type, round_number, peers=None):
        msg = Message(content=encode_request(cfg, round_number, "ledger-test", peers), dst_node_id=1,
                      message_type=message_type)
        msg.metadata._message_type = message_type  # noqa: SLF001 - set by the runtime normally
        context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2,
                                                            "state-dir": str(tmp_path)},
                          state=RecordDict(), run_config={})
        reply = client_app(msg, context)
        assert not reply.has_error(), reply.error
        return decode_reply(reply.content)[:2]

    metrics0, stats0 = call("query", 0)
    metrics1, stats1 = call("train", 1, {1: peer})
    local = build_student(cfg, 0)
    local_stats0, local0 = local.release(0)
    local.train({1: peer}, 1)
    local_stats1, local1 = local.release(1)
    assert metrics0["epsilon"] == pytest.approx(local0["epsilon"]) and metrics0["epsilon"] > 0
    assert metrics1["epsilon"] == pytest.approx(local1["epsilon"]) and metrics1["epsilon"] > metrics0["epsilon"]
    assert [x.shape for x in stats1] == [y.shape for y in local_stats1]  # (secret noise: values differ)


# ---------------------------------------------------------------- DP-SGD


def test_dp_sgd_run_reports_the_epsilon_of_an_independent_ledger(tmp_path):
    dp = {"enabled": True, "noise_multiplier": 1.1, "max_grad_norm": 1.0, "sample_rate": 0.5}
    cfg = config(PPI, federation={"rounds": 3}, train={"local_epochs": 2}, privacy={"dp_sgd": dp})
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    rows = read_rounds(run_dir)
    assert summary["status"] == "finished"
    steps_per_call = 2 * round(1 / 0.5)  # local_epochs x round(1 / sample_rate)
    for client in (0, 1):
        client_rows = [r for r in rows if r["client"] == client]
        assert client_rows[0]["round"] == 0 and client_rows[0]["epsilon"] == 0.0  # untrained model: nothing spent
        trained = [r for r in client_rows if r["round"] > 0]
        for k, row in enumerate(trained, start=1):
            ledger = PrivacyLedger("prv", 1e-5)
            ledger.record(1.1, 0.5, steps=k * steps_per_call)
            assert row["dp_sgd_epsilon"] == pytest.approx(ledger.epsilon(), rel=1e-9)
            assert row["epsilon"] == row["dp_sgd_epsilon"]  # statistics: post-processing of the DP-SGD model
    assert summary["epsilon"] == max(r["dp_sgd_epsilon"] for r in rows if r["round"] > 0)


def test_dp_sgd_step_adds_the_public_alignment_gradient_without_clipping():
    """Without noise, with q = 1 and a clip bound that never binds, one DP-SGD step uses the
    gradient of mean_g task_loss(g) + a * alignment_loss, computed here by plain autograd."""
    dp = {"enabled": True, "noise_multiplier": 0.0, "max_grad_norm": 1e6, "sample_rate": 1.0}
    cfg = config(PPI, align={"weight": 3.0}, train={"weight_decay": 0.0}, privacy={"dp_sgd": dp})
    peer_stats = build_student(cfg, 1).statistics()
    dp_student, plain = build_student(cfg, 0), build_student(cfg, 0)
    metrics = dp_student.train({1: peer_stats}, 1)
    assert metrics["dp_sgd_epsilon"] == math.inf and metrics["align_loss"] > 0
    targets = plain.alignment_targets({1: peer_stats})
    plain.model.train()
    graphs = plain.dp_sgd.graphs
    assert len(graphs) >= 2
    task = torch.stack([task_loss(plain.model(g.x, g.edge_index)[0], g.y, True) for g in graphs]).mean()
    logits, hiddens = plain.model(plain.alignment.x, plain.alignment.edge_index)
    (task + 3.0 * plain.alignment_loss(logits, hiddens, targets)).backward()
    for p, q in zip(dp_student.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_dp_sgd_client_splits_its_training_union_into_graphs():
    cfg = config(PPI, privacy={"reproducible_noise": True, "dp_sgd": {"enabled": True}})
    student = build_student(cfg, 0)
    union = student.train_split.graph
    assert len(student.dp_sgd.graphs) == len(torch.unique(union.graph_id)) >= 2
    assert sum(g.num_nodes for g in student.dp_sgd.graphs) == union.num_nodes
    assert sum(g.edge_index.size(1) for g in student.dp_sgd.graphs) == union.edge_index.size(1)


def test_dp_sgd_ledger_survives_a_checkpoint(tmp_path):
    cfg = config(PPI, privacy={"reproducible_noise": True, "dp_sgd": {"enabled": True}})
    a = build_student(cfg, 0)
    a.train({}, 1)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    b = build_student(cfg, 0)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert b.dp_sgd.ledger.state_dict() == a.dp_sgd.ledger.state_dict() and b.dp_sgd.ledger.releases > 0


def test_noise_is_secret_by_default():
    """Without privacy.reproducible_noise the noise is not derived from the (server-known) seed."""
    cfg = config(privacy={"mechanism": "gaussian", "noise_multiplier": 1.0})
    first, _ = build_student(cfg, 0).release(1)
    second, _ = build_student(cfg, 0).release(1)
    assert not np.array_equal(first[0], second[0])
