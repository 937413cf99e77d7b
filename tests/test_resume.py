"""Faults: a lost client, a client that comes back, a server that restarts mid-run."""

import json

import numpy as np
import pytest
import torch

from fedalign_flower.cli import main as cli_main
from fedalign.config import config_from_dict
from fedalign.server import ServerState
from fedalign.runner import check_resumable
from server.server_app import serve

from loopback import LoopbackGrid, ServerCrash

SMALL = {
    "name": "resume",
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "federation": {"num_clients": 2, "rounds": 6},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.3},
    "train": {"local_epochs": 2},
    "output": {"progress": False, "plot": False},
}
COMPARED = ("task_loss", "align_loss", "val_metric", "test_metric")


def rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def comparable(rows):
    return [(r["round"], r["client"], r["status"], *(round(r[k], 6) for k in COMPARED if k in r)) for r in rows]


@pytest.fixture
def uninterrupted(tmp_path_factory, flower_task_identity):
    """The reference: the same experiment run through without faults."""
    base = tmp_path_factory.mktemp("reference")
    run_dir, summary = serve(LoopbackGrid(2, base / "state"), config_from_dict(SMALL), base / "run")
    assert summary["status"] == "finished"
    return rounds(run_dir)


class CrashAfterReply:
    """Tamper hook: the server dies after client 1 answered round ``r`` (its checkpoint holds round r)."""

    def __init__(self, round_number):
        self.round_number = round_number

    def __call__(self, msg, reply):
        if int(msg.content["config"]["round"]) == self.round_number:
            raise ServerCrash(f"server died after the reply of round {self.round_number}")
        return reply


@pytest.mark.parametrize("crash", ["before-round-4", "after-reply-of-round-3"])
def test_a_restarted_server_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, uninterrupted, crash):
    cfg = config_from_dict(SMALL)
    state, run_dir = tmp_path / "state", tmp_path / "run"
    grid = LoopbackGrid(2, state, crash_before_round=4) if crash == "before-round-4" \
        else LoopbackGrid(2, state, tamper=CrashAfterReply(3))
    with pytest.raises(ServerCrash):
        serve(grid, cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "ServerCrash" in summary["error"]
    completed, cache, _ = ServerState(run_dir).load()
    assert completed == 3 if crash == "before-round-4" else completed == 2
    assert sorted(cache) == [0, 1]

    # a new server process (new grid, same client disks) carries on
    run_dir2, summary = serve(LoopbackGrid(2, state), cfg, run_dir, resume=True)
    assert run_dir2 == run_dir and summary["status"] == "finished"
    rows = rounds(run_dir)
    assert [(r["round"], r["client"]) for r in rows] == [(r["round"], r["client"]) for r in uninterrupted]
    # identical to the run that never stopped: no round trained twice, nothing lost
    assert comparable(rows) == comparable(uninterrupted)
    # the client that had already answered round 3 did not train it again
    ckpt = torch.load(state / run_dir.name / "client-0.pt", weights_only=True)
    assert ckpt["epochs_trained"] == 3 * SMALL["train"]["local_epochs"]


def test_a_lost_client_is_recorded_missing_and_rejoins_from_its_checkpoint(tmp_path, flower_task_identity):
    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 8}})
    state = tmp_path / "state"
    grid = LoopbackGrid(2, state)

    def tamper(msg, reply):  # client 1's SuperNode dies after answering round 2, and is back for round 6
        r = int(msg.content["config"]["round"])
        if r == 2 and reply.content["meta"]["partition-id"] == 1:
            grid.disconnect(1)
        if r == 5:
            grid.reconnect(1)
        return reply

    grid.tamper = tamper
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    statuses = {(r["round"], r["client"]): r["status"] for r in rounds(run_dir)}
    assert statuses[(4, 1)] == "missing"  # alternating: client 1 trains in even rounds
    assert [m["round"] for m in summary["missing_rounds"]] == [4]
    assert statuses[(6, 1)] == statuses[(8, 1)] == "ok"
    # it resumed from its checkpoint: it trained in rounds 2, 6 and 8, 2 epochs each
    ckpt = torch.load(state / run_dir.name / "client-1.pt", weights_only=True)
    assert ckpt["epochs_trained"] == 3 * 2


def test_resume_refuses_a_different_experiment(tmp_path):
    cfg = config_from_dict(SMALL)
    from fedalign.inprocess import run_inprocess

    run_dir, _ = run_inprocess(cfg, tmp_path / "run")
    check_resumable(run_dir, config_from_dict({**SMALL, "federation": {**SMALL["federation"], "rounds": 9}}))
    with pytest.raises(ValueError, match=r"align.strategy: 'alignahead' -> 'none'"):
        check_resumable(run_dir, config_from_dict({**SMALL, "align": {"strategy": "none"}}))


def test_cli_resume_extends_a_finished_run_without_repeating_rounds(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    import yaml

    config.write_text(yaml.safe_dump(SMALL))
    run_dir = tmp_path / "run"
    assert cli_main(["run", str(config), "--engine", "inprocess", "--run-dir", str(run_dir)]) == 0
    assert cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(run_dir),
                     "--set", "federation.rounds=9"]) == 0
    assert "resuming" in capsys.readouterr().err
    rows = rounds(run_dir)
    assert [(r["round"], r["client"]) for r in rows if r["round"] > 0] == [(r, (r - 1) % 2) for r in range(1, 10)]
    assert json.loads((run_dir / "summary.json").read_text())["rounds_completed"] == 9
    assert cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(run_dir),
                     "--set", "align.strategy=none"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_checkpoints_and_server_state_are_private_files(tmp_path, flower_task_identity):
    cfg = config_from_dict({**SMALL, "federation": {"num_clients": 2, "rounds": 2}})
    run_dir, _ = serve(LoopbackGrid(2, tmp_path / "state"), cfg, tmp_path / "run")
    files = [run_dir / "server-state.npz", *sorted((tmp_path / "state" / run_dir.name).glob("client-*.pt"))]
    assert len(files) == 3
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_deploy_keys_refuses_to_overwrite_a_key_without_force(tmp_path):
    from deploy import certs
    from deploy.__main__ import main as deploy_main

    private, public = certs.make_node_keys(tmp_path, "node-0")
    before = private.read_bytes()
    assert deploy_main(["keys", "--out", str(tmp_path), "node-0"]) == 2
    assert private.read_bytes() == before
    assert deploy_main(["keys", "--out", str(tmp_path), "node-0", "--force"]) == 0
    assert private.read_bytes() != before and private.stat().st_mode & 0o777 == 0o600


def test_a_run_saved_before_a_key_existed_matches_that_keys_default(tmp_path):
    from fedalign.runner import config_differences

    cfg = config_from_dict(SMALL)
    raw = cfg.to_dict()
    del raw["privacy"]["release_every"]  # a run made before the option existed
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(raw))
    assert config_differences(tmp_path, cfg) == []
    other = config_from_dict({**SMALL, "privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0,
                                                   "release_every": 2}})
    assert any(d.startswith("privacy.release_every: 1 -> 2") for d in config_differences(tmp_path, other))
