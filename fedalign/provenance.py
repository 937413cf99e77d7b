"""Where a result came from: the code revision, the library versions, the machine and the command line.

:func:`provenance` is what every run folder's ``summary.json``, every sweep's ``sweep.json`` and every
benchmark's ``results.json`` record under the key ``provenance``::

    {"revision": "<40 hex>" | "unknown", "dirty": bool | None, "revision_source": "git" | ...,
     "dirty_paths": [...], "versions": {"python", "torch", "torch_geometric", "flwr", "opacus"},
     "machine": {"cpu_model", "logical_cores", "gpu", "torch_threads"}, "command": "..."}

The revision is ``git rev-parse HEAD`` of the checkout this ``fedalign`` package was imported from
(the folder above it must be the top of a git work tree). Elsewhere -- an installed copy, such as the
app bundle a Flower ServerApp runs from after ``flwr run`` -- it is ``$FEDALIGN_REVISION``
(``<40 hex>`` or ``<40 hex>+dirty``; the ServerApp sets it from its run config key ``revision``, which
``python -m deploy run`` fills in), else ``"unknown"`` with the reason in ``revision_source``.

``dirty``: the work tree differed from the revision *outside* :data:`WRITTEN_FOLDERS`: a tracked file
modified, staged or deleted, or an untracked file that git does not ignore. Runs and benchmarks write
their own files under ``outputs/`` and ``results/`` -- new ones, or committed ones measured again (a
benchmark that reruns some configurations rewrites its committed results) -- and what they write is
not the code that ran; a new or changed source or experiment file elsewhere counts.
``None`` when the revision is unknown. ``dirty_paths``: the first :data:`DIRTY_PATHS_SHOWN` such paths.

``command`` is ``sys.argv`` shell-quoted, with the value of an option that names a token, secret or
password redacted (Flower starts its ServerApp process with ``--token``). The git state, versions, CPU
and GPU are read once per process (the GPU without initialising CUDA, so
a process may still fork); the torch thread count and the command line are read at each call.
This module imports no Flower, and torch only when called.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
REVISION_ENV = "FEDALIGN_REVISION"
PACKAGES = ("torch", "torch_geometric", "flwr", "opacus")
WRITTEN_FOLDERS = ("outputs/", "results/")  # what runs write: changes here do not make the tree dirty
DIRTY_PATHS_SHOWN = 10
DIRTY_SUFFIX = "+dirty"
SECRET_WORDS = ("token", "secret", "password", "passwd")  # an option naming one: its value is not recorded
REDACTED = "<redacted>"


def _git(path: Path, *args: str) -> str:
    """``git -C path ARGS``'s standard output (trailing whitespace stripped: a porcelain line starts with a
    space); raises OSError / SubprocessError on failure.

    Args:
        path: the folder git runs in.
        args: git's arguments."""
    done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=20, check=True)
    return done.stdout.rstrip()


def _porcelain_path(line: str) -> str:
    """The path of one ``git status --porcelain`` line (the new name of a rename).

    Args:
        line: ``XY path`` or ``XY old -> new``."""
    return line[3:].split(" -> ")[-1].strip('"')


def git_state(path: str | Path) -> dict[str, Any]:
    """The git revision of the work tree whose top is ``path``, and whether it was dirty.

    Returns ``{"revision", "dirty", "revision_source", "dirty_paths"}``: revision ``"unknown"`` (dirty
    None, the reason in ``revision_source``) when ``path`` is not the top of a git work tree or git fails.

    Args:
        path: the folder expected to be the top of the work tree (a folder inside another repository
            does not count: an installed copy under a project's ``.venv`` is not that project's code)."""
    path = Path(path).resolve()
    try:
        top = Path(_git(path, "rev-parse", "--show-toplevel")).resolve()
        if top != path:
            return _unknown(f"{path} is not the top of a git work tree")
        revision = _git(path, "rev-parse", "HEAD")
        lines = _git(path, "status", "--porcelain", "--untracked-files=all").splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return _unknown(f"no git checkout at {path} ({type(error).__name__})")
    changed = [_porcelain_path(line) for line in lines if not _porcelain_path(line).startswith(WRITTEN_FOLDERS)]
    return {
        "revision": revision,
        "dirty": bool(changed),
        "revision_source": "git",
        "dirty_paths": changed[:DIRTY_PATHS_SHOWN],
    }


def _unknown(reason: str) -> dict[str, Any]:
    """The git state of code whose revision cannot be read.

    Args:
        reason: why, for ``revision_source``."""
    return {"revision": "unknown", "dirty": None, "revision_source": f"unknown: {reason}", "dirty_paths": []}


def revision_state(path: str | Path = PROJECT_DIR, declared: str | None = None) -> dict[str, Any]:
    """:func:`git_state` of ``path``, else the revision ``declared`` (``<rev>`` or ``<rev>+dirty``), else unknown.

    Args:
        path: the project folder (default: the one this package was imported from).
        declared: a revision handed over by whoever started this process (default ``$FEDALIGN_REVISION``)."""
    state = git_state(path)
    declared = os.environ.get(REVISION_ENV, "") if declared is None else declared
    if state["revision"] != "unknown" or not declared.strip():
        if state["revision"] == "unknown":
            state["revision_source"] += f"; ${REVISION_ENV} not set"
        return state
    declared = declared.strip()
    dirty = declared.endswith(DIRTY_SUFFIX)
    return {
        "revision": declared.removesuffix(DIRTY_SUFFIX),
        "dirty": dirty,
        "revision_source": f"${REVISION_ENV} (set by the process that started this one; {path} has no git checkout)",
        "dirty_paths": [],
    }


def declared_revision(path: str | Path = PROJECT_DIR) -> str:
    """This checkout's revision as :data:`REVISION_ENV` carries it (``<rev>`` or ``<rev>+dirty``); "" if unknown.

    Args:
        path: the project folder."""
    state = revision_state(path)
    if state["revision"] == "unknown":
        return ""
    return state["revision"] + (DIRTY_SUFFIX if state["dirty"] else "")


def versions() -> dict[str, str]:
    """Python's version and each of :data:`PACKAGES`' installed versions (``"not installed"`` if absent)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    """``model name`` of ``/proc/cpuinfo``, else :func:`platform.processor`, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str:
    """The first CUDA device's name, or ``"none"``; CUDA is not initialised to ask (``nvidia-smi`` is)."""
    import torch

    if not torch.cuda.is_available():
        return "none"
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_name(0)
    try:
        names = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        names = []
    return names[0].strip() if names else f"cuda ({torch.cuda.device_count()} device(s), name not read)"


def command_line(argv: list[str]) -> str:
    """``argv`` shell-quoted, the value of every option that names a secret (``--token``, ...) redacted.

    Args:
        argv: the command line (``sys.argv``)."""
    words, hide = [], False
    for word in argv:
        option = word.split("=", 1)[0].lower() if word.startswith("-") else ""
        secret = bool(option) and any(w in option for w in SECRET_WORDS)
        if hide and not option:
            word = REDACTED
        elif secret and "=" in word:
            word = f"{word.split('=', 1)[0]}={REDACTED}"
        hide = secret and "=" not in word
        words.append(word)
    return shlex.join(words) if words else "unknown"


@functools.cache
def _static(path: str, declared: str) -> dict[str, Any]:
    """The parts of :func:`provenance` that do not change within a process (cached).

    Args:
        path: the project folder.
        declared: ``$FEDALIGN_REVISION`` as it is now (part of the cache key)."""
    return {
        **revision_state(path, declared),
        "versions": versions(),
        "machine": {"cpu_model": cpu_model(), "logical_cores": os.cpu_count(), "gpu": gpu_name()},
    }


def provenance() -> dict[str, Any]:
    """Where a result is being made: revision, dirty flag, versions, machine, command line (a new dict).

    Read once per process except ``machine.torch_threads`` and ``command``, read now."""
    import torch

    static = _static(str(PROJECT_DIR), os.environ.get(REVISION_ENV, ""))
    return {
        **static,
        "dirty_paths": list(static["dirty_paths"]),
        "versions": dict(static["versions"]),
        "machine": {**static["machine"], "torch_threads": torch.get_num_threads()},
        "command": command_line(sys.argv),
    }
