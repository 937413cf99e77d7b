"""The benchmarks (``bench/``): their ``--smoke`` runs, checked against independent computations.

Each benchmark runs as ``python -m bench.<name> --smoke --out TMP`` from the
project root (as a user would run it) and its ``results.json`` / ``table.md``
are checked: byte counts against E x L x itemsize of a graph generated here,
weight bytes against the GCN parameter formula, ratios and slopes recomputed
from the raw figures. No timing is asserted, only that times are positive and
consistent with each other. The naive speed baseline is checked to compute
the same losses, gradients and training step as fedalign on the same weights.
Every test here checks that the committed results (git-tracked files under
``results/``) are untouched: a smoke run writes only to its ``--out``, or without
one to a temporary folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedalign.data import load_dataset, partition_dataset
from fedalign.data.synthetic import csbm

REPO = Path(__file__).resolve().parents[1]


def committed_results() -> dict[str, tuple[str, int]]:
    """Each git-tracked file under ``results/``: its content hash and modification time."""
    listed = subprocess.run(["git", "ls-files", "-z", "results"], cwd=REPO, capture_output=True, text=True, check=True)
    files = {}
    for name in filter(None, listed.stdout.split("\0")):
        path = REPO / name
        if path.is_file():
            files[name] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return files


@pytest.fixture(autouse=True)
def results_untouched():
    """Every test in this module: the committed results are the same after it as before."""
    before = committed_results()
    assert before, "no committed results found to guard"
    yield
    after = committed_results()
    assert after == before, sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def bench(name: str):
    """``bench.<name>`` of this project."""
    return importlib.import_module(f"bench.{name}")


def run_benchmark(name: str, out: Path, *extra: str, timeout: float = 600) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke", "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    table = (out / "table.md").read_text()
    assert results["smoke"] is True
    return results, table


def gcn_parameters(features: int, classes: int, layers: int, hidden: int) -> int:
    """Weights + biases of F -> d -> ... -> d -> C GCNConv layers."""
    return features * hidden + hidden + (layers - 1) * (hidden * hidden + hidden) + hidden * classes + classes


def steady_median(rows: list[dict], k: int) -> float:
    return float(np.median([r["seconds"] for r in rows if r["round"] > k]))


# ---------------------------------------------------------------- the naive baseline


def _fedalign_and_naive(dropout: float):
    from fedalign.config import config_from_dict
    from fedalign.inprocess import InProcessTransport

    naive_mod = bench("naive")
    cfg = config_from_dict({"data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 200}},
                            "model": {"hidden_layers": 3, "hidden_dim": 16, "dropout": dropout},
                            "train": {"local_epochs": 2}, "output": {"progress": False}})
    clients = InProcessTransport.from_config(cfg).clients
    c0 = clients[0]
    naive = naive_mod.NaiveAlignahead.from_split(
        c0.train_split, c0.val_split, c0.test_split, 4, num_students=2, hidden_layers=3, hidden_dim=16,
        dropout=dropout, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, tau=cfg.align.tau,
        weight=cfg.align.weight, local_epochs=2, seed=cfg.seed)
    naive.load_weights([clients[i].model.state_dict() for i in range(2)])
    return naive_mod, clients, naive


def test_naive_baseline_computes_fedalign_losses_on_the_same_weights():
    naive_mod, clients, naive = _fedalign_and_naive(dropout=0.5)
    cmp = naive_mod.compare_with_fedalign(clients, naive)
    assert cmp["fedalign_align_loss"] > 0
    assert cmp["naive_align_loss"] == pytest.approx(cmp["fedalign_align_loss"], rel=1e-4, abs=1e-8)
    assert cmp["naive_task_loss"] == pytest.approx(cmp["fedalign_task_loss"], rel=1e-6)
    assert cmp["grad_max_abs_diff"] <= 1e-5 * cmp["grad_max_abs"] + 1e-8


def test_naive_alignment_loss_against_a_loop():
    """The naive KL on a hand-made graph equals a per-node loop over in-edges."""
    naive_mod = bench("naive")
    edge_index = torch.tensor([[1, 2, 3, 0, 2, 0], [0, 0, 0, 1, 1, 2]])
    h_peer, h_student = torch.randn(4, 3), torch.randn(4, 3)
    tau = 2.0
    lp_peer = naive_mod.naive_log_probs(h_peer, edge_index, tau)
    lp_student = naive_mod.naive_log_probs(h_student, edge_index, tau)
    kl = naive_mod.naive_kl(lp_peer, lp_student, edge_index[1], 4)
    expected = []
    for v in range(4):  # the original: softmax of exp(-L1 / tau) over in-edges, KL averaged over all 4 nodes
        sources = [int(u) for u, t in zip(*edge_index.tolist()) if t == v]
        if not sources:
            expected.append(torch.tensor(0.0))
            continue
        def dist(h):
            logits = torch.stack([torch.exp(-(h[u] - h[v]).abs().sum() / tau) for u in sources])
            return torch.softmax(logits, 0)
        p, q = dist(h_peer), dist(h_student)
        expected.append((p * (p.log() - q.log())).sum())
    assert kl.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    assert naive_mod.alignahead_pairs(4) == [(1, 4), (2, 1), (3, 2), (4, 3)]


def test_naive_training_round_matches_fedalign():
    """Same weights and seeds: one alternating round (2 epochs, dropout on) leaves both students equal."""
    _, clients, naive = _fedalign_and_naive(dropout=0.5)
    peer_stats = clients[1].statistics()
    fed = clients[0].train({1: peer_stats}, 1)
    nai = naive.train_round(1)
    assert nai["align_loss"] == pytest.approx(fed["align_loss"], rel=1e-4)
    assert nai["task_loss"] == pytest.approx(fed["task_loss"], rel=1e-5)
    naive_state = naive.students[0].state_dict()
    for key, value in clients[0].model.state_dict().items():
        torch.testing.assert_close(naive_state[key], value, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- speed


def test_speed_smoke(tmp_path):
    res, table = run_benchmark("speed", tmp_path)
    cfg = res["config"]
    k, rounds = cfg["federation"]["num_clients"], cfg["federation"]["rounds"]
    graph = csbm(cfg["data"]["synthetic"], seed=cfg["seed"])
    assert res["graph"]["edges"] == graph.edge_index.size(1)
    assert res["graph"]["nodes"] == graph.num_nodes
    fed, naive = res["fedalign_inprocess"], res["naive"]
    for part in (fed, naive):
        assert [r["round"] for r in part["rounds"]] == list(range(1, rounds + 1))
        assert [r["client"] for r in part["rounds"]] == [(r - 1) % k for r in range(1, rounds + 1)]
        assert all(r["seconds"] > 0 and 0 < r["epoch_s"] * cfg["train"]["local_epochs"] < r["seconds"]
                   for r in part["rounds"])
        assert part["round_median_s"] == pytest.approx(steady_median(part["rounds"], k))
        assert part["steady_rounds"] == rounds - k
    assert res["ratios"]["naive_over_fedalign_round"] == pytest.approx(
        steady_median(naive["rounds"], k) / steady_median(fed["rounds"], k))
    assert fed["init_round0_s"] > 0
    eq = res["equivalence"]
    assert eq["align_loss_abs_diff"] <= 1e-4 * abs(eq["fedalign_align_loss"]) + 1e-8
    assert eq["grad_max_abs_diff"] <= 1e-5 * eq["grad_max_abs"] + 1e-8
    # Both trained the same students from the same weights with the same dropout masks: same losses
    # (up to float rounding) and the same validation accuracy up to one node flipping.
    for f, n in zip(fed["rounds"], naive["rounds"]):
        assert n["align_loss"] == pytest.approx(f["align_loss"], rel=1e-3)
        assert n["val_metric"] == pytest.approx(f["val_metric"], abs=0.02)
    assert "skipped" in res["flower"]
    assert res["gpu"].startswith("none") or torch.cuda.is_available()
    assert f"**{res['ratios']['naive_over_fedalign_round']:.2f}x** per round" in table
    assert (tmp_path / "plot.png").stat().st_size > 0


@pytest.mark.slow
def test_speed_smoke_with_flower(tmp_path):
    res, table = run_benchmark("speed", tmp_path, "--flower")
    fl = res["flower"]
    k, rounds = res["config"]["federation"]["num_clients"], res["config"]["federation"]["rounds"]
    assert fl["status"] == "finished", fl
    assert len(fl["first_rounds_s"]) == k and len(fl["steady_rounds_s"]) == rounds - k
    assert 0 < fl["round0_exchange_s"] < fl["startup_to_round0_done_s"] < fl["total_s"]
    assert fl["steady_round_median_s"] == pytest.approx(float(np.median(fl["steady_rounds_s"])))
    assert res["ratios"]["flower_over_inprocess_round"] == pytest.approx(
        fl["steady_round_median_s"] / res["fedalign_inprocess"]["after_flower_round_median_s"])
    assert "Flower Simulation Runtime" in table


# ---------------------------------------------------------------- communication


def test_communication_smoke(tmp_path):
    res, table = run_benchmark("communication", tmp_path)
    assert res["bytes"]
    for row in res["bytes"]:
        raw = row["config"]
        options, seed = raw["data"]["synthetic"], raw["seed"]
        graph = csbm(options, seed=seed)
        layers, k, hidden = raw["model"]["hidden_layers"], raw["federation"]["num_clients"], raw["model"]["hidden_dim"]
        if raw["partition"]["scheme"] == "replicate":
            edges = graph.edge_index.size(1)
        else:  # the alignment graph: edges of the full graph with both ends in the public node set
            dataset = load_dataset("synthetic-csbm", seed=seed, synthetic=options)
            clients = partition_dataset(dataset, k, scheme=raw["partition"]["scheme"],
                                        public_fraction=raw["partition"]["public_fraction"], seed=seed)
            public = np.zeros(graph.num_nodes, dtype=bool)
            public[clients[0].alignment.global_id.numpy()] = True
            assert public.sum() == round(raw["partition"]["public_fraction"] * graph.num_nodes)
            src, dst = graph.edge_index.numpy()
            edges = int((public[src] & public[dst]).sum())
        assert row["alignment_edges"] == edges
        received = {}
        for dtype, itemsize in (("float32", 4), ("float16", 2)):
            logged = row[dtype]
            assert logged["trainer_sent_per_round"] == [edges * layers * itemsize] * raw["federation"]["rounds"]
            # the K-1 peers' releases, or (from 8 bytes of releases per entry) their summed mass: 8 E L + 16
            received[dtype] = (k - 1) * edges * layers * itemsize if (k - 1) * itemsize < 8 else 8 * edges * layers + 16
            assert logged["trainer_received_per_round"] == [received[dtype]] * raw["federation"]["rounds"]
            assert logged["round0_sent"] == [edges * layers * itemsize] * k
            assert logged["matches_expected"] is True
        params = gcn_parameters(graph.x.size(1), int(graph.y.max()) + 1, layers, hidden)
        assert row["parameters"] == params
        assert row["weight_bytes"] == 4 * params
        assert row["weight_sharing_per_round"] == 8 * params
        for dtype, itemsize in (("float32", 4), ("float16", 2)):
            assert row[f"stats_over_weight_sharing_{dtype}"] == pytest.approx(
                (edges * layers * itemsize + received[dtype]) / (8 * params))
    for study in res["accuracy"]:
        tests = {(r["arm"], r["seed"]): r["test"] for r in study["runs"]}
        for arm in ("float16", "int8", "none"):
            diffs = [tests[(arm, s)] - tests[("float32", s)] for s in study["seeds"]]
            assert study[arm]["diffs"] == pytest.approx(diffs)
            assert study[arm]["diff_mean"] == pytest.approx(float(np.mean(diffs)))
        by_arm = {r["arm"]: r["bytes_sent_total"] for r in study["runs"] if r["seed"] == study["seeds"][0]}
        assert by_arm["float16"] * 2 == by_arm["float32"]
        assert by_arm["int8"] < by_arm["float16"]
        assert by_arm["none"] == 0  # no alignment, no statistics
    for analysis in res["codecs"]:
        codecs = {c["codec"]: c for c in analysis["codecs"]}
        entries = analysis["edges"] * analysis["layers"]
        assert codecs["float32 (library default)"]["bytes"] == 4 * entries
        assert codecs["float16 (align.statistics_dtype)"]["bytes"] == 2 * entries
        assert codecs["int8 log-ratio + per-layer scale"]["bytes"] == entries + 4 * analysis["layers"]
        dropped = (analysis["edges"] - analysis["nodes_with_in_edges"]) * analysis["layers"]
        assert codecs["float32, drop one entry per node"]["bytes"] == 4 * dropped
        assert codecs["float32, drop one entry per node"]["max_abs_err"] < 1e-6  # lossless up to rounding
        assert codecs["zlib(float32)"]["max_abs_err"] == 0
        assert (codecs["float16 deviation p*deg-1"]["max_abs_err"]
                < codecs["float16 (align.statistics_dtype)"]["max_abs_err"])
    assert "| synthetic, replicate, L=2 |" in table
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_communication_codecs_on_a_hand_made_graph():
    comm = bench("codecs")
    target = np.array([0, 0, 0, 1, 1, 2])  # in-degrees 3, 2, 1
    g = comm.Graph(target, 3)
    p = np.array([0.5, 0.3, 0.2, 0.9, 0.1, 1.0], dtype=np.float32)
    decoded, size = comm.drop_one_per_node(p, g)
    assert size == 4 * 3  # one entry dropped per node: 6 - 3 entries left
    np.testing.assert_allclose(decoded, p, atol=1e-7)
    decoded, size = comm.float16_deviation(p, g)
    assert size == 12
    np.testing.assert_allclose(decoded, p, rtol=2e-3)
    decoded, size = comm.int8_log_ratio(p, g)
    assert size == 6 + 4
    np.testing.assert_allclose(np.bincount(target, weights=decoded), 1.0)
    np.testing.assert_allclose(decoded, p, rtol=0.02)


# ---------------------------------------------------------------- scale


def test_scale_smoke(tmp_path):
    res, table = run_benchmark("scale", tmp_path)
    runs = res["runs"]
    assert runs and all("error" not in r and not r.get("skipped") for r in runs), [r.get("error") for r in runs]
    assert {r["id"] for r in runs} == {s["id"] for s in bench("scale").specs(True)}
    assert {(r["num_clients"], r["mode"]) for r in runs} == {(2, "mini"), (2, "full"), (3, "mini"), (3, "full")}
    for r in runs:
        graph = csbm({"num_nodes": r["num_nodes"], "avg_degree": r["avg_degree"], "num_features": 32}, seed=0)
        assert r["graph_edges"] == graph.edge_index.size(1)
        assert r["graph_nodes"] == r["num_nodes"]
        if r["scheme"] == "replicate":
            assert r["alignment_edges"] == r["graph_edges"]
            # K = 2: the request is the one peer's release, L x E x float32
            assert r["request_bytes"] == r["hidden_layers"] * r["alignment_edges"] * 4
        else:
            assert r["alignment_nodes"] == round(r["public_fraction"] * r["num_nodes"])
            assert r["local_nodes_mean"] == pytest.approx(
                r["alignment_nodes"] + (r["num_nodes"] - r["alignment_nodes"]) / r["num_clients"])
        assert [x["round"] for x in r["rounds"]] == list(range(1, r["rounds"][-1]["round"] + 1))
        # a mini-batch align_loss estimate may fall slightly below 0 (fedalign.client.minibatch_training),
        # which the coordinator's metric check rejects: the epoch ran, the release is not cached
        assert all(x["status"] == "ok" or (r["mode"] == "mini" and x["status"] == "rejected" and
                                           "align_loss" in x["error"]) for x in r["rounds"]), r["rounds"]
        assert [x["client"] for x in r["rounds"]] == [(x["round"] - 1) % r["num_clients"] for x in r["rounds"]]
        assert r["epoch_median_s"] == pytest.approx(float(np.median([x["epoch_s"] for x in r["rounds"]])))
        assert r["round_median_s"] == pytest.approx(float(np.median([x["seconds"] for x in r["rounds"]])))
        assert all(0 < x["epoch_s"] < x["seconds"] for x in r["rounds"])
        assert (r["steps_per_epoch"] is None) == (r["mode"] == "full")
        assert 0 < r["rss_after_imports_mb"] <= r["peak_rss_self_mb"] <= r["maxrss_mib"] + 1
        assert r["peak_mib"] == max(r["peak_tree_mib"], r["maxrss_mib"]) and r["peak_mib"] < r["cap_mib"]
        assert len(r["load_before"]) == 3 and len(r["load_after"]) == 3
        assert [p["phase"] for p in r["phases"]][:2] == ["imports", "data and partition"]
        assert r["parameters_per_model"] == gcn_parameters(32, 4, r["hidden_layers"], r["hidden_dim"])
        assert f"| {r['graph_edges']:,} | {r['num_clients']} | {r['mode']} |" in table
    for fit in res["fits"].values():
        rows = sorted((r for r in runs if r["num_clients"] == fit["num_clients"] and r["mode"] == fit["mode"]),
                      key=lambda r: r["graph_edges"])
        e = np.log([r["graph_edges"] for r in rows])
        assert fit["epoch_s"] == pytest.approx(np.polyfit(e, np.log([r["epoch_median_s"] for r in rows]), 1)[0])
        assert fit["peak_mib"] == pytest.approx(np.polyfit(e, np.log([r["peak_mib"] for r in rows]), 1)[0])
    sizes = {q["clients"]: q for q in res["flower"]["request_size"]}
    assert sizes[2]["request_bytes"] == 2 * sizes[2]["edges"] * 4
    assert "## Targets" in table and "no GPU was lent" in table
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert len(list((tmp_path / "runs").glob("e*.json"))) == len(runs)  # a rerun would keep them
    assert (tmp_path / "runs" / "flower.json").is_file()


# ---------------------------------------------------------------- where a smoke run writes


def test_a_smoke_run_without_out_writes_to_a_temporary_folder(tmp_path):
    """``--smoke`` with no ``--out``, as a user types it: results land in a new folder under $TMPDIR."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bench.communication", "--smoke", "--skip-accuracy"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (written,) = [line for line in proc.stderr.splitlines() if line.startswith("wrote ")]
    results = Path(written.split()[1])
    assert results.name == "results.json" and results.parent.parent == tmp_path
    assert json.loads(results.read_text())["smoke"] is True


@pytest.mark.parametrize("name", ["speed", "communication", "scale", "many-clients"])
def test_every_common_benchmark_resolves_its_folder_away_from_the_results(name, tmp_path, monkeypatch):
    common = bench("common")
    monkeypatch.setattr(common.tempfile, "tempdir", str(tmp_path))
    smoke = common.out_dir(common.parser(name, "").parse_args(["--smoke"]), name)
    assert smoke.is_dir() and smoke.parent == tmp_path
    given = common.out_dir(common.parser(name, "").parse_args(["--smoke", "--out", str(tmp_path / "o")]), name)
    assert given == tmp_path / "o"
    assert common.parser(name, "").parse_args([]).out is None  # a full run: results/benchmarks/<name>
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    assert common.out_dir(common.parser(name, "").parse_args([]), name) == tmp_path / "results" / name


def test_deployment_smoke_without_out_leaves_the_committed_results(tmp_path, monkeypatch, capsys):
    """``bench.deployment --smoke`` (no ``--out``) used to overwrite results/benchmarks/deployment/results.json:
    run its ``main`` with the deployment and the measurement stubbed out."""
    deployment = bench("deployment")
    monkeypatch.setattr(deployment.tempfile, "tempdir", str(tmp_path))
    stopped = []

    class Stub:
        def stop(self, grace):
            stopped.append(grace)

    def measure(_deployment, case, rounds, _workdir):
        empty = deployment._median_range([])
        return {"case": case, "rounds": rounds, "round_seconds": empty, "overhead_seconds": empty,
                "round_minus_slowest_client_seconds": empty, "answered_by_worker": 0, "messages": 0,
                "message": {k: empty for k in ("before_handler", "imports", "load", "work", "total")}}

    monkeypatch.setattr(deployment.launch, "start_local", lambda *a, **k: Stub())
    monkeypatch.setattr(deployment, "measure", measure)
    assert deployment.main(["--smoke"]) == 0
    written = Path(capsys.readouterr().out.split("wrote ")[1].split()[0])
    assert written.parent.parent == tmp_path and stopped
    assert [c["case"] for c in json.loads(written.read_text())["cases"]] == ["quickstart"]
    assert deployment.main(["--smoke", "--out", str(tmp_path / "given")]) == 0
    assert (tmp_path / "given" / "results.json").is_file()


# ---------------------------------------------------------------- deployment


@pytest.mark.slow
def test_deployment_smoke(tmp_path):
    """A real SuperLink and 2 SuperNodes (TLS + authentication): round times and per-message start-up."""
    import os

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "bench.deployment", "--smoke", "--out", str(tmp_path)],
                          cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (case,) = json.loads((tmp_path / "results.json").read_text())["cases"]
    assert case["case"] == "quickstart" and case["round_seconds"]["n"] == 3
    assert case["fresh_process_per_message"] is True  # Flower ran each message in a fresh flwr-clientapp
    message = case["message"]
    assert all(message[k]["n"] >= 3 and message[k]["median"] >= 0 for k in ("before_handler", "load", "work"))
    assert case["overhead_seconds"]["median"] >= message["before_handler"]["median"]
    assert "quickstart: round median" in proc.stdout


@pytest.mark.slow
def test_many_clients_smoke(tmp_path):
    """Both engines at K = 3: start-up, round times from the progress lines, peak memory of the process tree."""
    proc = subprocess.run([sys.executable, "-m", "bench.many_clients", "--smoke", "--out", str(tmp_path)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["clients"], r["engine"]) for r in runs] == [(3, "inprocess"), (3, "flower")]
    for r in runs:
        assert r["rounds_timed"] == 4 and 0 < r["round_median_seconds"] <= r["round_max_seconds"]
        assert r["startup_to_round0_seconds"] < r["wall_seconds"] and r["peak_rss_mib"] > 100
    # Flower runs Ray's processes beside the driver: its tree holds more than the in-process run
    assert runs[1]["peak_rss_mib"] > runs[0]["peak_rss_mib"]
    assert "| 3 | flower |" in (tmp_path / "table.md").read_text()


def test_scale_sampling_smoke(tmp_path):
    """Distinct nodes and edges per batch, against the tree bound computed here by hand."""
    res, table = run_benchmark("scale_sampling", tmp_path)
    rows = res["rows"]
    assert [r["edges"] for r in rows] == [2000, 8000]
    for r in rows:
        # batch 64, mean in-degree 8: alignment 64*8 + 64*8*2 + 64*8*4, task 64*2 + 64*4 + 64*8
        assert r["tree_edges_bound"] == 64 * 8 * 7 + 64 * 14
        assert 0 < r["task_edges"] + r["align_edges"] <= r["tree_edges_bound"]
        assert r["align_nodes"] <= r["num_nodes"] and r["steps_per_epoch"] == -(-r["num_nodes"] // 64)
    assert rows[1]["align_edges"] > rows[0]["align_edges"]  # less overlap in the larger graph
    assert "sampled edges per step" in table
