"""Run an experiment end to end over a transport, writing a run folder.

:func:`run_experiment` is shared by the in-process engine
(:func:`run_inprocess`) and the Flower ServerApp, so both write the same
files with the same progress display.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .config import ExperimentConfig
from .data import metric_name
from .federation import Coordinator, InProcessTransport, ServerState, Transport
from .outputs import ProgressPrinter, RunWriter, new_run_dir, read_rounds

# Config keys that may change when a run is resumed: where things live, how
# long the server waits, how it reports, and how many rounds (to extend a run).
RESUMABLE_CHANGES = ("data.root", "data.cache_dir", "federation.rounds", "federation.timeout", "output.", "device")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Raise ValueError if ``cfg`` differs from the run's saved config in a key that changes the experiment."""
    saved = _flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    current = _flatten(cfg.to_dict())
    changed = sorted(k for k in saved.keys() | current.keys()
                     if saved.get(k) != current.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {run_dir}: the config differs from the run's config.yaml in {diffs}. "
                         "Resume with the original config, or start a new run")


def run_experiment(
    cfg: ExperimentConfig,
    transport: Transport,
    engine: str,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[Path, dict]:
    """Rounds 0..R over ``transport``; returns the run folder and the summary.

    The coordinator's state is saved in the run folder after every round
    (:class:`~fedalign.federation.ServerState`). With ``resume`` and a saved
    state in ``run_dir``, the run continues after its last completed round with
    the saved statistics cache and round log (the config must match, see
    :data:`RESUMABLE_CHANGES`; clients pick up their own checkpoints, which
    are keyed by the run folder's name). On any failure the summary is still
    written (status ``failed``, with the error) together with every round
    completed so far, then the error is re-raised.
    """
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = ServerState(run_dir)
    completed, cache, previous = -1, {}, []
    if resume and state.exists():
        check_resumable(run_dir, cfg)
        completed, cache = state.load()
        previous = [r for r in read_rounds(run_dir) if r.round <= completed]
        print(f"resuming {run_dir} after round {completed} of {cfg.federation.rounds}", file=sys.stderr)
    elif resume:
        print(f"no saved state in {run_dir}: starting the run from round 0", file=sys.stderr)
    metric = metric_name(cfg.data.name)
    writer = RunWriter(run_dir, cfg, metric, engine, previous)
    listeners = [writer] + ([ProgressPrinter(metric)] if cfg.output.progress else [])
    coordinator = Coordinator(cfg, transport, listeners, state=state)
    if completed >= 0:
        coordinator.resume(completed, cache, previous)
    try:
        coordinator.run()
    except BaseException as error:
        writer.finish(error)
        raise
    return run_dir, writer.finish()


def run_inprocess(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False) -> tuple[Path, dict]:
    """Every student in this process (no Flower): the reference engine.

    (Resuming in process restores the server state; the students themselves
    start from fresh weights, as they keep no checkpoints in this engine.)
    """
    return run_experiment(cfg, InProcessTransport.from_config(cfg), "inprocess", run_dir, resume)
