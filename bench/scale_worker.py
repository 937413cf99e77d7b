"""One configuration of :mod:`bench.scale`, measured in a fresh process (``python -m bench.scale_worker SPEC``).

The worker builds the experiment of ``SPEC`` (a JSON object, :func:`raw_config`) with the in-process
engine -- the dataset, the partition, every student -- and runs round 0 (every client releases) and
``rounds`` training rounds of the alternating schedule (one trainer per round against its peers'
summed mass), as ``fedalign run --engine inprocess`` does. Mini-batch students build their
``NeighborLoader`` s before round 1 (timed apart, :func:`prebuild_loaders`), so a round's training time
is one student-epoch: one pass over the larger of the labelled training nodes and the alignment targets
in batches of ``batch_size`` (``fedalign.client.minibatch_training``); full batch, one forward and
backward over the whole local graph. It prints one JSON line: sizes, times and resident sets.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from . import common

_STARTED = time.perf_counter()


def phase(name: str) -> dict:
    """Log a phase boundary to stderr (seconds since start, resident set now, peak so far) and return it.

    Args:
        name: the phase just finished."""
    mark = {
        "phase": name,
        "t_s": round(time.perf_counter() - _STARTED, 1),
        "rss_mb": round(common.current_rss_mb()),
        "peak_mb": round(common.peak_rss_mb()),
    }
    print(f"[scale-worker] {json.dumps(mark)}", file=sys.stderr, flush=True)
    return mark


def raw_config(spec: dict) -> dict:
    """The experiment of one configuration (synthetic-csbm, GCN students, alignahead).

    Args:
        spec: the configuration (``num_nodes``, ``avg_degree``, ``num_features``, ``num_clients``,
            ``scheme``, ``public_fraction``, ``mode``, ``batch_size``, ``num_neighbors``,
            ``hidden_layers``, ``hidden_dim``, ``rounds``)."""
    train = {"local_epochs": 1, "lr": 0.01, "weight_decay": 5e-4}
    if spec["mode"] == "mini":
        train.update(batch_size=spec["batch_size"], num_neighbors=spec["num_neighbors"])
    return {
        "name": f"benchmark-scale-{spec['id']}",
        "seed": 0,
        "device": spec.get("device", "cpu"),
        "data": {
            "name": "synthetic-csbm",
            "synthetic": {
                "num_nodes": spec["num_nodes"],
                "avg_degree": spec["avg_degree"],
                "num_features": spec["num_features"],
            },
        },
        "partition": {
            "scheme": spec["scheme"],
            "public_fraction": spec["public_fraction"],
            "alpha": spec.get("alpha", 0.5),
        },
        "federation": {"num_clients": spec["num_clients"], "rounds": spec["rounds"], "schedule": "alternating"},
        "model": {
            "arch": spec.get("arch", "gcn"),
            "hidden_layers": spec["hidden_layers"],
            "hidden_dim": spec["hidden_dim"],
            "dropout": 0.5,
        },
        "align": {"strategy": "alignahead", "weight": 1.0, "tau": 100.0},
        "train": train,
        "output": {"progress": False, "plot": False},
    }


def prebuild_loaders(transport, cfg) -> tuple[float, int | None]:
    """Build the mini-batch loaders of every student that trains in rounds 1..R (alternating).

    Args:
        transport: the in-process transport (its students).
        cfg: the experiment config.

    Returns:
        ``(seconds, steps per epoch of client 0)``; ``(0, None)`` for full-batch students."""
    if cfg.train.batch_size is None:
        return 0.0, None
    from fedalign.client.minibatch_training import minibatch_loaders

    started = time.perf_counter()
    steps = None
    for client in range(min(cfg.federation.rounds, cfg.federation.num_clients)):
        loaders = minibatch_loaders(transport.clients[client])
        lengths = [len(x) for x in (loaders.task, loaders.align) if x is not None]
        steps = steps if steps is not None else max(lengths + [1])
    return time.perf_counter() - started, steps


def run_rounds(coordinator, timers: dict, rounds: int) -> list[dict]:
    """Rounds 1..``rounds``: each round's wall time, its trainer's epoch, evaluation and release times.

    Args:
        coordinator: the initialised coordinator.
        timers: per client, its ``evaluate`` and ``release`` timers (:func:`bench.common.instrument`).
        rounds: how many training rounds."""
    out = []
    for r in range(1, rounds + 1):
        start, cpu = time.perf_counter(), time.process_time()
        rec = coordinator.run_round(r)[0]
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        ev, rel = timers[rec.client]["evaluate"].take(), timers[rec.client]["release"].take()
        out.append(
            {
                "round": r,
                "client": rec.client,
                "seconds": seconds,
                "cpu_s": cpu_s,
                "epoch_s": rec.seconds - ev - rel,
                "evaluate_s": ev,
                "release_s": rel,
                "status": rec.status,
                "error": rec.error,
                "request_bytes": rec.bytes_received,
                "release_bytes": rec.bytes_sent,
                "rss_mib": round(common.current_rss_mb(), 1),
            }
        )
    return out


def sizes(dataset, transport) -> dict:
    """Node and edge counts of the graph, the alignment graph and the clients' local graphs.

    Args:
        dataset: the loaded dataset.
        transport: the in-process transport."""
    c0 = transport.clients[0]
    local_nodes = [c.train_split.graph.num_nodes for c in transport.clients.values()]
    local_edges = [int(c.train_split.graph.edge_index.size(1)) for c in transport.clients.values()]
    labelled = [int(c.train_split.mask.sum()) for c in transport.clients.values()]
    return {
        "graph_edges": int(dataset.train.graph.edge_index.size(1)),
        "graph_nodes": int(dataset.train.graph.num_nodes),
        "alignment_edges": int(c0.alignment.edge_index.size(1)),
        "alignment_nodes": int(c0.alignment.num_nodes),
        "local_nodes_mean": sum(local_nodes) / len(local_nodes),
        "local_edges_mean": sum(local_edges) / len(local_edges),
        "labelled_mean": sum(labelled) / len(labelled),
        "parameters_per_model": sum(p.numel() for p in c0.model.parameters()),
    }


def round_medians(rounds: list[dict]) -> dict:
    """Median seconds per student-epoch, round, release and evaluation over ``rounds``, and round 1's request bytes.

    Args:
        rounds: the timed rounds (:func:`run_rounds`)."""
    return {
        "epoch_median_s": common.median([r["epoch_s"] for r in rounds]),
        "round_median_s": common.median([r["seconds"] for r in rounds]),
        "release_median_s": common.median([r["release_s"] for r in rounds]),
        "evaluate_median_s": common.median([r["evaluate_s"] for r in rounds]),
        "request_bytes": rounds[0]["request_bytes"] if rounds else None,
    }


def worker(spec: dict, threads: int) -> dict:
    """Measure one configuration in this process.

    Args:
        spec: the configuration (:func:`raw_config`).
        threads: torch threads."""
    common.set_threads(threads)
    from fedalign.config import config_from_dict
    from fedalign.data import load_partition
    from fedalign.inprocess import InProcessTransport
    from fedalign.runner import build_coordinator

    rss_imports = common.current_rss_mb()
    phases = [phase("imports")]
    cfg = config_from_dict(raw_config(spec))
    start = time.perf_counter()
    dataset, _ = load_partition(cfg)
    data_s = time.perf_counter() - start
    rss_data = common.current_rss_mb()
    phases.append(phase("data and partition"))
    transport = InProcessTransport.from_config(cfg)
    build_s = time.perf_counter() - start
    rss_built = common.current_rss_mb()
    phases.append(phase("students"))
    timers = {i: common.instrument(c) for i, c in transport.clients.items()}
    with tempfile.TemporaryDirectory(prefix="fedalign-scale-") as tmp:
        coordinator, writer = build_coordinator(cfg, transport, Path(tmp), "inprocess")
        start = time.perf_counter()
        coordinator.initialise()
        init_s = time.perf_counter() - start
        rss_round0 = common.current_rss_mb()
        phases.append(phase("round 0"))
        for t in timers.values():
            t["evaluate"].take(), t["release"].take()
        loaders_s, steps = prebuild_loaders(transport, cfg)
        rss_loaders = common.current_rss_mb()
        phases.append(phase("loaders"))
        rounds = run_rounds(coordinator, timers, cfg.federation.rounds)
        writer.finish()
        phases.append(phase(f"rounds 1..{cfg.federation.rounds}"))
    return {
        **spec,
        "threads": threads,
        **sizes(dataset, transport),
        "steps_per_epoch": steps,
        "data_s": data_s,
        "build_s": build_s,
        "init_round0_s": init_s,
        "loaders_s": loaders_s,
        "rounds": rounds,
        **round_medians(rounds),
        "rss_after_imports_mb": rss_imports,
        "rss_after_data_mb": rss_data,
        "rss_after_build_mb": rss_built,
        "rss_after_round0_mb": rss_round0,
        "rss_after_loaders_mb": rss_loaders,
        "rss_end_mb": common.current_rss_mb(),
        "peak_rss_self_mb": common.peak_rss_mb(),
        "phases": phases,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale_worker SPEC_JSON [THREADS]``: print the measurement as one JSON line.

    Args:
        argv: the command line (None: ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if argv is None else argv
    spec, threads = json.loads(argv[0]), int(argv[1]) if len(argv) > 1 else 1
    print(json.dumps(worker(spec, threads)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
