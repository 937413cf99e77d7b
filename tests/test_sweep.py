"""Sweeps: every cell once, resumable, tables that match the rows."""

import csv
import json
import math
import tarfile
from pathlib import Path

import pytest
import yaml

from fedalign.config import ConfigError
from fedalign.inprocess import run_inprocess
from fedalign.runstore import runs_dir, unarchive_runs
from fedalign.sweep import aggregate, cell_config, cell_id, cells, load_sweep, run_sweep

BASE = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 100}},
    "federation": {"num_clients": 2, "rounds": 2},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
}


@pytest.fixture
def sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "base": "base.yaml", "grid": {"align.strategy": ["none", "alignahead"], "seed": [0, 1]},
        "output": "results", "plot": {"x": "align.strategy"},
    }))
    return path


def test_sweep_runs_each_cell_once_and_resumes(sweep_file, tmp_path):
    spec = load_sweep(sweep_file)
    calls = []

    def runner(cfg, run_dir):
        calls.append((cfg.align.strategy, cfg.seed))
        return run_inprocess(cfg, run_dir)

    rows = run_sweep(spec, runner)
    assert calls == [("none", 0), ("none", 1), ("alignahead", 0), ("alignahead", 1)]
    assert (tmp_path / "results" / "plot.png").is_file()
    with (tmp_path / "results" / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    # the finished sweep keeps its runs in one archive; a finished cell is not run again, an unfinished one is
    assert (tmp_path / "results" / "runs.tar.xz").is_file() and not (tmp_path / "results" / "runs").exists()
    with tarfile.open(tmp_path / "results" / "runs.tar.xz") as tar:  # logs kept, resume-only state dropped
        names = {Path(n).name for n in tar.getnames()}
    assert {"rounds.jsonl", "summary.json", "config.yaml"} <= names and "server-state.npz" not in names
    unarchive_runs(tmp_path / "results")
    (tmp_path / "results" / "runs" / "align.strategy=alignahead__seed=1" / "summary.json").unlink()
    calls.clear()
    again = run_sweep(spec, runner)
    assert calls == [("alignahead", 1)]
    assert [r["test"] for r in again][:3] == [r["test"] for r in rows][:3]


def test_each_cell_starts_with_no_cached_data_of_the_cells_before(sweep_file):
    from fedalign.data import cache

    cached = []

    def runner(cfg, run_dir):
        cached.append(cache._partition.cache_info().currsize + cache._dataset.cache_info().currsize)
        return run_inprocess(cfg, run_dir)

    run_sweep(load_sweep(sweep_file), runner)
    assert cached == [0, 0, 0, 0]  # every cell before built its own partition, and it was dropped
    assert cache._partition.cache_info().currsize == 1  # the last cell's, until the next sweep cell


def test_table_is_mean_and_sample_std_over_seeds(sweep_file):
    spec = load_sweep(sweep_file)
    rows = [{"align.strategy": "none", "seed": 0, "test": 0.5}, {"align.strategy": "none", "seed": 1, "test": 0.7}]
    (entry,) = aggregate(spec, rows)
    assert entry["mean"] == pytest.approx(0.6) and entry["std"] == pytest.approx(math.sqrt(0.02)) and entry["n"] == 2


def test_bad_cell_fails_before_any_run(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"align.weight": [1.0, -1.0]}, "output": "r"}))
    with pytest.raises(ConfigError, match="align.weight"):
        load_sweep(path)
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"seed": [0]}, "output": "r", "engines": "x"}))
    with pytest.raises(ConfigError, match="engines: unknown sweep key"):
        load_sweep(path)


def test_cells_are_the_cartesian_product(sweep_file):
    assert len(cells(load_sweep(sweep_file))) == 4


@pytest.mark.slow
def test_privacy_sweep_runs_as_flower_simulations(tmp_path, monkeypatch):
    from fedalign_flower.runtime import run_flower_simulation

    monkeypatch.setenv("FEDALIGN_STATE_DIR", str(tmp_path / "state"))
    base = {**BASE, "partition": {"scheme": "iid", "public_fraction": 0.3},
            "privacy": {"mechanism": "gaussian", "target_epsilon": 1.0}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "sweep.yaml"
    path.write_text("base: base.yaml\ngrid:\n  privacy.target_epsilon: [2.0, .inf]\nengine: flower\noutput: results\n"
                    "plot: {x: privacy.target_epsilon}\n")
    spec = load_sweep(path)
    rows = run_sweep(spec, run_flower_simulation)
    assert [r["privacy.target_epsilon"] for r in rows] == [2.0, math.inf]
    # each client's epsilon after all its planned releases is at most the target (and close to it)
    assert rows[0]["epsilon_spent"] == pytest.approx(2.0, rel=0.05) and rows[0]["epsilon_spent"] <= 2.0 + 1e-6
    assert math.isinf(rows[1]["epsilon_spent"])
    assert (tmp_path / "results" / "plot.png").is_file()


def test_zipped_keys_vary_together_and_set_each_config_key(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text("base: base.yaml\ngrid:\n  federation.num_clients,federation.rounds: [[2, 4], [3, 6]]\n"
                    "  seed: [0, 1]\noutput: results\nplot: {x: federation.num_clients}\n")
    spec = load_sweep(path)
    assert spec.group_keys == ["federation.num_clients", "federation.rounds"]
    assert cells(spec) == [
        {"federation.num_clients": 2, "federation.rounds": 4, "seed": 0},
        {"federation.num_clients": 2, "federation.rounds": 4, "seed": 1},
        {"federation.num_clients": 3, "federation.rounds": 6, "seed": 0},
        {"federation.num_clients": 3, "federation.rounds": 6, "seed": 1},
    ]
    seen = []

    def runner(cfg, run_dir):
        seen.append((cfg.federation.num_clients, cfg.federation.rounds, cfg.seed))
        return run_inprocess(cfg, run_dir)

    rows = run_sweep(spec, runner)
    assert seen == [(2, 4, 0), (2, 4, 1), (3, 6, 0), (3, 6, 1)]
    # every student trains rounds / K = 2 times under the alternating schedule
    for row in rows:
        k = row["federation.num_clients"]
        assert [row[f"best_round_client{c}"] is not None for c in range(k)] == [True] * k
    assert (runs_dir(tmp_path / "results") / "federation.num_clients=3__federation.rounds=6__seed=1" / "summary.json").is_file()
    table = aggregate(spec, rows)
    assert [(e["federation.num_clients"], e["federation.rounds"], e["n"]) for e in table] == [(2, 4, 2), (3, 6, 2)]
    assert (tmp_path / "results" / "plot.png").is_file()


@pytest.mark.parametrize("grid, message", [
    ("federation.num_clients,federation.rounds: [[2, 4], [3]]", "zipped keys take lists of 2 values"),
    ("federation.num_clients,federation.rounds: [2, 3]", "zipped keys take lists of 2 values"),
    ("seed,seed: [[0, 1]]", "distinct keys"),
    ("seed: [0]\n  federation.rounds,seed: [[2, 1]]", "appear once"),
])
def test_bad_zipped_keys_fail_naming_the_key(tmp_path, grid, message):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: base.yaml\ngrid:\n  {grid}\noutput: r\n")
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_arms_bundle_overrides_under_a_name(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "later.yaml").write_text(yaml.safe_dump({"tuned": ["align.weight=10", "align.tau=2"]}))
    path = tmp_path / "sweep.yaml"
    body = {"base": "base.yaml", "arms": {"plain": ["align.strategy=none"]}, "arms_file": "later.yaml",
            "grid": {"seed": [0, 1], "arm": ["plain", "tuned"]}, "output": "r"}
    path.write_text(yaml.safe_dump(body))
    spec = load_sweep(path)
    configs = {cell_id(c): cell_config(spec, c) for c in cells(spec)}
    assert sorted(configs) == ["arm=plain__seed=0", "arm=plain__seed=1", "arm=tuned__seed=0", "arm=tuned__seed=1"]
    assert configs["arm=plain__seed=1"].align.strategy == "none" and configs["arm=plain__seed=1"].seed == 1
    tuned = configs["arm=tuned__seed=0"].align
    assert (tuned.strategy, tuned.weight, tuned.tau) == ("alignahead", 10.0, 2.0)
    assert spec.group_keys == ["arm"]
    path.write_text(yaml.safe_dump({**body, "grid": {"arm": ["plain", "missing"]}}))
    with pytest.raises(ConfigError, match="arm: 'missing' is not defined"):
        load_sweep(path)
    (tmp_path / "later.yaml").unlink()
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match="arms_file: .*later.yaml not found"):
        load_sweep(path)


def test_two_workers_give_the_same_results_as_one(sweep_file, tmp_path):
    spec = load_sweep(sweep_file)
    serial = run_sweep(spec, run_inprocess)
    spec.output = tmp_path / "parallel"
    parallel = run_sweep(spec, run_inprocess, workers=2)
    assert [r["test"] for r in parallel] == [r["test"] for r in serial]
    assert [(r["align.strategy"], r["seed"]) for r in parallel] == [(r["align.strategy"], r["seed"]) for r in serial]


def test_a_finished_cell_whose_config_changed_runs_again(sweep_file, tmp_path, capsys):
    spec = load_sweep(sweep_file)
    run_sweep(spec, run_inprocess)
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["model"]["hidden_dim"] = 4  # the experiment changed under finished cells
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    calls = []

    def runner(cfg, run_dir):
        calls.append(cfg.model.hidden_dim)
        return run_inprocess(cfg, run_dir)

    run_sweep(load_sweep(sweep_file), runner)
    assert calls == [4, 4, 4, 4]
    assert "finished with another config (model.hidden_dim: 8 -> 4): running it again" in capsys.readouterr().err


NOISY_BASE = {**BASE, "partition": {"scheme": "iid", "public_fraction": 0.3},
              "federation": {"num_clients": 2, "rounds": 2, "schedule": "simultaneous"},
              "privacy": {"mechanism": "gaussian", "target_epsilon": 2.0}}
NOISY_ARMS = {
    "none": ["align.strategy=none"],
    "logits": ["align.strategy=logits"],
    "alignahead": ["align.strategy=alignahead"],
    "fedavg": ["align.strategy=fedavg", "privacy.mechanism=none", "privacy.target_epsilon=null"],
    "dp-fedavg": ["align.strategy=dp-fedavg", "privacy.mechanism=none"],
    "labels": ["align.strategy=logits", "privacy.mechanism=none", "privacy.target_epsilon=null",
               "privacy.unit=labels", "privacy.label_epsilon=2.0"],
}


def _noisy_sweep(tmp_path, grid, **extra):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(NOISY_BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "arms": NOISY_ARMS, "grid": grid, "output": "results",
                                    "noise_controls": True, **extra}))
    return load_sweep(path)


def test_noise_controls_twin_only_the_cells_that_noise_statistics(tmp_path):
    arms = ["arm,privacy.target_epsilon,privacy.noise_multiplier", "seed"]
    spec = _noisy_sweep(tmp_path, {arms[0]: [
        ["none", 2.0, None], ["fedavg", None, None], ["dp-fedavg", 2.0, None], ["logits", float("inf"), None],
        ["labels", None, None], ["logits", None, 0.0], ["logits", 2.0, None], ["alignahead", None, 5.0]],
        arms[1]: [0]})
    ids = [cell_id(c) for c in cells(spec)]
    twins = [i for i in ids if i.endswith("__noise-control")]
    assert twins == ["arm=logits__privacy.target_epsilon=2.0__privacy.noise_multiplier=None__seed=0__noise-control",
                     "arm=alignahead__privacy.target_epsilon=None__privacy.noise_multiplier=5.0__seed=0__noise-control"]
    assert ids.index(twins[0]) == ids.index(twins[0].removesuffix("__noise-control")) + 1  # right after its cell
    for cell in cells(spec):
        cfg = cell_config(spec, cell)
        assert cfg.privacy.noise_control == cell_id(cell).endswith("__noise-control")
        if cfg.privacy.noise_control:  # the same config as its DP cell but for the flag
            plain = cell_config(spec, {k: v for k, v in cell.items() if k != "privacy.noise_control"})
            assert (cfg.privacy.target_epsilon, cfg.privacy.noise_multiplier, cfg.align.strategy) == \
                (plain.privacy.target_epsilon, plain.privacy.noise_multiplier, plain.align.strategy)
    assert spec.group_keys == ["arm", "privacy.target_epsilon", "privacy.noise_multiplier", "privacy.noise_control"]
    (tmp_path / "sweep.yaml").write_text((tmp_path / "sweep.yaml").read_text().replace("noise_controls: true",
                                                                                       "noise_controls: false"))
    assert not [c for c in cells(load_sweep(tmp_path / "sweep.yaml")) if "privacy.noise_control" in c]


def test_noise_control_twins_run_resume_and_appear_in_results(tmp_path):
    spec = _noisy_sweep(tmp_path, {"arm": ["none", "logits"], "seed": [0]}, purpose="tuning")
    calls = []

    def runner(cfg, run_dir):
        calls.append((cfg.align.strategy, cfg.privacy.noise_control))
        return run_inprocess(cfg, run_dir)

    run_sweep(spec, runner)
    assert calls == [("none", False), ("logits", False), ("logits", True)]
    with (tmp_path / "results" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arm"], r["privacy.noise_control"], r["run"]) for r in rows] == [
        ("none", "False", "arm=none__seed=0"), ("logits", "False", "arm=logits__seed=0"),
        ("logits", "True", "arm=logits__seed=0__noise-control")]
    assert "| logits | True |" in (tmp_path / "results" / "table.md").read_text()
    written = json.loads((tmp_path / "results" / "sweep.json").read_text())
    assert {k: v for k, v in written.items() if k != "provenance"} == \
        {"name": "sweep", "purpose": "tuning", "noise_controls": True}
    assert set(written["provenance"]) >= {"revision", "dirty", "versions", "machine", "command"}
    unarchive_runs(tmp_path / "results")
    (tmp_path / "results" / "runs" / "arm=logits__seed=0__noise-control" / "summary.json").unlink()
    calls.clear()
    run_sweep(load_sweep(tmp_path / "sweep.yaml"), runner)
    assert calls == [("logits", True)]


def test_bad_noise_controls_or_purpose_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="noise_controls: must be true or false"):
        _noisy_sweep(tmp_path, {"seed": [0]}, noise_controls="yes")
    with pytest.raises(ConfigError, match="purpose: must be one of study, tuning"):
        _noisy_sweep(tmp_path, {"seed": [0]}, purpose="final")
