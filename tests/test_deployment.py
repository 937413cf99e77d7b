"""Flower's deployment runtime end to end: a real SuperLink and real SuperNodes, TLS and SuperNode
authentication on, started with ``deploy`` (``python -m deploy ...``).

* one machine: ``python -m deploy local`` on 127.0.0.1;
* separate "hosts": the SuperLink and each SuperNode in its own network
  namespace on a bridge, certificate issued for the SuperLink's namespace IP,
  every step through the documented CLI (skipped unless root with ``ip netns``);
* a SuperNode killed (SIGKILL) mid-run: the run still completes, the missed
  round is recorded, and the restarted SuperNode resumes from its checkpoint.

What is checked is the run's real status (``flwr ls --format json``, since
``flwr run`` exits 0 once a run is submitted) and the run folder written by
the ServerApp, never an exit code alone. Every process is tagged
(``FEDALIGN_DEPLOY_TAG``, inherited by the ServerApp / ClientApp processes
Flower starts) and stopped by PID afterwards, also on failure; FLWR_HOME
folders, ports and output folders are private to each test. Built-in
synthetic data only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from deploy import certs, launch

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PROJECT_DIR = Path(__file__).resolve().parent.parent
NUM_CLIENTS = 2
LOCAL_EPOCHS = 2
SMALL = [  # a small, quick experiment on the built-in synthetic graph
    f"federation.num_clients={NUM_CLIENTS}",
    "federation.schedule=alternating",  # pinned: the round/client checks below depend on it
    "align.strategy=alignahead",
    "data.synthetic.num_nodes=150",
    "model.hidden_layers=2",
    f"train.local_epochs={LOCAL_EPOCHS}",
    "output.progress=false",
    "output.plot=false",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc to find and stop processes"),
]


@pytest.fixture
def tag():
    """A label for this test's processes; afterwards every one of them is stopped and checked gone."""
    value = f"test-{uuid.uuid4().hex[:10]}"
    try:
        yield value
    finally:
        left = launch.stop(value, grace=10)
        assert not left, "processes left running after the test:\n" + "\n".join(left)


@pytest.fixture
def cli_env(tmp_path):
    """Environment for ``python -m deploy`` / ``flwr``: a private FLWR_HOME (never ~/.flwr)."""
    return launch.flower_env(tmp_path / "cli-flwr-home")


def _deploy(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "deploy", *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"python -m deploy {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _last_json(stdout: str) -> dict:
    """The JSON object printed last (``python -m deploy run`` ends with the run's flwr ls entry)."""
    return json.loads(stdout[stdout.rindex("\n{") + 1:] if "\n{" in stdout else stdout[stdout.index("{"):])


def _run_folder(out_dir: Path) -> Path:
    folders = [p for p in out_dir.iterdir() if p.is_dir()] if out_dir.is_dir() else []
    assert len(folders) == 1, f"expected one run folder in {out_dir}, found {folders}"
    return folders[0]


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _check_complete_run(run_dir: Path, rounds: int) -> None:
    """Rounds 0..R all present and ok, statistics travelled, summary finished with nothing missed."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished", summary
    assert summary["engine"] == "flower"
    assert summary["rounds_completed"] == rounds
    assert summary["missing_rounds"] == [], summary["missing_rounds"]
    assert summary["bytes_sent_total"] > 0 and summary["bytes_received_total"] > 0
    rows = _rows(run_dir)
    assert sorted({r["round"] for r in rows}) == list(range(rounds + 1))
    assert sorted(r["client"] for r in rows if r["round"] == 0) == list(range(NUM_CLIENTS))
    assert [(r["round"], r["client"]) for r in rows if r["round"] > 0] == \
        [(k, (k - 1) % NUM_CLIENTS) for k in range(1, rounds + 1)]  # alternating schedule
    assert all(r["status"] == "ok" for r in rows), rows
    assert all(r["bytes_sent"] > 0 for r in rows), rows  # every reply carried statistics
    assert all(r["bytes_received"] > 0 for r in rows if r["round"] > 0), rows  # every trainer got its peer's


def _cmdline(pid: int) -> list[str]:
    """The process' command line; [] when it ended between being listed and being read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


# --------------------------------------------------------------- one machine


def test_local_deployment_with_tls_and_supernode_auth(tmp_path, tag, cli_env):
    """``python -m deploy local --clients 2 --run``: real SuperLink + 2 SuperNodes on 127.0.0.1, 2 rounds."""
    workdir, out_dir = tmp_path / "deploy", tmp_path / "outputs"
    started = time.monotonic()
    proc = _deploy("local", "--clients", str(NUM_CLIENTS), "--workdir", str(workdir), "--tag", tag,
                   "--run", "--keep", "--timeout", "300",
                   "--set", "federation.rounds=2", f"output.dir={out_dir}", *SMALL, env=cli_env, timeout=420)
    elapsed = time.monotonic() - started
    printed = _last_json(proc.stdout)
    d = launch.Deployment.load(workdir)
    assert d.tag == tag and not d.insecure

    # Security on: TLS on the SuperLink and the nodes, authentication required and each node's key registered.
    link = d.process("superlink")
    assert {"--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certfile", "--enable-supernode-auth"} <= set(link.command)
    assert "--insecure" not in _cmdline(link.pid)[2:] and "--enable-supernode-auth" in _cmdline(link.pid)
    for i in range(NUM_CLIENTS):
        node = d.process(f"supernode-{i}")
        live = _cmdline(node.pid)
        assert "--insecure" not in live and "--root-certificates" in live and "--auth-supernode-private-key" in live
        config = live[live.index("--node-config") + 1]
        assert f"partition-id={i}" in config and f"num-partitions={NUM_CLIENTS}" in config and "state-dir=" in config
    assert sorted(launch.supernodes(d.connection, d.env).items()) == sorted((n, "online") for n in d.node_ids.values())
    conn = tomllib.loads((Path(d.flwr_home) / "config.toml").read_text())["superlink"][d.connection]
    assert conn == {"address": d.address, "root-certificates": str((workdir / "certs" / "ca.crt").resolve())}

    # The real status, asked of the SuperLink itself.
    run = launch.run_status(d.connection, printed["run-id"], d.env)
    assert run["status"] == "finished:completed", run
    assert run["fab-name"] == "fedalign"
    print(f"\ndeploy local: run {run['run-id']} {run['status']}, {elapsed:.0f}s in all "
          f"(ServerApp {run['compute-time']['serverapp-seconds']:.0f}s)")
    _check_complete_run(_run_folder(out_dir), rounds=2)
    for i in range(NUM_CLIENTS):  # each ClientApp kept its checkpoint in its node's state-dir
        assert list((workdir / f"node-{i}" / "state").glob(f"*/client-{i}.pt"))

    # A SuperNode whose key was never registered is turned away.
    key, _ = certs.make_node_keys(tmp_path / "intruder", "intruder")
    intruder = launch.start("intruder", launch.supernode_command(
        superlink=d.address, config=launch.node_config(0, NUM_CLIENTS), ca_cert=workdir / "certs" / "ca.crt",
        key=key, runtime_port=launch.free_port()), tag=tag, log=tmp_path / "intruder.log")
    try:
        intruder.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"an unregistered SuperNode was not refused\n{launch.log_tail(intruder.log)}")
    assert intruder.popen.returncode != 0
    assert "Failed to initialize the connection" in Path(intruder.log).read_text()
    assert sorted(launch.supernodes(d.connection, d.env)) == sorted(d.node_ids.values())

    # `python -m deploy stop` ends every process it started (SuperLink, SuperExecs, SuperNodes).
    assert launch.processes(tag)
    _deploy("stop", "--workdir", str(workdir), env=cli_env)
    assert not launch.processes(tag)


# --------------------------------------------------------------- the operator's view, by hand

BARE_PATH = "/usr/local/bin:/usr/bin:/bin"
LONG_RUN = ["federation.rounds=50", "federation.num_clients=1", "align.strategy=none", "data.synthetic.num_nodes=150",
            "output.progress=false", "output.plot=false"]


def _deploy_fails(*args: str, env: dict, timeout: float = 300) -> tuple[subprocess.CompletedProcess, str]:
    """``python -m deploy ARGS`` that must fail with one line: (the process, that last line of stderr)."""
    proc = subprocess.run([sys.executable, "-m", "deploy", *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode != 0, f"python -m deploy {' '.join(args)} did not fail\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"deploy {args[0]}: "), proc.stderr
    return proc, lines[-1]


def _plain_shell(line: str, log: Path) -> subprocess.Popen:
    """A printed command line run by bash with nothing but a bare PATH (and HOME), in its own session."""
    with open(log, "ab") as out:
        return subprocess.Popen(["bash", "-c", line], env={"PATH": BARE_PATH, "HOME": str(Path.home())}, cwd="/",
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for_superexec(d: launch.Deployment, node: subprocess.Popen, log: Path, timeout: float = 120) -> int:
    """The flower-superexec that a SuperNode started by hand runs (Flower starts it by name, through PATH)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert node.poll() is None, f"the SuperNode ended (exit {node.returncode})\n{launch.log_tail(log)}"
        found = [p for p in d.alive() if "flower-superexec" in " ".join(_cmdline(p))]
        if found:
            return found[0]
        time.sleep(0.5)
    pytest.fail(f"no flower-superexec under the SuperNode after {timeout:.0f}s\n{launch.log_tail(log)}")


def test_a_local_deployment_by_hand(tmp_path, tag, cli_env):
    """What an operator meets by hand on a TLS + authentication deployment: every expected failure ends in one
    line and a non-zero exit; hints and printed command lines run as printed, from a plain shell; ``deploy stop``
    ends a SuperNode restarted by hand, with or without the deployment's tag."""
    workdir = tmp_path / "deploy"
    started = _deploy("local", "--clients", "1", "--no-worker", "--workdir", str(workdir), "--tag", tag,
                      env=cli_env, timeout=300).stdout.splitlines()
    d = launch.Deployment.load(workdir)
    node_line = started[started.index(next(x for x in started if x.strip().startswith("supernode-0 "))) + 1].strip()
    assert f"{launch.TAG_VAR}={tag}:supernode-0" in node_line

    # A second deployment in the same folder, a key registered twice: refused, nothing changed.
    _, line = _deploy_fails("local", "--clients", "1", "--workdir", str(workdir), env=cli_env)
    assert f"a deployment is already running from {workdir}" in line and f"stop --workdir {workdir}" in line
    _, line = _deploy_fails("register", d.connection, str(workdir / "keys" / "node-0.pub"), "--flwr-home", d.flwr_home,
                            env=cli_env)
    assert "node-0.pub is already registered with fedalign-local: nothing to do" in line
    assert launch.Deployment.load(workdir).node_ids == d.node_ids

    # A failed run: its log is saved in the deployment's folder, and the flwr line printed works as printed.
    proc, line = _deploy_fails("run", "--workdir", str(workdir), "--set", "federation.rounds=bogus", env=cli_env)
    assert "did not complete: finished:failed" in line and "its log: " in line
    saved = Path(line.split("its log: ")[1].split(" ")[0])
    assert saved.parent == workdir / "logs" and "got 'bogus'" in saved.read_text()
    shown = subprocess.run(["bash", "-c", line.split("(or: ")[1].rstrip(")")], env={"PATH": BARE_PATH}, cwd="/",
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "got 'bogus'" in shown.stdout, shown.stderr

    # A SuperNode restarted before the SuperLink shows it offline: Flower's code 2004, explained.
    launch.kill(tag, "supernode-0", popens=[])
    restart_log = tmp_path / "restart.log"
    with open(restart_log, "wb") as out:  # a file, not a pipe: the SuperExec would keep a pipe open until reaped
        restart = subprocess.Popen([sys.executable, "-m", "deploy", "supernode", "--superlink", d.address,
                                    "--partition-id", "0", "--num-partitions", "1",
                                    "--ca-cert", str(workdir / "certs" / "ca.crt"),
                                    "--key", str(workdir / "keys" / "node-0"),
                                    "--state-dir", str(workdir / "node-0" / "state"),
                                    "--no-worker", "--runtime-port", str(launch.free_port()),
                                    "--flwr-home", str(workdir / "node-0" / "flwr-home")],
                                   cwd=PROJECT_DIR, env={**cli_env, launch.TAG_VAR: f"{tag}:restart"},
                                   stdout=out, stderr=subprocess.STDOUT)
    assert restart.wait(timeout=180) != 0
    hint = "deploy supernode: the SuperLink refused this SuperNode (Flower code 2004"
    deadline = time.monotonic() + 60
    while hint not in restart_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    text = restart_log.read_text()
    assert "[code: 2004]" in text and hint in text and "Traceback" not in text, text

    # The SuperLink dies mid-run: the waiter tries a few more polls, then says how to resume.
    with open(tmp_path / "run.err", "w") as err:
        waiter = subprocess.Popen([sys.executable, "-m", "deploy", "run", "--workdir", str(workdir), "--set",
                                   f"output.dir={tmp_path / 'outputs'}", *LONG_RUN], cwd=PROJECT_DIR, env=cli_env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while ": running" not in (tmp_path / "run.err").read_text() and time.monotonic() < deadline:
            assert waiter.poll() is None, (tmp_path / "run.err").read_text()
            time.sleep(1)
        launch.kill(tag, "superlink")
        assert waiter.wait(timeout=300) == 1
    finally:
        waiter.kill()
    err = (tmp_path / "run.err").read_text()
    assert "Traceback" not in err and "poll 1 of 5 failed (nothing answers at" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("deploy run: lost the SuperLink while waiting for run") and "--resume" in last
    assert f"-m deploy stop --workdir {workdir} && " in last and "federation.rounds=50" in last

    # A run against the stopped deployment.
    _, line = _deploy_fails("run", "--workdir", str(workdir), env=cli_env)
    assert line.startswith(f"deploy run: the local deployment in {workdir} is not running")
    assert f"-m deploy local --clients 1 --workdir {workdir} --no-worker" in line

    # The printed SuperNode line, pasted into a plain shell: it finds flower-superexec (no FileNotFoundError)
    # and keeps retrying the dead SuperLink; `deploy stop` ends it, with the tag and without.
    manual = []
    try:
        for i, line in enumerate([node_line, re.sub(rf"{launch.TAG_VAR}=\S+ ", "", node_line)]):
            log = tmp_path / f"by-hand-{i}.log"
            manual.append(_plain_shell(line, log))
            superexec = _wait_for_superexec(d, manual[-1], log)
            tagged = f"{launch.TAG_VAR}={tag}:".encode() in Path(f"/proc/{manual[-1].pid}/environ").read_bytes()
            assert tagged == (i == 0)
            assert "FileNotFoundError" not in log.read_text()
            out = _deploy("stop", "--workdir", str(workdir), env=cli_env).stdout
            assert out.startswith(f"deployment {tag}: stopped ") and not d.alive(), out
            assert manual[-1].wait(timeout=30) is not None and not launch.alive(superexec)
        assert _deploy("stop", "--workdir", str(workdir), env=cli_env).stdout.strip() == \
            f"deployment {tag}: nothing was running"
    finally:
        for p in manual:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def test_ctrl_c_during_local_run_stops_everything(tmp_path, tag, cli_env):
    """Ctrl-C (SIGINT) while `deploy local --run` waits: it stops what it started and exits 130 with one line."""
    workdir, err_path = tmp_path / "deploy", tmp_path / "local.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "deploy", "local", "--clients", "1", "--no-worker", "--workdir",
                                 str(workdir), "--tag", tag, "--run", "--set", f"output.dir={tmp_path / 'outputs'}",
                                 *LONG_RUN], cwd=PROJECT_DIR, env=cli_env, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while ": running" not in err_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err_path.read_text()
            time.sleep(1)
        assert launch.processes(tag)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    text = err_path.read_text()
    assert "Traceback" not in text
    assert re.fullmatch(rf"deploy local: interrupted; stopped run \d+ and the deployment in {re.escape(str(workdir))}",
                        text.strip().splitlines()[-1]), text
    assert not launch.processes(tag) and not launch.Deployment.load(workdir).alive()


# --------------------------------------------------------------- separate hosts


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    probe = f"faprobe{uuid.uuid4().hex[:6]}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "`ip netns add` does not work here"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> str:
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for third in range(7, 250):
        prefix = f"10.231.{third}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.231.x.0/24 subnet")


@pytest.fixture
def hosts(tag):
    """Three network namespaces (SuperLink, two SuperNodes) on a bridge; this namespace reaches them too.

    Skipped, with the reason, where namespaces or virtual links cannot be made (not root, no iproute2,
    no CAP_NET_ADMIN in a container, ...).
    """
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    suffix = uuid.uuid4().hex[:6]
    prefix = _free_subnet()
    bridge = f"fabr{suffix}"
    names = {"superlink": f"fa{suffix}l", "supernode-0": f"fa{suffix}n0", "supernode-1": f"fa{suffix}n1"}
    ips = {"superlink": f"{prefix}.1", "supernode-0": f"{prefix}.2", "supernode-1": f"{prefix}.3"}
    host_ends = []
    try:
        try:
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{prefix}.254/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for k, (role, ns) in enumerate(names.items()):
                outside, inside = f"fav{suffix}{k}", f"fap{suffix}{k}"
                _ip("netns", "add", ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                host_ends.append(outside)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", outside, "master", bridge)
                _ip("link", "set", outside, "up")
                _ip("-n", ns, "addr", "add", f"{ips[role]}/24", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except RuntimeError as error:
            pytest.skip(f"cannot build the virtual network here: {error}")
        yield {role: (names[role], ips[role]) for role in names}
    finally:
        processes_left = launch.stop(tag, grace=10)  # the processes first, then their network
        for link in host_ends:
            _ip("link", "del", link, check=False)
        for ns in names.values():
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", bridge, check=False)
        namespaces_left = [ns for ns in names.values() if ns in _ip("netns", "list").stdout.split()]
        assert not processes_left, "processes left running after the test:\n" + "\n".join(processes_left)
        assert not namespaces_left, f"network namespaces left behind: {namespaces_left}"


def test_separate_hosts_in_network_namespaces(tmp_path, tag, hosts, cli_env):
    """The multi-host recipe of the README, each machine a network namespace with its own IP."""
    link_ns, link_ip = hosts["superlink"]
    address = f"{link_ip}:{launch.DEFAULT_PORT}"
    certs_dir, keys_dir, out_dir = tmp_path / "certs", tmp_path / "keys", tmp_path / "outputs"
    connection = "fedalign-hosts"
    started = time.monotonic()

    # 1. Certificates for the SuperLink's address, keys for the SuperNodes.
    _deploy("certs", "--out", str(certs_dir), "--host", link_ip, env=cli_env)
    _deploy("keys", "--out", str(keys_dir), "node-0", "node-1", env=cli_env)
    # 2. The SuperLink, on its own host, listening on its own IP only.
    link = launch.start("superlink", [sys.executable, "-m", "deploy", "superlink", "--certs", str(certs_dir),
                                      "--host", link_ip, "--flwr-home", str(tmp_path / "superlink-home")],
                        tag=tag, log=tmp_path / "superlink.log", netns=link_ns)
    # 3. On the machine that runs flwr: the connection, then registration of the SuperNodes' public keys.
    _deploy("connection", connection, "--address", address, "--root-certificates", str(certs_dir / "ca.crt"),
            env=cli_env)
    launch.wait_for_port(link_ip, launch.DEFAULT_PORT, link)
    ids = json.loads(_deploy("register", connection, str(keys_dir / "node-0.pub"), str(keys_dir / "node-1.pub"),
                             env=cli_env).stdout)
    node_ids = [ids[str(keys_dir / f"node-{i}.pub")] for i in range(NUM_CLIENTS)]
    # 4. One SuperNode per client host, each with its node config.
    nodes = []
    for i in range(NUM_CLIENTS):
        ns, _ = hosts[f"supernode-{i}"]
        nodes.append(launch.start(f"supernode-{i}", [
            sys.executable, "-m", "deploy", "supernode", "--superlink", address,
            "--partition-id", str(i), "--num-partitions", str(NUM_CLIENTS),
            "--ca-cert", str(certs_dir / "ca.crt"), "--key", str(keys_dir / f"node-{i}"),
            "--state-dir", str(tmp_path / f"node-{i}" / "state"), "--flwr-home", str(tmp_path / f"node-{i}" / "home"),
        ], tag=tag, log=tmp_path / f"supernode-{i}.log", netns=ns))
    try:
        launch.wait_for_nodes(connection, cli_env, node_ids=node_ids, timeout=120)
    except TimeoutError as error:
        pytest.fail(f"{error}\n" + "\n".join(launch.log_tail(p.log) for p in [link, *nodes]))

    # They really are apart: one network namespace each, none of them this test's.
    def netns_of(pid: int) -> str:
        return os.readlink(f"/proc/{pid}/ns/net")
    spaces = [netns_of(p.pid) for p in [link, *nodes]] + [netns_of(os.getpid())]
    assert len(set(spaces)) == len(spaces), spaces
    assert all("flower-" in " ".join(_cmdline(p.pid)) for p in [link, *nodes])  # `deploy` exec'd Flower (same PID)

    # 5. Run, wait, read the real status.
    proc = _deploy("run", connection, "--timeout", "300", "--set", "federation.rounds=2", f"output.dir={out_dir}",
                   *SMALL, env=cli_env, timeout=420)
    run = _last_json(proc.stdout)
    assert run["status"] == "finished:completed", run
    assert launch.run_status(connection, run["run-id"], cli_env)["status"] == "finished:completed"
    print(f"\nseparate hosts: run {run['run-id']} {run['status']} in {time.monotonic() - started:.0f}s "
          f"(ServerApp {run['compute-time']['serverapp-seconds']:.0f}s)")
    _check_complete_run(_run_folder(out_dir), rounds=2)


# --------------------------------------------------------------- a SuperNode dies


def _wait_for_row(out_dir: Path, d: launch.Deployment, run_id: str, round_number: int, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in out_dir.glob("*"):
            if any(r["round"] == round_number for r in _rows(run_dir)):
                return run_dir
        status = launch.run_status(d.connection, run_id, d.env)["status"]
        assert not status.startswith("finished"), f"run ended before round {round_number}: {status}"
        time.sleep(4)
    pytest.fail(f"round {round_number} not logged after {timeout:.0f}s\n"
                + "\n".join(launch.log_tail(p.log) for p in d.processes))


def _epochs_trained(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epochs_trained"])


def test_killed_supernode_is_recorded_missing_and_resumes(tmp_path, tag):
    """SIGKILL client 0's SuperNode after round 1; the run completes without it, then with it again."""
    rounds, victim = 7, 0  # alternating: client 0 trains rounds 1, 3, 5, 7
    out_dir = tmp_path / "outputs"
    started = time.monotonic()
    d = launch.start_local(tmp_path / "deploy", NUM_CLIENTS, tag=tag)
    run_id = launch.submit(d.connection, d.env, overrides=[
        # the timeout only bounds a normal round on a loaded machine: a dead node's round ends when
        # Flower declares the node offline
        f"federation.rounds={rounds}", "federation.timeout=120", f"output.dir={out_dir}", *SMALL])
    run_dir = _wait_for_row(out_dir, d, run_id, 1, timeout=240)
    checkpoint = tmp_path / "deploy" / f"node-{victim}" / "state" / run_dir.name / f"client-{victim}.pt"
    assert _epochs_trained(checkpoint) == LOCAL_EPOCHS  # trained in round 1

    # A crash: the SuperNode and everything under it (SuperExec, ClientApp) killed at once.
    node = d.process(f"supernode-{victim}")
    killed = launch.kill(tag, node.role, popens=[node.popen])
    assert node.pid in killed and not launch.processes(tag, node.role)
    killed_at = time.monotonic()
    # Flower notices only through missed heartbeats (SuperNodes send one about every 25 s; 2 missed = offline).
    launch.wait_for_nodes(d.connection, d.env, node_ids=[d.node_ids[node.role]], status="offline", timeout=120)
    offline_after = time.monotonic() - killed_at

    # Restart it as it was (same node config, same key, so the same node id); it finds its checkpoint.
    log_before = Path(node.log).read_text(errors="replace")
    back = launch.restart(node, tag)
    d.processes[d.processes.index(node)] = back
    launch.wait_for_nodes(d.connection, d.env, node_ids=[d.node_ids[node.role]], timeout=120)

    run = launch.wait_for_run(d.connection, run_id, d.env, timeout=400)
    elapsed = time.monotonic() - started
    assert run["status"] == "finished:completed", (run, launch.log_tail(d.process("superlink").log, 60))

    rows = _rows(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["rounds_completed"] == rounds
    mine = {r["round"]: r for r in rows if r["client"] == victim and r["round"] > 0}
    peer = {r["round"]: r for r in rows if r["client"] != victim and r["round"] > 0}
    assert sorted(mine) == [1, 3, 5, 7] and sorted(peer) == [2, 4, 6]
    assert all(r["status"] == "ok" for r in peer.values()), peer  # the other client never stopped
    missed = sorted(k for k, r in mine.items() if r["status"] == "missing")
    # round 3 is missed for sure; round 5 too if the restarted SuperNode was not back in time
    assert missed in ([3], [3, 5]), (mine, launch.log_tail(back.log, 60))
    assert all(mine[k]["status"] == "ok" for k in mine if k not in missed), mine  # 1, and 7 after the restart
    assert [(r["round"], r["client"]) for r in rows if r["status"] == "missing"] == [(k, victim) for k in missed]
    assert [(m["round"], m["client"]) for m in summary["missing_rounds"]] == [(k, victim) for k in missed]
    assert all(m["error"] for m in summary["missing_rounds"])  # says why (no reply / node unavailable)
    assert summary["clients"][str(victim)]["rounds_trained"] == len(mine) - len(missed)

    # Resumed, not restarted from scratch: the checkpoint's epoch count includes round 1's training plus
    # every train request the restarted SuperNode ran (the round it answered, and any stale request of the
    # round it missed that Flower still delivered to it).
    after = Path(back.log).read_text(errors="replace")[len(log_before):]
    trained_after_restart = len(re.findall(r"Receiving: train message", after))
    assert trained_after_restart >= 1
    assert _epochs_trained(checkpoint) == LOCAL_EPOCHS * (1 + trained_after_restart), \
        (trained_after_restart, _epochs_trained(checkpoint))
    print(f"\nkilled SuperNode: offline after {offline_after:.0f}s, run {run['status']} in {elapsed:.0f}s; "
          f"missing {[(m['round'], m['client']) for m in summary['missing_rounds']]}; restarted node ran "
          f"{trained_after_restart} train request(s)")


# --------------------------------------------------------------- the server dies


def test_killed_server_app_resumes_from_its_saved_state(tmp_path, tag):
    """SIGKILL the ServerApp after round 2; ``flwr run`` with ``resume`` finishes the same run folder,
    every round logged once, no client trained a round twice."""
    rounds = 5
    out_dir = tmp_path / "outputs"
    d = launch.start_local(tmp_path / "deploy", NUM_CLIENTS, tag=tag)
    overrides = [f"federation.rounds={rounds}", "federation.timeout=120", f"output.dir={out_dir}", *SMALL]
    run_id = launch.submit(d.connection, d.env, overrides=overrides)
    run_dir = _wait_for_row(out_dir, d, run_id, 2, timeout=300)

    server_apps = [pid for pid in launch.processes(tag) if "flwr-serverapp" in " ".join(_cmdline(pid))]
    assert len(server_apps) == 1, [launch.describe(p) for p in launch.processes(tag)]
    os.kill(server_apps[0], 9)
    first = launch.wait_for_run(d.connection, run_id, d.env, timeout=300)
    assert first["status"] != "finished:completed", first
    logged = max(r["round"] for r in _rows(run_dir))
    assert 2 <= logged < rounds

    resumed_id = launch.submit(d.connection, d.env, overrides=overrides, resume=str(run_dir))
    run = launch.wait_for_run(d.connection, resumed_id, d.env, timeout=400)
    assert run["status"] == "finished:completed", (run, launch.log_tail(d.process("superlink").log, 60))
    assert sorted(p for p in out_dir.iterdir() if p.is_dir()) == [run_dir]  # the same folder, continued
    _check_complete_run(run_dir, rounds=rounds)  # rounds 0..5 each exactly once, all ok
    for i in range(NUM_CLIENTS):  # alternating: client i trained ceil((rounds - i) / 2) rounds, once each
        checkpoint = tmp_path / "deploy" / f"node-{i}" / "state" / run_dir.name / f"client-{i}.pt"
        assert _epochs_trained(checkpoint) == LOCAL_EPOCHS * len(range(i + 1, rounds + 1, NUM_CLIENTS))
