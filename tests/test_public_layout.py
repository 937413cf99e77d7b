"""The public layout artefact: a server that holds no data still checks every release's per-node sums.

``fedalign layout`` derives the release layout's public part where the data is; the server loads it
(``federation.public_layout``) and never opens the data root; every client checks that its own data
gives the artefact's fingerprint (``federation.public_layout_sha256``).
"""

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, Message

import fedalign.data
import fedalign.data.cache
import fedalign.server.layout
from fedalign.client import build_student
from fedalign.config import config_from_dict
from fedalign.inprocess import InProcessTransport
from fedalign.public_layout import (PublicLayoutMismatch, determining_keys,
                                    load_public_layout, public_layout_from_data, public_layout_of,
                                    save_public_layout)
from fedalign.server import Coordinator, release_layout_of, with_layout_fingerprint
from fedalign_flower.cli import main as cli_main

from loopback import LoopbackGrid

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid"},
    "federation": {"num_clients": 2, "rounds": 3},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "train": {"local_epochs": 1},
    "output": {"progress": False, "plot": False},
}
VOTES = {**SMALL, "align": {"strategy": "votes", "queries": 10}}


def cfg_of(base=SMALL, **sections):
    raw = json.loads(json.dumps(base))
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(raw)


@pytest.fixture
def artefact(tmp_path):
    """The public layout of SMALL, saved (as `fedalign layout` does where the data is)."""
    return save_public_layout(public_layout_from_data(cfg_of()), tmp_path / "layout.npz")


def forbid_data(monkeypatch) -> list:
    """From here on this process cannot read any dataset: every way to it raises; returns the calls made."""
    calls = []

    def unreadable(*args, **kwargs):
        calls.append(args)
        raise FileNotFoundError("no data root on this machine")

    for module, name in ((fedalign.data.cache, "_dataset"), (fedalign.data.cache, "load_public_graph"),
                         (fedalign.data, "load_public_graph"), (fedalign.data.cache, "load_dataset"),
                         (fedalign.server.layout, "load_public_graph")):
        monkeypatch.setattr(module, name, unreadable)
    return calls


class TamperingTransport(InProcessTransport):
    """Client 1's release of ``round_number`` is replaced by ``bad(honest)``."""

    def __init__(self, clients, round_number, bad):
        super().__init__(clients)
        self.round_number, self.bad = round_number, bad

    def train(self, jobs, round_number):
        replies = super().train(jobs, round_number)
        if round_number == self.round_number and 1 in replies:
            replies[1].statistics = self.bad(replies[1].statistics)
        return replies


# ---------------------------------------------------------------- the artefact


@pytest.mark.parametrize("base", [SMALL, VOTES], ids=["structure", "votes"])
def test_the_artefact_round_trips_and_gives_the_layout_the_data_gives(base, tmp_path):
    cfg = cfg_of(base)
    made = public_layout_from_data(cfg)
    loaded = load_public_layout(save_public_layout(made, tmp_path / "sub" / "layout.npz"))
    assert loaded.fingerprint == made.fingerprint and len(loaded.fingerprint) == 64
    assert loaded.keys == made.keys == determining_keys(cfg)
    from_file, from_data = loaded.release_layout(), release_layout_of(cfg)
    assert (from_file.num_nodes, from_file.votes) == (from_data.num_nodes, from_data.votes)
    np.testing.assert_array_equal(from_file.target, from_data.target)
    if base is VOTES:
        assert loaded.target is None and loaded.num_classes >= 2 and len(loaded.queries) == 10
        np.testing.assert_array_equal(loaded.queries, made.queries)
    else:
        assert loaded.queries is None and loaded.num_classes is None


def test_a_changed_or_foreign_file_is_refused(artefact, tmp_path):
    with np.load(artefact) as npz:
        meta, target = str(npz["meta"]), npz["target"]
    changed = tmp_path / "changed.npz"
    np.savez(changed, meta=np.array(meta), target=target[::-1].copy())
    with pytest.raises(PublicLayoutMismatch, match="changed or damaged"):
        load_public_layout(changed)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(PublicLayoutMismatch, match="cannot read a public layout"):
        load_public_layout(tmp_path / "junk.npz")
    with pytest.raises(PublicLayoutMismatch, match="cannot read"):
        load_public_layout(tmp_path / "missing.npz")


@pytest.mark.parametrize("section,values", [
    ("data", {"name": "cora", "synthetic": {}}), ("data", {"split": [0.5, 0.25, 0.25]}),
    ("data", {"synthetic": {"num_nodes": 140}}), ("seed", 1), ("partition", {"scheme": "dirichlet"}),
    ("partition", {"public_fraction": 0.3}), ("align", {"strategy": "one-to-one"}),
])
def test_the_fingerprint_changes_with_every_determining_key(section, values):
    base = cfg_of()
    graph = np.array([[0, 1, 2, 3], [1, 0, 0, 2]])
    reference = public_layout_of(base, graph, 4, 3, False).fingerprint
    other = cfg_of(**{section: values})
    assert public_layout_of(other, graph, 4, 3, False).fingerprint != reference
    assert public_layout_of(base, graph[:, :3], 4, 3, False).fingerprint != reference  # and with the bytes


def test_the_fingerprint_of_a_query_set_changes_with_q_and_ignores_where_things_live():
    votes = cfg_of(VOTES)
    reference = public_layout_of(votes, None, 24, 4, False).fingerprint
    assert public_layout_of(cfg_of(VOTES, align={"queries": 11}), None, 24, 4, False).fingerprint != reference
    assert public_layout_of(votes, None, 24, 4, True).fingerprint != reference  # multilabel
    assert public_layout_of(votes, None, 24, 5, False).fingerprint != reference  # classes
    elsewhere = cfg_of(VOTES, data={"root": "/elsewhere", "cache_dir": "/tmp/x"}, federation={"rounds": 9})
    assert public_layout_of(elsewhere, None, 24, 4, False).fingerprint == reference


def test_the_data_itself_decides_the_bytes():
    a, b = public_layout_from_data(cfg_of()), public_layout_from_data(cfg_of(seed=1))
    assert a.canonical_bytes() != b.canonical_bytes()


def test_strategies_without_statistics_have_no_layout():
    with pytest.raises(Exception, match="releases no statistics"):
        public_layout_of(cfg_of(align={"strategy": "none"}), None, 4, 3, False)


# ---------------------------------------------------------------- the server, without the data


def test_the_server_without_data_checks_per_node_sums_against_the_artefact(artefact, monkeypatch, caplog):
    cfg = with_layout_fingerprint(cfg_of(federation={"public_layout": str(artefact)}))
    assert cfg.federation.public_layout_sha256 == load_public_layout(artefact).fingerprint
    clients = InProcessTransport.from_config(cfg).clients  # each client reads its own data (and checks the fingerprint)
    calls = forbid_data(monkeypatch)  # the server, from here on, cannot
    transport = TamperingTransport(clients, 2, lambda honest: [honest[0], honest[1] * 2])  # sums of 2, right shape
    records = Coordinator(cfg, transport).run()
    assert [(r.round, r.client) for r in records if r.status == "rejected"] == [(2, 1)]
    assert "sum to" in [r for r in records if r.status == "rejected"][0].error
    assert all(r.status == "ok" for r in records if (r.round, r.client) != (2, 1))  # honest releases pass
    assert "cannot read the dataset" not in caplog.text and calls == []
    without = cfg_of()  # no artefact and no data: today's fallback, with its warning
    assert release_layout_of(without) is None and "cannot read the dataset" in caplog.text


def test_secure_aggregation_of_votes_reads_c_off_the_artefact(tmp_path, monkeypatch):
    from server.flower_transport import FlowerTransport

    path = save_public_layout(public_layout_from_data(cfg_of(VOTES)), tmp_path / "votes.npz")
    forbid_data(monkeypatch)
    cfg = cfg_of(VOTES, federation={"public_layout": str(path)})
    assert FlowerTransport(None, cfg, "tag")._clip_norm() == math.sqrt(10)
    with pytest.raises(RuntimeError, match="public layout artefact"):
        FlowerTransport(None, cfg_of(VOTES), "tag")._clip_norm()


def test_the_server_refuses_an_artefact_made_for_another_experiment(artefact):
    with pytest.raises(PublicLayoutMismatch, match="seed: 0 there, 3 here"):
        release_layout_of(cfg_of(seed=3, federation={"public_layout": str(artefact)}))
    with pytest.raises(PublicLayoutMismatch, match="the run expects"):
        with_layout_fingerprint(cfg_of(federation={"public_layout": str(artefact), "public_layout_sha256": "ab" * 32}))


# ---------------------------------------------------------------- the clients check it


def test_a_client_refuses_a_fingerprint_its_data_does_not_give(artefact):
    foreign = public_layout_from_data(cfg_of(seed=1)).fingerprint
    with pytest.raises(PublicLayoutMismatch, match="client 0's data gives public layout fingerprint"):
        build_student(cfg_of(federation={"public_layout_sha256": foreign}), 0)
    right = load_public_layout(artefact).fingerprint
    assert build_student(cfg_of(federation={"public_layout_sha256": right}), 1) is not None


def test_flower_clients_refuse_a_server_artefact_that_does_not_match_their_data(tmp_path, flower_task_identity):
    from server.server_app import serve

    made = public_layout_from_data(cfg_of())
    forged = dataclasses.replace(made, target=np.sort(made.target)[::-1].copy())  # same keys, another graph
    path = save_public_layout(forged, tmp_path / "forged.npz")
    with pytest.raises(PublicLayoutMismatch, match="client 0's data"):
        serve(LoopbackGrid(2, tmp_path / "state"), cfg_of(federation={"public_layout": str(path)}), tmp_path / "run")


def test_the_flower_server_checks_with_the_artefact_and_sends_its_fingerprint(artefact, tmp_path, monkeypatch,
                                                                            flower_task_identity):
    from server.server_app import serve

    monkeypatch.setattr(fedalign.server.layout, "load_public_graph", None)  # the server's one way to the data

    def tamper(msg, reply):
        if int(msg.content["config"]["round"]) != 2 or reply.content["meta"]["partition-id"] != 1:
            return reply
        content = reply.content
        content["statistics"]["1"] = Array(content["statistics"]["1"].numpy() * 2)
        forged = Message(content=content, reply_to=msg)
        forged.metadata._src_node_id = reply.metadata.src_node_id  # noqa: SLF001
        return forged

    grid = LoopbackGrid(2, tmp_path / "state", tamper=tamper)
    _, summary = serve(grid, cfg_of(federation={"public_layout": str(artefact)}), tmp_path / "run")
    assert summary["status"] == "finished"
    assert [(r["round"], r["client"]) for r in summary["rejected_rounds"]] == [(2, 1)]
    sent = json.loads(grid.sent[-1].content["config"]["experiment"])["federation"]
    assert sent["public_layout_sha256"] == load_public_layout(artefact).fingerprint


@pytest.mark.parametrize("federation,words", [
    ({"public_layout_sha256": "abc"}, "64 hex digits"), ({"public_layout_sha256": "zz" * 32}, "64 hex digits"),
    ({"public_layout": " "}, "an empty path"),
])
def test_the_config_refuses_a_malformed_fingerprint_or_path(federation, words):
    with pytest.raises(Exception, match=f"federation.public_layout.*{words}"):
        cfg_of(federation=federation)


# ---------------------------------------------------------------- the command and the house rules


def test_fedalign_layout_writes_the_artefact_and_prints_its_fingerprint(tmp_path, capsys):
    config = tmp_path / "x.yaml"
    config.write_text(json.dumps(SMALL))
    assert cli_main(["layout", str(config), "--out", str(tmp_path / "out.npz")]) == 0
    printed = capsys.readouterr().out
    assert load_public_layout(tmp_path / "out.npz").fingerprint in printed
    assert "federation.public_layout=" in printed


def test_the_artefact_module_imports_neither_side():
    source = (Path(fedalign.data.__file__).parents[1] / "public_layout.py").read_text()
    modules = [n.module or "" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.lstrip(".").split(".")[0] in ("client", "models", "privacy", "server")]
