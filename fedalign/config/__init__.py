"""Typed, validated experiment configuration.

An experiment is a YAML file (see ``simulations/``) with the sections below;
every key is optional and has a default. :func:`load_config` reads it with
pyyaml, applies ``key.path=value`` overrides, and checks it: unknown keys,
wrong types and impossible values raise :class:`ConfigError` naming the key,
before any data is loaded or any model trained.

Model keys may be given per student as a list of length
``federation.num_clients`` (e.g. ``hidden_layers: [2, 4]``).

The ``privacy`` section (:class:`PrivacyConfig`) turns on differential
privacy; see :mod:`fedalign.privacy` for what is protected and how it is
accounted.
"""

from .checks import check_config
from .parsing import apply_overrides, config_from_dict, load_config, parse_override
from .sections import (
    AlignConfig, ConfigError, DataConfig, DPSGDConfig, ExperimentConfig, FederationConfig, ModelConfig, OutputConfig,
    PartitionConfig, PrivacyConfig, SimulationConfig, TrainConfig,
)

__all__ = [
    "AlignConfig", "ConfigError", "DataConfig", "DPSGDConfig", "ExperimentConfig", "FederationConfig", "ModelConfig",
    "OutputConfig", "PartitionConfig", "PrivacyConfig", "SimulationConfig", "TrainConfig", "apply_overrides", "check_config",
    "config_from_dict", "load_config", "parse_override",
]
