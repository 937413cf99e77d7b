"""Speed: seconds per student-epoch and per alternating round, fedalign against plain training and a naive code.

    python -m bench.speed                # Amazon Photo, 2 GCN students, 4 hidden layers x 64
    python -m bench.speed --smoke        # tiny synthetic graph, no Flower (seconds)
    python -m bench.speed --smoke --flower

Three implementations of the same alternating Alignahead round (student
(r-1) mod K trains ``train.local_epochs`` epochs against its peers, then is
evaluated), same data, same hyper-parameters, same initial weights:

* **fedalign, in process** -- the library's ``Coordinator`` over an
  ``InProcessTransport`` with the run writer (and the server-state save,
  where the library has one), exactly as ``fedalign run --engine
  inprocess``: cached peer statistics, GCN on a prepared CSR adjacency,
  blocked L1 kernel; a round also releases the trainer's fresh statistics
  and checks them on the server.
* **naive** (:mod:`bench.naive`) -- plain PyG ``GCNConv`` on
  ``edge_index``, statistics by ``(h[src]-h[dst]).abs().sum(-1)`` and scatter
  softmax, and every frozen peer re-run forward at every training step.
* **fedalign on Flower's Simulation Runtime** (Ray) -- ``run_flower_simulation``;
  round completion times are read off ``rounds.jsonl`` as it is written, so
  Ray start-up is reported apart from steady-state rounds.

First, **per student-epoch** on the same student (same weights, same peer statistics),
interleaved epoch by epoch: plain training (the task loss only, as strategy ``none``),
alignahead with the compiled kernels (the default where ``torch.compile`` works), and
alignahead with the eager blocked L1 kernel that fedalign used before (``eager_kernels``),
each for the original's ``lsp`` kernel and the previous default ``l1-softmax``.

The two in-process implementations run interleaved in one process (round
by round, alternating which goes first), so load on the shared machine hits
both alike and their ratio is fair. Before timing, both compute the
alignment and task losses and gradients on the same weights; the
differences are reported (they must be at float32 rounding level).

Student-epoch: fedalign's is (train call - evaluate - release) / epochs, the
naive one's is the timed local epochs / epochs. The first K rounds (each
student's first training call) are reported apart as warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import common
from .speed_report import markdown, plot, summarise
from .speed_rounds import time_rounds

NAME = "speed"


def experiment(smoke: bool, rounds: int | None, local_epochs: int, clients: int) -> dict:
    """The raw experiment config."""
    if smoke:
        data: dict[str, Any] = {"name": "synthetic-csbm", "synthetic": {"num_nodes": 300, "avg_degree": 6}}
        model = {"arch": "gcn", "hidden_layers": 2, "hidden_dim": 16, "dropout": 0.0}
        rounds = rounds or 4
    else:
        data = {"name": "amazon-photo", "root": common.data_root(), "split": [0.6, 0.2, 0.2]}
        model = {"arch": "gcn", "hidden_layers": 4, "hidden_dim": 64, "dropout": 0.0}
        rounds = rounds or 10
    return {
        "name": "benchmark-speed",
        "seed": 0,
        "device": "cpu",
        "data": data,
        "partition": {"scheme": "replicate"},
        "federation": {"num_clients": clients, "rounds": rounds, "schedule": "alternating"},
        "model": model,
        "align": {"strategy": "alignahead", "weight": 1.0, "tau": 100.0, "kernel": "lsp"},
        "train": {"local_epochs": local_epochs, "lr": 0.005, "weight_decay": 0.0},
        "output": {"progress": False, "plot": False},
    }


def epoch_comparison(client, peer_statistics: dict, repeats: int) -> dict:
    """Seconds per full-batch epoch (forward, backward, step) of one student, variants interleaved.

    Variants: ``none`` (task loss only) and, per kernel, alignahead with compiled / eager kernels.
    Returns per variant the median and all timings, plus each alignahead variant's ratio to ``none``.
    """
    from fedalign.client.training import task_loss
    from fedalign.statistics import eager_kernels, l1_backend

    split, base_align = client.train_split, client.cfg.align
    targets = client.alignment_targets(peer_statistics)

    def epoch(kernel: str | None) -> float:
        client.cfg.align = base_align.model_copy(update={"kernel": kernel or base_align.kernel})
        t = time.perf_counter()
        client.optimizer.zero_grad()
        logits, hiddens = client.forward(split.graph)
        loss = task_loss(logits[split.mask], split.graph.y[split.mask], client.task.multilabel)
        if kernel is not None:
            loss = loss + base_align.weight * client.alignment_loss(logits, hiddens, targets)
        loss.backward()
        client.optimizer.step()
        return time.perf_counter() - t

    variants: dict[str, Callable[[], float]] = {"none": lambda: epoch(None)}
    for kernel in ("lsp", "l1-softmax"):

        def compiled(k: str = kernel) -> float:
            return epoch(k)

        def eager(k: str = kernel) -> float:
            with eager_kernels():
                return epoch(k)

        variants[f"alignahead {kernel}, {l1_backend()}"] = compiled
        variants[f"alignahead {kernel}, eager blocked kernel"] = eager
    client.model.train()
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats + 2):  # two warm-up passes (compilation), then timed ones
        for name, fn in variants.items() if r % 2 else reversed(list(variants.items())):
            seconds = fn()
            if r >= 2:
                timings[name].append(seconds)
    client.cfg.align = base_align
    none = common.median(timings["none"])
    return {
        name: {"median_s": common.median(ts), "over_none": common.median(ts) / none, "timings_s": ts}
        for name, ts in timings.items()
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the common benchmark options, rounds, local epochs, K and whether to run on Flower.

    Args:
        argv: the arguments (None: ``sys.argv``).
    """
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per implementation (default 10; smoke 4)")
    p.add_argument("--local-epochs", type=int, default=2, help="train.local_epochs (default 2)")
    p.add_argument("--clients", type=int, default=2, help="number of students K (default 2)")
    flower = p.add_mutually_exclusive_group()
    flower.add_argument(
        "--flower",
        dest="flower",
        action="store_true",
        default=None,
        help="also run on Flower's Simulation Runtime (default: on, except with --smoke)",
    )
    flower.add_argument("--no-flower", dest="flower", action="store_false")
    return p.parse_args(argv)


@dataclass
class SpeedSetup:
    """What the timed rounds need: the experiment, fedalign's in-process engine with its timers, and the naive
    implementation with the same initial weights."""

    raw: dict
    cfg: Any
    info: dict
    dataset: Any
    load_data_s: float
    transport: Any
    timers: dict
    naive: Any
    graph: Any  # the alignment graph of client 0

    @property
    def k(self) -> int:
        return self.cfg.federation.num_clients

    @property
    def epochs(self) -> int:
        return self.cfg.train.local_epochs

    @property
    def rounds(self) -> int:
        return self.cfg.federation.rounds


def set_up(raw: dict, threads: int) -> SpeedSetup:
    """Load the data, build fedalign's students (timed) and the naive implementation from the same weights.

    Args:
        raw: the experiment (:func:`experiment`).
        threads: torch threads (reported with the machine).
    """
    from fedalign.config import config_from_dict
    from fedalign.data import load_partition
    from fedalign.inprocess import InProcessTransport

    from .naive import NaiveAlignahead

    cfg = config_from_dict(raw)
    k, epochs, rounds = cfg.federation.num_clients, cfg.train.local_epochs, cfg.federation.rounds
    info = common.machine(threads)
    print(f"[speed] {info['cpu']} x{info['cpu_count']}, torch threads {threads}, {info['uptime_at_start']}")
    print(f"[speed] GPU: {info['gpu'] or info['gpu_note']}")

    started = time.perf_counter()
    dataset, _ = load_partition(cfg)
    load_data_s = time.perf_counter() - started
    transport = InProcessTransport.from_config(cfg)
    timers = {i: common.instrument(c) for i, c in transport.clients.items()}
    c0 = transport.clients[0]
    model_cfg = cfg.model.for_client(0)
    naive = NaiveAlignahead.from_split(
        c0.train_split,
        c0.val_split,
        c0.test_split,
        dataset.num_classes,
        num_students=k,
        hidden_layers=model_cfg["hidden_layers"],
        hidden_dim=model_cfg["hidden_dim"],
        dropout=model_cfg["dropout"],
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        tau=cfg.align.tau,
        weight=cfg.align.weight,
        local_epochs=epochs,
        seed=cfg.seed,
        activation=model_cfg["activation"],
    )
    naive.load_weights([transport.clients[i].model.state_dict() for i in range(k)])
    graph = c0.alignment
    print(
        f"[speed] {cfg.data.name}: {graph.num_nodes} nodes, {graph.edge_index.size(1)} edges, "
        f"{dataset.num_features} features; K={k}, {model_cfg['hidden_layers']} hidden x {model_cfg['hidden_dim']}, "
        f"{epochs} local epochs, {rounds} rounds"
    )
    return SpeedSetup(raw, cfg, info, dataset, load_data_s, transport, timers, naive, graph)


def compare(run: SpeedSetup, smoke: bool) -> tuple[dict, dict]:
    """The student-epoch comparison (:func:`epoch_comparison`), then every student reset to the naive one's weights
    and the equivalence check (same weights: same losses and gradients); returns both results.

    Args:
        run: the set-up.
        smoke: fewer timed epochs.
    """
    import torch

    from .naive import compare_with_fedalign

    transport, cfg = run.transport, run.cfg
    epochs_cmp = epoch_comparison(
        transport.clients[0], {j: transport.clients[j].statistics() for j in range(1, run.k)}, 5 if smoke else 20
    )
    for name, row in epochs_cmp.items():
        print(f"[speed] student-epoch {name}: {row['median_s'] * 1000:.1f} ms ({row['over_none']:.2f}x none)")
    for i, c in transport.clients.items():  # the comparison trained client 0: start the round timing afresh
        c.model.load_state_dict(run.naive.students[i].state_dict())
        c.optimizer = torch.optim.Adam(c.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    equivalence = compare_with_fedalign(transport.clients, run.naive)
    print(
        f"[speed] same weights: alignment loss fedalign {equivalence['fedalign_align_loss']:.8g} "
        f"naive {equivalence['naive_align_loss']:.8g} (|diff| {equivalence['align_loss_abs_diff']:.2e}); "
        f"max |grad diff| {equivalence['grad_max_abs_diff']:.2e} of max |grad| {equivalence['grad_max_abs']:.2e}"
    )
    return epochs_cmp, equivalence


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.set_threads(args.threads)
    run_flower = (not args.smoke) if args.flower is None else args.flower
    out = common.out_dir(args, NAME)
    raw = experiment(args.smoke, args.rounds, args.local_epochs, args.clients)
    run = set_up(raw, args.threads)
    epochs_cmp, equivalence = compare(run, args.smoke)
    with tempfile.TemporaryDirectory(prefix="fedalign-speed-") as tmp:
        rounds, init_s, flower_result, after_rounds = time_rounds(run, Path(tmp), run_flower)
    fed_s, naive_s, ratios = summarise(run, rounds, init_s, flower_result, after_rounds)
    graph, info = run.graph, run.info
    results = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "machine": info,
        "config": raw,
        "graph": {
            "nodes": graph.num_nodes,
            "edges": int(graph.edge_index.size(1)),
            "features": run.dataset.num_features,
            "classes": run.dataset.num_classes,
        },
        "load_data_s": run.load_data_s,
        "student_epoch": epochs_cmp,
        "equivalence": equivalence,
        "fedalign_inprocess": {**fed_s, "rounds": rounds.fed_rows, "rounds_after_flower": after_rounds},
        "naive": {**naive_s, "rounds": rounds.naive_rows},
        "flower": flower_result,
        "ratios": ratios,
        "gpu": info["gpu"] or "none: no GPU device was lent to this task, so there are no GPU figures",
        "uptime_at_end": common.uptime(),
    }
    md = markdown(results)
    common.write_outputs(out, results, md)
    plot(results, out / "plot.png")
    print(md)
    print(f"[speed] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
