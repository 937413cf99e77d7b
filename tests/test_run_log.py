"""What the server writes about a run: no per-client time with privacy on, rejections logged once
and never timed, the whole run's wall time after a resume, and a ServerApp log without per-request lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedalign.config import config_from_dict
from fedalign.inprocess import CLIENT_STATE, InProcessTransport, run_inprocess
from fedalign.runner import run_experiment
from fedalign.server import ServerState
from server.server_app import serve
from server.flower_transport import FlowerTransport

from loopback import LoopbackGrid

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "federation": {"num_clients": 2, "rounds": 3},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "train": {"local_epochs": 1},
    "output": {"progress": False, "plot": False},
}
# Each way the config turns privacy on (fedalign.wire.private_releases)
PRIVATE = {
    "gaussian": {"mechanism": "gaussian", "noise_multiplier": 4.0},
    "labels": {"unit": "labels", "label_epsilon": 2.0},
}


def cfg_of(privacy: dict | None = None, **federation):
    raw = json.loads(json.dumps(SMALL))
    raw["federation"].update(federation)
    if privacy:
        raw["privacy"] = privacy
    return config_from_dict(raw)


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def timing_keys(value) -> set[str]:
    """Every key anywhere in a JSON value that names a time (``seconds``, ``*_seconds``, ``elapsed`` ...)."""
    if isinstance(value, dict):
        own = {k for k in value if "second" in k or "time" in k or "elapsed" in k}
        return own.union(*(timing_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(timing_keys(v) for v in value))
    return set()


def server_files(run_dir: Path) -> dict[str, object]:
    """Every JSON / JSON-lines file the server wrote into the run folder (not the clients' state)."""
    files = {}
    for path in sorted(run_dir.iterdir()):
        if path.suffix == ".json":
            files[path.name] = json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            files[path.name] = [json.loads(line) for line in path.read_text().splitlines()]
    return files


# ---------------------------------------------------------------- privacy: no per-client time


@pytest.mark.parametrize("privacy", sorted(PRIVATE))
def test_a_private_in_process_run_logs_no_per_client_time(privacy, tmp_path, capsys):
    cfg = cfg_of(PRIVATE[privacy])
    cfg.output.progress = True
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    rows = rows_of(run_dir)
    assert len(rows) == 2 + 3 and all(r["status"] == "ok" for r in rows)  # round 0 for both, then 3 turns
    assert not any("seconds" in r for r in rows)
    files = server_files(run_dir)
    assert {"rounds.jsonl", "summary.json"} <= set(files)
    # the run's total is the only time the server writes; nothing per client, in any file
    assert {name: timing_keys(content) for name, content in files.items()} == {
        name: ({"wall_seconds"} if name == "summary.json" else set()) for name in files}
    # the progress lines carry no elapsed time either (the gap between two lines is one client's turn)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[round")]
    assert [line.split("]")[0] for line in lines] == ["[round init", "[round 1/3", "[round 2/3", "[round 3/3"]


def test_a_run_without_privacy_keeps_each_clients_time(tmp_path, capsys):
    cfg = cfg_of()
    cfg.output.progress = True
    started = time.monotonic()
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    took = time.monotonic() - started
    rows = rows_of(run_dir)
    assert len(rows) == 5 and all(0 < r["seconds"] < took for r in rows)
    assert 0 < summary["wall_seconds"] <= took
    assert all(line.split("]")[0].endswith("s") for line in capsys.readouterr().err.splitlines()
               if line.startswith("[round"))


def test_the_flower_server_times_no_private_client(tmp_path, flower_task_identity):
    """Over the Flower transport: with privacy the replies carry no server-side time, and the round log none."""
    private, plain = cfg_of(PRIVATE["gaussian"]), cfg_of()
    replies = FlowerTransport(LoopbackGrid(2, tmp_path / "s1"), private, "private").query([0, 1], 0)
    assert [r.seconds for r in replies.values()] == [None, None] and all(r.statistics for r in replies.values())
    replies = FlowerTransport(LoopbackGrid(2, tmp_path / "s2"), plain, "plain").query([0, 1], 0)
    assert all(r.seconds > 0 for r in replies.values())

    run_dir, summary = serve(LoopbackGrid(2, tmp_path / "state"), private, tmp_path / "run")
    assert summary["status"] == "finished"
    assert len(rows_of(run_dir)) == 5 and not any("seconds" in r for r in rows_of(run_dir))
    assert timing_keys(summary) == {"wall_seconds"}


# ---------------------------------------------------------------- rejections and missing replies


def test_a_transport_rejection_is_logged_once_and_not_timed(tmp_path, flower_task_identity, caplog):
    cfg = cfg_of(rounds=4)

    def tamper(msg, reply):  # round 2: client 1's reply carries a record outside the wire format
        if int(msg.content["config"]["round"]) == 2 and reply.content["meta"]["partition-id"] == 1:
            reply.content["weights"] = ArrayRecord({"w": Array(np.ones(4, dtype=np.float32))})
        return reply

    def fail(msg, pid):  # round 3: client 0's node answers with an error
        return int(msg.content["config"]["round"]) == 3 and pid == 0

    grid = LoopbackGrid(2, tmp_path / "state", tamper=tamper, fail=fail, raise_errors=False)
    with caplog.at_level(logging.INFO, logger="fedalign"):
        run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    rows = {(r["round"], r["client"]): r for r in rows_of(run_dir)}
    rejected, missing = rows[(2, 1)], rows[(3, 0)]
    assert rejected["status"] == "rejected" and "unexpected records" in rejected["error"]
    assert missing["status"] == "missing" and "dropped out" in missing["error"]
    assert "seconds" not in rejected and "seconds" not in missing  # nothing was timed: no 0.0 either
    assert all(r["seconds"] > 0 for k, r in rows.items() if k not in ((2, 1), (3, 0)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("unexpected records" in w for w in warnings) == 1, warnings
    assert sum("dropped out" in w for w in warnings) == 1, warnings


# ---------------------------------------------------------------- wall time over a resume


class SlowTransport(InProcessTransport):
    """Every training turn takes at least ``PAUSE`` seconds longer."""

    PAUSE = 0.5

    def train(self, jobs, round_number):
        time.sleep(self.PAUSE)
        return super().train(jobs, round_number)


def test_wall_seconds_cover_every_part_of_a_resumed_run(tmp_path):
    run_dir, pause = tmp_path / "run", SlowTransport.PAUSE
    first, whole = cfg_of(rounds=2), cfg_of(rounds=4)

    started = time.monotonic()
    transport = SlowTransport.from_config(first, run_dir / CLIENT_STATE)
    _, part1 = run_experiment(first, transport, "inprocess", run_dir)
    t1 = time.monotonic() - started
    saved = ServerState(run_dir).wall_seconds()
    assert 2 * pause <= saved <= part1["wall_seconds"] <= t1

    transport = SlowTransport.from_config(whole, run_dir / CLIENT_STATE, restore=True)
    started = time.monotonic()
    _, summary = run_experiment(whole, transport, "inprocess", run_dir, resume=True)
    t2 = time.monotonic() - started  # the resumed part, measured here

    assert summary["rounds_completed"] == 4 and [r["round"] for r in rows_of(run_dir)] == [0, 0, 1, 2, 3, 4]
    # the first part's time as saved with its last round, plus the resumed part: all four slow turns
    assert summary["wall_seconds"] >= 4 * pause
    assert saved + t2 - 0.25 <= summary["wall_seconds"] <= t1 + t2
    assert ServerState(run_dir).wall_seconds() >= 4 * pause


def test_a_state_saved_without_wall_time_resumes_from_zero(tmp_path):
    """Server states written before the wall time was saved still load (and count from 0)."""
    state = ServerState(tmp_path)
    state.save(3, {0: [np.ones(4, dtype=np.float32)]})
    assert state.wall_seconds() == 0.0
    state.clock = lambda: 12.5
    state.save(4, {0: [np.ones(4, dtype=np.float32)]})
    completed, cache, summed = state.load()
    assert (completed, sorted(cache), summed, state.wall_seconds()) == (4, [0], None, 12.5)


# ---------------------------------------------------------------- the ServerApp's log


LOGGING_SCRIPT = """
import logging, httpx
{setup}
client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
client.post("http://127.0.0.1:9091/api/v0/serverappio/pull-messages")  # what the Grid does several times a second
logging.getLogger("httpcore").info("httpcore per-request line")
logging.getLogger("flwr").debug("flwr debug line")
logging.getLogger("fedalign").info("round 2: reply rejected")
logging.getLogger("fedalign").debug("fedalign debug line")
"""


def server_app_log(setup: str) -> str:
    script = LOGGING_SCRIPT.format(setup=textwrap.dedent(setup))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_the_server_app_log_has_fedalign_lines_and_no_per_request_lines():
    log = server_app_log("from server.server_app import configure_logging\nconfigure_logging()")
    assert "INFO fedalign: round 2: reply rejected" in log
    assert "HTTP Request" not in log and "pull-messages" not in log and "per-request" not in log
    assert "flwr debug line" not in log and "fedalign debug line" not in log
    # the check can fail: the former set-up (basicConfig on the root logger) printed all of them
    old = server_app_log("logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
                         "import flwr.common.logger")
    assert "INFO httpx: HTTP Request: POST http://127.0.0.1:9091/api/v0/serverappio/pull-messages" in old
    assert "DEBUG flwr: flwr debug line" in old


def test_the_server_app_logging_set_up_leaves_the_root_logger_alone():
    """In this process: records of httpx at INFO are not emitted, fedalign's are; the root is untouched."""
    from server.server_app import configure_logging

    root, names = logging.getLogger(), ("fedalign", "httpx", "httpcore")
    before = (root.level, list(root.handlers), {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                                                    logging.getLogger(n).propagate) for n in names})
    try:
        configure_logging()
        configure_logging()  # a second ServerApp run in the same process adds nothing
        assert (root.level, root.handlers) == before[:2]
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
        assert logging.getLogger("fedalign").isEnabledFor(logging.INFO)
        assert len(logging.getLogger("fedalign").handlers) <= len(before[2]["fedalign"][1]) + 1
    finally:
        for name, (level, handlers, propagate) in before[2].items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
