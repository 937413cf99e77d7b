"""Communication: bytes per round against weight sharing, and what float16 (and further compression) costs.

    python -m bench.communication            # real datasets (FEDALIGN_DATA_ROOT), ~15 min on 2 cores
    python -m bench.communication --smoke    # synthetic graphs only, seconds

Three parts:

1. **Bytes per round** (from ``rounds.jsonl`` of short in-process runs): what
   the trainer of an alternating round sends (its fresh statistics, L x E
   entries) and receives (its K-1 peers' cached statistics, or, where that is
   no smaller, their summed mass: L float64 [E] arrays and 16 bytes, whatever K --
   :func:`expected_request_bytes`; ``python -m bench.request_size`` for K up to 1000), for several
   datasets, depths and partitions, in ``align.statistics_dtype`` float32 and
   float16; against the student's weights, P parameters x 4 bytes, and what
   weight-sharing FL (FedAvg-style: download the global model, upload an
   update) moves per participating client per round: 2 x 4P bytes. Each
   figure is checked against E x L x itemsize computed from the alignment graph.
2. **Accuracy of float16 statistics**: the same runs (same seeds, hence same
   initial weights; today's default formulation, no dropout) with float32 and float16 statistics;
   test accuracy at best validation, paired by seed. A third arm sends an
   8-bit code of the statistics (below), through a transport wrapper that
   encodes every release and decodes it before the server caches it.
3. **Further compression**, measured on trained students' statistics
   (bytes per entry, error in p, KL(p || decoded) per node):
   * ``float16``: the library's wire precision;
   * ``float16 deviation``: float16 of ``p * deg(v) - 1`` (the deviation from
     the uniform distribution over v's in-edges, which is public), decoded as
     ``(1 + d) / deg(v)``: same bytes, error relative to the deviation instead of to p;
   * ``drop one entry per node``: each node's last in-edge entry is 1 minus
     the others (degree-1 entries are always exactly 1 and carry nothing):
     lossless, saves one entry per node with in-edges;
   * ``int8 log-ratio``: ``round(log(p * deg) / s)`` in int8 with one float32
     scale s per layer (``max |log(p * deg)| / 127``), decoded with ``exp``
     and renormalised per node: a quarter of float32;
   * ``zlib`` of the float32 / float16 bytes (lossless, generic).

No library code is changed: the extra codecs live in :mod:`bench.codecs` only; the report is
:mod:`bench.communication_report`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import common
from .codecs import CodecTransport, Graph, codec_errors, int8_log_ratio
from .common import human_bytes
from .communication_report import ARMS, markdown, paired, plot

NAME = "communication"


# ---------------------------------------------------------------- configs


def base_config(name: str, **over) -> dict:
    cfg: dict[str, Any] = {
        "name": f"benchmark-communication-{name}",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "synthetic-csbm"},
        "partition": {"scheme": "replicate", "public_fraction": 0.2},
        "federation": {"num_clients": 2, "rounds": 2, "schedule": "alternating"},
        "model": {"arch": "gcn", "hidden_layers": 4, "hidden_dim": 64},  # today's default: no dropout, ReLU
        "align": {"strategy": "alignahead", "weight": 1.0, "tau": 100.0, "statistics_dtype": "float32"},
        "train": {"local_epochs": 1, "lr": 0.01, "weight_decay": 5e-4},
        "output": {"progress": False, "plot": False},
    }
    for key, value in over.items():
        section, field = key.split("__")
        cfg[section][field] = value
    return cfg


def real(name: str) -> dict:
    return {"name": name, "root": common.data_root(), "split": [0.6, 0.2, 0.2]}


def byte_configs(smoke: bool) -> list[tuple[str, dict]]:
    """(label, raw config) for the bytes-per-round table (2 rounds: each of 2 students trains once)."""
    if smoke:
        syn = {"name": "synthetic-csbm", "synthetic": {"num_nodes": 300, "avg_degree": 6}}
        return [
            (
                "synthetic, replicate, L=2",
                base_config("s1", model__hidden_layers=2, model__hidden_dim=16) | {"data": syn},
            ),
            (
                "synthetic, replicate, L=3, K=3",
                base_config(
                    "s2", model__hidden_layers=3, model__hidden_dim=16, federation__num_clients=3, federation__rounds=3
                )
                | {"data": syn},
            ),
            (
                "synthetic, iid 30% public, L=2",
                base_config(
                    "s3",
                    model__hidden_layers=2,
                    model__hidden_dim=16,
                    partition__scheme="iid",
                    partition__public_fraction=0.3,
                )
                | {"data": syn},
            ),
        ]
    cora = {"data": {"name": "cora", "root": common.data_root()}}
    rows = []
    for depth in (2, 4):
        rows.append((f"Cora, replicate, L={depth}", base_config(f"cora{depth}", model__hidden_layers=depth) | cora))
    rows.append(
        ("Cora, replicate, L=4, K=4", base_config("cora4k4", federation__num_clients=4, federation__rounds=4) | cora)
    )
    for depth in (2, 4):
        rows.append(
            (
                f"Photo, replicate, L={depth}",
                base_config(f"photo{depth}", model__hidden_layers=depth) | {"data": real("amazon-photo")},
            )
        )
    for depth in (2, 4):
        rows.append(
            (
                f"Photo, community 20% public, L={depth}",
                base_config(f"photoc{depth}", model__hidden_layers=depth, partition__scheme="community")
                | {"data": real("amazon-photo")},
            )
        )
    rows.append(("Computers, replicate, L=4", base_config("computers4") | {"data": real("amazon-computers")}))
    rows.append(
        ("Coauthor CS, replicate, L=2", base_config("cs2", model__hidden_layers=2) | {"data": real("coauthor-cs")})
    )
    return rows


# float32 / float16: align.statistics_dtype; int8: the int8 log-ratio code (CodecTransport over float32);
# none: align.strategy none (no statistics at all), the yardstick for how much alignment moves training.


def accuracy_specs(smoke: bool) -> list[tuple[str, dict, list[int], tuple[str, ...]]]:
    """(label, raw config, seeds, arms) for the float16 accuracy study."""
    if smoke:
        syn = {
            "name": "synthetic-csbm",
            "synthetic": {"num_nodes": 300, "avg_degree": 6, "homophily": 0.6, "signal": 0.6},
        }
        return [
            (
                "synthetic, replicate, L=2, 6 rounds",
                base_config("acc-s", model__hidden_layers=2, model__hidden_dim=16, federation__rounds=6)
                | {"data": syn},
                [0, 1],
                ARMS,
            )
        ]
    cora = base_config("acc-cora", federation__rounds=120, train__local_epochs=2, train__lr=0.005) | {
        "data": {"name": "cora", "root": common.data_root()}
    }
    photo = base_config("acc-photo", model__hidden_layers=2, federation__rounds=60, partition__scheme="community") | {
        "data": real("amazon-photo")
    }
    return [
        ("Cora, replicate, L=4, 120 rounds x 2 epochs (simulations/cora.yaml)", cora, [0, 1, 2, 3, 4], ARMS),
        ("Photo, community 20% public, L=2, 60 rounds x 1 epoch (photo-privacy.yaml, no DP)", photo, [0, 1, 2], ARMS),
    ]


# ---------------------------------------------------------------- measurements


def expected_request_bytes(num_clients: int, edges: int, layers: int, dtype: str) -> int:
    """Bytes of an alternating trainer's request: its K-1 peers' releases, or their summed mass (L float64
    [E] arrays and [peers, constant]) where that is no larger (:func:`fedalign.wire.summed_request_pays`).

    Args:
        num_clients: K.
        edges: E, the alignment graph's edges.
        layers: L, the trainer's hidden layers (all clients alike).
        dtype: ``align.statistics_dtype``."""
    from fedalign.wire import summed_request_pays

    if summed_request_pays(num_clients - 1, dtype):
        return layers * edges * 8 + 16
    return (num_clients - 1) * edges * layers * np.dtype(dtype).itemsize


def weight_bytes(client) -> tuple[int, int]:
    """(parameter count, bytes) of a student's model."""
    params = list(client.model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def print_bytes_row(label: str, row: dict) -> None:
    """One line on what a trainer sends and receives per round against weight sharing (:func:`bytes_row`)."""
    f32, f16 = row["float32"], row["float16"]
    print(
        f"[communication] {label}: E={row['alignment_edges']} L={row['layers']} K={row['num_clients']}: "
        f"trainer sends {human_bytes(f32['trainer_sent_per_round'][0])}, receives "
        f"{human_bytes(f32['trainer_received_per_round'][0])} per round (float32); weights "
        f"{human_bytes(row['weight_bytes'])} -> weight sharing {human_bytes(row['weight_sharing_per_round'])}; "
        f"ratio {row['stats_over_weight_sharing_float32']:.3g} "
        f"(float16 {row['stats_over_weight_sharing_float16']:.3g}); "
        f"checks {'ok' if f32['matches_expected'] and f16['matches_expected'] else 'MISMATCH'}; "
        f"load {common.load()}",
        flush=True,
    )


def bytes_row(label: str, raw: dict, workdir: Path) -> dict:
    from fedalign.config import config_from_dict
    from fedalign.inprocess import InProcessTransport
    from fedalign.outputs import read_rounds
    from fedalign.runner import run_experiment

    row: dict = {"label": label, "config": raw}
    for dtype in ("float32", "float16"):
        cfg = config_from_dict(raw, [f"align.statistics_dtype={dtype}"])
        transport = InProcessTransport.from_config(cfg)
        run_dir = workdir / f"{raw['name']}-{dtype}"
        start = time.perf_counter()
        run_experiment(cfg, transport, "inprocess", run_dir)
        rows = read_rounds(run_dir)
        trainer_rows = [r for r in rows if r.round >= 1]
        k = cfg.federation.num_clients
        alignment = transport.clients[0].alignment
        edges, depth = int(alignment.edge_index.size(1)), cfg.model.for_client(0)["hidden_layers"]
        itemsize = np.dtype(dtype).itemsize
        row[dtype] = {
            "trainer_sent_per_round": [r.bytes_sent for r in trainer_rows],
            "trainer_received_per_round": [r.bytes_received for r in trainer_rows],
            "round0_sent": [r.bytes_sent for r in rows if r.round == 0],
            "expected_release_bytes": edges * depth * itemsize,
            "expected_received_bytes": expected_request_bytes(k, edges, depth, dtype),
            "seconds": time.perf_counter() - start,
        }
        row[dtype]["matches_expected"] = (
            all(s == row[dtype]["expected_release_bytes"] for s in row[dtype]["trainer_sent_per_round"])
            and all(s == row[dtype]["expected_release_bytes"] for s in row[dtype]["round0_sent"])
            and all(s == row[dtype]["expected_received_bytes"] for s in row[dtype]["trainer_received_per_round"])
        )
        params, wbytes = weight_bytes(transport.clients[0])
        local = transport.clients[0].train_split.graph
        row.update(
            {
                "num_clients": k,
                "alignment_edges": edges,
                "alignment_nodes": int(alignment.num_nodes),
                "local_nodes_client0": int(local.num_nodes),
                "layers": depth,
                "parameters": params,
                "weight_bytes": wbytes,
                "weight_sharing_per_round": 2 * wbytes,
                "features": int(alignment.x.size(1)),
            }
        )
    f32 = row["float32"]
    per_round = f32["trainer_sent_per_round"][0] + f32["trainer_received_per_round"][0]
    row["stats_over_weight_sharing_float32"] = per_round / row["weight_sharing_per_round"]
    f16 = row["float16"]
    row["stats_over_weight_sharing_float16"] = (
        f16["trainer_sent_per_round"][0] + f16["trainer_received_per_round"][0]
    ) / row["weight_sharing_per_round"]
    print_bytes_row(label, row)
    return row


def accuracy_arm(raw: dict, seed: int, arm: str, workdir: Path) -> tuple[dict, Any]:
    """One run: arm 'float32' / 'float16' (library), 'int8' (codec wrapper over float32) or 'none' (no alignment)."""
    from fedalign.config import config_from_dict
    from fedalign.inprocess import InProcessTransport
    from fedalign.outputs import read_rounds
    from fedalign.runner import run_experiment

    dtype = "float16" if arm == "float16" else "float32"
    strategy = "none" if arm == "none" else raw["align"]["strategy"]
    cfg = config_from_dict(raw, [f"seed={seed}", f"align.statistics_dtype={dtype}", f"align.strategy={strategy}"])
    transport: Any = InProcessTransport.from_config(cfg)
    if arm == "int8":
        a = transport.clients[0].alignment
        transport = CodecTransport(transport, int8_log_ratio, Graph(a.edge_index[1].numpy(), a.num_nodes))
    run_dir = workdir / f"{raw['name']}-s{seed}-{arm}"
    load = common.load()
    start = time.perf_counter()
    _, summary = run_experiment(cfg, transport, "inprocess", run_dir)
    rows = read_rounds(run_dir)
    trained = [r for r in rows if r.round >= 1]
    return {
        "seed": seed,
        "arm": arm,
        "test": summary["mean_test_at_best_val"],
        "best_val": common.mean([c["best_val"] for c in summary["clients"].values()]),
        "best_rounds": [c["best_round"] for c in summary["clients"].values()],
        "bytes_sent_total": summary["bytes_sent_total"],
        "align_loss": [r.metrics.get("align_loss") for r in trained],
        "val_loss": [r.metrics.get("val_loss") for r in trained],
        "seconds": time.perf_counter() - start,
        "load": load,
    }, transport


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--skip-accuracy", action="store_true", help="only the bytes table and the codec analysis")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    out = common.out_dir(args, NAME)
    info = common.machine(args.threads)
    print(
        f"[communication] {info['cpu']} x{info['cpu_count']}, torch threads {args.threads}, {info['uptime_at_start']}"
    )

    results: dict = {"benchmark": NAME, "smoke": args.smoke, "machine": info}
    with tempfile.TemporaryDirectory(prefix="fedalign-communication-") as tmp_name:
        tmp = Path(tmp_name)
        results["bytes"] = [bytes_row(label, raw, tmp) for label, raw in byte_configs(args.smoke)]

        results["accuracy"] = []
        codec_rows = []
        if not args.skip_accuracy:
            for label, raw, seeds, arms in accuracy_specs(args.smoke):
                runs = []
                for seed in seeds:
                    for arm in arms:
                        run, transport = accuracy_arm(raw, seed, arm, tmp)
                        runs.append(run)
                        print(
                            f"[communication] {label} seed {seed} {arm}: test {run['test']:.4f} "
                            f"({run['seconds']:.1f} s, load {run['load']})",
                            flush=True,
                        )
                        if arm == "float32" and seed == seeds[0]:
                            # Codec analysis on the trained students' statistics (float32, eval mode).
                            client = transport.clients[0]
                            a = client.alignment
                            g = Graph(a.edge_index[1].numpy(), a.num_nodes)
                            stats = client.statistics()
                            codec_rows.append(
                                {
                                    "label": label,
                                    "edges": int(a.edge_index.size(1)),
                                    "layers": len(stats),
                                    "nodes_with_in_edges": int((g.degree > 0).sum()),
                                    "degree1_nodes": int((g.degree == 1).sum()),
                                    "codecs": codec_errors(stats, g),
                                }
                            )
                results["accuracy"].append(
                    {"label": label, "config": raw, "seeds": seeds, "runs": runs, **paired(runs)}
                )
        results["codecs"] = codec_rows
    results["uptime_at_end"] = common.uptime()
    md = markdown(results)
    common.write_outputs(out, results, md)
    plot(results, out / "plot.png")
    print(md)
    print(f"[communication] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
