"""How much a mini-batch step samples as the graph grows: why time per epoch is not linear in edges.

    python -m bench.scale_sampling            # E = 1M, 10M, 50M (the graphs of bench.scale), ~10 min, ~4 GB
    python -m bench.scale_sampling --smoke    # E ~2k, ~8k (seconds; CI)

:mod:`bench.scale` measures time per student-epoch of its K = 2 mini-batch students (batch 2048, fan-outs
[2, 2, 2]; the alignment batch takes all in-edges of its targets, then [2, 2]). Steps per epoch grow as N
(= E / 10), so if every step did the same work the epoch would be linear in E. A step does not: PyG's
``NeighborLoader`` keeps each sampled node once, and in a small graph the 3-hop neighbourhoods of 2,048
seeds overlap, so a batch holds fewer distinct nodes and edges than in a large one, up to the bound of a
tree (no overlap). This module builds the same graphs and loaders as the scale worker (no students, no
training), draws ``--batches`` batches of each loader with a fixed seed and reports the mean distinct nodes
and edges per batch; with ``results/benchmarks/scale/results.json`` (the measured epochs) it divides the
time per step by the sampled work: constant time per sampled edge means the implementation is linear in
the work the sampler hands it, and the growth of the epoch beyond E is the sampler's shrinking overlap.

Writes ``results/benchmarks/scale/sampling/`` (``results.json``, ``table.md``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import common
from .scale import GRAPH_EDGES
from .scale import NAME as SCALE
from .scale import spec as scale_spec

NAME = "scale_sampling"


def loaders(s: dict):
    """The task and alignment loaders a K = 2 ``replicate`` mini-batch student of ``s`` builds (no student).

    Args:
        s: a :func:`bench.scale.spec` configuration (``mini``, K = 2)."""
    from fedalign.client.minibatch import alignment_fanouts
    from fedalign.client.minibatch_training import build_loaders
    from fedalign.config import config_from_dict
    from fedalign.data import load_partition

    from .scale_worker import raw_config

    cfg = config_from_dict(raw_config(s))
    _, clients = load_partition(cfg)
    built = build_loaders(cfg, clients[0].train, clients[0].alignment, None, s["hidden_layers"])
    return built.task, built.align, alignment_fanouts(s["num_neighbors"], True, s["hidden_layers"])


def sampled(s: dict, batches: int) -> dict:
    """Mean distinct nodes and edges per batch of each loader over ``batches`` batches (seed 0).

    Args:
        s: the configuration.
        batches: batches drawn from each loader."""
    import torch

    task, align, align_fanouts = loaders(s)
    torch.manual_seed(0)
    out = {
        "id": s["id"],
        "edges": s["edges"],
        "num_nodes": s["num_nodes"],
        "align_fanouts": align_fanouts,
        "steps_per_epoch": max(len(task), len(align)),
    }
    for name, loader in (("task", task), ("align", align)):
        it = iter(loader)
        drawn = [next(it) for _ in range(min(batches, len(loader)))]
        full = [b for b in drawn if b.batch_size == s["batch_size"]] or drawn  # a pass's short last batch aside
        out[f"{name}_nodes"] = common.mean([float(b.num_nodes) for b in full])
        out[f"{name}_edges"] = common.mean([float(b.edge_index.size(1)) for b in full])
    size, task_fanouts = s["batch_size"], s["num_neighbors"]
    out["tree_edges_bound"] = tree_bound(s["avg_degree"], align_fanouts, size) + tree_bound(None, task_fanouts, size)
    return out


def tree_bound(degree: float | None, fanouts: list[int], batch: int) -> float:
    """Edges of a batch whose neighbourhoods never overlap (``-1`` takes the mean in-degree ``degree``)."""
    width, total = float(batch), 0.0
    for f in fanouts:
        if f == -1 and degree is None:
            raise ValueError("fan-out -1 (every in-edge) needs the mean in-degree")
        width *= degree if f == -1 and degree is not None else f
        total += width
    return total


def with_timings(rows: list[dict], scale_results: Path) -> None:
    """Add the measured time per step (``bench.scale``'s K = 2 mini-batch runs) and per 1,000 sampled edges."""
    if not scale_results.is_file():
        return
    runs = {r["id"]: r for r in json.loads(scale_results.read_text()).get("runs", []) if r.get("status", "ok") == "ok"}
    for row in rows:
        run = runs.get(row["id"])
        if not run or not run.get("epoch_median_s") or not run.get("steps_per_epoch"):
            continue
        step_s = run["epoch_median_s"] / run["steps_per_epoch"]
        row.update(
            step_s=step_s,
            load=run.get("load_before"),
            revision=run.get("revision"),
            ms_per_1k_sampled_edges=1000 * step_s / (per_step(row) / 1000),
        )


def per_step(row: dict) -> float:
    """Sampled edges of one step: its task batch's and its alignment batch's."""
    return row["task_edges"] + row["align_edges"]


def markdown(results: dict) -> str:
    rows = results["rows"]
    table = common.md_table(
        [
            "E",
            "N",
            "steps / epoch",
            "task batch: nodes / edges",
            "align batch: nodes / edges",
            "sampled edges / step (share of tree bound)",
            "s / step (bench.scale)",
            "ms per 1k sampled edges",
        ],
        [
            [
                f"{r['edges']:,}",
                f"{r['num_nodes']:,}",
                r["steps_per_epoch"],
                f"{r['task_nodes']:,.0f} / {r['task_edges']:,.0f}",
                f"{r['align_nodes']:,.0f} / {r['align_edges']:,.0f}",
                f"{per_step(r):,.0f} ({per_step(r) / r['tree_edges_bound']:.0%})",
                common.fmt(r.get("step_s")),
                common.fmt(r.get("ms_per_1k_sampled_edges")),
            ]
            for r in rows
        ],
    )
    e = [r["edges"] for r in rows]
    steps, work = [r["steps_per_epoch"] for r in rows], [r["steps_per_epoch"] * per_step(r) for r in rows]
    slopes = (
        f"log-log slope on E: steps per epoch {common.fmt(common.loglog_slope(e, steps))}, sampled edges per "
        f"epoch {common.fmt(common.loglog_slope(e, work))}, sampled edges per step "
        f"{common.fmt(common.loglog_slope(e, [per_step(r) for r in rows]))}."
    )
    m = results["machine"]
    return (
        "\n\n".join(
            [
                "# Mini-batch sampling work per step "
                "(K = 2 replicate, batch 2048, fan-outs [2, 2, 2]; alignment [-1, 2, 2])",
                f"Command: `{m['command']}` at {m['git']} on {m['cpu']} "
                f"({results['batches']} batches per loader, seed 0). "
                "Times per step come from `results/benchmarks/scale/results.json` (their own revision and load).",
                table,
                slopes,
                "A batch keeps each sampled node once; in a small graph the seeds' neighbourhoods overlap, so a step "
                "samples less than in a large graph, up to the bound of a tree (no overlap). Time per epoch is steps x "
                "sampled work per step x time per sampled edge: the first grows as E, the second with the shrinking "
                "overlap, the third with cache misses on larger arrays (and with the load the runs were taken at).",
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure (module docstring).

    Args:
        argv: the command line (None: ``sys.argv[1:]``)."""
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=20, help="batches drawn from each loader")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    out = common.output_folder(args.out, args.smoke, common.RESULTS / SCALE / "sampling", NAME)
    sizes = (2000, 8000) if args.smoke else GRAPH_EDGES
    rows = []
    for edges in sizes:
        s = scale_spec(edges, 2, "replicate", "mini", args.smoke)
        rows.append(sampled(s, args.batches))
        print(f"[scale_sampling] {json.dumps(rows[-1])}", flush=True)
    if not args.smoke:
        with_timings(rows, common.RESULTS / SCALE / "results.json")
    results = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "machine": common.machine(args.threads),
        "batches": args.batches,
        "rows": rows,
    }
    common.write_outputs(out, results, markdown(results))
    return 0 if all(math.isfinite(r["align_edges"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
