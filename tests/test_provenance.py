"""Provenance by construction: every run folder, sweep and benchmark says which code, libraries, machine and
command made it (:mod:`fedalign.provenance`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedalign.config import config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.outputs import earlier_provenance
from fedalign.provenance import REVISION_ENV, command_line, git_state, provenance, revision_state
from fedalign.sweep import load_sweep, run_sweep
from fedalign.sweep_tables import read_sweep_json

REPO = Path(__file__).resolve().parents[1]
TINY = {"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 100}},
        "federation": {"num_clients": 2, "rounds": 1},
        "model": {"hidden_layers": 2, "hidden_dim": 4},
        "output": {"progress": False, "plot": False}}


def check_provenance(block: dict, command_has: str = "") -> None:
    """``block`` is a complete provenance record.

    Args:
        block: a ``provenance`` value.
        command_has: a string its ``command`` must contain."""
    assert block["revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", block["revision"]), block["revision"]
    if block["revision"] != "unknown":
        assert isinstance(block["dirty"], bool) and block["revision_source"]
    assert set(block["versions"]) == {"python", "torch", "torch_geometric", "flwr", "opacus"}
    assert all(isinstance(v, str) and v for v in block["versions"].values())
    machine = block["machine"]
    assert machine["cpu_model"] and machine["gpu"] and machine["logical_cores"] >= 1 and machine["torch_threads"] >= 1
    assert isinstance(block["command"], str) and command_has in block["command"]


def test_the_project_checkout_records_its_head():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    block = provenance()
    check_provenance(block)
    if head.returncode == 0:
        assert block["revision"] == head.stdout.strip() and block["revision_source"] == "git"


def test_an_inprocess_run_records_its_provenance(tmp_path):
    run_dir, summary = run_inprocess(config_from_dict({**TINY, "name": "prov"}), tmp_path / "run")
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["provenance"] == summary["provenance"]
    check_provenance(saved["provenance"])
    assert saved["status"] == "finished" and "provenance_earlier_parts" not in saved


def test_a_sweep_records_its_command_and_each_cell_its_own(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"seed": [0]}, "output": "results"}))
    run_sweep(load_sweep(path), run_inprocess)
    body = json.loads((tmp_path / "results" / "sweep.json").read_text())
    check_provenance(body["provenance"])
    assert body["purpose"] == "study" and read_sweep_json(tmp_path / "results")["provenance"] == body["provenance"]


def test_a_benchmark_smoke_output_records_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.communication", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    check_provenance(results["provenance"], command_has="--smoke")
    assert results["provenance"]["machine"]["torch_threads"] == 1  # --threads' default, set before writing


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def tmp_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_the_dirty_flag_follows_the_work_tree(tmp_repo):
    clean = git_state(tmp_repo)
    assert re.fullmatch(r"[0-9a-f]{40}", clean["revision"]) and clean["dirty"] is False
    assert clean["revision"] == git(tmp_repo, "rev-parse", "HEAD").strip()
    for written in ("outputs/run-1/summary.json", "results/benchmarks/x/results.json"):  # what runs write
        (tmp_repo / written).parent.mkdir(parents=True, exist_ok=True)
        (tmp_repo / written).write_text("{}")
    assert git_state(tmp_repo)["dirty"] is False
    git(tmp_repo, "add", "results")
    git(tmp_repo, "commit", "-q", "-m", "results")
    (tmp_repo / "results/benchmarks/x/results.json").write_text('{"again": 1}')  # a benchmark measured again
    assert git_state(tmp_repo)["dirty"] is False
    (tmp_repo / "code.py").write_text("x = 2\n")  # a modified tracked file
    dirty = git_state(tmp_repo)
    head = git(tmp_repo, "rev-parse", "HEAD").strip()
    assert dirty["dirty"] is True and dirty["dirty_paths"] == ["code.py"] and dirty["revision"] == head
    git(tmp_repo, "checkout", "code.py")
    (tmp_repo / "new_module.py").write_text("y = 1\n")  # a new source file, not yet committed
    assert git_state(tmp_repo)["dirty"] is True


def test_no_checkout_is_unknown_with_its_reason_or_the_declared_revision(tmp_repo, tmp_path, monkeypatch):
    monkeypatch.delenv(REVISION_ENV, raising=False)
    inside = tmp_repo / "installed"  # a copy inside another repository is not that repository's code
    inside.mkdir()
    bare = tmp_path / "bare"
    bare.mkdir()
    for folder in (inside, bare):
        state = revision_state(folder)
        assert state["revision"] == "unknown" and state["dirty"] is None
        assert state["revision_source"].startswith("unknown: ") and REVISION_ENV in state["revision_source"]
    declared = revision_state(bare, "a" * 40 + "+dirty")
    assert declared["revision"] == "a" * 40 and declared["dirty"] is True and REVISION_ENV in declared["revision_source"]
    monkeypatch.setenv(REVISION_ENV, "b" * 40)
    assert revision_state(bare)["revision"] == "b" * 40 and revision_state(bare)["dirty"] is False
    assert revision_state(tmp_repo)["revision"] != "b" * 40  # a checkout's own git wins


def test_a_resumed_run_keeps_its_earlier_parts_provenance(tmp_path):
    first, second = {"revision": "a" * 40}, {"revision": "b" * 40}
    (tmp_path / "summary.json").write_text(json.dumps({"provenance": second, "provenance_earlier_parts": [first]}))
    assert earlier_provenance(tmp_path) == [first, second]
    assert earlier_provenance(tmp_path / "missing") == []


def test_the_deployment_hands_the_revision_to_the_serverapp():
    from deploy.launch import run_config

    assert run_config("simulations/quickstart.yaml", revision="c" * 40) == (
        f"config='simulations/quickstart.yaml' revision='{'c' * 40}'")
    assert "revision" not in run_config("simulations/quickstart.yaml")


def test_the_command_line_keeps_no_token():
    argv = ["/venv/bin/flwr-simulation", "--runtime-api-address", "127.0.0.1:1", "--token", "abc123", "--insecure",
            "--auth-password=hunter2", "it's"]
    assert command_line(argv) == ("/venv/bin/flwr-simulation --runtime-api-address 127.0.0.1:1 --token '<redacted>' "
                                  "--insecure '--auth-password=<redacted>' 'it'\"'\"'s'")
