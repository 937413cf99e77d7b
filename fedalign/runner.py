"""Run an experiment end to end over a transport, writing a run folder.

:func:`run_experiment` is shared by the in-process engine
(:func:`run_inprocess`) and the Flower ServerApp, so both write the same
files with the same progress display.
"""

from __future__ import annotations

from pathlib import Path

from .config import ExperimentConfig
from .data import metric_name
from .federation import Coordinator, InProcessTransport, Transport
from .outputs import ProgressPrinter, RunWriter, new_run_dir


def run_experiment(
    cfg: ExperimentConfig,
    transport: Transport,
    engine: str,
    run_dir: str | Path | None = None,
) -> tuple[Path, dict]:
    """Rounds 0..R over ``transport``; returns the run folder and the summary.

    On any failure the summary is still written (status ``failed``, with the
    error) together with every round completed so far, then the error is
    re-raised.
    """
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    metric = metric_name(cfg.data.name)
    writer = RunWriter(run_dir, cfg, metric, engine)
    listeners = [writer] + ([ProgressPrinter(metric)] if cfg.output.progress else [])
    coordinator = Coordinator(cfg, transport, listeners)
    try:
        coordinator.run()
    except BaseException as error:
        writer.finish(error)
        raise
    return run_dir, writer.finish()


def run_inprocess(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Every student in this process (no Flower): the reference engine."""
    return run_experiment(cfg, InProcessTransport.from_config(cfg), "inprocess", run_dir)
