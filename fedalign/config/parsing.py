"""Reading configs: YAML and ``key.path=value`` overrides into the checked, typed schema."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError

from .checks import check_config
from .sections import ConfigError, ExperimentConfig
from .yamlfile import read_yaml


def type_text(tp: Any) -> str:
    """A readable type of an annotation: ``float``, ``'elu' | 'relu'``, ``int, or a per-client list of int``.

    Args:
        tp: the annotation (``Literal``, ``Union``, ``list[...]``, a class).
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in typing.get_args(tp) if a is not type(None)]
        if parts[:2] == ["int", "float"]:
            parts[:2] = ["number"]
        if len(parts) >= 2 and parts[1] == f"list of {parts[0]}":
            parts[:2] = [f"{parts[0]}, or a per-client list of them"]
        return " or ".join(parts) + (" or null" if type(None) in typing.get_args(tp) else "")
    if origin is list:
        return f"list of {type_text(typing.get_args(tp)[0])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping of keys"
    return getattr(tp, "__name__", str(tp))


def _locate(loc: tuple) -> tuple[str, type[BaseModel], Any]:
    """A pydantic error location -> (dotted key, the section holding it, the key's annotation; None if unknown).

    The key is the field at fault: union members (``'int'``, ``'list[int]'``) and list indices after it are
    dropped, so a message shows the whole value of the key.
    """
    cls: type[BaseModel] = ExperimentConfig
    parts: list[str] = []
    annotation: Any = None
    for i, part in enumerate(loc):
        if not isinstance(part, str):
            break
        parts.append(part)
        field = cls.model_fields.get(part)
        if field is None:
            return ".".join(parts), cls, None
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or i == len(loc) - 1:
            break
        cls = annotation
    return ".".join(parts), cls, annotation


def _message(error: Any, cls: type[BaseModel], annotation: Any) -> str:
    """One error of pydantic in fedalign's words (after ``key:``)."""
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"unknown key (valid keys here: {', '.join(cls.model_fields)})"
    if error["type"] == "value_error" or annotation is None:
        return str(error.get("msg", "")).removeprefix("Value error, ")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"expected a mapping of keys, got {value!r}"
    if typing.get_origin(annotation) is Literal:
        return f"must be one of {type_text(annotation)}, got {value!r}"
    return f"expected {type_text(annotation)}, got {value!r}"


def config_error(err: ValidationError) -> ConfigError:
    """A pydantic ``ValidationError`` as one :class:`ConfigError` line, starting with the first key at fault.

    Args:
        err: the error of validating an experiment config.
    """
    keys: dict[str, str] = {}
    for error in err.errors():
        key, cls, annotation = _locate(tuple(error["loc"]))
        keys.setdefault(key or "config", _message(error, cls, annotation))
    (first, message), *more = keys.items()
    also = f" (also wrong: {', '.join(k for k, _ in more)})" if more else ""
    return ConfigError(f"{first}: {message}{also}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is read as YAML.

    Args:
        text: one override, ``key.path=value``.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value, e.g. federation.rounds=10")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{key.strip()}: --set value {value!r} is not valid YAML ({' '.join(str(err).split())})"
        ) from None


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
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections and keys, got {raw!r}")
    raw = apply_overrides(raw or {}, overrides or [])
    align = raw.get("align")
    if isinstance(align, dict) and align.get("kernel") == "l1":
        raise ConfigError(
            "align.kernel: 'l1' is now called 'l1-softmax' (softmax of -||h_u - h_v||_1 / tau); the "
            "default 'lsp' is the original Alignahead's softmax of exp(-||h_u - h_v||_1 / tau)"
        )
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise config_error(err) from None
    return check_config(cfg)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply ``key.path=value`` overrides, check the values.

    Args:
        path: the YAML experiment file (a key given twice in it is refused).
        overrides: ``key.path=value`` strings, or None.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (experiment files live in simulations/)")
    return config_from_dict(read_yaml(path) or {}, overrides)
