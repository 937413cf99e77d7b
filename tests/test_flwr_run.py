"""``flwr run .`` end to end: the real Flower CLI, a local SuperLink, 2 simulated SuperNodes.

What this test relies on (Flower 1.41.0), found by reading ``flwr/cli``:

* ``flwr run .`` against the default ``local`` connection (``address = ":local:"``
  in ``$FLWR_HOME/config.toml``, written on first use) lazily starts a detached
  ``flower-superlink --simulation`` on ``127.0.0.1:$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``
  (default 39091), which then starts ``flower-superexec``, which starts one
  ``flwr-simulation`` process per run (ServerApp + Ray-backed ClientApps). The
  SuperLink and SuperExec OUTLIVE the run; the CLI has no command to stop them.
  Any ``flwr`` command (``flwr ls`` too) starts one if nothing answers on the port,
  and uses whatever answers there, even a SuperLink started with another FLWR_HOME,
  so the test picks a free port of its own.
* ``flower-superlink`` is started by name from ``PATH``: the venv's ``bin`` must be
  on it. Its environment (FLWR_HOME, FEDALIGN_STATE_DIR,
  FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION, ...) is inherited by the
  ServerApp and ClientApps, and so is its working directory: a relative
  ``output.dir`` resolves against the directory of whichever ``flwr`` command
  first started the SuperLink, not the project. Hence the absolute ``output.dir``.
* The number of simulated SuperNodes: ``--federation-config "num-supernodes=2"``
  (``options.num-supernodes`` in a ``config.toml`` connection still works but is
  deprecated in 1.41; the built-in default is 2 SuperNodes with 2 CPUs each).
* ``flwr run`` exits 0 once the run is *submitted*, even if the ServerApp then
  fails; the outcome is the run's ``status`` in ``flwr ls --format json``:
  ``pending`` / ``starting`` / ``running`` / ``finished:completed`` /
  ``finished:failed`` (with ``status-details`` holding the exception) /
  ``finished:stopped``. ``flwr log <run-id>`` prints the ServerApp's log.

Cleanup: every process whose environment holds this test's unique FLWR_HOME
(SuperLink, SuperExec, flwr-simulation, Ray daemons and workers), plus their
descendants, is terminated by PID and checked gone, on success or failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deploy.launch import alive, describe, processes_with_environ
from fedalign.provenance import declared_revision

PROJECT_DIR = Path(__file__).resolve().parent.parent
ROUNDS = 3
NUM_CLIENTS = 2
RUN_DEADLINE_S = 240.0
POLL_S = 3.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc for process cleanup"),
]


# --------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(flwr_home: Path) -> set[int]:
    """Live processes with ``FLWR_HOME=<flwr_home>`` in their environment, and their descendants."""
    return processes_with_environ(f"FLWR_HOME={flwr_home}".encode())


def _stop_all(flwr_home: Path, grace_s: float = 15.0) -> list[str]:
    """SIGTERM, then SIGKILL, every process of ``flwr_home``; returns those still alive."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0), (signal.SIGKILL, 10.0)):
        pids = _processes_of(flwr_home)
        if not pids:
            return []
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
    return [describe(pid) for pid in sorted(_processes_of(flwr_home))]


# --------------------------------------------------------------- flwr CLI


class Flwr:
    """Runs ``flwr`` with an isolated FLWR_HOME and SuperLink port."""

    def __init__(self, tmp_path: Path) -> None:
        venv_bin = Path(sys.executable).parent
        exe = venv_bin / "flwr"
        self.exe = str(exe) if exe.exists() else shutil.which("flwr")
        if self.exe is None:
            pytest.skip("the `flwr` CLI is not installed")
        self.home = tmp_path / "flwr-home"
        self.home.mkdir()
        self.port = _free_port()
        self.env = {
            **os.environ,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # flower-superlink is found on PATH
            "FLWR_HOME": str(self.home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),  # deprecated flag in 1.41, set for isolation anyway
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # read by the SuperLink when it starts: don't pip-install the app's dependencies
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FEDALIGN_STATE_DIR": str(tmp_path / "client-state"),
        }

    def __call__(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.exe, *args], cwd=PROJECT_DIR, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"flwr {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n{self.superlink_log()}")
        return proc

    def json(self, *args: str) -> dict:
        out = self(*args, "--format", "json").stdout
        return json.loads(out[out.index("{"):])

    def superlink_log(self, lines: int = 40) -> str:
        log = self.home / "local-superlink" / "superlink.log"
        if not log.exists():
            return "(no SuperLink log)"
        return "SuperLink log (tail):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def run_log(self, run_id: str, chars: int = 8000) -> str:
        """``flwr log <run-id>``: the run's ServerApp and ClientApp output (errors included)."""
        try:
            proc = self("log", run_id, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            return "(flwr log timed out)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
        return f"flwr log {run_id} (tail):\n{text[-chars:]}"


@pytest.fixture
def flwr(tmp_path):
    """An isolated ``flwr``; afterwards every process it started is stopped and checked gone."""
    cli = Flwr(tmp_path)
    try:
        yield cli
    finally:
        leftovers = _stop_all(cli.home)
        assert not leftovers, "processes left running after the test:\n" + "\n".join(leftovers)


# --------------------------------------------------------------- the test


def test_flwr_run_local_simulation(flwr, tmp_path):
    out_dir = tmp_path / "outputs"  # absolute: the ServerApp's cwd is the SuperLink's, not the project's
    overrides = " ".join([
        f"federation.rounds={ROUNDS}",
        f"federation.num_clients={NUM_CLIENTS}",
        "federation.schedule=alternating",  # pinned: the row counts below depend on it
        "federation.timeout=120",  # fail inside the deadline if a SuperNode never answers
        "align.strategy=alignahead",  # pinned: round 0 (statistics for every client) needs alignment
        "data.synthetic.num_nodes=150",
        "model.hidden_layers=2",
        "output.plot=false",
        f"output.dir={out_dir}",
    ])
    # --run-config takes TOML `key=value` pairs: `set` is one TOML string, so its
    # space-separated overrides go inside single quotes (a TOML literal string: no
    # escapes, so the path must not contain a quote, and, as the ServerApp splits
    # `set` on whitespace, no spaces). Without the quotes flwr rejects the value.
    started = time.monotonic()
    # `revision`: this checkout's, which the ServerApp (run from the app bundle, no .git) records in provenance
    revision = declared_revision()
    submitted = flwr.json("run", ".", "--run-config", f"set='{overrides}' revision='{revision}'",
                          "--federation-config", f"num-supernodes={NUM_CLIENTS}")
    assert submitted["success"] is True, submitted
    run_id = submitted["run-id"]

    # `flwr run` only submits: poll the run's status until it has finished.
    deadline = started + RUN_DEADLINE_S
    run: dict = {}
    while time.monotonic() < deadline:
        listing = flwr.json("ls", "--run-id", run_id)
        assert listing["success"] is True, listing
        run = next(r for r in listing["runs"] if r["run-id"] == run_id)
        if run["status"].startswith("finished"):
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(f"run {run_id} not finished after {RUN_DEADLINE_S:.0f}s: {run}\n{flwr.superlink_log()}")
    elapsed = time.monotonic() - started
    assert run["status"] == "finished:completed", (
        f"run {run_id}: {run['status']} ({run['status-details']})\n{flwr.run_log(run_id)}")
    assert run["fab-name"] == "fedalign"
    print(f"\nflwr run {run_id}: {run['status']} in {elapsed:.1f}s "
          f"(ServerApp {run['compute-time']['serverapp-seconds']:.1f}s)")

    # The run folder written by the ServerApp.
    run_dirs = [p for p in out_dir.iterdir() if p.is_dir()] if out_dir.is_dir() else []
    assert len(run_dirs) == 1, f"expected one run folder in {out_dir}, found {run_dirs}\n{flwr.run_log(run_id)}"
    run_dir = run_dirs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished", summary
    assert summary["engine"] == "flower"
    assert summary["rounds_completed"] == ROUNDS
    # A run whose ClientApps all fail still "completes": the ServerApp records them as missing.
    assert summary["missing_rounds"] == [], f"{summary['missing_rounds']}\n{flwr.run_log(run_id)}"
    assert (summary["provenance"]["revision"] + ("+dirty" if summary["provenance"]["dirty"] else "")
            == (revision or "unknown")), summary["provenance"]
    print(f"provenance: {summary['provenance']['revision_source']}")

    config = yaml.safe_load((run_dir / "config.yaml").read_text())  # the overrides took effect
    assert config["federation"]["rounds"] == ROUNDS
    assert config["federation"]["num_clients"] == NUM_CLIENTS
    assert config["data"]["synthetic"]["num_nodes"] == 150
    assert config["model"]["hidden_layers"] == 2
    assert Path(config["output"]["dir"]) == out_dir

    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert sorted(r["client"] for r in rows if r["round"] == 0) == list(range(NUM_CLIENTS))
    # alternating schedule: one trainer per round after round 0
    assert [r["round"] for r in rows if r["round"] > 0] == list(range(1, ROUNDS + 1))
    assert all(r["status"] == "ok" for r in rows), rows
    assert len(rows) == NUM_CLIENTS + ROUNDS

    # The ClientApps inherited FEDALIGN_STATE_DIR through SuperLink -> SuperExec -> simulation.
    checkpoints = sorted(p.name for p in (tmp_path / "client-state" / run_dir.name).glob("client-*.pt"))
    assert checkpoints == [f"client-{c}.pt" for c in range(NUM_CLIENTS)]

    # The SuperLink outlives the run (the fixture stops it); make sure it is the one we started.
    superlinks = [p for p in _processes_of(flwr.home) if "flower-superlink" in describe(p)]
    assert all(f"--port {flwr.port}" in describe(p) for p in superlinks), [describe(p) for p in superlinks]


def readme_flwr_run_line() -> str:
    """The README's `flwr run .` command (a line ending in a backslash joined with the next)."""
    lines = (PROJECT_DIR / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "flwr run ." in line and line.rstrip().endswith("\\"))
    return lines[start].rstrip()[:-1] + " " + lines[start + 1].strip()


def test_the_readme_flwr_run_line_works_as_written_without_the_venv_on_path(flwr, tmp_path):
    """The README's command, run by bash from the project folder with a PATH that lacks the venv."""
    command = readme_flwr_run_line()
    assert command.startswith('PATH="$PWD/.venv/bin:$PATH"') and "flwr run ." in command
    venv_bin = str(Path(sys.executable).parent)
    # As written it uses .venv; run by another venv's tests (CI's .venv-system), it uses that venv instead.
    command = command.replace('"$PWD/.venv/bin', f'"{venv_bin}', 1)
    env = {**flwr.env, "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if p and Path(p).resolve() != Path(venv_bin).resolve())}
    env["PATH"] = env["PATH"] or "/usr/bin:/bin"
    before = set((PROJECT_DIR / "outputs").glob("quickstart-*")) if (PROJECT_DIR / "outputs").is_dir() else set()
    proc = subprocess.run(["bash", "-c", command + " --format json"], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr + flwr.superlink_log()
    run_id = json.loads(proc.stdout[proc.stdout.index("{"):])["run-id"]
    deadline = time.monotonic() + RUN_DEADLINE_S
    while time.monotonic() < deadline:
        run = next(r for r in flwr.json("ls", "--run-id", run_id)["runs"] if r["run-id"] == run_id)
        if run["status"].startswith("finished"):
            break
        time.sleep(POLL_S)
    assert run["status"] == "finished:completed", f"{run}\n{flwr.run_log(run_id)}"
    new = set((PROJECT_DIR / "outputs").glob("quickstart-*")) - before
    try:
        assert len(new) == 1
        summary = json.loads((new.pop() / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["rounds_completed"] == 10
    finally:
        for path in set((PROJECT_DIR / "outputs").glob("quickstart-*")) - before:
            shutil.rmtree(path)
