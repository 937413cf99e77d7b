"""Run an experiment on Flower's Simulation Runtime from Python (no ``flwr`` CLI).

Used by ``fedalign run`` (its default engine) and the tests: the project's own
ServerApp and ClientApp (``server/``, ``clients/``, the code ``flwr run .`` runs)
on one virtual SuperNode per client, with the config handed over directly.
Flower's and Ray's logs go to ``flower.log`` in the run folder unless ``verbose``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from fedalign.client.service import evaluation_log_path, read_evaluation_logs
from fedalign.config import ExperimentConfig
from fedalign.ledgers import LedgerBroken
from fedalign.outputs import run_dir_for
from fedalign.wire import private_releases

PROJECT_DIR = Path(__file__).resolve().parent.parent
FLOWER_LOG = "flower.log"


def flower_apps():
    """The project's ``clients.client_app`` and ``server.server_app`` modules.

    They live in the project's source folder (Flower loads them from there for ``flwr run .``),
    which is put on this process's path and on Ray workers' ``PYTHONPATH``.
    """
    if not (PROJECT_DIR / "clients" / "client_app.py").is_file():
        raise RuntimeError(
            f"the Flower apps (clients/, server/) are not beside {Path(__file__).parent}: run fedalign "
            "from the project's source folder, set up with `bash setup.sh`"
        )
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    paths = [str(PROJECT_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return importlib.import_module("clients.client_app"), importlib.import_module("server.server_app")


@contextlib.contextmanager
def flower_logs(run_dir: Path, verbose: bool) -> Iterator[None]:
    """Flower's log records and Python warnings into ``run_dir/flower.log`` (and the console if ``verbose``).

    Args:
        run_dir: the run folder.
        verbose: also keep the console's handlers.
    """
    handler = logging.FileHandler(run_dir / FLOWER_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("flwr"), logging.getLogger("py.warnings")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        if not verbose:
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.propagate = False
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once, into the log
            yield
    finally:
        logging.captureWarnings(False)
        for lg, handlers, level, propagate in saved:
            lg.removeHandler(handler)
            for h in handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()


def backend_config(cfg: ExperimentConfig, verbose: bool = False) -> dict:
    """Flower's Ray backend config from the ``simulation`` section: each client's CPUs and GPUs, and the
    Ray cluster to attach to (``simulation.ray_address``; none: a local Ray instance).

    Args:
        cfg: the experiment config (``simulation`` section).
        verbose: Ray logs at DEBUG and to the driver.
    """
    init_args = {"logging_level": "DEBUG" if verbose else "ERROR", "log_to_driver": verbose}
    if cfg.simulation.ray_address:
        init_args["address"] = cfg.simulation.ray_address
    return {
        "client_resources": {"num_cpus": cfg.simulation.cpus_per_client, "num_gpus": cfg.simulation.gpus_per_client},
        "init_args": init_args,
    }


def run_flower_simulation(
    cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False, verbose: bool = False
) -> tuple[Path, dict]:
    """Run ``cfg`` with one virtual SuperNode per client (placed as :func:`backend_config` says);
    returns (run folder, summary).

    Args:
        cfg: the experiment config.
        run_dir: the run folder, or None for a new one.
        resume: continue the run saved in ``run_dir`` (see :func:`fedalign.runner.run_experiment`).
        verbose: show Flower's and Ray's logs on the console too.
    """
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    clients, server = flower_apps()
    run_dir = run_dir_for(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    server_app = ServerApp()

    def evaluation(run_tag: str) -> list[dict]:  # simulated clients keep their logs on this machine
        return read_evaluation_logs([evaluation_log_path(None, run_tag, i) for i in range(cfg.federation.num_clients)])

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result["run"] = server.serve(grid, cfg, run_dir, resume, evaluation if private_releases(cfg) else None)
        except LedgerBroken as refused:  # the run's own refusal: raised again below, once Flower has stopped
            result["refused"] = refused

    with flower_logs(run_dir, verbose):
        run_simulation(
            server_app=server_app,
            client_app=clients.app,
            num_supernodes=cfg.federation.num_clients,
            backend_config=backend_config(cfg, verbose),
        )
    if "refused" in result:
        raise result["refused"]
    if "run" not in result:
        raise RuntimeError(
            f"the Flower simulation ended without finishing the run; see {run_dir / 'summary.json'} "
            f"and {run_dir / FLOWER_LOG}"
        )
    return result["run"]
