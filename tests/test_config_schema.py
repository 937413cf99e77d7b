"""The config schema at the command line: a duplicate key, a typo under data.synthetic and device: cuda without a
GPU are each refused by `fedalign check` and `fedalign run` with one line naming the key, and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedalign.config import ConfigError, config_from_dict, load_config, parse_yaml
from fedalign.sweep import load_sweep
from fedalign_flower.cli import main

PROJECT_DIR = Path(__file__).resolve().parent.parent
QUICKSTART = PROJECT_DIR / "simulations" / "quickstart.yaml"
FEDALIGN = str(Path(sys.executable).parent / "fedalign")


@pytest.fixture
def duplicate(tmp_path) -> Path:
    path = tmp_path / "duplicate.yaml"
    path.write_text("name: dup\ntrain:\n  lr: 0.01\n  local_epochs: 1\n  lr: 0.1\n")
    return path


@pytest.fixture
def typo(tmp_path) -> Path:
    path = tmp_path / "typo.yaml"
    path.write_text("data:\n  name: synthetic-csbm\n  synthetic: {num_nodse: 300}\n")
    return path


def _one_line(capsys, argv: list[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, (status, err)
    return err.strip()


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_duplicate_key_is_refused_naming_it_and_its_lines(capsys, duplicate, command):
    line = _one_line(capsys, [command, str(duplicate)])
    assert line == (f"fedalign: config error: train.lr: duplicate key in {duplicate} (line 3, again line 5): the "
                    "later value would silently win; keep one")


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_typo_under_data_synthetic_is_refused_naming_it(capsys, typo, command):
    line = _one_line(capsys, [command, str(typo)])
    assert line.startswith("fedalign: config error: data.synthetic.num_nodse: unknown key (valid keys here: num_nodes,")


@pytest.mark.parametrize("command", ["check", "run"])
def test_device_cuda_without_a_gpu_is_refused(capsys, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _one_line(capsys, [command, str(QUICKSTART), "--set", "device=cuda"])
    assert line.startswith("fedalign: config error: device: 'cuda', but torch finds no CUDA GPU on this machine")


@pytest.mark.parametrize("command", ["check", "run"])
def test_set_overrides_are_typed(capsys, command):
    line = _one_line(capsys, [command, str(QUICKSTART), "--set", "train.lr=abc"])
    assert line == "fedalign: config error: train.lr: expected float, got 'abc'"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_three_errors_end_the_real_command_line_at_once(duplicate, typo):
    """Subprocesses of the installed `fedalign`: one line on stderr, exit 2, no traceback (this machine has no GPU)."""
    env = {k: v for k, v in os.environ.items() if k != "FEDALIGN_DATA_ROOT"}
    for args, key in (([str(duplicate)], "train.lr"), ([str(typo)], "data.synthetic.num_nodse"),
                      ([str(QUICKSTART), "--set", "device=cuda"], "device")):
        for command in ("check", "run"):
            engine = ["--engine", "inprocess"] if command == "run" else []
            proc = subprocess.run([FEDALIGN, command, *args, *engine], cwd=PROJECT_DIR, env=env, capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (command, key, proc.stderr)
            assert proc.stderr.startswith(f"fedalign: config error: {key}: ") and not proc.stdout, proc.stderr


def test_duplicate_keys_are_refused_in_sweep_files_and_anywhere_in_a_document(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {QUICKSTART}\ngrid:\n  seed: [0, 1]\ngrid:\n  seed: [2]\n")
    with pytest.raises(ConfigError, match=r"^grid: duplicate key in .*\(line 2, again line 4\)"):
        load_sweep(sweep)
    with pytest.raises(Exception, match=r"^a\[1\]\.b: duplicate key \(line 3, again line 3\)"):
        parse_yaml("a:\n  - {b: 1}\n  - {b: 1, b: 2}\n")
    assert parse_yaml("base: &x {a: 1}\nmore:\n  <<: *x\n  b: 2\n") == {"base": {"a": 1}, "more": {"a": 1, "b": 2}}


@pytest.mark.parametrize("raw,key,words", [
    ({"data": {"synthetic": {"num_nodes": "many"}}}, "data.synthetic.num_nodes", "expected int or null"),
    ({"data": {"name": "synthetic-ppi", "synthetic": {"signal": 2}}}, "data.synthetic.signal",
     "not an option of the synthetic-ppi generator"),
    ({"data": {"synthetic": 5}}, "data.synthetic", "expected a mapping of keys"),
    ({"model": {"activation": "tanh"}}, "model.activation", "expected 'elu' | 'relu'"),
    ({"output": {"plot": "yes"}}, "output.plot", "expected bool"),
    ({"seed": 1.5}, "seed", "expected int"),
])
def test_the_schema_refuses_wrong_values_naming_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert str(err.value).startswith(f"{key}: ") and words in str(err.value) and "\n" not in str(err.value)


def test_synthetic_options_are_typed_and_recorded_as_given():
    cfg = config_from_dict({"data": {"synthetic": {"num_nodes": 150, "avg_degree": 8}}})
    assert cfg.data.synthetic.num_nodes == 150 and cfg.data.synthetic.signal is None
    assert cfg.to_dict()["data"]["synthetic"] == {"num_nodes": 150, "avg_degree": 8}  # 8 stays 8, no nulls
    assert config_from_dict(cfg.to_dict()) == cfg
    assert not config_from_dict({}).data.synthetic
    assert config_from_dict({"data": {"synthetic": None}}).data.synthetic.options() == {}


def test_the_activation_follows_the_architecture_unless_given():
    assert config_from_dict({}).model.activation == "relu"  # GCN students: ReLU, as the original code
    assert config_from_dict({"model": {"arch": "gat"}}).model.activation == "elu"  # GAT students: ELU
    assert config_from_dict({"model": {"arch": "gat", "activation": "relu"}}).model.activation == "relu"
    mixed = config_from_dict({"model": {"arch": ["gcn", "gat"]}})
    assert mixed.model.activation == ["relu", "elu"] and mixed.model.for_client(1)["activation"] == "elu"
    saved = config_from_dict({}).to_dict()
    assert saved["model"]["activation"] == "relu" and config_from_dict(saved) == config_from_dict({})


def test_the_privacy_study_keeps_the_activation_its_committed_runs_used():
    cfg = load_config(PROJECT_DIR / "simulations" / "privacy-study" / "base.yaml")
    assert cfg.model.arch == "gcn" and cfg.model.activation == "elu"
