"""Rounds, schedules and the statistics cache, with the in-process engine."""

import numpy as np
import pytest

from fedalign.config import config_from_dict
from fedalign.inprocess import InProcessTransport
from fedalign.schedules import trainers_for_round
from fedalign.server import Coordinator, Reply, RoundRecord, summarise
from fedalign.wire import PEER_MASS, PeerMass

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "federation": {"num_clients": 3, "rounds": 6},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "output": {"progress": False, "plot": False},
}


def test_alternating_and_simultaneous_schedules():
    assert [trainers_for_round("alternating", r, 3) for r in range(1, 7)] == [[0], [1], [2], [0], [1], [2]]
    assert trainers_for_round("simultaneous", 4, 3) == [0, 1, 2]


class RecordingTransport:
    """Wraps a transport and records which statistics each trainer received."""

    def __init__(self, inner):
        self.inner = inner
        self.received = []  # (round, trainer, {peer: first layer array})

    def query(self, clients, round_number):
        return self.inner.query(clients, round_number)

    def train(self, jobs, round_number):
        for trainer, peers in jobs.items():
            self.received.append((round_number, trainer, {p: [a.copy() for a in s] for p, s in peers.items()}))
        replies = self.inner.train(jobs, round_number)
        self.released = getattr(self, "released", {})
        for c, r in replies.items():
            self.released[(round_number, c)] = [a.copy() for a in r.statistics]
        return replies


@pytest.mark.parametrize("schedule", ["alternating", "simultaneous"])
def test_trainers_get_the_latest_statistics_of_their_frozen_peers(schedule):
    cfg = config_from_dict({**SMALL, "federation": {**SMALL["federation"], "schedule": schedule}})
    transport = RecordingTransport(InProcessTransport.from_config(cfg))
    coordinator = Coordinator(cfg, transport)
    coordinator.initialise()
    initial = {c: [a.copy() for a in s] for c, s in coordinator.cache.items()}
    records = [rec for r in range(1, cfg.federation.rounds + 1) for rec in coordinator.run_round(r)]
    latest = dict(initial)
    for r in range(1, cfg.federation.rounds + 1):
        rows = [row for row in transport.received if row[0] == r]
        assert sorted(row[1] for row in rows) == trainers_for_round(schedule, r, 3)
        for _, trainer, request in rows:
            others = [c for c in range(3) if c != trainer]
            assert [rec.peers for rec in records if (rec.round, rec.client) == (r, trainer)] == [others]
            # the peers' summed mass (fedalign.wire.PeerMass) of what they released most recently, before this
            # round; alignahead with 2 layers: student layer 1 <- peer layer 2, student layer 2 <- peer layer 1
            summed = PeerMass.from_job(request[PEER_MASS])
            assert summed.num_peers == 2
            for layer, peer_layer in ((1, 2), (2, 1)):
                expected = sum(latest[peer][peer_layer - 1].astype(np.float64) for peer in others)
                np.testing.assert_allclose(summed.arrays[layer - 1], expected, atol=1e-12, rtol=0)
        for _, trainer, _ in rows:
            latest[trainer] = transport.released[(r, trainer)]
    # the cache holds each client's last release
    for c in range(3):
        np.testing.assert_array_equal(coordinator.cache[c][0], latest[c][0])


def test_frozen_peer_statistics_do_not_change_while_others_train():
    cfg = config_from_dict(SMALL)
    transport = InProcessTransport.from_config(cfg)
    before = transport.clients[2].statistics()
    transport.train({0: {1: transport.clients[1].statistics()}}, 1)
    after = transport.clients[2].statistics()
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_no_alignment_shares_nothing():
    cfg = config_from_dict({**SMALL, "align": {"strategy": "none"}})
    coordinator = Coordinator(cfg, InProcessTransport.from_config(cfg))
    records = coordinator.run()
    assert coordinator.cache == {}
    assert all(r.bytes_sent == 0 and r.bytes_received == 0 and r.peers == [] for r in records)


def test_bytes_count_the_statistics_payload():
    cfg = config_from_dict(SMALL)
    transport = InProcessTransport.from_config(cfg)
    records = Coordinator(cfg, transport).run()
    num_edges = transport.clients[0].alignment.edge_index.size(1)
    per_release = 2 * num_edges * 4  # 2 layers, float32
    summed = 2 * num_edges * 8 + 2 * 8  # the peers' summed mass: 2 float64 layers and [peers, constant]
    trained = [r for r in records if r.round > 0]
    assert all(r.bytes_sent == per_release and r.bytes_received == summed for r in trained)


class FlakyTransport(InProcessTransport):
    """Client 1 never answers round 2."""

    def train(self, jobs, round_number):
        replies = super().train(jobs, round_number)
        if round_number == 2:
            replies.pop(1, None)
        return replies


def test_missing_reply_is_recorded_and_the_run_goes_on():
    cfg = config_from_dict({**SMALL, "federation": {**SMALL["federation"], "num_clients": 2, "rounds": 4}})
    coordinator = Coordinator(cfg, FlakyTransport.from_config(cfg))
    records = coordinator.run()
    missing = [r for r in records if r.status == "missing"]
    assert [(r.round, r.client) for r in missing] == [(2, 1)]
    assert "no reply" in missing[0].error
    assert max(r.round for r in records) == 4


def test_summary_picks_test_metric_at_best_validation():
    records = [
        RoundRecord(1, 0, "ok", [1], {"val_metric": 0.5, "test_metric": 0.4}, 0, 0, 0.0),
        RoundRecord(3, 0, "ok", [1], {"val_metric": 0.7, "test_metric": 0.6}, 0, 0, 0.0),
        RoundRecord(5, 0, "ok", [1], {"val_metric": 0.7, "test_metric": 0.9}, 0, 0, 0.0),
        RoundRecord(2, 1, "missing", [0], {}, 0, 0, 0.0, "gone"),
    ]
    summary = summarise(records, 2, "accuracy")
    assert summary["clients"]["0"] == {"best_val": 0.7, "test_at_best_val": 0.6, "best_round": 3, "rounds_trained": 3}
    assert summary["clients"]["1"]["best_val"] is None
    assert summary["missing_rounds"] == [{"round": 2, "client": 1, "error": "gone"}]


def test_summary_of_a_client_without_test_nodes():
    """Many clients on a small graph: a client may hold validation nodes but no test node. It gets no test
    metric, and the mean is over the clients that have one (found at K = 100 on Amazon Photo)."""
    records = [
        RoundRecord(1, 0, "ok", [1], {"val_metric": 0.5, "test_metric": 0.4}, 0, 0, 0.0),
        RoundRecord(1, 1, "ok", [0], {"val_metric": 0.8}, 0, 0, 0.0),
    ]
    summary = summarise(records, 2, "accuracy")
    assert summary["clients"]["1"] == {"best_val": 0.8, "test_at_best_val": None, "best_round": 1, "rounds_trained": 1}
    assert summary["mean_test_at_best_val"] == pytest.approx(0.4)


class BrokenTransport(InProcessTransport):
    """Every training call comes back as an error reply."""

    def train(self, jobs, round_number):
        return {i: Reply(i, error="ClientApp raised ValueError: boom") for i in jobs}


def test_a_run_where_no_client_ever_answers_fails_with_the_error():
    cfg = config_from_dict({**SMALL, "federation": {**SMALL["federation"], "num_clients": 2, "rounds": 2}})
    with pytest.raises(RuntimeError, match="no client completed any round; first error: ClientApp raised ValueError: boom"):
        Coordinator(cfg, BrokenTransport.from_config(cfg)).run()
