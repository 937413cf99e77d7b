"""Reading YAML files the config trusts: PyYAML's safe loader, with duplicate keys refused.

PyYAML keeps the later of two equal keys of a mapping and says nothing, so a second ``lr:`` under
``train:`` would silently win. :class:`UniqueKeyLoader` refuses the file instead, naming the dotted
key and both lines; experiment files, sweep files and arms files are all read with it
(:func:`read_yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .base import ConfigError


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of the YAML document holds one key twice.

    Args:
        key: the dotted key (``train.lr``; list items as ``[i]``).
        first: 1-based line of its first occurrence.
        again: 1-based line of the repeat.
    """

    def __init__(self, key: str, first: int, again: int):
        super().__init__(
            f"{key}: duplicate key (line {first}, again line {again}): the later value would silently win; keep one"
        )
        self.key, self.first, self.again = key, first, again


def _refuse_duplicates(node: yaml.Node, path: str) -> None:
    """Raise :class:`DuplicateKeyError` for the first key given twice in any mapping under ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` merges on purpose
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            dotted = f"{path}.{key}" if path else str(key)
            if key in seen:
                raise DuplicateKeyError(dotted, seen[key], key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
            _refuse_duplicates(value_node, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path}[{i}]")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document in which a mapping holds a key twice."""

    def construct_document(self, node: yaml.Node) -> Any:
        """Check ``node`` for duplicate keys, then construct it as the safe loader does.

        Args:
            node: the document's composed root node.
        """
        _refuse_duplicates(node, "")
        return super().construct_document(node)


def parse_yaml(text: str) -> Any:
    """``text`` read as one YAML document with :class:`UniqueKeyLoader` (``yaml.safe_load`` otherwise).

    Args:
        text: the YAML document.
    """
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> Any:
    """The YAML file ``path``, duplicate keys refused; problems raise :class:`ConfigError` naming the file.

    Args:
        path: the YAML file (experiment, sweep or arms file).
    """
    path = Path(path)
    try:
        return parse_yaml(path.read_text())
    except DuplicateKeyError as err:
        raise ConfigError(
            f"{err.key}: duplicate key in {path} (line {err.first}, again line {err.again}): the "
            "later value would silently win; keep one"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
