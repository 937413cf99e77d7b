"""Reading configs: YAML and ``key.path=value`` overrides into checked dataclasses."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .checks import check_config
from .sections import ConfigError, ExperimentConfig


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp``; raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (valid keys here: {', '.join(names)})")
    kwargs = {
        name: _coerce(raw[name], hints[name], f"{prefix}.{name}" if prefix else name)
        for name in names
        if name in raw
    }
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is read as YAML.

    Args:
        text: one override, ``key.path=value``.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value, e.g. federation.rounds=10")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key.path=value`` set (missing sections are created).

    Args:
        raw: the config as plain data (not modified).
        overrides: ``key.path=value`` strings, each value read as YAML.
    """
    result = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Build and check a config from plain data (e.g. a parsed YAML file).

    Args:
        raw: the config as plain data, sections as nested dicts (None or empty: all defaults).
        overrides: ``key.path=value`` strings applied first, or None.
    """
    raw = apply_overrides(raw or {}, overrides or [])
    align = raw.get("align")
    if isinstance(align, dict) and align.get("kernel") == "l1":
        raise ConfigError("align.kernel: 'l1' is now called 'l1-softmax' (softmax of -||h_u - h_v||_1 / tau); the "
                          "default 'lsp' is the original Alignahead's softmax of exp(-||h_u - h_v||_1 / tau)")
    return check_config(_build(ExperimentConfig, raw, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply ``key.path=value`` overrides, check the values.

    Args:
        path: the YAML experiment file.
        overrides: ``key.path=value`` strings, or None.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (experiment files live in simulations/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return config_from_dict(raw, overrides)
