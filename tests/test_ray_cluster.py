"""Simulations bigger than one process's Ray: client resources pass through, and a running Ray cluster is used.

The cluster test starts a local Ray head with ``ray start --head`` on a free loopback port (its
processes tagged by an environment variable), runs a small Flower simulation attached to it through
``simulation.ray_address``, checks the run used that cluster, and stops every process of the head by
PID (``ray stop`` would stop any Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from fedalign.config import config_from_dict

SMALL = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 100}},
    "federation": {"num_clients": 2, "rounds": 2},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "output": {"progress": False, "plot": False},
}


def test_client_resources_and_the_ray_address_reach_flower(monkeypatch, tmp_path):
    import flwr.simulation

    from fedalign_flower.runtime import run_flower_simulation

    seen = {}
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kwargs: seen.update(kwargs))
    cfg = config_from_dict({**SMALL, "simulation": {"cpus_per_client": 0.5, "gpus_per_client": 0.25,
                                                    "ray_address": "127.0.0.1:6390"}})
    with pytest.raises(RuntimeError, match="ended without finishing the run"):
        run_flower_simulation(cfg, tmp_path / "run")
    assert seen["num_supernodes"] == 2
    assert seen["backend_config"]["client_resources"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert seen["backend_config"]["init_args"]["address"] == "127.0.0.1:6390"
    with pytest.raises(Exception, match="simulation.gpus_per_client"):
        config_from_dict({**SMALL, "simulation": {"gpus_per_client": -1}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc to stop the head by PID")
def test_a_simulation_runs_on_an_existing_ray_cluster(tmp_path):
    from deploy.launch import TAG_VAR, stop

    tag = f"ray-test-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    ray = str(Path(sys.executable).parent / "ray")
    ray_dir = tempfile.mkdtemp(prefix="fr-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, TAG_VAR: f"{tag}:ray-head", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                           "--include-dashboard=false", f"--temp-dir={ray_dir}", "--disable-usage-stats"],
                          env=env, capture_output=True, text=True, timeout=180)
    try:
        assert head.returncode == 0, head.stdout + head.stderr
        def simulate(address: str, run: str) -> subprocess.CompletedProcess:
            cfg = config_from_dict({**SMALL, "simulation": {"ray_address": address}})
            return subprocess.run(
                [sys.executable, "-c",
                 "import json, sys; from fedalign.config import config_from_dict; "
                 "from fedalign_flower.runtime import run_flower_simulation; "
                 f"d, s = run_flower_simulation(config_from_dict(json.loads(sys.argv[1])), {str(tmp_path / run)!r}); "
                 "print(s['status'], s['rounds_completed'])", json.dumps(cfg.to_dict())],
                cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)

        proc = simulate(f"127.0.0.1:{port}", "run")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert proc.stdout.split()[-2:] == ["finished", "2"]
        # the run attached to this head: its session folder holds the logs of a driver (the simulation)
        assert list(Path(ray_dir).glob("session_*/logs/python-core-driver-*")), sorted(
            p.name for p in Path(ray_dir).glob("session_*/logs/*"))
    finally:
        left = stop(tag)  # every process of the head, by PID: SIGTERM, then SIGKILL
        shutil.rmtree(ray_dir, ignore_errors=True)
        assert not left, f"Ray head processes left running: {left}"
