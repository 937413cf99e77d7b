"""The configuration reference, generated from ``fedalign/config/sections.py`` (its one source of truth).

Every key of every section: the dataclass fields (names, types and defaults, read from the module
itself) and their meaning, read from the comments in the source -- the comment block just above a
field and the trailing ``# ...`` comment on its line -- with each section's docstring as its
introduction. Where a field has no comment, a short fallback meaning from :data:`FALLBACK` is shown
(a comment added to ``sections.py`` replaces it).

The documentation build runs :func:`render` through ``docs/hooks.py`` (the page ``configuration.md``
holds the marker :data:`MARKER`); ``python docs/gen_config_reference.py`` prints the same Markdown.
Only the standard library is needed: ``sections.py`` is loaded by path, without importing fedalign.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import io
import re
import sys
import tokenize
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ROOT / "fedalign" / "config" / "sections.py"
MARKER = "<!-- config-reference -->"
ROOT_CLASS = "ExperimentConfig"

# Meanings of fields that have no comment in sections.py (a comment there takes precedence).
FALLBACK = {
    "name": "the experiment's name: run folders are `<output.dir>/<name>-<UTC time>/`",
    "seed": "the experiment seed: split, partition, initialisation and query set are drawn from it "
            "(privacy noise is not, unless `privacy.reproducible_noise`)",
    "device": "where students train: `auto` (CUDA when available, else CPU; under Flower the GPU Ray assigns), "
              "`cpu`, `cuda` (fails clearly without a GPU)",
    "data.name": "the dataset (see Datasets on the running page)",
    "partition.scheme": "who holds what: `replicate` (the paper: every client the whole training set), `iid`, "
                        "`dirichlet` (label skew `alpha`), `community` (Louvain), `graphs` (multi-graph data)",
    "federation.num_clients": "K, the number of clients (students)",
    "federation.rounds": "training rounds after round 0 (which collects every client's initial release)",
    "federation.schedule": "`alternating` (the paper's: one trainer per round, client (r−1) mod K) or "
                           "`simultaneous` (every client trains every round)",
    "model.arch": "the student network: GCN, GAT or GraphSAGE",
    "model.hidden_layers": "L, the number of hidden (aligned) layers, ≥ 2",
    "model.hidden_dim": "width of every hidden layer (per head for GAT)",
    "model.heads": "attention heads (GAT only)",
    "model.activation": "the hidden layers' activation",
    "align.kernel": "structure kernel: `lsp` (the original's softmax of exp(−d/τ)); the others a softmax of a "
                    "similarity / τ (`l1-softmax`: −‖h_u − h_v‖₁, `l2sq`: −‖h_u − h_v‖₂², `cosine`)",
    "align.representation": "align each layer's output before (`pre-activation`, the original) or after its activation",
    "train.lr": "Adam's learning rate",
    "train.weight_decay": "Adam's weight decay",
    "privacy.label_epsilon": "ε per training label of randomised response (`unit: labels`)",
    "privacy.mechanism": "`gaussian`: clip and noise every release of statistics; `none`: exact releases",
    "privacy.clip_scope": "clip the whole release to C (`release`) or each layer to C (`layer`)",
    "privacy.delta": "δ of the reported (ε, δ)",
    "privacy.dp_sgd.enabled": "train with per-graph DP-SGD (multi-graph data, partition scheme `graphs`)",
    "simulation.cpus_per_client": "CPUs Ray reserves for each virtual client",
    "simulation.gpus_per_client": "GPUs Ray reserves for each virtual client (a fraction shares a GPU)",
    "simulation.ray_address": "attach to this running Ray cluster instead of starting a local Ray",
}


def load_sections(path: Path = SECTIONS) -> types.ModuleType:
    """``sections.py`` as a module of its own (it imports only the standard library)."""
    name = "_fedalign_config_sections_for_docs"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses looks the module up while it builds the classes
    spec.loader.exec_module(module)
    return module


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of the ``#`` comment on that line (standalone or trailing)."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment block above the field joined with its trailing comment."""
    comments = _comments(source)
    lines = source.splitlines()
    result = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, line = [], stmt.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            trailing = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1)
                        if n in comments and not lines[n - 1].strip().startswith("#")]
            text = " ".join(part for part in above + trailing if part)
            if text:
                result[(node.name, stmt.target.id)] = text
    return result


def _rst_to_markdown(text: str) -> str:
    """Docstring markup to Markdown: ``x`` and :role:`x` become `x`."""
    text = re.sub(r":(?:mod|func|class|data|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _type_text(annotation: str) -> str:
    """A readable type from an annotation string (``Literal``/``Union``/``list``/``| None``)."""
    def show(node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return "null" if node.value is None else f"`{node.value}`" if isinstance(node.value, str) else repr(node.value)
        if isinstance(node, ast.Name):
            return {"NoneType": "null", "None": "null"}.get(node.id, node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return f"{show(node.left)} or {show(node.right)}"
        if isinstance(node, ast.Subscript):
            head = ast.unparse(node.value)
            args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if head.endswith("Literal"):
                return " / ".join(show(a) for a in args)
            if head.endswith("Union") or head.endswith("Optional"):
                parts = [show(a) for a in args] + (["null"] if head.endswith("Optional") else [])
                if len(parts) == 2 and parts[1] == f"list of {parts[0]}":
                    return f"{parts[0]}, or a per-client list"
                return " or ".join(parts)
            if head == "list":
                return f"list of {show(args[0])}"
            if head == "dict":
                return "mapping"
        return ast.unparse(node)
    return show(ast.parse(annotation, mode="eval").body)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return f"`{yaml_value(value)}`"


def yaml_value(value: object) -> str:
    """A default as it would be written in an experiment file."""
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


def sections(module: types.ModuleType | None = None) -> list[tuple[str, type, list[dataclasses.Field]]]:
    """(key prefix, dataclass, its scalar fields) for the top level and every nested section, in order."""
    module = module or load_sections()
    out = []

    def walk(prefix: str, cls: type) -> None:
        scalars, nested = [], []
        for f in dataclasses.fields(cls):
            factory = f.default_factory
            if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
                nested.append((f"{prefix}{f.name}.", factory))
            else:
                scalars.append(f)
        out.append((prefix, cls, scalars))
        for sub_prefix, sub in nested:
            walk(sub_prefix, sub)

    walk("", getattr(module, ROOT_CLASS))
    return out


def schema_keys(module: types.ModuleType | None = None) -> list[str]:
    """Every dotted key of the schema (``seed``, ``align.strategy``, ``privacy.dp_sgd.enabled``, ...)."""
    return [prefix + f.name for prefix, _, fields in sections(module) for f in fields]


def render(module: types.ModuleType | None = None, source: str | None = None) -> str:
    """The reference as Markdown: one table (key, type, default, meaning) per section."""
    module = module or load_sections()
    source = source if source is not None else SECTIONS.read_text()
    comments = field_comments(source)
    parts = [
        "_Generated from `fedalign/config/sections.py` by `docs/gen_config_reference.py` at every build; "
        "edit the comments there, not this table._",
        "",
    ]
    for prefix, cls, fields in sections(module):
        title = prefix.rstrip(".") or "top level"
        parts += [f"### `{title}`" if prefix else "### Top level", ""]
        doc = cls.__doc__ or ""
        if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses write a signature when there is none
            parts += [_rst_to_markdown(inspect.cleandoc(doc)), ""]
        parts += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for f in fields:
            key = prefix + f.name
            annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            meaning = comments.get((cls.__name__, f.name)) or FALLBACK.get(key, "")
            parts.append(f"| `{key}` | {_cell(_type_text(annotation))} | {_cell(_default_text(f))} | "
                         f"{_cell(_rst_to_markdown(meaning))} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
