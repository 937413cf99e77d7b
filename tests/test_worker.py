"""A node's warm worker: the same answers as the ClientApp's own, a light ClientApp, and a safe fallback."""

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np
import pytest

from fedalign.client.requests import (Answer, AnswerFailed, Request, decode_answer, decode_request, encode_answer,
                                      encode_failure, encode_request)
from fedalign.client.worker import ask, serve
from fedalign.config import config_from_dict
from server.server_app import serve as serve_run
from tests.loopback import LoopbackGrid

PROJECT = Path(__file__).resolve().parent.parent
SMALL = {"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
         "federation": {"num_clients": 2, "rounds": 5}, "model": {"hidden_layers": 2, "hidden_dim": 8},
         "train": {"local_epochs": 1}, "output": {"progress": False, "plot": False}}


def start_worker(path: Path) -> None:
    ready = threading.Event()
    threading.Thread(target=serve, args=(path, ready.set), daemon=True).start()
    assert ready.wait(60)


def test_requests_and_answers_survive_their_frames():
    peers = {1: [np.arange(5, dtype=np.float32), np.ones(3, dtype=np.float16)], 3: [np.zeros(0, dtype=np.float32)]}
    request = Request('{"seed": 1}', 4, "tag", "train", 2, 3, state_dir="/s", peers=peers)
    back = decode_request(encode_request(request))
    assert {k: v for k, v in vars(back).items() if k != "peers"} == {k: v for k, v in vars(request).items()
                                                                      if k != "peers"}
    assert back.peers.keys() == peers.keys()
    for peer, arrays in peers.items():
        for got, sent in zip(back.peers[peer], arrays, strict=True):
            assert got.dtype == sent.dtype and np.array_equal(got, sent)
    answer = Answer({"val_metric": 0.5}, [np.linspace(0, 1, 7, dtype=np.float32)], True, 0.1, 0.2)
    again = decode_answer(encode_answer(answer))
    assert again.metrics == answer.metrics and np.array_equal(again.statistics[0], answer.statistics[0])
    assert decode_answer(encode_answer(Answer({}, None, False))).statistics is None
    with pytest.raises(AnswerFailed, match="ValueError: nope"):
        decode_answer(encode_failure("ValueError: nope"))
    with pytest.raises(ValueError, match="truncated"):
        decode_request(encode_request(request)[:-3])


def test_runs_answered_by_the_worker_equal_runs_answered_in_process(tmp_path, flower_task_identity):
    cfg = config_from_dict(SMALL)
    socket = tmp_path / "w" / "worker.sock"
    start_worker(socket)
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600
    with_worker = LoopbackGrid(2, tmp_path / "state-w", node_config={"worker": str(socket)})
    run_w, summary_w = serve_run(with_worker, cfg, tmp_path / "run-w")
    in_process = LoopbackGrid(2, tmp_path / "state-p")
    run_p, summary_p = serve_run(in_process, cfg, tmp_path / "run-p")
    assert summary_w["status"] == summary_p["status"] == "finished"
    assert summary_w["clients"] == summary_p["clients"]
    rows = [json.loads(line) for line in next((tmp_path / "state-w").glob("*/client-0-timing.jsonl")).read_text()
            .splitlines()]
    assert rows and all(r["worker"] for r in rows)
    # what the server forwarded (the clients' releases) is the same, round by round
    forwarded = [[m.content["peers"] for m in grid.sent if "peers" in m.content] for grid in (with_worker, in_process)]
    assert len(forwarded[0]) == len(forwarded[1]) == cfg.federation.rounds
    for by_worker, here in zip(*forwarded, strict=True):
        assert by_worker.keys() == here.keys()
        assert all(np.array_equal(by_worker[k].numpy(), here[k].numpy()) for k in here.keys())


def test_an_unreachable_worker_leaves_the_clientapp_to_answer(tmp_path, flower_task_identity, caplog):
    cfg = config_from_dict(SMALL)
    grid = LoopbackGrid(2, tmp_path / "state", node_config={"worker": str(tmp_path / "no-such.sock")})
    with caplog.at_level(logging.WARNING, logger="fedalign"):
        _, summary = serve_run(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["rounds_completed"] == cfg.federation.rounds
    assert "unreachable" in caplog.text and "answering in this process" in caplog.text


def test_a_worker_that_dies_mid_request_is_a_fallback_not_a_failure(tmp_path, caplog):
    path = tmp_path / "dying.sock"
    listener = Listener(str(path), family="AF_UNIX")

    def accept_and_die():
        with listener.accept() as conn:
            conn.recv_bytes()  # takes the request, then exits without answering

    thread = threading.Thread(target=accept_and_die, daemon=True)
    thread.start()
    with caplog.at_level(logging.WARNING, logger="fedalign"):
        assert ask(path, Request("{}", 1, "t", "train", 0)) is None
    assert "ended before answering" in caplog.text
    listener.close()


def test_a_request_the_worker_refuses_raises_its_error(tmp_path):
    socket = tmp_path / "worker.sock"
    start_worker(socket)
    experiment = json.dumps(config_from_dict(SMALL).to_dict())
    with pytest.raises(AnswerFailed, match="partition-id=5, num-partitions=2 does not fit"):
        ask(socket, Request(experiment, 1, "tag", "train", 5, 2, state_dir=str(tmp_path / "s")))


def test_the_clientapp_module_imports_no_torch():
    code = "import sys, time; import clients.client_app; print('torch' in sys.modules)"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"clients.client_app imported torch ({time.perf_counter() - started:.1f}s)"
