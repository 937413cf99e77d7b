"""Typed, validated experiment configuration: one schema of pydantic models.

An experiment is a YAML file (see ``simulations/``) with the sections of
:mod:`fedalign.config.sections`; every key is optional and has a default, and its
type, default and meaning are stated there once (the documentation's configuration
reference is generated from the models). :func:`load_config` reads the file (a key
given twice is refused), applies ``key.path=value`` overrides and checks it: unknown
keys, wrong types and impossible values raise :class:`ConfigError` with one line
naming the key, before any data is loaded or any model trained.

Model keys may be given per student as a list of length
``federation.num_clients`` (e.g. ``hidden_layers: [2, 4]``).

The ``privacy`` section (:class:`PrivacyConfig`) turns on differential
privacy; see :mod:`fedalign.privacy` for what is protected and how it is
accounted.
"""

from .checks import check_config, check_device
from .parsing import apply_overrides, config_error, config_from_dict, load_config, parse_override
from .sections import (
    DEFAULT_ACTIVATION,
    AlignConfig,
    ConfigError,
    DataConfig,
    DPSGDConfig,
    ExperimentConfig,
    FederationConfig,
    ModelConfig,
    OutputConfig,
    PartitionConfig,
    PrivacyConfig,
    SimulationConfig,
    SyntheticConfig,
    TrainConfig,
)
from .yamlfile import UniqueKeyLoader, parse_yaml, read_yaml

__all__ = [
    "DEFAULT_ACTIVATION",
    "AlignConfig",
    "ConfigError",
    "DataConfig",
    "DPSGDConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "OutputConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "SimulationConfig",
    "SyntheticConfig",
    "TrainConfig",
    "UniqueKeyLoader",
    "apply_overrides",
    "check_config",
    "check_device",
    "config_error",
    "config_from_dict",
    "load_config",
    "parse_override",
    "parse_yaml",
    "read_yaml",
]
