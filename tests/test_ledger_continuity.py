"""Ledgers that cannot silently reset: a client that lost its state refuses, and the server stops the run.

The attack: run 6 rounds (sigma 2, max_epsilon 6: epsilon 2.95 -> 4.39 -> 5.56), then resume
to 12 rounds where the clients' checkpoints are not -- the other engine, or a deleted client-state
folder -- and the clients used to start fresh ledgers at 2.95 again (six charged releases, true epsilon
8.40 above the cap). Expected epsilons come from a ledger built here (sigma / sqrt(2) per release: the two
layers' statistics, clipped together, under the replicate partition round 0 is charged too).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from fedalign.client import build_student
from fedalign.client.checkpoint import Checkpoint
from fedalign.client.service import respond
from fedalign.config import config_from_dict
from fedalign.inprocess import CLIENT_STATE, run_inprocess
from fedalign.ledgers import LEDGER_LOST, LedgerBroken, ReportedEpsilon, refusal
from fedalign.privacy import PrivacyLedger
from fedalign.server import Coordinator, Reply, ServerState
from fedalign.wire import ACCOUNTED_METRICS, REPLY_METRICS
from fedalign_flower.cli import main as cli_main

PRIVATE = {
    "name": "ledger",
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 120}},
    "federation": {"num_clients": 2, "rounds": 6},
    "model": {"hidden_layers": 2, "hidden_dim": 8, "dropout": 0.0},
    "train": {"local_epochs": 1},
    "privacy": {"mechanism": "gaussian", "noise_multiplier": 2.0, "max_epsilon": 6},
    "output": {"progress": False, "plot": False},
}


def expected_epsilons(releases: int, sigma: float = 2.0) -> list[float]:
    """Epsilon after each of ``releases`` releases, from a ledger of this test's own."""
    ledger, values = PrivacyLedger("prv", 1e-5), []
    for _ in range(releases):
        ledger.record(sigma / math.sqrt(2))
        values.append(ledger.epsilon())
    return values


EPS = expected_epsilons(4)  # 2.95, 4.39, 5.56, 6.58 (the fourth is over the cap of 6: withheld)


def rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def epsilons(rows, client):
    return [r["epsilon"] for r in rows if r["client"] == client]


def write_config(tmp_path, raw=PRIVATE):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def six_rounds(tmp_path_factory):
    """The first part of the attack, in process: 6 rounds, each client at 5.56 (3 releases), then withheld."""
    base = tmp_path_factory.mktemp("six")
    run_dir, summary = run_inprocess(config_from_dict(PRIVATE), base / "run")
    assert summary["status"] == "finished"
    rows = rounds(run_dir)
    for client in (0, 1):
        assert epsilons(rows, client) == pytest.approx([*EPS[:3], EPS[2]], rel=1e-9)  # the last one withheld
    return run_dir


def copy_run(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def assert_refused(rc, err, client, run_dir, completed=6):
    """The CLI's refusal: exit 2, one last line naming the client and the fix; the run folder kept."""
    last = err.strip().splitlines()[-1]
    assert rc == 2, err
    assert last.startswith("fedalign: refused:") and f"client {client}" in last
    assert "Put the client's state back" in last and "start a new run" in last
    assert "Traceback" not in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "LedgerBroken" in summary["error"]
    assert ServerState(run_dir).load()[0] == completed
    return last


# ------------------------------------------------------------------------------------- the server's book


@pytest.mark.parametrize("metrics, why", [
    ({"epsilon": EPS[0], "withheld": 0.0}, "reported epsilon 2.953 after 5.555"),  # a fresh ledger
    ({"epsilon": float("nan"), "withheld": 0.0}, "reported epsilon nan"),
    ({"epsilon": None, "withheld": 0.0}, "reported epsilon nan"),
    ({"withheld": 0.0}, "reported no epsilon"),
    ({LEDGER_LOST: 1.0}, "has lost its privacy ledger"),
])
def test_the_book_refuses_a_ledger_that_went_back(metrics, why):
    book = ReportedEpsilon()
    book.record(1, {"epsilon": EPS[2], "withheld": 0.0})
    problem = book.problem(1, metrics)
    assert problem is not None and problem.startswith("client 1 ") and why in problem
    assert book.latest == {1: EPS[2]}  # nothing taken from a refused reply


def test_the_book_accepts_what_honest_clients_report():
    book = ReportedEpsilon()
    assert book.problem(0, {}) is None and book.problem(0, {"epsilon": 0.0}) is None  # nothing reported yet
    book.record(0, {"epsilon": 0.0, "withheld": 0.0})  # round 0's free release
    assert book.problem(0, {"epsilon": 0.0}) is None and book.spent() == {}
    for value in EPS[:3]:
        assert book.problem(0, {"epsilon": value, "withheld": 0.0}) is None
        book.record(0, {"epsilon": value})
    assert book.problem(0, {"epsilon": EPS[2], "withheld": 1.0}) is None  # withheld: the same epsilon again
    assert book.problem(0, {"epsilon": math.inf}) is None  # reproducible noise reports infinity
    assert book.problem(1, {"task_loss": 1.0}) is None  # a run without privacy: nothing to check
    book.record(0, {"epsilon": math.inf})
    assert book.problem(0, {"epsilon": EPS[2]}) is not None


def test_ledger_lost_is_an_accounted_reply_metric():
    assert LEDGER_LOST in REPLY_METRICS and LEDGER_LOST in ACCOUNTED_METRICS


class ScriptedTransport:
    """Replies without statistics (status withheld), with the epsilon the script gives per (round, client)."""

    def __init__(self, script):
        self.script = script
        self.told = []  # (round, client, epsilon_before) as a transport tells each client

    def _reply(self, client, round_number):
        self.told.append((round_number, client, self.epsilon_before.get(client)))
        return Reply(client, self.script(round_number, client))

    def query(self, clients, round_number):
        return {c: self._reply(c, round_number) for c in clients}

    def train(self, jobs, round_number):
        return {c: self._reply(c, round_number) for c in jobs}


@pytest.mark.parametrize("bad", [EPS[0], float("nan"), None, "absent", LEDGER_LOST])
def test_the_coordinator_stops_at_a_reply_whose_epsilon_fell(tmp_path, bad):
    """Client 1's ledger restarts in round 4 (it trains in even rounds): the run stops there, naming it,
    and the state saved after round 3 -- with each client's epsilon -- is what stays."""
    def script(round_number, client):
        if (round_number, client) == (4, 1):
            if bad == "absent":
                return {"withheld": 0.0}
            if bad == LEDGER_LOST:
                return {LEDGER_LOST: 1.0}
            return {"epsilon": bad, "withheld": 0.0}
        releases = 1 + (round_number + (1 - client)) // 2  # round 0, then its turns so far
        return {"epsilon": EPS[min(releases, 3) - 1], "withheld": 0.0}

    cfg = config_from_dict(PRIVATE)
    state = ServerState(tmp_path)
    transport = ScriptedTransport(script)
    coordinator = Coordinator(cfg, transport, state=state)
    with pytest.raises(LedgerBroken, match=r"^round 4: client 1 .*Put the client's state back"):
        coordinator.run()
    completed, _, _ = state.load()
    assert completed == 3
    assert state.load_reported() == {"epsilon": {0: pytest.approx(EPS[2]), 1: pytest.approx(EPS[1])}}
    assert transport.told[:2] == [(0, 0, None), (0, 1, None)]  # nothing reported before round 0
    assert transport.told[-1] == (4, 1, pytest.approx(EPS[1]))  # told what it reported before
    assert all(r.round <= 3 for r in coordinator.records)


def test_a_resumed_coordinator_knows_what_each_client_reported(tmp_path):
    """From the saved state and from rounds.jsonl (a state saved before epsilons were kept): the larger."""
    cfg = config_from_dict(PRIVATE)
    coordinator = Coordinator(cfg, ScriptedTransport(lambda r, c: {"epsilon": EPS[0]}))
    from fedalign.server import RoundRecord

    records = [RoundRecord(2, 1, "ok", [0], {"epsilon": EPS[1]}, 0, 0, None)]
    coordinator.resume(3, {}, records, reported={"epsilon": {0: EPS[2]}})
    assert coordinator.reported.latest == {0: pytest.approx(EPS[2]), 1: pytest.approx(EPS[1])}
    assert coordinator.transport.epsilon_before is coordinator.reported.latest
    with pytest.raises(LedgerBroken, match="client 0 reported epsilon 2.953 after 5.555"):
        coordinator.run_round(3)  # client 0's turn


# ------------------------------------------------------------------------------------- the client's side


def test_a_client_without_its_state_refuses_to_release(tmp_path):
    cfg = config_from_dict(PRIVATE)
    student = build_student(cfg, 0)
    checkpoint = Checkpoint(tmp_path / "client-0.pt")  # no file: the state is lost
    assert respond(student, "train:7", 7, {}, True, checkpoint, epsilon_before=EPS[2]) == ({LEDGER_LOST: 1.0}, None)
    assert student.release_policy.ledger.releases == 0 and student.epochs_trained == 0  # no training, no release
    assert not checkpoint.path.exists()
    # a client that has not spent anything yet (epsilon 0 or none reported) is not refused
    sent, statistics = respond(student, "query:0", 0, {}, False, checkpoint, epsilon_before=0.0)
    assert statistics is not None and sent["epsilon"] == pytest.approx(EPS[0])
    assert checkpoint.path.exists() and checkpoint.holds_state


def test_refusal_rules():
    assert refusal(0, None, False, None) is None and refusal(0, 0.0, False, 0.0) is None
    assert refusal(0, float("nan"), False, None) is None  # a server that says nothing useful: nothing to hold
    assert "no checkpoint" in refusal(0, EPS[2], False, 0.0)
    assert "older checkpoint" in refusal(0, EPS[2], True, EPS[1])
    assert refusal(0, EPS[2], True, EPS[2]) is None and refusal(0, EPS[1], True, EPS[2]) is None


# ------------------------------------------------------------------------------------- runs through the CLI


def test_resume_after_deleting_the_client_state_is_refused_and_goes_on_once_it_is_back(six_rounds, tmp_path, capsys):
    run_dir = copy_run(six_rounds, tmp_path)
    config = write_config(tmp_path)
    saved = tmp_path / "saved-client-state"
    shutil.move(run_dir / CLIENT_STATE, saved)
    before = (run_dir / "rounds.jsonl").read_text()
    rc = cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(run_dir),
                   "--set", "federation.rounds=12"])
    last = assert_refused(rc, capsys.readouterr().err, 0, run_dir)
    assert "round 7" in last and f"{EPS[2]:.4g}" in last
    assert (run_dir / "rounds.jsonl").read_text() == before  # nothing released, nothing logged
    # the state back: the run goes on where it stopped (each client at 5.56, withheld from then on)
    assert not (run_dir / CLIENT_STATE).exists()  # the refusing run wrote no client state either
    shutil.move(saved, run_dir / CLIENT_STATE)
    assert cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(run_dir),
                     "--set", "federation.rounds=12"]) == 0
    rows = rounds(run_dir)
    assert [r["round"] for r in rows if r["round"] > 0] == list(range(1, 13))
    for client in (0, 1):
        later = [r for r in rows if r["client"] == client and r["round"] > 6]
        assert [r["status"] for r in later] == ["withheld"] * 3
        assert all(r["epsilon"] == pytest.approx(EPS[2], rel=1e-9) for r in later)


def test_resume_without_the_server_state_is_refused_before_anything_changes(six_rounds, tmp_path, capsys):
    run_dir = copy_run(six_rounds, tmp_path)
    (run_dir / ServerState.FILE).unlink()
    shutil.rmtree(run_dir / CLIENT_STATE)
    kept = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    rc = cli_main(["run", str(write_config(tmp_path)), "--engine", "inprocess", "--resume", str(run_dir),
                   "--set", "federation.rounds=12"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "server-state.npz is missing" in last and "clients 0, 1" in last and f"{EPS[2]:.4g}" in last
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == kept


def test_a_normal_resume_continues_each_ledger_where_it_stopped(tmp_path, capsys):
    raw = {**PRIVATE, "federation": {"num_clients": 2, "rounds": 2},
           "privacy": {"mechanism": "gaussian", "noise_multiplier": 2.0}}
    config = write_config(tmp_path, raw)
    run_dir = tmp_path / "run"
    assert cli_main(["run", str(config), "--engine", "inprocess", "--run-dir", str(run_dir)]) == 0
    assert cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(run_dir),
                     "--set", "federation.rounds=6"]) == 0
    rows = rounds(run_dir)
    for client in (0, 1):
        assert epsilons(rows, client) == pytest.approx(expected_epsilons(4), rel=1e-9)  # round 0 and 3 turns
        assert all(r["status"] == "ok" for r in rows if r["client"] == client)
    reported = ServerState(run_dir).load_reported()["epsilon"]
    assert reported == {0: pytest.approx(expected_epsilons(4)[-1]), 1: pytest.approx(expected_epsilons(4)[-1])}


def test_a_run_without_privacy_is_never_refused(tmp_path):
    raw = {k: v for k, v in PRIVATE.items() if k != "privacy"}
    cfg = config_from_dict({**raw, "federation": {"num_clients": 2, "rounds": 2}})
    run_dir, _ = run_inprocess(cfg, tmp_path / "run")
    shutil.rmtree(run_dir / CLIENT_STATE)
    _, summary = run_inprocess(config_from_dict({**raw, "federation": {"num_clients": 2, "rounds": 3}}), run_dir,
                               resume=True)
    assert summary["status"] == "finished"
    assert ServerState(run_dir).load_reported() == {}
    # nor does a coordinator without privacy keep a book: an epsilon some client sends means nothing
    coordinator = Coordinator(cfg, ScriptedTransport(lambda r, c: {"epsilon": 5.0 - r}))
    assert len(coordinator.run()) == 2 + 2 and coordinator.reported.latest == {}


# ------------------------------------------------------------------------------------- across engines


def test_flower_to_in_process_is_refused(tmp_path, capsys, flower_task_identity):
    """The Flower apps (the real ClientApp and ServerApp transport, on a loopback grid) run 6 rounds; the
    in-process engine, whose clients have no checkpoint of that run, is refused on resume."""
    from loopback import LoopbackGrid
    from server.server_app import serve

    run_dir, summary = serve(LoopbackGrid(2, tmp_path / "state"), config_from_dict(PRIVATE), tmp_path / "run")
    assert summary["status"] == "finished"
    for client in (0, 1):
        assert epsilons(rounds(run_dir), client) == pytest.approx([*EPS[:3], EPS[2]], rel=1e-9)
    rc = cli_main(["run", str(write_config(tmp_path)), "--engine", "inprocess", "--resume", str(run_dir),
                   "--set", "federation.rounds=12"])
    last = assert_refused(rc, capsys.readouterr().err, 0, run_dir)
    assert "resume it with --engine flower" in last


def test_in_process_to_flower_is_refused_by_the_client(six_rounds, tmp_path, flower_task_identity):
    """The ClientApp finds no checkpoint of the run, is told its epsilon, and replies only ledger_lost."""
    from loopback import LoopbackGrid
    from server.server_app import serve

    run_dir = copy_run(six_rounds, tmp_path)
    replies = []

    def keep(msg, reply):
        replies.append((msg, reply))
        return reply

    grid = LoopbackGrid(2, tmp_path / "state", tamper=keep)
    cfg = config_from_dict({**PRIVATE, "federation": {"num_clients": 2, "rounds": 12}})
    with pytest.raises(LedgerBroken, match=r"round 7: client 0 has lost its privacy ledger.*--engine inprocess"):
        serve(grid, cfg, run_dir, resume=True)
    msg, reply = replies[-1]
    assert msg.content["config"]["epsilon-before"] == pytest.approx(EPS[2])
    assert "statistics" not in reply.content and dict(reply.content["metrics"]) == {LEDGER_LOST: 1.0}
    assert ServerState(run_dir).load()[0] == 6


def test_secure_aggregation_in_process_refuses_a_lost_client(tmp_path):
    raw = {**PRIVATE, "partition": {"scheme": "iid", "public_fraction": 0.3},
           "federation": {"num_clients": 3, "rounds": 2, "schedule": "simultaneous"},
           "privacy": {"mechanism": "gaussian", "noise_multiplier": 2.0, "secure_aggregation": True,
                       "max_dropout_share": 0.34, "colluders": 1}}
    run_dir, summary = run_inprocess(config_from_dict(raw), tmp_path / "run")
    assert summary["status"] == "finished"
    (run_dir / CLIENT_STATE / "client-2.pt").unlink()
    with pytest.raises(LedgerBroken, match="round 3: client 2 has lost its privacy ledger"):
        run_inprocess(config_from_dict({**raw, "federation": {**raw["federation"], "rounds": 3}}), run_dir,
                      resume=True)
    completed, _, summed = ServerState(run_dir).load()
    assert completed == 2 and summed is not None


def test_secure_aggregation_on_flower_stops_at_a_client_that_left_the_round_without_its_ledger(
        tmp_path, flower_task_identity):
    """A SecAgg+ round needs a share from every client that answers: the client without its checkpoint
    leaves the round with an error saying why (as Flower's runtime turns a ClientApp's exception into
    an error reply), and the server stops the run naming it."""
    from loopback import LoopbackGrid
    from server.server_app import serve

    raw = {**PRIVATE, "partition": {"scheme": "iid", "public_fraction": 0.3},
           "federation": {"num_clients": 3, "rounds": 2, "schedule": "simultaneous"},
           "privacy": {"mechanism": "gaussian", "noise_multiplier": 2.0, "secure_aggregation": True,
                       "max_dropout_share": 0.34, "colluders": 1}}
    run_dir, summary = serve(LoopbackGrid(3, tmp_path / "state"), config_from_dict(raw), tmp_path / "run")
    assert summary["status"] == "finished"
    (tmp_path / "state" / run_dir.name / "client-2.pt").unlink()
    grid = LoopbackGrid(3, tmp_path / "state", raise_errors=False)
    cfg = config_from_dict({**raw, "federation": {**raw["federation"], "rounds": 3}})
    with pytest.raises(LedgerBroken, match="round 3: client 2 has lost its privacy ledger"):
        serve(grid, cfg, run_dir, resume=True)
    assert ServerState(run_dir).load()[0] == 2


# ------------------------------------------------------------------------------------- real Flower simulation


@pytest.mark.slow
def test_flower_simulation_and_in_process_refuse_each_others_resume(six_rounds, tmp_path, monkeypatch, capsys):
    """Both directions with Flower's Simulation Runtime started for real (fedalign run --engine flower)."""
    monkeypatch.setenv("FEDALIGN_STATE_DIR", str(tmp_path / "flower-client-state"))
    config = write_config(tmp_path)
    # in process -> Flower
    run_dir = copy_run(six_rounds, tmp_path)
    rc = cli_main(["run", str(config), "--engine", "flower", "--resume", str(run_dir), "--set", "federation.rounds=12"])
    last = assert_refused(rc, capsys.readouterr().err, 0, run_dir)
    assert "resume it with --engine inprocess" in last
    # Flower -> in process
    flower_dir = tmp_path / "flower-run"
    assert cli_main(["run", str(config), "--engine", "flower", "--run-dir", str(flower_dir)]) == 0
    capsys.readouterr()
    for client in (0, 1):
        assert epsilons(rounds(flower_dir), client) == pytest.approx([*EPS[:3], EPS[2]], rel=1e-9)
    rc = cli_main(["run", str(config), "--engine", "inprocess", "--resume", str(flower_dir),
                   "--set", "federation.rounds=12"])
    last = assert_refused(rc, capsys.readouterr().err, 0, flower_dir)
    assert "resume it with --engine flower" in last
    assert np.isclose(ServerState(flower_dir).load_reported()["epsilon"][1], EPS[2])
