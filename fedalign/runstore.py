"""Where a sweep keeps its run folders: ``runs/`` while it runs, one compressed archive once it is finished.

A finished sweep's per-run logs (hundreds of ``rounds.jsonl`` files) are packed into
``runs.tar.xz`` beside its ``results.csv``, ``table.md`` and plots; :func:`runs_dir` gives
readers a folder of runs either way (an archive is unpacked once into a cache folder), and
a sweep that runs again unpacks its archive first (:func:`unarchive_runs`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

RUNS, ARCHIVE = "runs", "runs.tar.xz"


def finished_summary(run_dir: Path) -> dict | None:
    """The run's ``summary.json`` if it says ``finished``, else None."""
    path = Path(run_dir) / "summary.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("status") == "finished":
            return data
    return None


def runs_dir(output: Path) -> Path:
    """The folder holding a sweep's run folders: ``output/runs``, or a read-only unpacked copy of its archive."""
    live, archive = Path(output) / RUNS, Path(output) / ARCHIVE
    if live.is_dir() or not archive.is_file():
        return live
    stamp = f"{archive.resolve()}:{archive.stat().st_mtime_ns}:{archive.stat().st_size}"
    cache = Path(tempfile.gettempdir()) / "fedalign-runs" / hashlib.sha1(stamp.encode()).hexdigest()[:16]
    if not (cache / ".unpacked").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
        (cache / ".unpacked").touch()
    return cache / RUNS


# Not archived: a finished cell's saved server state (its statistics cache, megabytes per run) and
# its students' checkpoints only serve to resume or extend that run, which a finished sweep cell never is.
NOT_ARCHIVED = ("server-state.npz", "client-state")


def archive_runs(output: Path) -> Path:
    """Pack ``output/runs`` into ``output/runs.tar.xz`` (written atomically; without :data:`NOT_ARCHIVED`
    files), then remove the folder."""
    output = Path(output)
    target, tmp = output / ARCHIVE, output / f".{ARCHIVE}.tmp"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in NOT_ARCHIVED else info

    with tarfile.open(tmp, "w:xz") as tar:
        tar.add(output / RUNS, arcname=RUNS, filter=keep)
    tmp.replace(target)
    shutil.rmtree(output / RUNS)
    return target


def unarchive_runs(output: Path) -> None:
    """Unpack ``output/runs.tar.xz`` back into ``output/runs`` (to add runs to a finished sweep)."""
    output = Path(output)
    archive = output / ARCHIVE
    if archive.is_file() and not (output / RUNS).is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(output, filter="data")
        archive.unlink()
