"""MkDocs hooks of fedalign's documentation (listed under ``hooks:`` in ``mkdocs.yml``).

* The configuration reference is generated from the config schema (the pydantic models of
  ``fedalign/config/``) at every build (``docs/gen_config_reference.py``): the page holding the marker
  gets the tables in its place.
* The figures under ``results/`` are served at the same paths (``results/...png``), so pages can show
  them, and a results file included whole by a snippet keeps its relative image links working when the
  including page sits at the file's folder (``docs/results/reproduction/index.md``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _generator():
    path = Path(__file__).with_name("gen_config_reference.py")
    spec = importlib.util.spec_from_file_location("gen_config_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config) -> Files:
    for image in sorted(RESULTS.rglob("*.png")):
        uri = image.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(image)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    generator = _generator()
    if generator.MARKER in markdown:
        markdown = markdown.replace(generator.MARKER, generator.render())
    return markdown
