"""The command line and first-run experience: fixable errors end at once with one line; runs are quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedalign.config import config_from_dict
from server.server_app import serve

from loopback import LoopbackGrid

PROJECT_DIR = Path(__file__).resolve().parent.parent
FEDALIGN = str(Path(sys.executable).parent / "fedalign")


def fedalign(*args: str, env_drop: tuple[str, ...] = ("FEDALIGN_DATA_ROOT",), timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    started = time.monotonic()
    proc = subprocess.run([FEDALIGN, *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - started


@pytest.mark.parametrize("engine", ["inprocess", "flower"])
def test_missing_data_ends_at_once_with_one_line(engine):
    proc, seconds = fedalign("run", "simulations/cora.yaml", "--engine", engine)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, no traceback
    assert proc.stderr.startswith("fedalign: dataset 'cora' needs its raw files but no data root is set")
    assert "FEDALIGN_DATA_ROOT" in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 30


def test_check_and_run_accept_the_same_configs():
    """`check` refuses what `run` would refuse, with the same line (synthetic options on a real dataset)."""
    args = ["simulations/quickstart.yaml", "--set", "data.name=amazon-photo"]
    check, _ = fedalign("check", *args)
    run, _ = fedalign("run", *args, "--engine", "inprocess")
    assert check.returncode == run.returncode == 2
    assert check.stderr == run.stderr and "data.synthetic: options of the synthetic generators" in check.stderr
    ok, _ = fedalign("check", "simulations/quickstart.yaml")
    assert ok.returncode == 0 and json.loads(ok.stdout)["name"] == "quickstart"


def test_a_first_round_where_every_client_fails_alike_stops_the_run(tmp_path, flower_task_identity):
    """In deployment the data lives on the clients: if all fail on it in round 0, the run stops with that error."""
    cfg = config_from_dict({"data": {"name": "cora", "root": str(tmp_path / "no-data")},
                            "federation": {"num_clients": 2, "rounds": 50}, "output": {"progress": False}})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="every client failed in round 0 with the same error"):
        serve(LoopbackGrid(2, tmp_path / "state", raise_errors=False), cfg, tmp_path / "run")
    assert time.monotonic() - started < 30
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "raw file(s) missing" in summary["error"]
    assert len(summary["missing_rounds"]) == 2  # round 0 of both clients, and nothing after it


def test_a_server_that_fails_at_start_still_writes_its_summary(tmp_path, monkeypatch, flower_task_identity):
    import fedalign.server.coordinator as coordinator

    def broken(cfg):
        raise ValueError("the public graph cannot be built")

    monkeypatch.setattr(coordinator, "release_layout_of", broken)
    cfg = config_from_dict({"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 80}},
                            "output": {"progress": False}})
    with pytest.raises(ValueError, match="cannot be built"):
        serve(LoopbackGrid(2, tmp_path / "state"), cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "cannot be built" in summary["error"]
