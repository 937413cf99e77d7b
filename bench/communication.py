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
   initial weights and dropout masks) with float32 and float16 statistics;
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

No library code is changed: the extra codecs live here only.
"""

from __future__ import annotations

import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from . import common
from .common import fmt, human_bytes, md_table

NAME = "communication"


# ---------------------------------------------------------------- configs


def base_config(name: str, **over) -> dict:
    cfg = {
        "name": f"benchmark-communication-{name}", "seed": 0, "device": "cpu",
        "data": {"name": "synthetic-csbm"},
        "partition": {"scheme": "replicate", "public_fraction": 0.2},
        "federation": {"num_clients": 2, "rounds": 2, "schedule": "alternating"},
        "model": {"arch": "gcn", "hidden_layers": 4, "hidden_dim": 64, "dropout": 0.5},
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
            ("synthetic, replicate, L=2", base_config("s1", model__hidden_layers=2,
                                                      model__hidden_dim=16) | {"data": syn}),
            ("synthetic, replicate, L=3, K=3", base_config("s2", model__hidden_layers=3, model__hidden_dim=16,
                                                           federation__num_clients=3, federation__rounds=3)
             | {"data": syn}),
            ("synthetic, iid 30% public, L=2", base_config("s3", model__hidden_layers=2, model__hidden_dim=16,
                                                           partition__scheme="iid", partition__public_fraction=0.3)
             | {"data": syn}),
        ]
    cora = {"data": {"name": "cora", "root": common.data_root()}}
    rows = []
    for depth in (2, 4):
        rows.append((f"Cora, replicate, L={depth}", base_config(f"cora{depth}", model__hidden_layers=depth) | cora))
    rows.append(("Cora, replicate, L=4, K=4", base_config("cora4k4", federation__num_clients=4,
                                                          federation__rounds=4) | cora))
    for depth in (2, 4):
        rows.append((f"Photo, replicate, L={depth}", base_config(f"photo{depth}", model__hidden_layers=depth)
                     | {"data": real("amazon-photo")}))
    for depth in (2, 4):
        rows.append((f"Photo, community 20% public, L={depth}",
                     base_config(f"photoc{depth}", model__hidden_layers=depth, partition__scheme="community")
                     | {"data": real("amazon-photo")}))
    rows.append(("Computers, replicate, L=4", base_config("computers4") | {"data": real("amazon-computers")}))
    rows.append(("Coauthor CS, replicate, L=2", base_config("cs2", model__hidden_layers=2)
                 | {"data": real("coauthor-cs")}))
    return rows


# float32 / float16: align.statistics_dtype; int8: the int8 log-ratio code (CodecTransport over float32);
# none: align.strategy none (no statistics at all), the yardstick for how much alignment moves training.
ARMS = ("float32", "float16", "int8", "none")


def accuracy_specs(smoke: bool) -> list[tuple[str, dict, list[int], tuple[str, ...]]]:
    """(label, raw config, seeds, arms) for the float16 accuracy study."""
    if smoke:
        syn = {"name": "synthetic-csbm", "synthetic": {"num_nodes": 300, "avg_degree": 6, "homophily": 0.6,
                                                       "signal": 0.6}}
        return [("synthetic, replicate, L=2, 6 rounds",
                 base_config("acc-s", model__hidden_layers=2, model__hidden_dim=16, federation__rounds=6)
                 | {"data": syn}, [0, 1], ARMS)]
    cora = base_config("acc-cora", federation__rounds=120, train__local_epochs=2, train__lr=0.005) \
        | {"data": {"name": "cora", "root": common.data_root()}}
    photo = base_config("acc-photo", model__hidden_layers=2, federation__rounds=60, partition__scheme="community") \
        | {"data": real("amazon-photo")}
    return [
        ("Cora, replicate, L=4, 120 rounds x 2 epochs (simulations/cora.yaml)", cora, [0, 1, 2, 3, 4], ARMS),
        ("Photo, community 20% public, L=2, 60 rounds x 1 epoch (photo-privacy.yaml, no DP)", photo, [0, 1, 2], ARMS),
    ]


# ---------------------------------------------------------------- codecs


class Graph:
    """What a codec may use: the public alignment graph's targets and in-degrees."""

    def __init__(self, target: np.ndarray, num_nodes: int) -> None:
        self.target = target
        self.num_nodes = num_nodes
        self.degree = np.bincount(target, minlength=num_nodes)
        self.edge_degree = self.degree[target].astype(np.float64)
        # The last in-edge of every node (by position): dropped by "drop one entry per node".
        last = np.full(num_nodes, -1)
        last[target] = np.arange(target.shape[0])
        self.last_edge = last[self.degree > 0]

    def renormalise(self, p: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.target, weights=p, minlength=self.num_nodes)
        return p / sums[self.target]


def float16(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    q = p.astype(np.float16)
    return q.astype(np.float64), q.nbytes


def float16_deviation(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    d = (p.astype(np.float64) * g.edge_degree - 1.0).astype(np.float16)
    return (1.0 + d.astype(np.float64)) / g.edge_degree, d.nbytes


def drop_one_per_node(p: np.ndarray, g: Graph, dtype=np.float32) -> tuple[np.ndarray, int]:
    keep = np.ones(p.shape[0], dtype=bool)
    keep[g.last_edge] = False
    sent = p[keep].astype(dtype)
    out = np.zeros(p.shape[0])
    out[keep] = sent
    others = np.bincount(g.target[keep], weights=sent.astype(np.float64), minlength=g.num_nodes)
    out[g.last_edge] = 1.0 - others[g.target[g.last_edge]]
    return out, sent.nbytes


def int8_log_ratio(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
    r = np.log(np.maximum(p.astype(np.float64), 1e-30) * g.edge_degree)
    scale = max(np.abs(r).max(), 1e-12) / 127.0
    q = np.clip(np.rint(r / scale), -127, 127).astype(np.int8)
    decoded = np.exp(q.astype(np.float64) * np.float32(scale)) / g.edge_degree
    return g.renormalise(decoded), q.nbytes + 4


def zlib_of(dtype) -> callable:
    def codec(p: np.ndarray, g: Graph) -> tuple[np.ndarray, int]:
        raw = p.astype(dtype)
        return raw.astype(np.float64), len(zlib.compress(raw.tobytes(), 6))
    return codec


CODECS = {
    "float32 (library default)": lambda p, g: (p.astype(np.float64), p.astype(np.float32).nbytes),
    "float16 (align.statistics_dtype)": float16,
    "float16 deviation p*deg-1": float16_deviation,
    "float32, drop one entry per node": drop_one_per_node,
    "float16, drop one entry per node": lambda p, g: drop_one_per_node(p, g, np.float16),
    "int8 log-ratio + per-layer scale": int8_log_ratio,
    "zlib(float32)": zlib_of(np.float32),
    "zlib(float16)": zlib_of(np.float16),
}


def codec_errors(statistics: list[np.ndarray], g: Graph) -> list[dict]:
    """Bytes per entry and errors of every codec on one release (all layers)."""
    rows = []
    entries = sum(p.shape[0] for p in statistics)
    has = g.degree > 0
    for name, codec in CODECS.items():
        nbytes, abs_err, kl, dev_rel = 0, [], [], []
        for p in statistics:
            p64 = p.astype(np.float64)
            decoded, size = codec(p, g)
            nbytes += size
            err = np.abs(decoded - p64)
            abs_err.append(err)
            deviation = np.abs(p64 - 1.0 / g.edge_degree)
            dev_rel.append(np.median(err[deviation > 0] / deviation[deviation > 0]) if (deviation > 0).any() else 0)
            # KL against the decoded distribution renormalised per node (what a careful receiver would use).
            safe = np.maximum(g.renormalise(np.maximum(decoded, 0.0)), 1e-30)
            per_node = np.bincount(g.target, weights=p64 * (np.log(p64) - np.log(safe)), minlength=g.num_nodes)
            kl.append(per_node[has].mean())
        err = np.concatenate(abs_err)
        rows.append({"codec": name, "bytes": int(nbytes), "bytes_per_entry": nbytes / entries,
                     "vs_float32": nbytes / (4 * entries), "max_abs_err": float(err.max()),
                     "median_abs_err": float(np.median(err)),
                     "median_err_over_deviation": float(np.median(dev_rel)),
                     "kl_per_node_mean": float(np.mean(kl))})
    return rows


class CodecTransport:
    """Wraps a transport: every release is encoded with ``codec`` and decoded before the server sees it.

    ``bytes_sent`` becomes the encoded size, ``bytes_received`` the encoded size of the peers' releases.
    """

    def __init__(self, inner, codec, graph: Graph) -> None:
        self.inner, self.codec, self.graph = inner, codec, graph
        self.size: dict[int, int] = {}

    def _apply(self, replies: dict) -> dict:
        for client, reply in replies.items():
            if reply.statistics is not None:
                decoded, sizes = [], 0
                for p in reply.statistics:
                    d, size = self.codec(p, self.graph)
                    decoded.append(d.astype(np.float32))
                    sizes += size
                reply.statistics = decoded
                reply.bytes_sent = sizes
                self.size[client] = sizes
        return replies

    def query(self, clients, round_number):
        return self._apply(self.inner.query(clients, round_number))

    def train(self, jobs, round_number):
        from fedalign.wire import PEER_MASS, payload_bytes

        replies = self.inner.train(jobs, round_number)
        for client, reply in replies.items():
            peers = jobs[client]  # the peers' summed mass (fedalign.wire.PEER_MASS) travels as it is
            reply.bytes_received = payload_bytes(peers[PEER_MASS]) if PEER_MASS in peers else \
                sum(self.size.get(peer, 0) for peer in peers)
        return self._apply(replies)


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
            and all(s == row[dtype]["expected_received_bytes"] for s in row[dtype]["trainer_received_per_round"]))
        params, wbytes = weight_bytes(transport.clients[0])
        local = transport.clients[0].train_split.graph
        row.update({"num_clients": k, "alignment_edges": edges, "alignment_nodes": int(alignment.num_nodes),
                    "local_nodes_client0": int(local.num_nodes), "layers": depth,
                    "parameters": params, "weight_bytes": wbytes, "weight_sharing_per_round": 2 * wbytes,
                    "features": int(alignment.x.size(1))})
    f32 = row["float32"]
    per_round = f32["trainer_sent_per_round"][0] + f32["trainer_received_per_round"][0]
    row["stats_over_weight_sharing_float32"] = per_round / row["weight_sharing_per_round"]
    f16 = row["float16"]
    row["stats_over_weight_sharing_float16"] = (f16["trainer_sent_per_round"][0]
                                                + f16["trainer_received_per_round"][0]) / row["weight_sharing_per_round"]
    print(f"[communication] {label}: E={row['alignment_edges']} L={row['layers']} K={row['num_clients']}: "
          f"trainer sends {human_bytes(f32['trainer_sent_per_round'][0])}, receives "
          f"{human_bytes(f32['trainer_received_per_round'][0])} per round (float32); weights "
          f"{human_bytes(row['weight_bytes'])} -> weight sharing {human_bytes(row['weight_sharing_per_round'])}; "
          f"ratio {row['stats_over_weight_sharing_float32']:.3g} (float16 {row['stats_over_weight_sharing_float16']:.3g}); "
          f"checks {'ok' if f32['matches_expected'] and f16['matches_expected'] else 'MISMATCH'}; "
          f"load {common.load()}", flush=True)
    return row


def accuracy_arm(raw: dict, seed: int, arm: str, workdir: Path) -> tuple[dict, object]:
    """One run: arm 'float32' / 'float16' (library), 'int8' (codec wrapper over float32) or 'none' (no alignment)."""
    from fedalign.config import config_from_dict
    from fedalign.inprocess import InProcessTransport
    from fedalign.outputs import read_rounds
    from fedalign.runner import run_experiment

    dtype = "float16" if arm == "float16" else "float32"
    strategy = "none" if arm == "none" else raw["align"]["strategy"]
    cfg = config_from_dict(raw, [f"seed={seed}", f"align.statistics_dtype={dtype}", f"align.strategy={strategy}"])
    transport = InProcessTransport.from_config(cfg)
    if arm == "int8":
        a = transport.clients[0].alignment
        transport = CodecTransport(transport, int8_log_ratio, Graph(a.edge_index[1].numpy(), a.num_nodes))
    run_dir = workdir / f"{raw['name']}-s{seed}-{arm}"
    load = common.load()
    start = time.perf_counter()
    _, summary = run_experiment(cfg, transport, "inprocess", run_dir)
    rows = read_rounds(run_dir)
    trained = [r for r in rows if r.round >= 1]
    return {"seed": seed, "arm": arm, "test": summary["mean_test_at_best_val"],
            "best_val": common.mean([c["best_val"] for c in summary["clients"].values()]),
            "best_rounds": [c["best_round"] for c in summary["clients"].values()],
            "bytes_sent_total": summary["bytes_sent_total"],
            "align_loss": [r.metrics.get("align_loss") for r in trained],
            "val_loss": [r.metrics.get("val_loss") for r in trained],
            "seconds": time.perf_counter() - start, "load": load}, transport


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--skip-accuracy", action="store_true", help="only the bytes table and the codec analysis")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    out = common.out_dir(args, NAME)
    info = common.machine(args.threads)
    print(f"[communication] {info['cpu']} x{info['cpu_count']}, torch threads {args.threads}, {info['uptime_at_start']}")

    results: dict = {"benchmark": NAME, "smoke": args.smoke, "machine": info}
    with tempfile.TemporaryDirectory(prefix="fedalign-communication-") as tmp:
        tmp = Path(tmp)
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
                        print(f"[communication] {label} seed {seed} {arm}: test {run['test']:.4f} "
                              f"({run['seconds']:.1f} s, load {run['load']})", flush=True)
                        if arm == "float32" and seed == seeds[0]:
                            # Codec analysis on the trained students' statistics (float32, eval mode).
                            client = transport.clients[0]
                            a = client.alignment
                            g = Graph(a.edge_index[1].numpy(), a.num_nodes)
                            stats = client.statistics()
                            codec_rows.append({"label": label, "edges": int(a.edge_index.size(1)),
                                               "layers": len(stats),
                                               "nodes_with_in_edges": int((g.degree > 0).sum()),
                                               "degree1_nodes": int((g.degree == 1).sum()),
                                               "codecs": codec_errors(stats, g)})
                results["accuracy"].append({"label": label, "config": raw, "seeds": seeds, "runs": runs,
                                            **paired(runs)})
        results["codecs"] = codec_rows
    results["uptime_at_end"] = common.uptime()
    md = markdown(results)
    common.write_outputs(out, results, md)
    plot(results, out / "plot.png")
    print(md)
    print(f"[communication] results in {out}")
    return 0


def paired(runs: list[dict]) -> dict:
    """Mean ± std of each arm's test metric and of its paired difference to float32 (same seed)."""
    by = {(r["arm"], r["seed"]): r["test"] for r in runs}
    run_of = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out = {}
    for arm in ARMS:
        vals = [by[(arm, s)] for s in seeds if (arm, s) in by]
        if not vals:
            continue
        out[arm] = {"mean": common.mean(vals), "std": common.std(vals), "n": len(vals)}
        if arm != "float32":
            diffs = [by[(arm, s)] - by[("float32", s)] for s in seeds if (arm, s) in by and ("float32", s) in by]
            out[arm]["diff_mean"] = common.mean(diffs)
            out[arm]["diff_std"] = common.std(diffs)
            out[arm]["diffs"] = diffs
            # How far the training trajectory moved: largest |change| of the validation loss over all
            # rounds, and the median relative change of the logged alignment loss, against float32.
            moved_val, moved_align = [], []
            for s in seeds:
                a, b = run_of.get((arm, s)), run_of.get(("float32", s))
                if a is None or b is None or "val_loss" not in a:
                    continue
                moved_val += [abs(x - y) for x, y in zip(a["val_loss"], b["val_loss"]) if x is not None and y is not None]
                moved_align += [abs(x - y) / abs(y) for x, y in zip(a["align_loss"], b["align_loss"])
                                if x is not None and y]
            out[arm]["val_loss_max_abs_change"] = max(moved_val) if moved_val else None
            out[arm]["align_loss_median_rel_change"] = common.median(moved_align) if moved_align else None
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Communication",
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s); start `{m['uptime_at_start']}`; "
        f"end `{res['uptime_at_end']}`.",
        "",
        "## Bytes per alternating round (from rounds.jsonl) vs weight sharing",
        "",
        "The trainer of a round sends its fresh statistics (L x E entries) and receives its K-1 peers' cached "
        "statistics; the other clients move nothing that round. Weight sharing (FedAvg-style) moves "
        "2 x 4P bytes per participating client per round (download + upload of P float32 parameters). "
        "`check` = every logged figure equals E x L x itemsize (received: x (K-1), or the peers' summed mass, "
        "8 E L + 16, where that is no larger) computed from the graph.",
        "",
    ]
    rows = []
    for r in res["bytes"]:
        f32, f16 = r["float32"], r["float16"]
        rows.append([r["label"], r["alignment_edges"], r["layers"], r["num_clients"],
                     human_bytes(f32["trainer_sent_per_round"][0]), human_bytes(f32["trainer_received_per_round"][0]),
                     human_bytes(f16["trainer_sent_per_round"][0]), human_bytes(f16["trainer_received_per_round"][0]),
                     f"{r['parameters']:,}", human_bytes(r["weight_bytes"]), human_bytes(r["weight_sharing_per_round"]),
                     fmt(r["stats_over_weight_sharing_float32"]), fmt(r["stats_over_weight_sharing_float16"]),
                     "ok" if f32["matches_expected"] and f16["matches_expected"] else "MISMATCH"])
    lines.append(md_table(["setting", "E (align edges)", "L", "K", "sent f32", "recv f32", "sent f16", "recv f16",
                           "params P", "weights 4P", "weight sharing 2x4P", "stats/weights f32", "stats/weights f16",
                           "check"], rows))
    if res["accuracy"]:
        lines += ["", "## Accuracy with float16 (and int8) statistics, paired by seed", "",
                  "Same seeds → same initial weights, splits and dropout masks; only the precision of the statistics "
                  "on the wire differs. `int8` = the int8 log-ratio code below, applied to every release "
                  "(benchmark-side transport wrapper, not a library option); `none` = no alignment at all "
                  "(align.strategy none), the yardstick: how far alignment itself moves training. Test accuracy "
                  "at best validation, mean of both students. 'Trajectory moved' compares each run with the "
                  "float32 run of the same seed over all rounds.", ""]
        rows = []
        for a in res["accuracy"]:
            for arm in ARMS:
                if arm not in a:
                    continue
                s = a[arm]
                diff = "-" if arm == "float32" else f"{s['diff_mean']:+.4f} ± {s['diff_std']:.4f}"
                moved = "-" if arm == "float32" else (f"{fmt(s.get('val_loss_max_abs_change'), 2)} / "
                                                      f"{fmt(s.get('align_loss_median_rel_change'), 2)}")
                rows.append([a["label"], arm, f"{s['mean']:.4f} ± {s['std']:.4f}", diff, moved, s["n"]])
        lines.append(md_table(["setting", "statistics", "test accuracy (mean ± std)", "paired diff vs float32",
                               "trajectory moved: max abs Δ val loss / median rel Δ align loss", "seeds"], rows))
        per_seed = []
        for a in res["accuracy"]:
            for run in a["runs"]:
                per_seed.append([a["label"].split(",")[0], run["seed"], run["arm"], f"{run['test']:.4f}",
                                 ", ".join(str(b) for b in run.get("best_rounds", [])),
                                 human_bytes(run["bytes_sent_total"]), fmt(run["seconds"]), run["load"]])
        lines += ["", "<details><summary>per run</summary>", "",
                  md_table(["data", "seed", "statistics", "test", "best rounds", "bytes sent (run)", "s", "load"], per_seed),
                  "", "</details>"]
    for c in res["codecs"]:
        lines += ["", f"## Compression of trained statistics: {c['label']}", "",
                  f"E = {c['edges']} edges x L = {c['layers']} layers; {c['nodes_with_in_edges']} nodes with in-edges, "
                  f"{c['degree1_nodes']} of in-degree 1. Error columns compare decoded with float32 probabilities; "
                  "`err / deviation` is the median of |error| / |p - 1/deg(v)| (how much of the signal beyond the "
                  "public uniform distribution the code loses); KL is per node, nats (the alignment loss per "
                  "layer pair is of order 1e-3 to 1e-1 nats).", ""]
        rows = [[r["codec"], f"{r['bytes_per_entry']:.3f}", f"{r['vs_float32']:.3f}", f"{r['max_abs_err']:.1e}",
                 f"{r['median_abs_err']:.1e}", f"{r['median_err_over_deviation']:.1e}", f"{r['kl_per_node_mean']:.1e}"]
                for r in c["codecs"]]
        lines.append(md_table(["code", "bytes / entry", "size vs float32", "max |err|", "median |err|",
                               "err / deviation", "KL(p‖decoded)"], rows))
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["bytes"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.8))
    y = np.arange(len(rows))
    stats32 = [r["float32"]["trainer_sent_per_round"][0] + r["float32"]["trainer_received_per_round"][0] for r in rows]
    stats16 = [r["float16"]["trainer_sent_per_round"][0] + r["float16"]["trainer_received_per_round"][0] for r in rows]
    weights = [r["weight_sharing_per_round"] for r in rows]
    ax.barh(y - 0.27, stats32, 0.27, label="statistics, float32 (sent + received)")
    ax.barh(y, stats16, 0.27, label="statistics, float16")
    ax.barh(y + 0.27, weights, 0.27, label="weight sharing (2 x 4P)")
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes per participating client per round")
    ax.grid(alpha=0.3, axis="x", which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
