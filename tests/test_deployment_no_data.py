"""A deployment whose SuperLink machine holds no data: the ServerApp checks every release against the
public layout artefact (``fedalign layout``, ``federation.public_layout``) and never opens a data root.

Real data (Planetoid Cora, from the ``real_data_root`` fixture; skipped without it), TLS and SuperNode
authentication on, processes started with :func:`deploy.launch.start_local` and stopped by tag, as in
``tests/test_deployment.py``. The SuperNodes get the data root through their node config
(``data-root=...``, what ``deploy supernode --data-root`` sets); the SuperLink, and so the ServerApp it
starts, runs with ``FEDALIGN_DATA_ROOT`` unset, no ``data.root`` in the config and an empty dataset cache
(``FEDALIGN_CACHE_DIR``; a data root has no default location). The proof that the server really could
not read the data: the same deployment, run without the artefact, makes the server say so in its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from deploy import launch

NUM_CLIENTS, ROUNDS = 2, 2
CORA_SMALL = [  # simulations/cora.yaml, small: 2 clients, 2 rounds, a public alignment share of 20 %
    f"federation.num_clients={NUM_CLIENTS}",
    "federation.schedule=alternating",
    "federation.timeout=300",
    "partition.scheme=iid",
    "partition.public_fraction=0.2",
    "align.strategy=alignahead",
    "model.hidden_layers=2",
    "model.hidden_dim=16",
    "train.local_epochs=1",
    "output.progress=false",
    "output.plot=false",
]
NO_DATA = "the server cannot read the dataset"  # fedalign.server.layout's warning when it has neither

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


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").partition("=")[::2] for e in entries if e)


def _run(d: launch.Deployment, overrides: list[str], log: Path) -> tuple[dict, str]:
    """Submit simulations/cora.yaml with ``overrides``, wait for it; its ``flwr ls`` entry and the ServerApp's log."""
    run_id = launch.submit(d.connection, d.env, config="simulations/cora.yaml", overrides=overrides)
    run = launch.wait_for_run(d.connection, run_id, d.env, timeout=900)
    saved = launch.save_run_log(d.connection, run_id, d.env, log)
    return run, saved.read_text() if saved else ""


def test_a_server_without_the_data_checks_every_release_against_the_artefact(
    tmp_path, tag, real_data_root, monkeypatch
):
    monkeypatch.delenv("FEDALIGN_DATA_ROOT", raising=False)  # every process below inherits this environment
    monkeypatch.setenv("FEDALIGN_CACHE_DIR", str(tmp_path / "cache"))  # no dataset processed earlier either
    started = time.monotonic()

    # Where the data is: the public layout artefact, and its fingerprint.
    layout = tmp_path / "layout" / "cora-layout.npz"
    made = subprocess.run(
        [
            str(Path(sys.executable).parent / "fedalign"),
            "layout",
            "simulations/cora.yaml",
            "--out",
            str(layout),
            *(w for o in CORA_SMALL for w in ("--set", o)),
        ],
        cwd=launch.PROJECT_DIR,
        env={**os.environ, "FEDALIGN_DATA_ROOT": str(real_data_root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    fingerprint = made.stdout.split("fingerprint (sha256): ")[1].split()[0]

    # SuperLink without the data; SuperNodes with it, through their node config.
    d = launch.start_local(tmp_path / "deploy", NUM_CLIENTS, data_root=real_data_root, tag=tag, node_timeout=300)
    assert "FEDALIGN_DATA_ROOT" not in _environ(d.process("superlink").pid)
    for i in range(NUM_CLIENTS):
        node = d.process(f"supernode-{i}").command
        given = node[node.index("--node-config") + 1].split('data-root="')[1].split('"')[0]
        assert Path(given).resolve() == Path(real_data_root).resolve()  # deploy resolves links in the path

    # With the artefact: the run completes, every release checked against it (per-node sums).
    out_dir = tmp_path / "outputs"
    run, log = _run(
        d,
        [f"federation.rounds={ROUNDS}", f"output.dir={out_dir}", *CORA_SMALL, f"federation.public_layout={layout}"],
        tmp_path / "with-artefact.log",
    )
    assert run["status"] == "finished:completed", (run, log[-3000:])
    (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["engine"] == "flower", summary
    assert summary["rounds_completed"] == ROUNDS and summary["missing_rounds"] == [], summary
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    assert sorted({r["round"] for r in rows}) == list(range(ROUNDS + 1))
    assert rows and all(r["status"] == "ok" for r in rows), rows  # no release rejected
    assert all(r["bytes_received"] > 0 for r in rows if r["round"] > 0), rows  # releases travelled, were checked
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["federation"]
    assert saved["public_layout"] == str(layout)  # the server loaded the artefact ...
    assert saved["public_layout_sha256"] == fingerprint  # ... and sent its fingerprint, which each client checked
    assert log and NO_DATA not in log, log[-3000:]  # the layout was the artefact's, not a shape-only fallback

    # Without it, the same server has nothing to derive the layout from: it says it cannot read the data.
    run, log = _run(
        d,
        ["federation.rounds=1", f"output.dir={tmp_path / 'outputs-no-artefact'}", *CORA_SMALL],
        tmp_path / "without-artefact.log",
    )
    assert NO_DATA in log and "no data root is set" in log, (run, log[-3000:])
    print(f"\nno data on the SuperLink: runs {run['status']}, {time.monotonic() - started:.0f}s in all")
