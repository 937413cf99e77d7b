"""Run an experiment on Flower's Simulation Runtime from Python (no ``flwr`` CLI).

Used by ``fedalign run --engine flower`` and the tests: the same ServerApp
and ClientApp code as ``flwr run .``, with the config handed over directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from clients.client_app import app as client_app
from fedalign.config import ExperimentConfig
from fedalign.outputs import new_run_dir

from .server_app import serve


def run_flower_simulation(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False,
                          cpus_per_client: float = 1.0) -> tuple[Path, dict]:
    """Run ``cfg`` with one virtual SuperNode per client; returns (run folder, summary).

    ``resume``: continue the run saved in ``run_dir`` (see :func:`fedalign.runner.run_experiment`).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    result: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        result["run"] = serve(grid, cfg, run_dir, resume)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.federation.num_clients,
        backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                        "init_args": {"logging_level": "ERROR", "log_to_driver": True}},
    )
    if "run" not in result:
        raise RuntimeError(f"the Flower simulation ended without finishing the run; see {run_dir}/summary.json")
    return result["run"]
