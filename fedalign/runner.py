"""Run an experiment end to end over a transport, writing a run folder.

:func:`run_experiment` is shared by the in-process engine
(:mod:`fedalign.inprocess`) and the Flower ServerApp, so both write the same
files with the same progress display; :func:`build_coordinator` wires a
coordinator to a run folder the same way for benchmarks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from .config import ConfigError, ExperimentConfig, config_from_dict
from .data import metric_name
from .ledgers import LedgerBroken, ReportedEpsilon
from .outputs import ProgressPrinter, RunWriter, read_rounds, run_dir_for
from .server import Coordinator, RoundRecord, ServerState, Transport
from .wire import private_releases

# Config keys that may change when a run is resumed: where things live, how
# long the server waits, how it reports, and how many rounds (to extend a run).
RESUMABLE_CHANGES = (
    "data.root",
    "data.cache_dir",
    "federation.rounds",
    "federation.timeout",
    "output.",
    "device",
    "simulation.",
    "federation.public_layout",
)  # the artefact: where the layout is read, not what it is


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Keys that say where things live or how a run reports, not what the experiment is.
LOCATION_KEYS = (
    "name",
    "data.root",
    "data.cache_dir",
    "federation.timeout",
    "output.",
    "device",
    "simulation.",
    "federation.public_layout",
)


def config_differences(run_dir: Path, cfg: ExperimentConfig, ignore: tuple[str, ...] = LOCATION_KEYS) -> list[str]:
    """``"key: saved -> current"`` for every key (not starting with one of ``ignore``) in which ``cfg``
    differs from the run folder's ``config.yaml``.

    A key the saved config lacks (added to fedalign since the run) counts as its default, so a
    new option whose default keeps the old behaviour does not make old runs differ.

    Args:
        run_dir: the run folder (holds ``config.yaml``).
        cfg: the current config.
        ignore: key prefixes to leave out.
    """
    raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    try:
        raw = config_from_dict(raw).to_dict()
    except ConfigError as error:
        return [f"the saved config.yaml is no longer valid ({error})"]
    saved = _flatten(raw)
    current = _flatten(cfg.to_dict())
    changed = sorted(
        k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k) and not k.startswith(ignore)
    )
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed]


def check_resumable(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Raise ValueError if ``cfg`` differs from the run's saved config in a key that changes the experiment.

    Args:
        run_dir: the run folder.
        cfg: the config to resume with.
    """
    changed = config_differences(run_dir, cfg, RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(changed)
        raise ValueError(
            f"cannot resume {run_dir}: the config differs from the run's config.yaml in {diffs}. "
            "Resume with the original config, or start a new run"
        )


def build_coordinator(
    cfg: ExperimentConfig, transport: Transport, run_dir: Path, engine: str, previous: Sequence[RoundRecord] = ()
) -> tuple[Coordinator, RunWriter]:
    """A coordinator over ``transport`` that logs to ``run_dir`` (``rounds.jsonl``, progress lines per
    ``output.progress``) and saves its state there after every round; and the run writer
    (call its ``finish()`` at the end).

    Args:
        cfg: the experiment config.
        transport: delivers the coordinator's requests to the clients.
        run_dir: the run folder.
        engine: the engine's name, recorded in the summary.
        previous: records of rounds before a restart.
    """
    writer = RunWriter(run_dir, cfg, metric_name(cfg.data.name), engine, previous)
    return Coordinator(cfg, transport, _listeners(cfg, writer), state=_timed(ServerState(run_dir), writer)), writer


def _listeners(cfg: ExperimentConfig, writer: RunWriter) -> list:
    progress = ProgressPrinter(writer.metric_name, timings=not private_releases(cfg))
    return [writer] + ([progress] if cfg.output.progress else [])


def _timed(state: ServerState, writer: RunWriter) -> ServerState:
    """``state``, saving the run's wall time so far (``writer``'s) with every round."""
    state.clock = writer.wall_seconds
    return state


def _refuse_a_lost_state(run_dir: Path) -> None:
    """A resume without ``server-state.npz`` starts again from round 0, with no record of what the clients
    spent: refused (:class:`~fedalign.ledgers.LedgerBroken`, the run folder untouched) when ``rounds.jsonl``
    records a charged release."""
    reported = ReportedEpsilon()
    reported.merge_records(read_rounds(run_dir))
    spent = reported.spent()
    if spent:
        raise LedgerBroken(
            f"cannot resume {run_dir}: its {ServerState.FILE} is missing, but rounds.jsonl records privacy spent by "
            f"client{'s' if len(spent) > 1 else ''} {', '.join(map(str, sorted(spent)))} (epsilon up to "
            f"{max(spent.values()):.4g}); starting again from round 0 would forget it. Put {ServerState.FILE} back, "
            "or start a new run"
        )


def _engine_hint(run_dir: Path, engine: str) -> str:
    """A hint when the run was last run with another engine (its ``summary.json`` says which)."""
    try:
        before = json.loads((run_dir / "summary.json").read_text()).get("engine")
    except (OSError, ValueError, AttributeError):
        return ""
    if not before or before == engine:
        return ""
    return (
        f" This run was last run with --engine {before}, whose clients keep their state elsewhere: resume it "
        f"with --engine {before}."
    )


def run_experiment(
    cfg: ExperimentConfig,
    transport: Transport,
    engine: str,
    run_dir: str | Path | None = None,
    resume: bool = False,
    evaluation: Callable[[], list[dict]] | None = None,
) -> tuple[Path, dict]:
    """Rounds 0..R over ``transport``; returns the run folder and the summary.

    The coordinator's state is saved in the run folder after every round
    (:class:`~fedalign.server.ServerState`). With ``resume`` and a saved
    state in ``run_dir``, the run continues after its last completed round with
    the saved statistics cache and round log (the config must match, see
    :data:`RESUMABLE_CHANGES`; clients pick up their own checkpoints, which
    are keyed by the run folder's name). On any failure the summary is still
    written (status ``failed``, with the error) together with every round
    completed so far, then the error is re-raised. A client whose privacy ledger did not continue stops
    the run with :class:`~fedalign.ledgers.LedgerBroken` (:mod:`fedalign.ledgers`), so does a resume that
    lost ``server-state.npz`` after charged releases.

    Args:
        cfg: the experiment config.
        transport: delivers the coordinator's requests to the clients.
        engine: the engine's name, recorded in the summary.
        run_dir: the run folder, or None for a new one.
        resume: continue the run saved in ``run_dir``.
        evaluation: where the clients' evaluation-log rows can be read at the end (engines where clients
            and server share a machine, with privacy on): they go into the run folder as evaluation-only
            figures.
    """
    run_dir = run_dir_for(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = ServerState(run_dir)
    cache: dict[int, list] = {}
    completed, summed, previous, wall_before = -1, None, [], 0.0
    if resume and state.exists():
        check_resumable(run_dir, cfg)
        completed, cache, summed = state.load()
        wall_before = state.wall_seconds()  # the earlier parts' time, up to their last saved round
        previous = [r for r in read_rounds(run_dir) if r.round <= completed]
        print(f"resuming {run_dir} after round {completed} of {cfg.federation.rounds}", file=sys.stderr)
    elif resume:
        _refuse_a_lost_state(run_dir)
        print(f"no saved state in {run_dir}: starting the run from round 0", file=sys.stderr)
    writer = RunWriter(run_dir, cfg, metric_name(cfg.data.name), engine, previous, wall_before)
    try:  # a failure from here on, at start-up too, is recorded in summary.json
        coordinator = Coordinator(cfg, transport, _listeners(cfg, writer), state=_timed(state, writer))
        if completed >= 0:
            coordinator.resume(completed, cache, previous, summed, state.load_reported())
        coordinator.run()
    except BaseException as error:
        if isinstance(error, LedgerBroken):
            error.args = (f"{error}{_engine_hint(run_dir, engine)}",)
        writer.finish(error, evaluation() if evaluation else None)
        raise
    return run_dir, writer.finish(None, evaluation() if evaluation else None)
