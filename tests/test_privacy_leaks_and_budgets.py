"""Privacy that holds around the mechanism: nothing unaccounted leaves a client; budgets survive resume and extension."""

from __future__ import annotations

import json
import math
import logging

import pytest
import torch

from fedalign.config import config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.privacy import PrivacyLedger
from fedalign.wire import ACCOUNTED_METRICS
from server.server_app import serve

from loopback import LoopbackGrid

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 2, "rounds": 4},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "output": {"progress": False, "plot": False},
}
PPI = {
    "data": {"name": "synthetic-ppi", "synthetic": {"num_graphs": 12, "min_nodes": 30, "max_nodes": 40}},
    "partition": {"scheme": "graphs", "public_fraction": 0.2},
    "federation": {"num_clients": 2, "rounds": 2},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "output": {"progress": False, "plot": False},
}
GAUSSIAN = {"mechanism": "gaussian", "noise_multiplier": 4.0, "reproducible_noise": True, "free_initial_release": False}


def cfg_of(base, **sections):
    raw = json.loads(json.dumps(base))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return config_from_dict(raw)


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("base,privacy", [(SMALL, GAUSSIAN), (PPI, {"dp_sgd": {"enabled": True}}),
                                          (PPI, {**GAUSSIAN, "dp_sgd": {"enabled": True}})],
                         ids=["gaussian", "dp-sgd", "both"])
def test_with_privacy_every_reply_carries_only_accounted_values(base, privacy, tmp_path, flower_task_identity):
    """Every reply of a run, inspected on the wire: accounted metrics, who replied, the release -- nothing else."""
    cfg = cfg_of(base, privacy=privacy)
    seen = []
    grid = LoopbackGrid(2, tmp_path / "state", tamper=lambda msg, reply: seen.append((msg, reply)) or reply)
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished" and len(seen) >= 4
    for msg, reply in seen:
        content = reply.content
        assert set(content.keys()) <= {"metrics", "meta", "statistics"}
        assert set(content["metrics"].keys()) <= ACCOUNTED_METRICS
        if int(msg.content["config"]["round"]) >= 0:  # a release (round -1 only asks who the node is)
            assert "epsilon" in content["metrics"]
        assert set(content["meta"].keys()) == {"partition-id"}  # no timing: it depends on the data's size
    # what the clients kept is on their own disks, never in the server's round log
    logs = sorted((tmp_path / "state" / run_dir.name).glob("client-*-evaluation.jsonl"))
    assert len(logs) == 2 and all("val_metric" in json.loads(line) for p in logs for line in p.read_text().splitlines())
    assert not any("val_metric" in r or "task_loss" in r for r in rows_of(run_dir))
    assert summary["metrics_source"] == "round log" and summary["clients"]["0"]["best_val"] is None


def test_in_process_runs_merge_the_clients_logs_as_evaluation_only(tmp_path):
    cfg = cfg_of(SMALL, privacy=GAUSSIAN)
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    assert not any("val_metric" in r for r in rows_of(run_dir))
    evaluation = [json.loads(line) for line in (run_dir / "evaluation.jsonl").read_text().splitlines()]
    assert {(r["round"], r["client"]) for r in evaluation} == {(r, (r - 1) % 2) for r in range(1, 5)}
    assert summary["metrics_source"].startswith("client evaluation logs")
    best = max((r for r in evaluation if r["client"] == 0), key=lambda r: (r["val_metric"], -r["round"]))
    assert summary["clients"]["0"]["best_val"] == best["val_metric"]
    assert summary["clients"]["0"]["test_at_best_val"] == best["test_metric"]
    plain_dir, plain = run_inprocess(cfg_of(SMALL), tmp_path / "plain")  # without privacy everything is sent
    assert all("val_metric" in r for r in rows_of(plain_dir) if r["round"] > 0)
    assert plain["metrics_source"] == "round log" and not (plain_dir / "evaluation.jsonl").exists()


def test_in_process_resume_continues_the_students_and_their_ledgers(tmp_path):
    """A run stopped after 2 rounds and resumed to 4 ends where an uninterrupted 4-round run ends."""
    cfg4 = cfg_of(SMALL, privacy=GAUSSIAN)
    _, whole = run_inprocess(cfg4, tmp_path / "whole")
    cfg2 = cfg_of(SMALL, privacy=GAUSSIAN, federation={"rounds": 2})
    run_dir, _ = run_inprocess(cfg2, tmp_path / "resumed")
    _, resumed = run_inprocess(cfg4, run_dir, resume=True)
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(GAUSSIAN["noise_multiplier"] / math.sqrt(2), steps=3)  # round 0 + 2 turns each
    for c in ("0", "1"):
        assert resumed["clients"][c]["epsilon"] == whole["clients"][c]["epsilon"] == math.inf  # reproducible noise
        kept = [torch.load(d / "client-state" / f"client-{c}.pt", weights_only=True)["privacy_ledger"]
                for d in (tmp_path / "whole", run_dir)]
        restored = PrivacyLedger("prv", 1e-5)
        restored.load_state_dict(kept[1])
        assert kept[0] == kept[1] and restored.epsilon() == pytest.approx(ledger.epsilon())
        assert resumed["clients"][c]["test_at_best_val"] == pytest.approx(whole["clients"][c]["test_at_best_val"])
    assert [r["round"] for r in rows_of(run_dir)] == [r["round"] for r in rows_of(tmp_path / "whole")]


def test_max_epsilon_holds_across_resume_and_extension(tmp_path):
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(4.0 / math.sqrt(2), steps=3)
    budget = ledger.epsilon() * 1.001  # room for exactly 3 releases
    privacy = {**GAUSSIAN, "reproducible_noise": False, "max_epsilon": budget}
    run_dir, _ = run_inprocess(cfg_of(SMALL, privacy=privacy, federation={"rounds": 2}), tmp_path / "run")
    _, summary = run_inprocess(cfg_of(SMALL, privacy=privacy, federation={"rounds": 8}), run_dir, resume=True)
    rows = rows_of(run_dir)
    for client in (0, 1):
        sent = [r for r in rows if r["client"] == client and r["status"] == "ok"]
        assert len(sent) == 3 and all(r["status"] == "withheld" for r in rows if r["client"] == client
                                      and r["round"] > sent[-1]["round"])
        assert summary["clients"][str(client)]["epsilon"] <= budget


def test_an_extended_target_epsilon_run_keeps_its_sigma_and_says_epsilon_grows(tmp_path, caplog):
    privacy = {"mechanism": "gaussian", "target_epsilon": 4.0, "free_initial_release": False}
    run_dir, first = run_inprocess(cfg_of(SMALL, privacy=privacy), tmp_path / "run")
    assert max(c["epsilon"] for c in first["clients"].values()) <= 4.0
    with caplog.at_level(logging.WARNING, logger="fedalign"):
        _, extended = run_inprocess(cfg_of(SMALL, privacy=privacy, federation={"rounds": 8}), run_dir, resume=True)
    assert "the run was extended" in caplog.text and "above privacy.target_epsilon=4" in caplog.text
    assert extended["clients"]["0"]["epsilon"] > 4.0  # reported, not hidden
    # every release, before and after the extension, was made with the first run's sigma (solved for 3
    # releases): the ledger holds one multiplier, and the reported epsilon is that of all releases at it
    saved = torch.load(run_dir / "client-state" / "client-0.pt", weights_only=True)
    rows = [r for r in rows_of(run_dir) if r["client"] == 0 and "epsilon" in r]
    assert {tuple(h[:2]) for h in saved["privacy_ledger"]["history"]} == {(saved["noise_multiplier"] / math.sqrt(2), 1.0)}
    ledger = PrivacyLedger("prv", 1e-5)
    ledger.record(saved["noise_multiplier"] / math.sqrt(2), steps=len(rows))
    assert len(rows) == 5 and rows[-1]["epsilon"] == pytest.approx(ledger.epsilon())
