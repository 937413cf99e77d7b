"""What every config section shares: strict types, unknown keys refused, one error type naming the key."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class Section(BaseModel):
    """A config section: unknown keys refused, values type-checked strictly (no ``"1"`` for 1, no 1 for true)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A subsection written with no keys (``privacy:``) reads as null: it means the subsection's defaults."""
        if not isinstance(data, dict):
            return data
        return {
            key: {} if value is None and _is_section(cls.model_fields.get(key)) else value
            for key, value in data.items()
        }


def _is_section(field: Any) -> bool:
    annotation = getattr(field, "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, Section)


def require(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"<key>: <message>"`` unless ``condition`` holds.

    Args:
        condition: what must hold.
        key: the dotted config key at fault.
        message: what is wrong and how to fix it.
    """
    if not condition:
        raise ConfigError(f"{key}: {message}")
