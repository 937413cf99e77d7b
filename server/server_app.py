"""fedalign ServerApp: the coordinator of :mod:`fedalign.server` over Flower messages (a thin adapter).

The server sends each client its peers' cached statistics and receives
fresh statistics and scalar metrics; it never receives weights, features or
labels -- except in the two weight-averaging reference arms, ``align.strategy:
fedavg | dp-fedavg``, which :func:`serve` hands to Flower's own FedAvg (``server/fedavg.py``).
``flwr run .`` reads the experiment file named by the run config key ``config`` and the space-separated
``key.path=value`` overrides in ``set``;
``resume`` (an absolute run folder) continues a run whose server stopped.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedalign.alignment import WEIGHT_STRATEGIES
from fedalign.config import ExperimentConfig, load_config
from fedalign.outputs import run_dir_for
from fedalign.provenance import REVISION_ENV
from fedalign.runner import run_experiment
from fedalign.server import with_layout_fingerprint

from .flower_transport import FlowerTransport

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Libraries whose INFO records are one line per HTTP request (the Grid polls the SuperLink several
# times a second): kept at WARNING, so their lines appear only when something goes wrong.
QUIET_LOGGERS = ("httpx", "httpcore")


class _Stderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record comes (Flower redirects it to ship the
    ServerApp's output to the SuperLink)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def configure_logging() -> logging.Logger:
    """fedalign's records at INFO on stderr; of everything else only :data:`QUIET_LOGGERS` is touched.

    The root logger is left alone (its level and handlers), so Flower's ``DEBUG`` records and other
    libraries' ``INFO`` records are not printed through it. The ``fedalign`` logger gets its own
    handler, once per process, unless the root logger has handlers (a host that collects the logs,
    e.g. pytest): then its records reach them, printed once.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("fedalign")
    logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    return logger


def serve(
    grid: Grid,
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    resume: bool = False,
    evaluation: Callable[[str], list[dict]] | None = None,
) -> tuple[Path, dict]:
    """Run the experiment through ``grid``; returns the run folder and summary.

    ``resume``: continue the run saved in ``run_dir`` (clients find their
    checkpoints by the folder's name, the run tag). ``evaluation(run_tag)``: the
    clients' evaluation-log rows, where the server can read them (simulation). With
    ``federation.public_layout`` the server checks releases against that artefact, never opening the
    data root, and sends its fingerprint to the clients in the config (each checks its own data gives it).
    """
    if cfg.align.strategy in WEIGHT_STRATEGIES:  # fedavg / dp-fedavg: Flower's FedAvg over weights (server/fedavg.py)
        from .fedavg import serve_fedavg

        return serve_fedavg(grid, cfg, run_dir, resume)
    cfg = with_layout_fingerprint(cfg)
    run_dir = run_dir_for(cfg, run_dir)
    transport = FlowerTransport(grid, cfg, run_tag=run_dir.name)
    rows = (lambda: evaluation(run_dir.name)) if evaluation is not None else None
    return run_experiment(cfg, transport, "flower", run_dir, resume, evaluation=rows)


def config_from_run_config(run_config: dict) -> ExperimentConfig:
    """The experiment named by run config ``config`` with ``set`` overrides."""
    path = Path(str(run_config.get("config", "simulations/quickstart.yaml")))
    if not path.is_absolute():
        path = PROJECT_DIR / path
    overrides = str(run_config.get("set", "")).split()
    return load_config(path, overrides)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run config: ``config`` (experiment file), ``set`` (overrides), ``resume`` (a run folder to continue),
    ``revision`` (the submitting checkout's, for the summary's ``provenance``: this app bundle has no .git)."""
    configure_logging()
    revision = str(context.run_config.get("revision", ""))
    if revision:
        os.environ[REVISION_ENV] = revision
    resume = str(context.run_config.get("resume", ""))
    cfg = config_from_run_config(dict(context.run_config))
    serve(grid, cfg, Path(resume) if resume else None, resume=bool(resume))
