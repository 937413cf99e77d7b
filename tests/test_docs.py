"""The documentation: the configuration reference lists every key of the schema, and what pages include exists.

The reference is generated at every `mkdocs build` by docs/hooks.py from fedalign/config/sections.py
(docs/gen_config_reference.py); these tests run the generator without MkDocs.
"""

import dataclasses
import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml

from fedalign.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", DOCS / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema(cls=ExperimentConfig, prefix=""):
    """dotted key -> default, for every leaf field of the config the loader uses."""
    found = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        if dataclasses.is_dataclass(default):
            found.update(schema(type(default), f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = default
    return found


def reference_rows() -> dict[str, list[str]]:
    """key -> [type, default, meaning] from the generated Markdown tables."""
    rows = {}
    for line in _generator().render().splitlines():
        match = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if match:
            cells = re.split(r"(?<!\\) \| ", match.group(2))
            assert len(cells) == 3, line
            assert match.group(1) not in rows, f"{match.group(1)} listed twice"
            rows[match.group(1)] = cells
    return rows


def test_the_reference_lists_every_key_of_the_schema_and_nothing_else():
    keys = schema()
    assert len(keys) > 50 and "privacy.dp_sgd.sample_rate" in keys and "seed" in keys
    assert set(reference_rows()) == set(keys)


def test_the_reference_shows_the_schemas_defaults():
    rows = reference_rows()
    for key, default in schema().items():
        cell = rows[key][1]
        assert cell.startswith("`") and cell.endswith("`"), (key, cell)
        shown = yaml.safe_load(cell[1:-1])
        if isinstance(default, float) and isinstance(shown, str):
            shown = float(shown)  # PyYAML reads 1e-05 as a string
        if isinstance(default, float):
            assert math.isclose(shown, default), (key, cell, default)
        else:
            assert shown == default, (key, cell, default)


def test_every_key_has_a_meaning_and_no_fallback_is_stale():
    generator = _generator()
    rows = reference_rows()
    assert not [key for key, (_, _, meaning) in rows.items() if not meaning.strip()]
    assert set(generator.FALLBACK) <= set(rows), set(generator.FALLBACK) - set(rows)


def test_the_comments_of_sections_py_are_the_meanings():
    rows = reference_rows()
    assert rows["align.vote_threshold"][2].startswith("T of strategy votes")  # the comment block above the field
    assert rows["federation.timeout"][2] == "seconds the server waits for a round's replies"  # trailing comment


def test_the_configuration_page_is_generated_at_build_time():
    generator = _generator()
    assert generator.MARKER in (DOCS / "configuration.md").read_text()
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert "docs/hooks.py" in config["hooks"]


def _snippets():
    for page in DOCS.rglob("*.md"):
        for match in re.finditer(r'--8<-- "([^"]+)"', page.read_text()):
            yield page, match.group(1)


@pytest.mark.parametrize("page,path", list(_snippets()), ids=lambda v: str(v))
def test_included_results_files_exist(page, path):
    assert (REPO / path).is_file(), f"{page.relative_to(REPO)} includes {path}, which does not exist"


def test_the_pages_and_files_the_readme_links_to_exist():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|results)/[^)#]+)", readme)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing
