"""Private voting over clients (strategy votes) and few-coordinate logits (align.queries), against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant

from flwr.common import bytes_to_ndarray

from fedalign.client.release.secure import SecureShareRelease
from fedalign.client.student import build_student
from fedalign.client.votes import PublicLabels, answer_queries, peer_histogram, vote_vector
from fedalign.config import ConfigError, config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.privacy import PrivacyLedger, StatisticsMechanism
from fedalign.queries import query_nodes
from fedalign.wire import SUM_WITH_OWN, ReleaseLayout, StatisticsRejected, check_statistics, release_clip_norm, \
    release_layout
from fedalign_flower.cli import main as fedalign_main
from server.secure_aggregation import share_noise_std
from server.server_app import serve

from loopback import LoopbackGrid

VOTES = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 200}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 4, "rounds": 2, "schedule": "simultaneous"},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "align": {"strategy": "votes", "queries": 12, "vote_threshold": 2.0},
    "output": {"progress": False, "plot": False},
}
SECURE = {"mechanism": "gaussian", "target_epsilon": 4.0, "secure_aggregation": True, "max_dropout_share": 0.25}


def cfg_of(**sections):
    raw = json.loads(json.dumps(VOTES))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return config_from_dict(raw)


def layout_of(groups: int, members: int) -> ReleaseLayout:
    return ReleaseLayout(groups, np.repeat(np.arange(groups), members), votes=True)


def test_the_query_set_is_public_seeded_and_bounded():
    a, b = query_nodes(3, 100, 10), query_nodes(3, 100, 10)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0) and a.max() < 100
    assert not np.array_equal(a, query_nodes(4, 100, 10))
    assert query_nodes(3, 100, None) is None
    with pytest.raises(ConfigError, match="align.queries"):
        query_nodes(3, 100, 101)


def test_votes_are_one_hot_argmaxes_and_the_histogram_counts_them_by_hand():
    logits = [torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.1, 5.0]]), torch.tensor([[0.0, 3.0, 0.0], [9.0, 0.1, 5.0]]),
              torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])]
    votes = [vote_vector(z, multilabel=False).numpy() for z in logits]
    np.testing.assert_array_equal(votes[0], [1, 0, 0, 0, 0, 1])
    histogram = peer_histogram({k: [v] for k, v in enumerate(votes)})
    # by hand: query 0 -> classes 0, 1, 0; query 1 -> classes 2, 0, 2
    np.testing.assert_array_equal(histogram, [2, 1, 0, 1, 0, 2])
    on = vote_vector(torch.tensor([[1.0, -1.0]]), multilabel=True).numpy()
    np.testing.assert_array_equal(on, [1, 0, 0, 1])  # label 0 on: (1, 0); label 1 off: (0, 1)


def test_consensus_and_noisy_argmax_on_a_hand_made_histogram_with_fixed_noise():
    counts = np.array([[40.0, 30.0, 30.0], [90.0, 5.0, 5.0], [10.0, 10.0, 80.0]])
    noise = np.array([[5.0, 20.0, -3.0], [-1.0, 2.0, 0.0], [30.0, 0.0, -45.0]])
    noisy = (counts + noise).reshape(-1)  # [45, 50, 27], [89, 7, 5], [40, 10, 35]
    layout = layout_of(3, 3)
    np.testing.assert_array_equal(answer_queries(noisy, layout, threshold=48.0), [1, 0, -1])
    np.testing.assert_array_equal(answer_queries(noisy, layout, threshold=0.0), [1, 0, 0])
    # an all-abstaining round (every count exactly 0) answers nothing, even with T = 0
    np.testing.assert_array_equal(answer_queries(np.zeros(9), layout, threshold=0.0), [-1, -1, -1])
    labels = PublicLabels(layout)
    assert labels.update(answer_queries(noisy, layout, 48.0)) == 2 and labels.labels.tolist() == [1, 0, -1]
    labels.update(np.array([-1, 2, -1]))  # a later answer replaces, an unanswered query keeps its label
    assert labels.labels.tolist() == [1, 2, -1] and labels.count == 2


def test_the_vote_loss_is_the_cross_entropy_of_the_answered_queries():
    layout = layout_of(3, 4)
    labels = PublicLabels(layout)
    labels.update(np.array([2, -1, 0]))
    logits = torch.randn(3, 4, dtype=torch.float64)
    loss = labels.targets(torch.device("cpu")).loss([torch.log_softmax(logits, -1).reshape(-1)])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([2, 0]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    assert float(PublicLabels(layout).targets(torch.device("cpu")).loss([torch.zeros(12)])) == 0.0


def test_sensitivity_is_sqrt_2q_and_epsilon_matches_opacus_run_directly():
    """A vote vector has norm sqrt(Q); two votes of one client differ by at most sqrt(2 Q) (every query moved):
    the mechanism's sqrt(2) C with C = sqrt(Q). sigma solved for R releases gives Opacus' epsilon."""
    q, classes = 25, 7
    layout = release_layout("votes", None, 100, classes, False, q)
    c = release_clip_norm(1.0, layout)
    assert c == pytest.approx(math.sqrt(q))
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        a, b = (np.eye(classes)[rng.integers(0, classes, q)].reshape(-1) for _ in range(2))
        assert np.linalg.norm(a) == pytest.approx(math.sqrt(q))
        worst = max(worst, np.linalg.norm(a - b))
    disjoint = np.linalg.norm(np.eye(classes)[np.zeros(q, int)].reshape(-1) - np.eye(classes)[np.ones(q, int)].reshape(-1))
    assert worst <= math.sqrt(2 * q) + 1e-12 and disjoint == pytest.approx(math.sqrt(2 * q))
    for accountant, opacus in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        mechanism = StatisticsMechanism.for_budget(4.0, 1e-5, 3, c, accountant=accountant)
        assert mechanism.sensitivity == pytest.approx(math.sqrt(2 * q))
        z = mechanism.noise_multiplier * c / math.sqrt(2 * q)  # noise std / sensitivity
        direct = opacus()
        for _ in range(3):
            direct.step(noise_multiplier=z, sample_rate=1.0)
        ledger = PrivacyLedger(accountant, 1e-5)
        for _ in range(3):
            ledger.record(mechanism.effective_noise_multiplier)
        assert ledger.epsilon() == pytest.approx(direct.get_epsilon(delta=1e-5), rel=1e-9)
        assert 3.98 <= ledger.epsilon() <= 4.0 + 1e-9


def test_the_secure_vote_histogram_is_the_sum_minus_the_own_share_unprojected():
    cfg = cfg_of(privacy={**SECURE, "target_epsilon": None, "noise_multiplier": 0.0})
    layout = layout_of(2, 3)
    policy = SecureShareRelease.from_config(cfg, 0, 1, layout, release_clip_norm(1.0, layout))
    own, a, b = (np.array(v, dtype=np.float64) for v in ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]))
    policy.last_share = [own]
    (summed,), peers = policy.peer_total({SUM_WITH_OWN: [own + a + b, np.array([3.0])]})
    np.testing.assert_array_equal(summed, a + b)
    assert peers == 2


def test_check_accepts_votes_and_abstentions_and_refuses_anything_else():
    layout = layout_of(2, 3)
    for ok in ([1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]):
        check_statistics([np.array(ok, dtype=np.float32)], layout, 1)
    for bad, words in (([0.5, 0.5, 0, 0, 0, 1], "other than 0 and 1"), ([1, 1, 0, 0, 0, 1], "more than one vote")):
        with pytest.raises(StatisticsRejected, match=words):
            check_statistics([np.array(bad, dtype=np.float32)], layout, 1)


@pytest.mark.parametrize("overrides,key", [
    (["partition.scheme=replicate"], "align.queries"),
    (["partition.scheme=replicate", "align.queries=null"], "align.strategy"),
    (["align.strategy=alignahead"], "align.queries"),
    (["privacy.mechanism=gaussian", "privacy.target_epsilon=2"], "privacy.secure_aggregation"),
    (["privacy.mechanism=gaussian", "privacy.target_epsilon=0", "privacy.secure_aggregation=true"],
     "privacy.target_epsilon"),
    (["privacy.mechanism=gaussian", "privacy.target_epsilon=-1", "privacy.secure_aggregation=true"],
     "privacy.target_epsilon"),
    (["align.queries=1000"], "align.queries"),
    (["align.strategy=fedavg", "align.queries=null", "align.vote_threshold=0", "privacy.mechanism=gaussian",
      "privacy.target_epsilon=2"], "privacy.mechanism"),
    (["align.vote_threshold=-1"], "align.vote_threshold"),
])
def test_fedalign_check_refuses_bad_combinations_in_one_line(overrides, key, tmp_path, capsys):
    path = tmp_path / "votes.yaml"
    path.write_text(json.dumps(VOTES))
    assert fedalign_main(["check", str(path), *sum((["--set", o] for o in overrides), [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err


def test_logits_on_a_query_set_release_q_times_c_coordinates():
    cfg = cfg_of(align={"strategy": "logits", "queries": 12, "vote_threshold": 0.0})
    student = build_student(cfg, 0)
    (release,) = student.statistics()
    assert release.shape == (12 * student.task.num_classes,)
    np.testing.assert_allclose(release.reshape(12, -1).sum(1), 1.0, rtol=1e-5)


def test_a_votes_run_learns_from_answered_votes_and_abstains_first(tmp_path):
    run_dir, summary = run_inprocess(cfg_of(federation={"rounds": 3}), tmp_path / "run")
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    by_round = {r: [x for x in rows if x["round"] == r] for r in (1, 2, 3)}
    assert all(x["labelled_queries"] == 0 for x in by_round[1])  # round 0's votes are abstentions
    assert all(x["labelled_queries"] > 0 for x in by_round[2])  # 3 peers agree on >= 2 of 12 queries
    # the simulation (which holds the labels) scores the kept labels against the public nodes' truth
    from fedalign.data import load_public_graph, public_node_ids

    dataset, graph = load_public_graph(run_dir and cfg_of(federation={"rounds": 3}))
    truth = dataset.train.graph.y.numpy()[public_node_ids(dataset, 0.3, 0)[query_nodes(0, graph.num_nodes, 12)]]
    scored = json.loads((run_dir / "vote_labels.json").read_text())
    assert scored["queries"] == 12
    for client in scored["clients"].values():
        assert 0 < client["labelled"] <= 12 and 0 <= client["correct"] <= client["labelled"]
    assert graph.num_nodes == len(public_node_ids(dataset, 0.3, 0))
    mean = np.mean([c["correct"] / c["labelled"] for c in scored["clients"].values()])
    assert scored["mean_accuracy"] == pytest.approx(mean) and len(truth) == 12


def test_every_reply_of_a_secure_votes_client_is_its_masked_share_and_accounted_metrics(tmp_path, flower_task_identity):
    """Over Flower's SecAgg+: each reply carries the allow-listed metrics and masked integers of Q C entries,
    nothing else; the share range covers C = sqrt(Q) (no honest vote share is clipped by the encoding)."""
    cfg = cfg_of(privacy=SECURE)
    pulled = []
    grid = LoopbackGrid(4, tmp_path / "state", tamper=lambda msg, reply: pulled.append(reply) or reply)
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    assert share_noise_std(cfg, math.sqrt(12)) == pytest.approx(share_noise_std(cfg) * math.sqrt(12))
    classes = build_student(cfg, 0).task.num_classes
    allowed = {"fitres.metrics": {"epsilon", "withheld", "partition-id", "ledger_lost"}, "fitres.status": {"code", "message"},
               "meta": {"partition-id"}, "secaggplus_configs": {"ctxts", "dsts", "masked_params", "nids", "shares",
                                                                "pk1", "pk2"}}
    masked = 0
    for reply in pulled:
        for record in reply.content.array_records.values():
            assert len(record) == 0  # no plain array leaves a client
        for name, record in reply.content.metric_records.items():
            assert dict(record) in ({}, {"num_examples": 1}), name
        for name, record in reply.content.config_records.items():
            assert set(record) <= allowed[name], name
            sizes = sorted(bytes_to_ndarray(item).size for item in record.get("masked_params", []))
            if sizes:  # the masked Q C vote share (integers) and SecAgg+'s masked weight
                assert sizes == [1, 12 * classes]
                masked += 1
    assert masked == 4 * 3  # every client, rounds 0..2


@pytest.mark.parametrize("secure", [False, True])
def test_the_noise_control_releases_pure_noise_and_spends_nothing(secure):
    """privacy.noise_control: with the same (seeded, test-only) noise, what a client releases does not depend on its
    statistics at all, and its ledger stays at epsilon 0."""
    from fedalign.client.release import build_release_policy

    strategy = {"strategy": "logits", "queries": None, "vote_threshold": 0.0}
    privacy = {**SECURE, "noise_control": True, "reproducible_noise": True, "insecure_ok": True,
               "secure_aggregation": secure}
    cfg = cfg_of(align=strategy, privacy=privacy)
    layout = ReleaseLayout(2, np.array([0, 0, 1, 1]))
    releases = []
    for stats in ([np.array([0.9, 0.1, 0.5, 0.5])], [np.array([0.0, 1.0, 1.0, 0.0])]):
        policy = build_release_policy(cfg, 0, 1, layout, None)
        released, metrics = policy.release(lambda: stats, round_number=1, turn=1)
        releases.append(released[0])
        assert metrics["epsilon"] in (0.0, math.inf) and policy.ledger.releases == 0
    np.testing.assert_array_equal(releases[0], releases[1])


@pytest.mark.parametrize("schedule,rounds,clients", [("simultaneous", 3, 2), ("alternating", 5, 2), ("alternating", 6, 3)])
def test_without_a_final_release_the_last_rounds_turn_releases_nothing(schedule, rounds, clients):
    from fedalign.schedules import planned_releases, trainers_for_round

    cfg = config_from_dict({"federation": {"num_clients": clients, "rounds": rounds, "schedule": schedule},
                            "privacy": {"final_release": False}})
    for c in range(clients):
        used = sum(c in trainers_for_round(schedule, r, clients) for r in range(1, rounds))  # rounds before the last
        assert planned_releases(cfg, c) == 1 + used


def test_a_secure_votes_run_without_final_release_spends_target_epsilon_on_one_release_fewer(tmp_path):
    cfg = cfg_of(federation={"rounds": 3}, privacy={**SECURE, "final_release": False})
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows if r["round"] == 3} == {"withheld"}
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(StatisticsMechanism.for_budget(4.0, 1e-5, 2, math.sqrt(12)).effective_noise_multiplier, steps=2)
    for client in summary["clients"].values():
        assert client["epsilon"] == pytest.approx(ledger.epsilon(), rel=1e-9) and client["epsilon"] <= 4.0 + 1e-9


def test_round_zero_votes_are_never_charged_they_are_abstentions():
    from fedalign.schedules import initial_release_is_charged, planned_releases

    cfg = cfg_of(privacy={**SECURE, "free_initial_release": False})
    assert not initial_release_is_charged(cfg) and planned_releases(cfg, 0) == 2
