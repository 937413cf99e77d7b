"""``python -m deploy`` without Flower processes: ``deploy supernode`` says why a node cannot connect when its
TLS setting does not match the SuperLink's; every expected failure ends with one line and a non-zero exit, files
untouched; printed command lines run as printed; ``deploy stop`` finds what belongs to a deployment.

``flwr`` is replaced by canned answers where a SuperLink would be needed; the few processes started here are
sleeping Python scripts, stopped by PID.
"""

import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from deploy import certs, flwr_cli, launch
from deploy.__main__ import main as deploy_main


def serve(handle) -> tuple[str, threading.Event]:
    """A loopback server answering each connection with ``handle(conn)``; returns its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    handle(conn)
                except (OSError, ssl.SSLError):
                    pass
        listener.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}", stop


@pytest.fixture
def tls_server(tmp_path):
    certs.make_ca(tmp_path)
    cert, key = certs.make_server_cert(tmp_path, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(conn):
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    address, stop = serve(handle)
    yield address
    stop.set()


@pytest.fixture
def plain_server():
    address, stop = serve(lambda conn: conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00" * 4))  # HTTP/2-ish bytes
    yield address
    stop.set()


def test_the_probe_tells_tls_from_plain_from_nothing(tls_server, plain_server):
    assert launch.speaks_tls(tls_server) is True
    assert launch.speaks_tls(plain_server) is False
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    assert launch.speaks_tls(f"127.0.0.1:{port}") is None


def test_an_insecure_node_against_a_tls_superlink_is_refused_with_the_fix(tls_server, capsys):
    assert deploy_main(["supernode", "--superlink", tls_server, "--insecure", "--partition-id", "0",
                        "--num-partitions", "2"]) == 2
    err = capsys.readouterr().err
    assert f"the SuperLink at {tls_server} uses TLS" in err and "drop --insecure" in err


def test_a_tls_node_against_a_plain_superlink_is_refused_with_the_fix(plain_server, capsys):
    assert deploy_main(["supernode", "--superlink", plain_server, "--partition-id", "0",
                        "--num-partitions", "2"]) == 2
    assert "does not speak TLS" in capsys.readouterr().err


def test_matching_settings_pass_the_check(tls_server, plain_server):
    assert launch.tls_mismatch(tls_server, insecure=False) is None
    assert launch.tls_mismatch(plain_server, insecure=True) is None


def test_an_insecure_node_is_refused_before_the_insecure_banner(tls_server, capsys):
    assert deploy_main(["supernode", "--superlink", tls_server, "--insecure", "--partition-id", "0",
                        "--num-partitions", "2"]) == 2
    err = capsys.readouterr().err
    assert "INSECURE" not in err and _one_line(err).startswith("deploy supernode: the SuperLink at")


# ---------------------------------------------------------------- every expected failure: one line, non-zero


def _one_line(err: str) -> str:
    """The last line of stderr, after checking that the failure printed no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_keys_are_made_all_or_nothing(tmp_path, capsys):
    certs.make_node_keys(tmp_path, "node-0")
    before = _files(tmp_path)
    assert deploy_main(["keys", "--out", str(tmp_path), "node-2", "node-0"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("deploy keys: ") and "node-0 exists" in line and "--force" in line
    assert _files(tmp_path) == before  # node-2 was not made either
    for bad in (["node-3", "../escape"], ["node-3", "node-3"]):
        assert deploy_main(["keys", "--out", str(tmp_path), *bad]) == 2
        assert _one_line(capsys.readouterr().err).startswith("deploy keys: ")
        assert _files(tmp_path) == before
    assert not (tmp_path.parent / "escape").exists()
    assert deploy_main(["keys", "--out", str(tmp_path), "node-2", "node-3"]) == 0
    assert {"node-2", "node-2.pub", "node-3", "node-3.pub"} <= set(_files(tmp_path))


def test_certs_run_again_refuse_to_replace_the_server_key(tmp_path, capsys):
    assert deploy_main(["certs", "--out", str(tmp_path), "--host", "10.0.0.1"]) == 0
    capsys.readouterr()
    before = _files(tmp_path)
    assert deploy_main(["certs", "--out", str(tmp_path), "--host", "10.0.0.2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("deploy certs: ") and "server.key exists" in line and "--force" in line
    assert _files(tmp_path) == before
    assert deploy_main(["certs", "--out", str(tmp_path), "--host", "10.0.0.2", "--new-ca"]) == 2  # a new CA too
    assert _files(tmp_path) == before
    assert deploy_main(["certs", "--out", str(tmp_path), "--host", "10.0.0.2", "--force"]) == 0
    after = _files(tmp_path)
    assert after["ca.key"] == before["ca.key"] and after["server.key"] != before["server.key"]
    assert "10.0.0.2" in certs.valid_for(tmp_path / "server.pem")
    (tmp_path / "ca.key").unlink()  # only ca.crt copied here: nothing can be signed
    capsys.readouterr()
    assert deploy_main(["certs", "--out", str(tmp_path), "--host", "10.0.0.3", "--force"]) == 2
    assert "no ca.key" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == {k: v for k, v in after.items() if k != "ca.key"}


@pytest.mark.parametrize("command", [["stop", "--workdir"], ["run", "--workdir"]])
def test_a_wrong_workdir_is_one_line(tmp_path, capsys, command):
    assert deploy_main([*command, str(tmp_path / "nothing-here")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"deploy {command[0]}: no deployment in {tmp_path / 'nothing-here'}")
    assert "--workdir that python -m deploy local printed" in line


def test_missing_certificates_and_keys_are_one_line(tmp_path, capsys):
    assert deploy_main(["superlink", "--certs", str(tmp_path), "--dry-run"]) == 2
    assert "ca.crt is missing: make it with python -m deploy certs" in _one_line(capsys.readouterr().err)
    assert deploy_main(["supernode", "--superlink", "127.0.0.1:9", "--partition-id", "0", "--num-partitions", "2",
                        "--ca-cert", str(tmp_path / "ca.crt"), "--dry-run"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("deploy supernode: --ca-cert ")
    assert deploy_main(["supernode", "--superlink", "127.0.0.1:9", "--partition-id", "2", "--num-partitions", "2",
                        "--insecure", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "partition-id must be in [0, 2)" in _one_line(err) and "INSECURE" not in err


# ---------------------------------------------------------------- printed command lines run as printed


BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _run_printed(line: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a printed command line (plus ``extra`` words) with bash under a bare PATH and no other environment."""
    return subprocess.run(["bash", "-c", " ".join([line, *extra])], env={"PATH": BARE_PATH, "HOME": str(Path.home())},
                          cwd="/", capture_output=True, text=True, timeout=timeout)


def _words(line: str) -> tuple[dict[str, str], list[str]]:
    """(variables, command) of an ``env [-C DIR] VAR=value ... program args`` line."""
    words = shlex.split(line)
    assert words[0] == "env", line
    words = words[3:] if words[1] == "-C" else words[1:]
    variables = {}
    while "=" in words[0] and not words[0].startswith("/"):
        name, _, value = words.pop(0).partition("=")
        variables[name] = value
    return variables, words


def test_printed_flower_command_lines_are_complete(tmp_path, capsys):
    assert deploy_main(["superlink", "--insecure", "--dry-run", "--flwr-home", str(tmp_path / "home")]) == 0
    superlink = capsys.readouterr().out.strip()
    assert deploy_main(["supernode", "--superlink", "127.0.0.1:9", "--insecure", "--partition-id", "0",
                        "--num-partitions", "2", "--state-dir", str(tmp_path / "state"), "--dry-run"]) == 0
    worker, supernode = capsys.readouterr().out.strip().splitlines()
    assert worker.endswith(" &")
    for line in (superlink, worker[:-2], supernode):
        variables, command = _words(line)
        assert Path(command[0]).is_absolute() and Path(command[0]).exists(), command
        # what Flower starts by name is found through the printed PATH alone
        assert shutil.which("flower-superexec", path=variables["PATH"]) == str(launch.BIN / "flower-superexec")
        assert variables["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert _words(superlink)[0]["FLWR_HOME"] == str(tmp_path / "home")
    # run as printed, from a plain shell
    for line in (superlink, supernode):
        proc = _run_printed(line, "--help")
        assert proc.returncode == 0 and "usage: flower-super" in proc.stdout, proc.stderr
    # a local deployment's process line carries its folder, its tag and its environment
    p = launch.Process("supernode-0", 1, [launch.tool("flower-supernode"), "--superlink", "127.0.0.1:9"], "x.log",
                       {"FLWR_HOME": "/tmp/h", launch.TAG_VAR: "abc:supernode-0"})
    variables, command = _words(p.shell)
    assert shlex.split(p.shell)[1:3] == ["-C", str(launch.PROJECT_DIR)]
    assert variables[launch.TAG_VAR] == "abc:supernode-0" and variables["FLWR_HOME"] == "/tmp/h"
    assert variables["PATH"].split(":")[0] == str(launch.BIN)


# ---------------------------------------------------------------- flwr's refusals, translated


def _flwr_answers(monkeypatch, stdout: str, returncode: int = 0) -> list[list[str]]:
    """Make every ``flwr`` call answer ``stdout``; returns the list the calls are recorded in."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, stdout, "")

    monkeypatch.setattr(flwr_cli.subprocess, "run", run)
    return calls


UNAVAILABLE = json.dumps({"success": False, "error-message": "Using SuperLink: x (127.0.0.1:1)\n\nConnection to the "
                          "SuperLink is unavailable. Please check your network connection and 'address' in the "
                          "SuperLink connection configuration."})


def test_registering_a_registered_key_is_one_line(tmp_path, monkeypatch, capsys):
    _, public = certs.make_node_keys(tmp_path, "node-0")
    refusal = "Using SuperLink: fed (127.0.0.1:1)\n\n[code: 23] Public key already in use."
    _flwr_answers(monkeypatch, json.dumps({"success": False, "error-message": refusal}))
    assert deploy_main(["register", "fed", str(public), "--flwr-home", str(tmp_path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"deploy register: {public} is already registered with fed: nothing to do")
    assert "exit 0" not in line and "flwr supernode unregister <node-id> fed" in line


def _fake_deployment(workdir: Path, tag: str) -> launch.Deployment:
    d = launch.Deployment(tag, str(workdir), "127.0.0.1:1", launch.LOCAL_CONNECTION, str(workdir / "flwr-home"),
                          False, [launch.Process("superlink", 1, ["flower-superlink"], str(workdir / "superlink.log")),
                                  launch.Process("supernode-0", 1, ["flower-supernode", "--node-config",
                                                                    'partition-id=0 num-partitions=2'], "n0.log"),
                                  launch.Process("supernode-1", 1, ["flower-supernode"], "n1.log")])
    workdir.mkdir(parents=True, exist_ok=True)
    d.save()
    return d


def test_a_run_against_a_stopped_deployment_says_how_to_start_it(tmp_path, monkeypatch, capsys):
    _fake_deployment(tmp_path, f"test-{uuid.uuid4().hex[:10]}")
    _flwr_answers(monkeypatch, UNAVAILABLE)
    assert deploy_main(["run", "--workdir", str(tmp_path)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"deploy run: the local deployment in {tmp_path} is not running")
    assert f"-m deploy local --clients 2 --workdir {tmp_path} --no-worker" in line


def test_the_waiter_retries_then_says_how_to_resume(tmp_path, monkeypatch, capsys):
    d = _fake_deployment(tmp_path, f"test-{uuid.uuid4().hex[:10]}")
    monkeypatch.setattr(launch, "submit", lambda *a, **k: "42")
    polls = []

    def run_status(connection, run_id, env):
        polls.append(run_id)
        if len(polls) == 1:
            return {"run-id": run_id, "status": "running"}
        raise launch.SuperLinkUnavailable("unavailable", reason="Connection to the SuperLink is unavailable.")

    monkeypatch.setattr(flwr_cli, "run_status", run_status)
    monkeypatch.setattr(flwr_cli.time, "sleep", lambda s: None)
    out_dir = tmp_path / "outputs"
    folder = out_dir / "quickstart-20260101-000000"
    folder.mkdir(parents=True)  # what the ServerApp made for this run
    assert deploy_main(["run", "--workdir", str(tmp_path), "--set", "federation.rounds=3",
                        f"output.dir={out_dir}"]) == 1
    err = capsys.readouterr().err
    assert len(polls) == 1 + 5  # one that answered, then the first failure and 4 retries
    assert err.count("trying again") == 4
    line = _one_line(err)
    assert line.startswith("deploy run: lost the SuperLink while waiting for run 42 (last status: running; "
                           "5 polls failed: nothing answers at")
    resume = line.split("start the deployment again and resume it: ")[1]
    assert f"-m deploy stop --workdir {tmp_path} && " in resume
    assert f"-m deploy local --clients 2 --workdir {tmp_path} --no-worker --run --keep --resume {folder} " \
           f"--set federation.rounds=3 output.dir={out_dir}" in resume
    assert d.tag  # (nothing was started: the fake deployment has no process)


def test_the_waiter_survives_a_few_failed_polls(monkeypatch):
    answers = iter([launch.SuperLinkUnavailable("x", reason="r"), launch.SuperLinkUnavailable("x", reason="r"),
                    {"run-id": "7", "status": "finished:completed"}])

    def run_status(*a):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(flwr_cli, "run_status", run_status)
    monkeypatch.setattr(flwr_cli.time, "sleep", lambda s: None)
    assert launch.wait_for_run("c", "7", {}, retries=2)["status"] == "finished:completed"


def test_flower_refusal_2004_is_explained_and_flwr_messages_are_cleaned():
    log = ("\x1b[91mERROR \x1b[0m:     Exit Code: 305\nFailed to initialize the connection to the SuperLink.\n"
           "[code: 2004] Failed to activate SuperNode.\n")
    hint = launch.explain_flower_log(log)
    assert "Flower code 2004" in hint and "python -m deploy register" in hint and "offline" in hint
    assert "\n" not in hint and launch.explain_flower_log("Connection attempt failed") is None
    boxed = "╭─ Error ───╮\n│ Public key file '/x.pub' does not exist. │\n╰───────────╯"
    assert launch.flwr_reason(boxed) == "Public key file '/x.pub' does not exist."


# ---------------------------------------------------------------- processes of a deployment


def _sleeper(tmp_path: Path, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A process whose command line looks like ``name args`` (a script of that name that sleeps)."""
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, str(script), *args], env={**os.environ, **(env or {})},
                            start_new_session=True)


def test_stop_finds_a_process_restarted_by_hand_without_the_tag(tmp_path, capsys):
    workdir = tmp_path / "deploy"
    d = _fake_deployment(workdir, f"test-{uuid.uuid4().hex[:10]}")
    by_hand = _sleeper(tmp_path, "flower-supernode", "--root-certificates", str(workdir / "certs" / "ca.crt"))
    tagged = _sleeper(tmp_path, "anything", env={launch.TAG_VAR: f"{d.tag}:worker-0"})
    unrelated = _sleeper(tmp_path, "tail", str(workdir / "node-0" / "supernode.log"))  # not a Flower process
    try:
        deadline = time.monotonic() + 30
        while not {by_hand.pid, tagged.pid} <= d.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {by_hand.pid, tagged.pid} <= d.alive() and unrelated.pid not in d.alive()
        assert deploy_main(["stop", "--workdir", str(workdir)]) == 0
        assert capsys.readouterr().out.strip() == f"deployment {d.tag}: stopped 2 processes"
        assert by_hand.wait(timeout=20) is not None and tagged.wait(timeout=20) is not None
        assert unrelated.poll() is None
        assert deploy_main(["stop", "--workdir", str(workdir)]) == 0
        assert capsys.readouterr().out.strip() == f"deployment {d.tag}: nothing was running"
    finally:
        for p in (by_hand, tagged, unrelated):
            p.kill()
            p.wait()


def test_a_second_local_deployment_in_the_same_folder_is_refused(tmp_path, capsys):
    workdir = tmp_path / "deploy"
    d = _fake_deployment(workdir, f"test-{uuid.uuid4().hex[:10]}")
    running = _sleeper(tmp_path, "anything", env={launch.TAG_VAR: f"{d.tag}:superlink"})
    before = _files(workdir)
    try:
        assert deploy_main(["local", "--clients", "2", "--workdir", str(workdir), "--insecure"]) == 2
        err = capsys.readouterr().err
        line = _one_line(err)
        assert line.startswith(f"deploy local: a deployment is already running from {workdir}")
        assert f"-m deploy stop --workdir {workdir}" in line and "INSECURE" not in err
        assert _files(workdir) == before and running.poll() is None
    finally:
        running.kill()
        running.wait()


def test_ctrl_c_during_local_run_stops_what_it_started(tmp_path, monkeypatch, capsys):
    d = _fake_deployment(tmp_path / "deploy", "test-ctrl-c")
    stopped = []
    monkeypatch.setattr(launch, "start_local", lambda *a, **k: d)
    monkeypatch.setattr(launch.Deployment, "stop", lambda self, grace=15.0: stopped.append(self.tag) or [])
    monkeypatch.setattr(launch, "submit", lambda *a, **k: "9")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(flwr_cli, "run_status", interrupted)
    assert deploy_main(["local", "--clients", "2", "--workdir", d.workdir, "--run"]) == 130
    assert stopped == ["test-ctrl-c"]
    assert _one_line(capsys.readouterr().err) == \
        f"deploy local: interrupted; stopped run 9 and the deployment in {d.workdir}"
