"""A client's prepared data on disk: same data as building it, built once, stale when its inputs change."""

import os
import stat

import pytest
import torch

from fedalign.client import local_data as client_data_module
from fedalign.client import prepared
from fedalign.client.prepared import prepared_client_data, prepared_path
from fedalign.config import config_from_dict
from fedalign.data import load_partition

CSBM = {"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 150}},
        "partition": {"scheme": "dirichlet", "public_fraction": 0.2}, "federation": {"num_clients": 3}}


def assert_same_graph(a, b):
    assert set(a.keys()) == set(b.keys())
    for key in a.keys():
        assert torch.equal(a[key], b[key]), key


def assert_same_client_data(a, b):
    for name in ("train", "val", "test"):
        assert_same_graph(getattr(a, name).graph, getattr(b, name).graph)
        assert torch.equal(getattr(a, name).mask, getattr(b, name).mask)
    assert_same_graph(a.alignment, b.alignment)
    # a single local graph stays one object shared by the splits, as built
    assert (a.train.graph is a.val.graph) == (b.train.graph is b.val.graph)


def counting_builds(monkeypatch):
    calls = []
    original = client_data_module.client_data

    def counted(cfg, client_id):
        calls.append(client_id)
        return original(cfg, client_id)

    monkeypatch.setattr(prepared, "client_data", counted)
    return calls


def test_the_prepared_share_is_built_once_and_equals_the_built_one(tmp_path, monkeypatch):
    cfg = config_from_dict(CSBM)
    calls = counting_builds(monkeypatch)
    task, first = prepared_client_data(cfg, 1, tmp_path)
    task_again, second = prepared_client_data(cfg, 1, tmp_path)
    assert calls == [1]  # the second message only read the file
    assert task == task_again
    _, clients = load_partition(cfg)
    assert_same_client_data(second, clients[1])
    path = prepared_path(tmp_path, cfg, 1)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_it_holds_only_this_clients_share_and_the_public_graph(tmp_path):
    cfg = config_from_dict(CSBM)
    dataset, clients = load_partition(cfg)
    _, data = prepared_client_data(cfg, 0, tmp_path)
    saved = torch.load(prepared_path(tmp_path, cfg, 0), weights_only=True)
    saved_nodes = sum(g["x"].shape[0] for g in saved["graphs"])
    assert saved_nodes == clients[0].train.graph.num_nodes + clients[0].alignment.num_nodes
    assert saved_nodes < dataset.train.graph.num_nodes
    public = set(clients[0].alignment.global_id.tolist())
    others = set(clients[1].train.graph.global_id.tolist()) | set(clients[2].train.graph.global_id.tolist())
    assert not (others - public) & set(data.train.graph.global_id.tolist())  # no other client's private node


@pytest.mark.parametrize("change", ["partition.alpha=0.3", "seed=1", "federation.num_clients=4",
                                    "data.synthetic.num_nodes=160"])
def test_a_changed_config_makes_a_new_one(tmp_path, change):
    key, value = change.split("=")
    cfg = config_from_dict(CSBM)
    changed = config_from_dict(CSBM)
    section, _, name = key.rpartition(".")
    target = changed
    for part in section.split(".") if section else []:
        target = getattr(target, part)
    if isinstance(target, dict):
        target[name] = type(target[name])(value)
    else:
        setattr(target, name, type(getattr(target, name))(value))
    assert prepared_path(tmp_path, cfg, 0) != prepared_path(tmp_path, changed, 0)
    assert prepared_path(tmp_path, cfg, 0) != prepared_path(tmp_path, cfg, 1)


def test_a_changed_raw_file_makes_a_new_one(tmp_path, tiny_ppi_root, monkeypatch):
    root, _ = tiny_ppi_root
    cfg = config_from_dict({"data": {"name": "ppi", "root": str(root), "cache_dir": str(tmp_path / "cache")},
                            "federation": {"num_clients": 2}})
    calls = counting_builds(monkeypatch)
    before = prepared_path(tmp_path, cfg, 0)
    prepared_client_data(cfg, 0, tmp_path)
    labels = root / "PPI" / "raw" / "train_labels.npy"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert prepared_path(tmp_path, cfg, 0) != before
    prepared_client_data(cfg, 0, tmp_path)
    assert calls == [0, 0]


def test_a_torn_file_is_rebuilt(tmp_path, monkeypatch):
    cfg = config_from_dict(CSBM)
    path = prepared_path(tmp_path, cfg, 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"torn")
    calls = counting_builds(monkeypatch)
    _, data = prepared_client_data(cfg, 2, tmp_path)
    assert calls == [2]
    assert_same_client_data(data, load_partition(cfg)[1][2])


def test_a_per_message_process_reads_its_prepared_share_and_logs_its_timings(tmp_path, monkeypatch,
                                                                             flower_task_identity):
    """What a SuperNode's fresh ``flwr-clientapp`` process does, through the real ClientApp and ServerApp."""
    import json

    import clients.client_app as client_app
    from server.server_app import serve
    from tests.loopback import LoopbackGrid

    cfg = config_from_dict({**CSBM, "federation": {"num_clients": 2, "rounds": 4},
                            "model": {"hidden_layers": 2, "hidden_dim": 8}, "train": {"local_epochs": 1},
                            "output": {"progress": False, "plot": False}})
    monkeypatch.setattr(client_app, "FRESH_PROCESS_PER_MESSAGE", True)
    calls = counting_builds(monkeypatch)
    state = tmp_path / "state"
    _, summary = serve(LoopbackGrid(2, state), cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    assert sorted(calls) == [0, 1]  # each client built its share once, then read it for every other message
    assert all(prepared_path(state, cfg, c).is_file() for c in (0, 1))
    (log,) = state.glob("*/client-0-timing.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) >= 3 and all(r["fresh_process"] for r in rows)
    assert all(r[k] >= 0 for r in rows for k in ("load", "work", "total", "imports"))
    assert {r["type"] for r in rows} >= {"query", "train"}
