"""The Flower apps: fidelity with the in-process engine, and what leaves a client."""

import json

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict

from clients.client_app import app as client_app
from fedalign_flower.protocol import CONFIG, META, METRICS, PEERS, STATISTICS, decode_reply, encode_request
from fedalign.config import config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign_flower.runtime import run_flower_simulation

FIDELITY = {
    "name": "fidelity",
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 150}},
    "partition": {"scheme": "replicate"},
    "federation": {"num_clients": 2, "rounds": 6},
    "model": {"hidden_layers": 3, "hidden_dim": 16, "dropout": 0.0},
    "align": {"strategy": "alignahead"},
    "train": {"local_epochs": 2},
    "output": {"progress": False, "plot": False},
}
COMPARED = ("round", "client", "status", "peers", "task_loss", "align_loss", "val_metric", "test_metric",
            "val_loss", "bytes_sent", "bytes_received")


def read_rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_flower_simulation_matches_in_process_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDALIGN_STATE_DIR", str(tmp_path / "client-state"))
    cfg = config_from_dict(FIDELITY)
    flower_dir, flower_summary = run_flower_simulation(cfg, tmp_path / "flower")
    local_dir, local_summary = run_inprocess(cfg, tmp_path / "inprocess")
    flower_rows, local_rows = read_rounds(flower_dir), read_rounds(local_dir)
    assert len(flower_rows) == len(local_rows) == 2 + 6  # round 0 for both clients, then one trainer per round
    for f, l in zip(flower_rows, local_rows):
        for key in COMPARED:
            if key in l:
                if isinstance(l[key], float):
                    assert f[key] == pytest.approx(l[key], abs=1e-5), (key, f, l)
                else:
                    assert f[key] == l[key], (key, f, l)
    assert flower_summary["status"] == local_summary["status"] == "finished"
    for c in ("0", "1"):
        assert flower_summary["clients"][c]["best_round"] == local_summary["clients"][c]["best_round"]
    for name in ("config.yaml", "rounds.jsonl", "summary.json"):
        assert (flower_dir / name).is_file()


@pytest.fixture
def server_identity(monkeypatch):
    """Outside a Flower runtime, the process must say which run/task it is to create messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, getattr(TaskIdentity, attr) or 1)


def _call_client(tmp_path, message_type, peers=None):
    cfg = config_from_dict(FIDELITY)
    content = encode_request(cfg, 1, "leak-test", peers)
    msg = Message(content=content, dst_node_id=1, message_type=message_type)
    # Simulate delivery: the ClientApp needs a message with metadata as the runtime creates it.
    msg.metadata._message_type = message_type  # noqa: SLF001 - set by the runtime normally
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2,
                                                        "state-dir": str(tmp_path)},
                      state=RecordDict(), run_config={})
    return client_app(msg, context), cfg


@pytest.mark.parametrize("message_type", ["query", "train"])
def test_replies_hold_only_statistics_and_scalar_metrics(tmp_path, message_type, server_identity):
    peers = None
    if message_type == "train":
        from fedalign.client import build_student

        peers = {1: build_student(config_from_dict(FIDELITY), 1).statistics()}
    reply, cfg = _call_client(tmp_path, message_type, peers)
    assert not reply.has_error(), reply.error
    content = reply.content
    assert set(content.keys()) <= {STATISTICS, METRICS, META}
    assert set(content.config_records) == {META}
    metrics, stats, meta = decode_reply(content)
    assert all(isinstance(v, float) for v in metrics.values())
    assert meta["partition-id"] == 0 and sorted(meta) == ["client-seconds", "partition-id"]
    from fedalign.client import build_student

    student = build_student(cfg, 0)
    num_edges = student.alignment.edge_index.size(1)
    parameter_shapes = {tuple(p.shape) for p in student.model.parameters()}
    # one [E] probability vector per hidden layer, nothing shaped like a weight, feature or label tensor
    assert [s.shape for s in stats] == [(num_edges,)] * cfg.model.hidden_layers
    assert not {s.shape for s in stats} & parameter_shapes
    assert all(s.dtype == np.float32 and (s >= 0).all() and (s <= 1).all() for s in stats)
