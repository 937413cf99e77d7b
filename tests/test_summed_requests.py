"""Train requests that carry the peers' summed mass (fedalign.wire.PeerMass): their size does not grow with K."""

import numpy as np
import pytest
import torch

from fedalign.client.objective import AlignmentTargets
from fedalign.config import config_from_dict
from fedalign.inprocess import InProcessTransport
from fedalign.server import Coordinator
from fedalign.server.peer_mass import PeerMassTotals
from fedalign.wire import PEER_MASS, PeerMass, StatisticsRejected, payload_bytes, summed_request_pays
from fedalign_flower.protocol import encode_request, request_bytes, request_fields

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 3, "rounds": 3},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "train": {"local_epochs": 1},
    "output": {"progress": False, "plot": False},
}


def small(num_clients=3, hidden_layers=2, **sections):
    raw = {**SMALL, "federation": {**SMALL["federation"], "num_clients": num_clients},
           "model": {**SMALL["model"], "hidden_layers": hidden_layers}}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config_from_dict(raw)


class RequestSpy(InProcessTransport):
    """Keeps every train request the coordinator hands the transport, and the cache it was made from."""

    def __init__(self, clients):
        super().__init__(clients)
        self.coordinator, self.requests, self.cached = None, {}, {}

    def train(self, jobs, round_number):
        for trainer, peers in jobs.items():
            self.requests[(round_number, trainer)] = {p: [a.copy() for a in s] for p, s in peers.items()}
            self.cached[(round_number, trainer)] = dict(self.coordinator.cache)
        return super().train(jobs, round_number)


def spied(cfg, rounds=None):
    transport = RequestSpy(InProcessTransport.from_config(cfg).clients)
    coordinator = transport.coordinator = Coordinator(cfg, transport)
    coordinator.initialise()
    for r in range(1, (rounds or cfg.federation.rounds) + 1):
        coordinator.run_round(r)
    return coordinator, transport


def test_a_train_request_does_not_grow_with_the_number_of_clients(flower_task_identity):
    sizes, encoded = {}, {}
    for k in (3, 12):
        cfg = small(num_clients=k)
        coordinator, transport = spied(cfg, rounds=1)
        request = transport.requests[(1, 0)]
        assert list(request) == [PEER_MASS]
        sizes[k] = payload_bytes(request[PEER_MASS])
        content = encode_request(cfg, 1, "tag", request)
        encoded[k] = request_bytes(content)
        num_edges = coordinator.layout.num_edges
        assert sizes[k] == 2 * num_edges * 8 + 2 * 8  # two float64 [E] layers and [peers, constant]
        _, _, _, decoded = request_fields(content)  # what the ClientApp hands its student
        assert list(decoded) == [PEER_MASS]
        assert all(np.array_equal(a, b) for a, b in zip(decoded[PEER_MASS], request[PEER_MASS]))
        transport.clients[0].check_peer_statistics(decoded)
    assert sizes[3] == sizes[12] and encoded[3] == encoded[12]
    assert sizes[12] < 11 * 2 * num_edges * 4 / 5  # what K = 12 sent before: 11 releases of 2 float32 layers


def test_one_peer_in_float32_still_gets_its_release():
    assert not summed_request_pays(1, "float32") and summed_request_pays(2, "float32")
    assert not summed_request_pays(3, "float16") and summed_request_pays(4, "float16")
    _, transport = spied(small(num_clients=2), rounds=1)
    assert list(transport.requests[(1, 0)]) == [1]


@pytest.mark.parametrize("schedule", ["alternating", "simultaneous"])
@pytest.mark.parametrize("depths,strategy", [(2, "alignahead"), ([2, 3, 2, 4], "alignahead"),
                                             ([4, 2, 3], "one-to-one"), (2, "logits")])
def test_the_summed_loss_equals_the_per_peer_loss(schedule, depths, strategy):
    k = len(depths) if isinstance(depths, list) else 3
    cfg = small(num_clients=k, hidden_layers=depths, align={"strategy": strategy},
                federation={"schedule": schedule, "rounds": k + 1 if schedule == "alternating" else 2})
    _, transport = spied(cfg)
    assert len(transport.requests) == (k + 1 if schedule == "alternating" else 2 * k)
    for (r, trainer), request in sorted(transport.requests.items()):
        student = transport.clients[trainer]
        assert list(request) == [PEER_MASS]
        student.check_peer_statistics(request)
        summed = student.alignment_targets(request)
        peers = {j: s for j, s in transport.cached[(r, trainer)].items() if j != trainer}
        per_peer = student.alignment_targets(peers)  # AlignmentTargets.from_peers on the individual releases
        assert summed.num_peers == per_peer.num_peers == k - 1
        layers = [1] if strategy == "logits" else list(range(1, student.depth + 1))
        assert sorted(summed.mass) == sorted(per_peer.mass) == layers
        for layer in summed.mass:
            torch.testing.assert_close(summed.mass[layer], per_peer.mass[layer], atol=1e-12, rtol=0)
        with torch.no_grad():
            student.model.eval()
            log_probs = student.log_statistics(*student.forward(student.alignment))
            assert float(summed.loss(log_probs)) == pytest.approx(float(per_peer.loss(log_probs)), abs=1e-9, rel=0)


def hostile_requests(honest):
    """Each hostile or broken variant of an honest summed request (2 student layers, then [peers, constant])."""
    first, second, meta = honest
    negative = second.copy()
    negative[0], negative[1] = -negative[0], negative[1] + 2 * negative[0]  # group sums kept, one entry < 0
    return {
        "shape": [first, second[:-3], meta],
        "dtype": [first, second.astype(np.float32), meta],
        "layers": [first, meta],
        "nan": [first, np.full_like(second, np.nan), meta],
        "negative": [first, negative, meta],
        "sum": [first, second * 1.5, meta],
        "peers": [first, second, np.array([1.5, meta[1]])],
        "too many peers": [first * 2, second * 2, np.array([4.0, meta[1]])],
        "constant": [first, second, np.array([meta[0], 1.0])],
        "meta": [first, second, meta[:1]],
    }


@pytest.mark.parametrize("kind,words", [
    ("shape", "shape"), ("dtype", "float64 array"), ("layers", "expected 2 arrays"), ("nan", "non-finite"),
    ("negative", "negative"), ("sum", "sum to"), ("peers", "integer in 1..2"), ("too many peers", "integer in 1..2"),
    ("constant", "constant"), ("meta", "[peers, constant]"),
])
def test_a_hostile_summed_request_is_refused_by_the_client(kind, words):
    cfg = small()
    _, transport = spied(cfg, rounds=1)
    honest = transport.requests[(1, 0)][PEER_MASS]
    student = transport.clients[1]
    student.check_peer_statistics({PEER_MASS: honest})  # the honest one passes
    with pytest.raises(StatisticsRejected, match="summed peer mass") as refused:
        student.train({PEER_MASS: hostile_requests(honest)[kind]}, 2)
    assert words in str(refused.value)


def test_a_summed_request_must_come_alone_and_only_where_the_strategy_sums():
    _, transport = spied(small(), rounds=1)
    honest = transport.requests[(1, 0)][PEER_MASS]
    student = transport.clients[1]
    release = transport.clients[2].statistics()
    with pytest.raises(StatisticsRejected, match="alone"):
        student.check_peer_statistics({PEER_MASS: honest, 2: release})
    votes = InProcessTransport.from_config(small(align={"strategy": "votes"})).clients[1]
    with pytest.raises(StatisticsRejected, match="alone"):
        votes.check_peer_statistics({PEER_MASS: honest})


def test_votes_requests_stay_per_peer():
    _, transport = spied(small(align={"strategy": "votes"}), rounds=1)
    assert sorted(transport.requests[(1, 0)]) == [1, 2]


def test_the_totals_updated_release_by_release_equal_totals_made_afresh():
    rng = np.random.default_rng(0)
    target = np.array([0, 0, 1, 1, 1, 2])

    def release(depth):
        layers = []
        for _ in range(depth):
            p = rng.random(target.size)
            layers.append((p / np.bincount(target, weights=p)[target]).astype(np.float32))
        return layers

    depths = {0: 2, 1: 3, 2: 2, 3: 4}
    totals, cache = PeerMassTotals("alignahead", depths), {}
    for step in range(40):  # releases replace each other in turn
        client = step % 4
        new = release(depths[client])
        totals.replace(client, cache.get(client), new)
        cache[client] = new
    fresh = PeerMassTotals("alignahead", depths)
    fresh.rebuild(cache)
    for client in depths:
        summed, again = totals.request_for(client, cache), fresh.request_for(client, cache)
        targets = AlignmentTargets.from_peers({j: s for j, s in cache.items() if j != client}, "alignahead",
                                              depths[client], 3, torch.device("cpu"))
        assert summed.num_peers == again.num_peers == 3 and len(summed.arrays) == depths[client]
        for layer, mass in enumerate(summed.arrays, start=1):
            np.testing.assert_allclose(mass, again.arrays[layer - 1], atol=1e-13, rtol=0)
            np.testing.assert_allclose(mass, targets.mass[layer].numpy(), atol=1e-13, rtol=0)
        assert summed.constant == pytest.approx(targets.constant, abs=1e-12)
    alone = PeerMassTotals("alignahead", {0: 2, 1: 2})
    alone.replace(0, None, cache[0])
    assert alone.request_for(0, {0: cache[0]}) is None  # no other release cached: nothing to send


def test_flower_messages_and_a_resumed_server_give_the_in_process_rounds(tmp_path, flower_task_identity):
    """K = 3 with mixed depths: the ServerApp (Flower messages through a loopback grid) that crashes before
    round 4 and resumes from its saved state logs the rounds of the in-process engine (its sums rebuilt)."""
    from loopback import LoopbackGrid, ServerCrash
    from fedalign.inprocess import run_inprocess
    from fedalign.outputs import read_rounds
    from server.server_app import serve

    cfg = small(num_clients=3, hidden_layers=[2, 3, 2], federation={"rounds": 6})
    local_dir, local = run_inprocess(cfg, tmp_path / "inprocess")
    state, run_dir = tmp_path / "state", tmp_path / "flower"
    with pytest.raises(ServerCrash):
        serve(LoopbackGrid(3, state, crash_before_round=4), cfg, run_dir)
    _, summary = serve(LoopbackGrid(3, state), cfg, run_dir, resume=True)
    assert summary["status"] == local["status"] == "finished"
    flower_rows, local_rows = read_rounds(run_dir), read_rounds(local_dir)
    assert [(r.round, r.client, r.status, r.peers) for r in flower_rows] == \
        [(r.round, r.client, r.status, r.peers) for r in local_rows]
    num_edges = Coordinator(cfg, InProcessTransport({})).layout.num_edges
    for f, l in zip(flower_rows, local_rows):
        depth = cfg.model.for_client(l.client)["hidden_layers"]
        assert f.bytes_received == l.bytes_received == (0 if l.round == 0 else depth * num_edges * 8 + 16)
        for key in ("task_loss", "align_loss", "val_metric", "test_metric"):
            if key in l.metrics:
                assert f.metrics[key] == pytest.approx(l.metrics[key], abs=1e-5), (key, f, l)
