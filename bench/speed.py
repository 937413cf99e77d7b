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

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import common
from .common import fmt, md_table

NAME = "speed"


def experiment(smoke: bool, rounds: int | None, local_epochs: int, clients: int) -> dict:
    """The raw experiment config."""
    if smoke:
        data = {"name": "synthetic-csbm", "synthetic": {"num_nodes": 300, "avg_degree": 6}}
        model = {"arch": "gcn", "hidden_layers": 2, "hidden_dim": 16, "dropout": 0.0}
        rounds = rounds or 4
    else:
        data = {"name": "amazon-photo", "root": common.data_root(), "split": [0.6, 0.2, 0.2]}
        model = {"arch": "gcn", "hidden_layers": 4, "hidden_dim": 64, "dropout": 0.0}
        rounds = rounds or 10
    return {
        "name": "benchmark-speed", "seed": 0, "device": "cpu", "data": data,
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
    from fedalign.statistics import eager_kernels, l1_backend
    from fedalign.client.training import task_loss

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

    variants = {"none": lambda: epoch(None)}
    for kernel in ("lsp", "l1-softmax"):
        variants[f"alignahead {kernel}, {l1_backend()}"] = lambda k=kernel: epoch(k)

        def eager(k=kernel):
            with eager_kernels():
                return epoch(k)

        variants[f"alignahead {kernel}, eager blocked kernel"] = eager
    client.model.train()
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats + 2):  # two warm-up passes (compilation), then timed ones
        for name, fn in (variants.items() if r % 2 else reversed(list(variants.items()))):
            seconds = fn()
            if r >= 2:
                timings[name].append(seconds)
    client.cfg.align = base_align
    none = common.median(timings["none"])
    return {name: {"median_s": common.median(ts), "over_none": common.median(ts) / none, "timings_s": ts}
            for name, ts in timings.items()}


class RoundsWatcher:
    """Polls a growing ``rounds.jsonl`` and notes when each round's last record appears."""

    def __init__(self, path: Path, poll: float = 0.01) -> None:
        self.path, self.poll = path, poll
        self.seen: dict[int, float] = {}  # round -> perf_counter when its (latest) record appeared
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import json

        offset = 0
        while not self._stop.is_set():
            try:
                with self.path.open() as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = ""
            now = time.perf_counter()
            if chunk:
                complete = chunk[: chunk.rfind("\n") + 1]
                offset += len(complete.encode())
                for line in complete.splitlines():
                    row = json.loads(line)
                    self.rows.append(row)
                    self.seen[int(row["round"])] = now
            self._stop.wait(self.poll)

    def __enter__(self) -> "RoundsWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(3 * self.poll)
        self._stop.set()
        self._thread.join()


def measure_flower(cfg, k: int, workdir: Path) -> dict:
    """One Flower simulation run of ``cfg``; start-up, per-round and shutdown times."""
    from fedalign_flower.runtime import run_flower_simulation

    os.environ["FEDALIGN_STATE_DIR"] = str(workdir / "client-state")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    run_dir = workdir / "flower-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    load_before = common.load()
    start = time.perf_counter()
    with RoundsWatcher(run_dir / "rounds.jsonl") as watcher:
        _, summary = run_flower_simulation(cfg, run_dir)
        end = time.perf_counter()
    rounds = sorted(watcher.seen)
    done = {r: watcher.seen[r] - start for r in rounds}
    per_round = {r: done[r] - done[r - 1] for r in rounds if r >= 1 and r - 1 in done}
    round0_exchange = max((row["seconds"] for row in watcher.rows if row["round"] == 0), default=float("nan"))
    steady = [per_round[r] for r in per_round if r > k]
    return {
        "status": summary.get("status"),
        "rounds": cfg.federation.rounds,
        "startup_to_round0_done_s": done.get(0),
        "round0_exchange_s": round0_exchange,
        "startup_before_round0_s": done.get(0, float("nan")) - round0_exchange,
        "first_rounds_s": [per_round[r] for r in sorted(per_round) if r <= k],
        "steady_rounds_s": steady,
        "steady_round_median_s": common.median(steady),
        "steady_round_mean_s": common.mean(steady),
        "shutdown_s": end - start - done[rounds[-1]] if rounds else float("nan"),
        "total_s": end - start,
        "trainer_reply_seconds": [row["seconds"] for row in watcher.rows if row["round"] >= 1],
        "mean_test_at_best_val": summary.get("mean_test_at_best_val"),
        "load_before": load_before, "load_after": common.load(),
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per implementation (default 10; smoke 4)")
    p.add_argument("--local-epochs", type=int, default=2, help="train.local_epochs (default 2)")
    p.add_argument("--clients", type=int, default=2, help="number of students K (default 2)")
    flower = p.add_mutually_exclusive_group()
    flower.add_argument("--flower", dest="flower", action="store_true", default=None,
                        help="also run on Flower's Simulation Runtime (default: on, except with --smoke)")
    flower.add_argument("--no-flower", dest="flower", action="store_false")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    run_flower = (not args.smoke) if args.flower is None else args.flower
    out = common.out_dir(args, NAME)

    import torch

    from fedalign.config import config_from_dict
    from fedalign.data import load_partition
    from fedalign.inprocess import InProcessTransport
    from fedalign.runner import build_coordinator

    from .naive import NaiveAlignahead, compare_with_fedalign

    raw = experiment(args.smoke, args.rounds, args.local_epochs, args.clients)
    cfg = config_from_dict(raw)
    k, epochs, rounds = cfg.federation.num_clients, cfg.train.local_epochs, cfg.federation.rounds
    info = common.machine(args.threads)
    print(f"[speed] {info['cpu']} x{info['cpu_count']}, torch threads {args.threads}, {info['uptime_at_start']}")
    print(f"[speed] GPU: {info['gpu'] or info['gpu_note']}")

    started = time.perf_counter()
    dataset, _ = load_partition(cfg)
    load_data_s = time.perf_counter() - started
    transport = InProcessTransport.from_config(cfg)
    timers = {i: common.instrument(c) for i, c in transport.clients.items()}
    c0 = transport.clients[0]
    model_cfg = cfg.model.for_client(0)
    naive = NaiveAlignahead.from_split(
        c0.train_split, c0.val_split, c0.test_split, dataset.num_classes, num_students=k,
        hidden_layers=model_cfg["hidden_layers"], hidden_dim=model_cfg["hidden_dim"], dropout=model_cfg["dropout"],
        lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, tau=cfg.align.tau, weight=cfg.align.weight,
        local_epochs=epochs, seed=cfg.seed)
    naive.load_weights([transport.clients[i].model.state_dict() for i in range(k)])
    graph = c0.alignment
    print(f"[speed] {cfg.data.name}: {graph.num_nodes} nodes, {graph.edge_index.size(1)} edges, "
          f"{dataset.num_features} features; K={k}, {model_cfg['hidden_layers']} hidden x {model_cfg['hidden_dim']}, "
          f"{epochs} local epochs, {rounds} rounds")

    epochs_cmp = epoch_comparison(transport.clients[0], {j: transport.clients[j].statistics() for j in range(1, k)},
                                  5 if args.smoke else 20)
    for name, row in epochs_cmp.items():
        print(f"[speed] student-epoch {name}: {row['median_s'] * 1000:.1f} ms ({row['over_none']:.2f}x none)")
    for i, c in transport.clients.items():  # the comparison trained client 0: start the round timing afresh
        c.model.load_state_dict(naive.students[i].state_dict())
        c.optimizer = torch.optim.Adam(c.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    equivalence = compare_with_fedalign(transport.clients, naive)
    print(f"[speed] same weights: alignment loss fedalign {equivalence['fedalign_align_loss']:.8g} "
          f"naive {equivalence['naive_align_loss']:.8g} (|diff| {equivalence['align_loss_abs_diff']:.2e}); "
          f"max |grad diff| {equivalence['grad_max_abs_diff']:.2e} of max |grad| {equivalence['grad_max_abs']:.2e}")

    with tempfile.TemporaryDirectory(prefix="fedalign-speed-") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "inprocess-run"
        run_dir.mkdir()
        coordinator, writer = build_coordinator(cfg, transport, run_dir, "inprocess")
        t = time.perf_counter()
        coordinator.initialise()
        init_s = time.perf_counter() - t
        for timer in timers.values():
            timer["evaluate"].take(), timer["release"].take()

        fed_rounds, naive_rounds = [], []

        def fed_round(r: int) -> None:
            load = common.load()
            t = time.perf_counter()
            records = coordinator.run_round(r)
            seconds = time.perf_counter() - t
            rec = records[0]
            ev, rel = timers[rec.client]["evaluate"].take(), timers[rec.client]["release"].take()
            train_s = rec.seconds - ev - rel
            fed_rounds.append({"round": r, "client": rec.client, "seconds": seconds, "client_call_s": rec.seconds,
                               "epoch_s": train_s / epochs, "evaluate_s": ev, "release_s": rel,
                               "val_metric": rec.metrics.get("val_metric"), "align_loss": rec.metrics.get("align_loss"),
                               "load": load})

        def naive_round(r: int) -> None:
            load = common.load()
            t = time.perf_counter()
            m = naive.train_round(r)
            seconds = time.perf_counter() - t
            naive_rounds.append({"round": r, "client": m["client"], "seconds": seconds,
                                 "epoch_s": m["train_seconds"] / epochs, "evaluate_s": m["evaluate_seconds"],
                                 "val_metric": m["val_metric"], "align_loss": m["align_loss"], "load": load})

        for r in range(1, rounds + 1):
            for fn in ((fed_round, naive_round) if r % 2 else (naive_round, fed_round)):
                fn(r)
            f, n = fed_rounds[-1], naive_rounds[-1]
            print(f"[speed] round {r:2d} (student {f['client']}): fedalign {f['seconds']:.3f} s "
                  f"(epoch {f['epoch_s']:.3f}), naive {n['seconds']:.3f} s (epoch {n['epoch_s']:.3f}); "
                  f"load {f['load']}", flush=True)

        flower_result: dict = {"skipped": "not requested (--smoke without --flower, or --no-flower)"}
        after_rounds: list[dict] = []
        if run_flower:
            flower_cfg = config_from_dict(raw)
            print("[speed] Flower Simulation Runtime run ...", flush=True)
            try:
                flower_result = measure_flower(flower_cfg, k, tmp)
            except Exception as error:  # report, do not lose the in-process figures
                flower_result = {"error": f"{type(error).__name__}: {error}"}
            print(f"[speed] flower: {flower_result}", flush=True)
            # In-process rounds right after the Flower run, under the same load, for the Flower/in-process ratio.
            first_after = len(fed_rounds)
            for r in range(rounds + 1, rounds + 1 + max(2 * k, 4)):
                fed_round(r)
            after_rounds = fed_rounds[first_after:]
            fed_rounds = fed_rounds[:first_after]
        writer.finish()

    def summary(rows: list[dict]) -> dict:
        steady = [row for row in rows if row["round"] > k]
        return {
            "first_rounds_s": [row["seconds"] for row in rows if row["round"] <= k],
            "round_median_s": common.median([row["seconds"] for row in steady]),
            "round_mean_s": common.mean([row["seconds"] for row in steady]),
            "round_std_s": common.std([row["seconds"] for row in steady]),
            "epoch_median_s": common.median([row["epoch_s"] for row in steady]),
            "evaluate_median_s": common.median([row["evaluate_s"] for row in steady]),
            "steady_rounds": len(steady),
            "load_mean": common.mean([row["load"] for row in rows]),
        }

    fed_s, naive_s = summary(fed_rounds), summary(naive_rounds)
    fed_s["init_round0_s"] = init_s
    fed_s["release_median_s"] = common.median([row["release_s"] for row in fed_rounds if row["round"] > k])
    ratios = {
        "naive_over_fedalign_round": naive_s["round_median_s"] / fed_s["round_median_s"],
        "naive_over_fedalign_epoch": naive_s["epoch_median_s"] / fed_s["epoch_median_s"],
    }
    if after_rounds:
        after = [row["seconds"] for row in after_rounds if row["round"] > rounds + k]
        fed_s["after_flower_round_median_s"] = common.median(after or [row["seconds"] for row in after_rounds])
        if flower_result.get("steady_round_median_s") is not None:
            ratios["flower_over_inprocess_round"] = (flower_result["steady_round_median_s"]
                                                     / fed_s["after_flower_round_median_s"])
    results = {
        "benchmark": NAME, "smoke": args.smoke, "machine": info, "config": raw,
        "graph": {"nodes": graph.num_nodes, "edges": int(graph.edge_index.size(1)),
                  "features": dataset.num_features, "classes": dataset.num_classes},
        "load_data_s": load_data_s,
        "student_epoch": epochs_cmp,
        "equivalence": equivalence,
        "fedalign_inprocess": {**fed_s, "rounds": fed_rounds, "rounds_after_flower": after_rounds},
        "naive": {**naive_s, "rounds": naive_rounds},
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


def markdown(res: dict) -> str:
    f, n, fl, g = res["fedalign_inprocess"], res["naive"], res["flower"], res["graph"]
    cfg = res["config"]
    m = cfg["model"]
    rows = [
        ["fedalign, in process", fmt(f["round_median_s"]), fmt(f["round_std_s"], 2), fmt(f["epoch_median_s"]),
         fmt(f["evaluate_median_s"]), fmt(f["load_mean"])],
        ["naive (peers re-run every step)", fmt(n["round_median_s"]), fmt(n["round_std_s"], 2),
         fmt(n["epoch_median_s"]), fmt(n["evaluate_median_s"]), fmt(n["load_mean"])],
    ]
    if "steady_round_median_s" in fl:
        rows.append(["fedalign on Flower (Ray), steady state", fmt(fl["steady_round_median_s"]), "-", "-", "-",
                     f"{fl['load_before']} / {fl['load_after']}"])
    lines = [
        f"# Speed: {cfg['data']['name']}, {cfg['federation']['num_clients']} GCN students, "
        f"{m['hidden_layers']} hidden layers x {m['hidden_dim']}, alternating, "
        f"{cfg['train']['local_epochs']} local epochs per round",
        "",
        f"Graph: {g['nodes']} nodes, {g['edges']} edges, {g['features']} features. Machine: "
        f"{res['machine']['cpu']} x{res['machine']['cpu_count']}, torch {res['machine']['torch']}, "
        f"{res['machine']['torch_threads']} thread(s); start: `{res['machine']['uptime_at_start']}`; end: "
        f"`{res['uptime_at_end']}`. GPU: {res['gpu']}.",
        "",
        f"Median over the {f['steady_rounds']} rounds after each student's first (warm-up); "
        "fedalign and naive interleaved round by round in one process.",
        "",
        "Per student-epoch, one student, variants interleaved epoch by epoch (median of the timed epochs):",
        "",
        md_table(["variant", "ms / student-epoch", "x plain training"],
                 [[name, f"{1000 * e['median_s']:.1f}", f"{e['over_none']:.2f}"] for name, e in res["student_epoch"].items()]),
        "",
        "Per alternating round (fedalign's in-process engine against the naive implementation):",
        "",
        md_table(["implementation", "s / round", "std", "s / student-epoch", "s evaluate", "load avg (1 min)"], rows),
        "",
        f"* naive / fedalign: **{res['ratios']['naive_over_fedalign_round']:.2f}x** per round, "
        f"**{res['ratios']['naive_over_fedalign_epoch']:.2f}x** per student-epoch.",
        f"* fedalign round 0 (every student's initial statistics): {fmt(f['init_round0_s'])} s; "
        f"release (statistics) per round: {fmt(f['release_median_s'])} s.",
        f"* warm-up rounds (each student's first): fedalign {', '.join(fmt(x) for x in f['first_rounds_s'])} s; "
        f"naive {', '.join(fmt(x) for x in n['first_rounds_s'])} s.",
        f"* same weights, same data: alignment loss fedalign {res['equivalence']['fedalign_align_loss']:.8g} vs naive "
        f"{res['equivalence']['naive_align_loss']:.8g} (|diff| {res['equivalence']['align_loss_abs_diff']:.1e}); "
        f"task loss |diff| {res['equivalence']['task_loss_abs_diff']:.1e}; gradients max |diff| "
        f"{res['equivalence']['grad_max_abs_diff']:.1e} (max |grad| {res['equivalence']['grad_max_abs']:.1e}).",
    ]
    if "steady_round_median_s" in fl:
        lines += [
            f"* Flower Simulation Runtime ({fl['rounds']} rounds): start-up until round 0 done "
            f"{fmt(fl['startup_to_round0_done_s'])} s, of which the round-0 exchange {fmt(fl['round0_exchange_s'])} s "
            f"(so Ray + workers + first client build before it: {fmt(fl['startup_before_round0_s'])} s); "
            f"first {len(fl['first_rounds_s'])} rounds {', '.join(fmt(x) for x in fl['first_rounds_s'])} s; "
            f"steady state {fmt(fl['steady_round_median_s'])} s / round (median of {len(fl['steady_rounds_s'])}); "
            f"shutdown {fmt(fl['shutdown_s'])} s; total {fmt(fl['total_s'])} s.",
            f"* Flower / in process per steady round: **{res['ratios'].get('flower_over_inprocess_round', float('nan')):.2f}x** "
            f"(in-process rounds re-timed right after the Flower run: {fmt(f.get('after_flower_round_median_s'))} s).",
        ]
    elif "error" in fl:
        lines.append(f"* Flower run failed: {fl['error']}")
    else:
        lines.append(f"* Flower: {fl.get('skipped')}")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for key, label in (("fedalign_inprocess", "fedalign, in process"), ("naive", "naive (peers re-run)")):
        rows = res[key]["rounds"]
        ax.plot([r["round"] for r in rows], [r["seconds"] for r in rows], marker="o", label=label)
    fl = res["flower"]
    if fl.get("first_rounds_s") is not None:
        k = len(fl["first_rounds_s"])
        xs = list(range(1, k + len(fl["steady_rounds_s"]) + 1))
        ax.plot(xs, fl["first_rounds_s"] + fl["steady_rounds_s"], marker="s", label="fedalign on Flower (Ray)")
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("wall seconds per round")
    ax.set_title(f"{res['config']['data']['name']}: seconds per alternating round")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
