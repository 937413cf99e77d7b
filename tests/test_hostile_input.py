"""Broken or hostile statistics and messages are rejected, logged, never forwarded, never fatal."""

import json
import math
import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedalign.wire import REPLY_METADATA, REPLY_METRICS
from fedalign_flower.protocol import ProtocolError, decode_reply, encode_reply
from fedalign.config import config_from_dict
from fedalign.inprocess import InProcessTransport
from fedalign.server import Coordinator, release_layout_of
from fedalign.client import build_student
from fedalign.wire import ReleaseLayout, StatisticsRejected, check_metrics, check_statistics
from server.server_app import serve

from loopback import LoopbackGrid

# A hand-made graph: node 0 has in-edges from 1, 2, 3; node 1 from 0; node 2 from 0 and 3.
TARGET = np.array([0, 0, 0, 1, 2, 2])
GRAPH = ReleaseLayout(num_nodes=4, target=TARGET)
VALID = np.array([0.5, 0.25, 0.25, 1.0, 0.9, 0.1], dtype=np.float32)


def release(*layers):
    return [np.asarray(layer) for layer in layers]


def test_a_valid_release_passes():
    assert check_statistics(release(VALID, VALID), GRAPH, 2) is not None


@pytest.mark.parametrize("statistics,words", [
    (release(VALID), "1 layers, expected 2"),
    (release(VALID, VALID.astype(np.float64)), "layer 2 has dtype float64, expected float32"),
    (release(VALID, VALID.astype(np.int32)), "dtype int32"),
    (release(VALID, VALID[:5]), r"shape \(5,\), expected \(6,\)"),
    (release(VALID, np.tile(VALID, (2, 1))), r"shape \(2, 6\)"),
    (release(VALID, np.where(np.arange(6) == 2, np.nan, VALID).astype(np.float32)), "non-finite .* at edge 2"),
    (release(VALID, np.where(np.arange(6) == 4, np.inf, VALID).astype(np.float32)), "non-finite"),
    (release(VALID, np.array([1.5, -0.25, -0.25, 1, 0.9, 0.1], dtype=np.float32)), "2 negative probabilities"),
    (release(VALID, np.array([0.5, 0.5, 0.5, 1, 0.9, 0.1], dtype=np.float32)), "node 0's in-edges sum to 1.5"),
    ([VALID, [0.5] * 6], "layer 2 is a list"),
    ("weights", "expected a list"),
])
def test_broken_releases_are_rejected_naming_the_problem(statistics, words):
    with pytest.raises(StatisticsRejected, match="statistics from client 1 rejected: .*" + words):
        check_statistics(statistics, GRAPH, 2, sender="client 1")


def test_float16_releases_get_a_float16_tolerance():
    rounded = VALID.astype(np.float16)
    assert check_statistics(release(rounded, rounded), GRAPH, 2, dtype="float16")
    with pytest.raises(StatisticsRejected, match="dtype float32, expected float16"):
        check_statistics(release(VALID, VALID), GRAPH, 2, dtype="float16")


# ---------------------------------------------------------------- the coordinator

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "federation": {"num_clients": 2, "rounds": 6},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "train": {"local_epochs": 1},
    "output": {"progress": False, "plot": False},
}


def hostile_variants(honest):
    """Each hostile or broken variant of an honest release (2 layers of [E])."""
    e = honest[0].shape[0]
    return {
        "shape": [honest[0], honest[1][:-3]],
        "dtype": [honest[0], honest[1].astype(np.float16)],
        "nan": [honest[0], np.full(e, np.nan, dtype=np.float32)],
        "negative": [honest[0], -honest[1]],
        "sum": [honest[0], honest[1] * 2],
        "layers": [honest[0]],
        "oversized": [honest[0], honest[1], np.zeros(50 * e, dtype=np.float32)],
    }


class TamperingTransport(InProcessTransport):
    """Client 1's release in ``round_number`` is replaced by ``bad``; records what trainers receive."""

    def __init__(self, clients, round_number, bad):
        super().__init__(clients)
        self.round_number, self.bad, self.received = round_number, bad, {}

    def train(self, jobs, round_number):
        self.received[round_number] = {t: {p: [a.copy() for a in s] for p, s in peers.items()}
                                       for t, peers in jobs.items()}
        replies = super().train(jobs, round_number)
        if round_number == self.round_number and 1 in replies:
            replies[1].statistics = self.bad
            replies[1].bytes_sent = sum(a.nbytes for a in self.bad)
        return replies


@pytest.mark.parametrize("kind,words", [
    ("shape", "shape"), ("dtype", "dtype float16, expected float32"), ("nan", "non-finite"), ("negative", "negative"),
    ("sum", "sum to"), ("layers", "1 layers, expected 2"), ("oversized", "exceeds the"),
])
def test_the_coordinator_rejects_logs_and_never_forwards_a_hostile_release(kind, words, caplog):
    cfg = config_from_dict(SMALL)
    clients = InProcessTransport.from_config(cfg).clients
    honest = clients[1].statistics()
    transport = TamperingTransport(clients, 2, hostile_variants(honest)[kind])
    coordinator = Coordinator(cfg, transport)
    records = coordinator.run()  # does not raise
    bad = [r for r in records if r.status == "rejected"]
    assert [(r.round, r.client) for r in bad] == [(2, 1)] and words in bad[0].error
    assert words in caplog.text and "round 2" in caplog.text
    # round 3: client 0 trains against client 1's last *valid* release (from round 0), not the hostile one
    received = transport.received[3][0][1]
    assert all(np.array_equal(a, b) for a, b in zip(received, coordinator_round0(cfg)))
    assert all(r.status == "ok" for r in records if (r.round, r.client) != (2, 1))


def coordinator_round0(cfg):
    """Client 1's initial statistics, computed independently."""
    return build_student(cfg, 1).release(0)[0]


def test_the_server_checks_sums_on_the_same_alignment_graph_as_the_clients():
    cfg = config_from_dict(SMALL)
    spec = release_layout_of(cfg)
    client = build_student(cfg, 0)
    assert spec.num_edges == client.alignment.edge_index.size(1)
    np.testing.assert_array_equal(spec.target, client.alignment.edge_index[1].numpy())


def test_a_server_without_the_data_still_checks_shape_dtype_and_range(monkeypatch, caplog):
    import fedalign.server.layout as layout

    def unreadable(cfg):
        raise FileNotFoundError("no data here")

    monkeypatch.setattr(layout, "load_public_graph", unreadable)
    cfg = config_from_dict(SMALL)
    clients = InProcessTransport.from_config(cfg).clients
    honest = clients[1].statistics()
    transport = TamperingTransport(clients, 2, hostile_variants(honest)["nan"])
    records = Coordinator(cfg, transport).run()
    assert "cannot read the dataset" in caplog.text
    assert [(r.round, r.client) for r in records if r.status == "rejected"] == [(2, 1)]


# ---------------------------------------------------------------- the wire format


def honest_reply_content():
    return encode_reply({"val_metric": 0.5}, [VALID, VALID], partition_id=1, seconds=0.1)


META = ConfigRecord({"partition-id": 1, "client-seconds": 0.1})


def with_extra(record_name, record):
    content = honest_reply_content()
    content[record_name] = record
    return content


@pytest.mark.parametrize("content,words", [
    (lambda: with_extra("weights", ArrayRecord({"w": Array(np.ones((3, 3), dtype=np.float32))})), "unexpected records"),
    (lambda: with_extra("config", ConfigRecord({"x": 1})), "unexpected records"),
    (lambda: RecordDict({"metrics": MetricRecord({"features_0": 0.3}), "meta": META}), "unexpected metrics"),
    (lambda: RecordDict({"metrics": MetricRecord({"val_metric": 1.0})}), "saying which client sent it"),
    (lambda: RecordDict({"metrics": MetricRecord({}), "meta": ConfigRecord({"partition-id": 1, "features": "x",
                                                                           "client-seconds": 0.1})}), "metadata"),
    (lambda: RecordDict({"statistics": ArrayRecord({"1": Array(VALID)}), "meta": META}), "no 'metrics'"),
    (lambda: RecordDict({"metrics": MetricRecord({}), "meta": META,
                         "statistics": ArrayRecord({"1": Array(VALID), "x": Array(VALID)})}), "layers '1'..'L'"),
    (lambda: RecordDict({"metrics": MetricRecord({}), "meta": META,
                         "statistics": ArrayRecord({"1": Array(np.ones((2, 2), dtype=np.float32))})}), "1-D"),
])
def test_replies_outside_the_wire_format_are_refused(content, words):
    with pytest.raises(ProtocolError, match=words):
        decode_reply(content())


def test_a_client_cannot_encode_anything_but_known_metrics():
    with pytest.raises(ProtocolError, match="refusing to send metrics"):
        encode_reply({"weights_norm": 3.0}, None, partition_id=0, seconds=0.0)


def test_what_a_client_sends_is_only_statistics_and_metrics(tmp_path, flower_task_identity):
    """Every reply of the real ClientApp over a run: the allowed records, allowed metric names, and
    exactly L x E probabilities -- nothing the size of the weights, the features or the labels."""
    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 4}})
    seen = []
    grid = LoopbackGrid(2, tmp_path / "state", tamper=lambda msg, reply: seen.append(reply) or reply)
    _, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    student = build_student(cfg, 0)
    num_edges = student.alignment.edge_index.size(1)
    sizes_of_private_things = {p.numel() for p in student.model.parameters()} | {
        student.train_split.graph.x.numel(), student.train_split.graph.y.numel()}
    assert len(seen) >= 4
    for reply in seen:
        assert set(reply.content.keys()) <= {"metrics", "statistics", "meta"}
        assert set(reply.content["metrics"].keys()) <= REPLY_METRICS
        assert set(reply.content["meta"].keys()) == set(REPLY_METADATA)
        if "statistics" in reply.content:
            arrays = [a.numpy() for a in reply.content["statistics"].values()]
            assert [a.shape for a in arrays] == [(num_edges,)] * 2
            assert sum(a.nbytes for a in arrays) == 2 * num_edges * 4
            assert not {a.size for a in arrays} & sizes_of_private_things


@pytest.mark.parametrize("attack", ["extra-record", "wrong-type", "other-client", "nan"])
def test_the_flower_server_rejects_tampered_replies_and_finishes(tmp_path, flower_task_identity, attack, caplog):
    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 4}})

    def tamper(msg, reply):
        if int(msg.content["config"]["round"]) != 2 or reply.content["meta"]["partition-id"] != 1:
            return reply
        content = reply.content
        if attack == "extra-record":
            content["weights"] = ArrayRecord({"w": Array(np.ones(4, dtype=np.float32))})
        elif attack == "nan":
            content["statistics"]["2"] = Array(np.full(content["statistics"]["2"].shape, np.nan, dtype=np.float32))
        elif attack == "other-client":
            content["meta"]["partition-id"] = 0
        forged = Message(content=content, reply_to=msg)
        forged.metadata._src_node_id = reply.metadata.src_node_id  # noqa: SLF001
        if attack == "wrong-type":
            forged.metadata._message_type = "query"  # noqa: SLF001
        return forged

    grid = LoopbackGrid(2, tmp_path / "state", tamper=tamper)
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    assert [(r["round"], r["client"]) for r in summary["rejected_rounds"]] == [(2, 1)]
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["status"] == "rejected"][0]["error"]
    assert "rejected" in caplog.text
    # round 3 (client 0 trains): what the server forwarded is client 1's valid round-0 release
    forwarded = [m for m in grid.sent if int(m.content["config"]["round"]) == 3][0].content["peers"]
    for layer, expected in enumerate(build_student(cfg, 1).release(0)[0], start=1):
        np.testing.assert_array_equal(forwarded[f"1.{layer}"].numpy(), expected)


@pytest.mark.parametrize("metrics,words", [
    ({"val_metric": float("nan")}, "val_metric = nan"),
    ({"test_metric": float("inf")}, "test_metric = inf"),
    ({"val_metric": 1.5}, r"outside what an honest client reports \(\[0, 1\]\)"),
    ({"task_loss": -0.1}, "task_loss = -0.1"),
    ({"epsilon": float("nan")}, "epsilon = nan"),
    ({"withheld": 2.0}, "withheld = 2.0"),
])
def test_non_finite_or_out_of_range_metrics_are_rejected_and_the_summary_stays_finite(metrics, words, tmp_path,
                                                                                        flower_task_identity):
    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 4}})

    def tamper(msg, reply):
        if int(msg.content["config"]["round"]) != 2:
            return reply
        for name, value in metrics.items():
            reply.content["metrics"][name] = value
        return reply

    run_dir, summary = serve(LoopbackGrid(2, tmp_path / "state", tamper=tamper), cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    (rejected,) = summary["rejected_rounds"]
    assert rejected["round"] == 2 and re.search(words, rejected["error"])
    assert all(math.isfinite(c["test_at_best_val"]) for c in summary["clients"].values())
    assert math.isfinite(summary["mean_test_at_best_val"])


def test_honest_metrics_pass_and_epsilon_may_be_infinite():
    assert check_metrics({"val_metric": 1.0, "task_loss": 0.0, "epsilon": float("inf"), "withheld": 1.0})


def test_an_oversized_reply_is_refused_before_its_arrays_are_decoded(tmp_path, flower_task_identity, monkeypatch):
    import server.flower_transport as transport_module

    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 4}})
    huge = 8_000_000  # 32 MB of float32 where an honest release has 2 layers x E

    def tamper(msg, reply):
        if int(msg.content["config"]["round"]) == 2:
            reply.content["statistics"]["1"] = Array(np.zeros(huge, dtype=np.float32))
        return reply

    decoded_sizes = []
    real_decode = transport_module.decode_reply

    def watching_decode(content):
        decoded_sizes.append(transport_module.statistics_bytes(content))
        return real_decode(content)

    monkeypatch.setattr(transport_module, "decode_reply", watching_decode)
    grid = LoopbackGrid(2, tmp_path / "state", tamper=tamper)
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    (rejected,) = summary["rejected_rounds"]
    assert rejected["round"] == 2 and "refused before decoding" in rejected["error"]
    assert "bytes, more than the" in rejected["error"]
    assert decoded_sizes and max(decoded_sizes) < huge * 4  # the oversized reply never reached decode_reply
