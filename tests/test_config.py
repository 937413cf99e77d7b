"""Configs: defaults, YAML files, overrides, and errors that name the key."""

from pathlib import Path

import pytest
import yaml

from fedalign.config import ConfigError, config_from_dict, load_config
from fedalign.sweep import cells, load_sweep

SIMULATIONS = Path(__file__).resolve().parent.parent / "simulations"


@pytest.mark.parametrize("path", sorted(SIMULATIONS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SIMULATIONS)))
def test_every_shipped_experiment_file_is_valid(path):
    raw = yaml.safe_load(path.read_text())
    if all(isinstance(v, list) for v in raw.values()):
        pytest.skip("an arms file: its arms are validated by the sweeps that use them")
    if "grid" in raw:
        assert len(cells(load_sweep(path))) >= 2  # a sweep: every cell's config is validated
    else:
        load_config(path)


def test_defaults_are_the_original_code():
    cfg = config_from_dict({})
    assert cfg.align.strategy == "alignahead" and cfg.align.tau == 100.0 and cfg.align.kernel == "lsp"
    assert cfg.align.representation == "pre-activation" and cfg.align.node_mean == "all" and cfg.align.weight == 1.0
    assert cfg.model.init == "shared" and cfg.model.dropout == 0.0 and cfg.train.weight_decay == 0.0
    assert cfg.federation.schedule == "alternating" and cfg.partition.scheme == "replicate"
    assert cfg.data.name == "synthetic-csbm"


def test_the_old_l1_kernel_name_points_to_its_new_name():
    with pytest.raises(ConfigError, match="'l1' is now called 'l1-softmax'"):
        config_from_dict({"align": {"kernel": "l1"}})
    assert config_from_dict({"align": {"kernel": "l1-softmax"}}).align.kernel == "l1-softmax"


@pytest.mark.parametrize("key,value,words", [
    ("partition.label_rate", 0, "share of labelled training nodes must be in"),
    ("partition.label_rate", 1.5, "share of labelled training nodes must be in"),
    ("align.logit_temperature", 0, "temperature must be > 0"),
    ("align.strategy", "teacher", "must be one of"),
    ("model.init", "random", "must be one of"),
])
def test_new_keys_are_checked(key, value, words):
    with pytest.raises(ConfigError, match=f"{key}: .*{words}"):
        config_from_dict({}, [f"{key}={value}"])


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(SIMULATIONS / "quickstart.yaml", ["federation.rounds=3", "align.strategy=none", "model.hidden_layers=[2, 3]"])
    assert cfg.federation.rounds == 3 and cfg.align.strategy == "none"
    assert cfg.model.for_client(0)["hidden_layers"] == 2 and cfg.model.for_client(1)["hidden_layers"] == 3


@pytest.mark.parametrize("raw,key,words", [
    ({"train": {"lrr": 0.1}}, "train.lrr", "unknown key"),
    ({"trian": {}}, "trian", "unknown key"),
    ({"train": {"lr": "fast"}}, "train.lr", "expected float"),
    ({"federation": {"num_clients": 2.5}}, "federation.num_clients", "expected int"),
    ({"align": {"weight": -1}}, "align.weight", ">= 0"),
    ({"align": {"strategy": "ahead"}}, "align.strategy", "must be one of"),
    ({"federation": {"num_clients": 1}}, "federation.num_clients", "at least 2 clients"),
    ({"model": {"hidden_layers": 1}}, "model.hidden_layers", ">= 2"),
    ({"model": {"hidden_layers": [2, 3, 4]}}, "model.hidden_layers", "needs 2 entries"),
    ({"data": {"name": "imagenet"}}, "data.name", "unknown dataset"),
    ({"data": {"split": [0.8, 0.3, 0.1]}}, "data.split", "summing to at most 1"),
    ({"partition": {"scheme": "iid", "public_fraction": 0.0}}, "partition.public_fraction", "must be > 0"),
    ({"align": {"tau": 0}}, "align.tau", "> 0"),
    ({"model": {"arch": "gat", "hidden_dim": 10, "heads": 4}}, "model.hidden_dim", "divisible by heads"),
    ({"device": "tpu"}, "device", "must be one of"),
])
def test_bad_values_fail_naming_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert str(err.value).startswith(key + ":") and words in str(err.value)


def test_single_student_without_alignment_is_allowed():
    cfg = config_from_dict({"federation": {"num_clients": 1}, "align": {"strategy": "none"}})
    assert cfg.federation.num_clients == 1


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(SIMULATIONS / "quickstart.yaml", ["rounds"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_privacy_is_off_by_default_and_reads_infinite_epsilon_from_yaml():
    cfg = config_from_dict({})
    assert cfg.privacy.mechanism == "none" and not cfg.privacy.dp_sgd.enabled
    cfg = load_config(SIMULATIONS / "quickstart.yaml", ["privacy.mechanism=gaussian", "privacy.target_epsilon=.inf",
                                                        "privacy.clip_scope=layer"])
    assert cfg.privacy.target_epsilon == float("inf") and cfg.privacy.mechanism == "gaussian" and cfg.privacy.clip_scope == "layer"


@pytest.mark.parametrize("raw,key,words", [
    ({"privacy": {"mechanism": "gaussian"}}, "privacy.noise_multiplier", "exactly one of"),
    ({"privacy": {"mechanism": "gaussian", "noise_multiplier": -1}}, "privacy.noise_multiplier", ">= 0"),
    ({"privacy": {"mechanism": "gaussian", "target_epsilon": 1, "delta": 2}}, "privacy.delta", "(0, 1)"),
    ({"privacy": {"dp_sgd": {"sample_rate": 0}}}, "privacy.dp_sgd.sample_rate", "(0, 1]"),
    ({"privacy": {"dp_sgd": {"enabled": True}}}, "privacy.dp_sgd", "multi-graph"),
])
def test_bad_privacy_values_fail_naming_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert str(err.value).startswith(key + ":") and words in str(err.value)
