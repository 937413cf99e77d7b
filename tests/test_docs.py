"""The documentation: the configuration reference lists every key of the schema, and what pages include exists.

The reference is generated at every `mkdocs build` by docs/hooks.py from the config schema (the pydantic models
of fedalign/config/, docs/gen_config_reference.py); these tests run the generator without MkDocs and walk the
models themselves for the keys it must list.
"""

import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

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
    for name, f in cls.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            found.update(schema(f.annotation, f"{prefix}{name}."))
        else:
            found[prefix + name] = f.get_default(call_default_factory=True)
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
    assert "data.synthetic.num_nodes" in keys and "data.synthetic.num_communities" in keys
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


def test_every_key_has_a_meaning():
    rows = reference_rows()
    assert not [key for key, (_, _, meaning) in rows.items() if not meaning.strip()]


def test_the_descriptions_of_the_models_are_the_meanings():
    rows = reference_rows()
    assert rows["align.vote_threshold"][2].startswith("T of strategy votes")
    assert rows["federation.timeout"][2] == "seconds the server waits for a round's replies"
    activation = rows["model.activation"]
    assert activation[1] == "`null`" and "`relu` for `gcn`, `elu` for `gat`" in activation[2]


def test_the_synthetic_options_are_the_generators_with_their_defaults():
    from fedalign.config.synthetic import GENERATOR_OPTIONS, SyntheticConfig
    from fedalign.data.synthetic import CSBM_DEFAULTS, PPI_LIKE_DEFAULTS

    generators = {"synthetic-csbm": CSBM_DEFAULTS, "synthetic-ppi": PPI_LIKE_DEFAULTS}
    assert {k: set(v) for k, v in GENERATOR_OPTIONS.items()} == {k: set(v) for k, v in generators.items()}
    assert set(SyntheticConfig.model_fields) == set(CSBM_DEFAULTS) | set(PPI_LIKE_DEFAULTS)
    for name, defaults in generators.items():
        for option, default in defaults.items():  # each meaning states the generator's default
            assert f"{name}: default {default}" in SyntheticConfig.model_fields[option].description or \
                f"{name}; default {default}" in SyntheticConfig.model_fields[option].description, (name, option)


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
