"""The configuration reference, generated from the schema in ``fedalign/config/`` (its one source of truth).

Every key of every section: the pydantic models of :mod:`fedalign.config.sections` (names, types and
defaults, read from the models themselves) and their meaning (each field's ``description``), with each
section's docstring as its introduction. Nested models are sections of their own (``privacy.dp_sgd``,
``data.synthetic``).

The documentation build runs :func:`render` through ``docs/hooks.py`` (the page ``configuration.md``
holds the marker :data:`MARKER`); ``python docs/gen_config_reference.py`` prints the same Markdown.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- config-reference -->"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from fedalign.config.sections import ExperimentConfig  # noqa: E402


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections(root: type[BaseModel] = ExperimentConfig) -> list[tuple[str, type[BaseModel], list[str]]]:
    """(key prefix, model, the names of its leaf fields) for the top level and every nested section, in order.

    Args:
        root: the model of the top level.
    """
    out = []

    def walk(prefix: str, cls: type[BaseModel]) -> None:
        leaves = [name for name, f in cls.model_fields.items() if not _is_section(f.annotation)]
        out.append((prefix, cls, leaves))
        for name, f in cls.model_fields.items():
            if _is_section(f.annotation):
                walk(f"{prefix}{name}.", f.annotation)

    walk("", root)
    return out


def schema_keys(root: type[BaseModel] = ExperimentConfig) -> list[str]:
    """Every dotted leaf key of the schema (``seed``, ``align.strategy``, ``privacy.dp_sgd.enabled``, ...).

    Args:
        root: the model of the top level.
    """
    return [prefix + name for prefix, _, leaves in sections(root) for name in leaves]


def _rst_to_markdown(text: str) -> str:
    """Docstring markup to Markdown: ``x`` and :role:`x` become `x`."""
    text = re.sub(r":(?:mod|func|class|data|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def type_text(tp: Any) -> str:
    """A readable type of an annotation (``Literal`` values, ``Union``, ``list``, ``None``).

    Args:
        tp: the annotation.
    """
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in typing.get_args(tp)]
        if parts[:2] == ["int", "float"]:
            parts[:2] = ["number"]
        if len(parts) >= 2 and parts[1] == f"list of {parts[0]}":
            parts[:2] = [f"{parts[0]}, or a per-client list"]
        return " or ".join(parts)
    if origin is list:
        return f"list of {type_text(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: object) -> str:
    """A default as it would be written in an experiment file.

    Args:
        value: the default.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(root: type[BaseModel] = ExperimentConfig) -> str:
    """The reference as Markdown: one table (key, type, default, meaning) per section.

    Args:
        root: the model of the top level.
    """
    parts = [
        "_Generated from the schema (the pydantic models of `fedalign/config/sections.py`, "
        "`privacy_sections.py` and `synthetic.py`) by `docs/gen_config_reference.py` at every build; edit the "
        "models' descriptions there, not this table._",
        "",
    ]
    for prefix, cls, leaves in sections(root):
        parts += [f"### `{prefix.rstrip('.')}`" if prefix else "### Top level", ""]
        if cls.__doc__:
            parts += [_rst_to_markdown(inspect.cleandoc(cls.__doc__)), ""]
        parts += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name in leaves:
            f = cls.model_fields[name]
            default = f.get_default(call_default_factory=True)
            parts.append(f"| `{prefix}{name}` | {_cell(type_text(f.annotation))} | `{_cell(yaml_value(default))}` | "
                         f"{_cell(_rst_to_markdown(f.description or ''))} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
