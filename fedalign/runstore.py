"""Where a sweep keeps its run folders: ``runs/`` while it runs, one compressed archive once it is finished.

A finished sweep's per-run logs (hundreds of ``rounds.jsonl`` files) are packed into
``runs.tar.xz`` beside its ``results.csv``, ``table.md`` and plots; :func:`runs_dir` gives
readers a folder of runs either way (an archive is unpacked once into a cache folder), and
a sweep that runs again unpacks its archive first (:func:`unarchive_runs`).

Unpacking is safe on every Python the project admits (:func:`extract`): each member is checked
by hand (no absolute path, no ``..``, no link pointing outside, no device or other special file),
then extracted with tarfile's ``data`` filter where there is one (Python >= 3.11.4) or one member
at a time with the same checks and sanitised attributes where there is not (Debian 12's 3.11.2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

RUNS, ARCHIVE = "runs", "runs.tar.xz"


def finished_summary(run_dir: Path) -> dict | None:
    """The run's ``summary.json`` if it says ``finished``, else None.

    Args:
        run_dir: the run folder.
    """
    path = Path(run_dir) / "summary.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("status") == "finished":
            return data
    return None


def runs_dir(output: Path) -> Path:
    """The folder holding a sweep's run folders: ``output/runs``, or a read-only unpacked copy of its archive.

    Args:
        output: the sweep's output folder.
    """
    live, archive = Path(output) / RUNS, Path(output) / ARCHIVE
    if live.is_dir() or not archive.is_file():
        return live
    stamp = f"{archive.resolve()}:{archive.stat().st_mtime_ns}:{archive.stat().st_size}"
    cache = Path(tempfile.gettempdir()) / "fedalign-runs" / hashlib.sha1(stamp.encode()).hexdigest()[:16]
    if not (cache / ".unpacked").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        extract(archive, cache)
        (cache / ".unpacked").touch()
    return cache / RUNS


# Not archived: a finished cell's saved server state (its statistics cache, megabytes per run) and
# its students' checkpoints only serve to resume or extend that run, which a finished sweep cell never is.
NOT_ARCHIVED = ("server-state.npz", "client-state")


def archive_runs(output: Path) -> Path:
    """Pack ``output/runs`` into ``output/runs.tar.xz`` (written atomically; without :data:`NOT_ARCHIVED`
    files), then remove the folder.

    Args:
        output: the sweep's output folder.

    Returns:
        the archive's path.
    """
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
    """Unpack ``output/runs.tar.xz`` back into ``output/runs`` (to add runs to a finished sweep).

    Args:
        output: the sweep's output folder.
    """
    output = Path(output)
    archive = output / ARCHIVE
    if archive.is_file() and not (output / RUNS).is_dir():
        extract(archive, output)
        archive.unlink()


class UnsafeArchive(ValueError):
    """An archive member that would land outside the folder it is unpacked into, or is no file, folder or link."""


# tarfile's extraction filters (PEP 706) came with Python 3.11.4 and 3.12; Debian 12's 3.11.2 has none.
HAS_FILTERS = hasattr(tarfile, "data_filter")


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def check_member(member: tarfile.TarInfo, dest: Path, archive: Path | str = "archive") -> None:
    """Raise :class:`UnsafeArchive` unless ``member`` is a file, folder, symbolic or hard link whose
    name is relative without ``..`` and which, like its link target, stays inside ``dest`` (following
    the links already on disk).

    Args:
        member: the archive member.
        dest: the folder the archive is unpacked into.
        archive: the archive's name, for the message.
    """
    name, root = member.name, os.path.realpath(dest)

    def refuse(why: str) -> None:
        raise UnsafeArchive(f"{archive}: refusing member {name!r}: {why}")

    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        refuse("not a file, folder or link (a device, FIFO or other special file)")
    if name.startswith("/") or os.path.isabs(name) or ".." in PurePosixPath(name).parts:
        refuse("an absolute path or one with '..'")
    parent = os.path.realpath(os.path.join(root, os.path.dirname(name)))
    if not _inside(os.path.join(parent, os.path.basename(name)), root):
        refuse(f"it would land outside {dest}")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link) or (member.islnk() and ".." in PurePosixPath(link).parts):
            refuse(f"a link to {link!r}")
        if not _inside(os.path.realpath(os.path.join(parent if member.issym() else root, link)), root):
            refuse(f"a link to {link!r}, outside {dest}")


def _sanitised(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the ``data`` filter keeps: no owner (nothing is chowned), no set-id, sticky, group- or
    other-write bits, files readable and writable by their owner, folders usable by it."""
    safe = copy.copy(member)
    safe.uid = safe.gid = -1
    safe.uname = safe.gname = ""
    mode = member.mode & 0o755
    if member.isreg() or member.islnk():
        safe.mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    elif member.isdir():
        safe.mode = mode | 0o700
    return safe


def extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, refusing (:class:`UnsafeArchive`) before anything is
    written if a member fails :func:`check_member`; with filters, tarfile's ``data`` filter checks
    again as each member is written, without them each member is checked again just before.

    Args:
        archive: the ``.tar.xz`` (or other tar) file.
        dest: the folder to unpack into.
    """
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            check_member(member, dest, archive)
        if HAS_FILTERS:
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as err:
                raise UnsafeArchive(f"{archive}: {err}") from err
            return
        # (a tarfile with filters gets here only in tests; the checks above stand for its filter)
        trusted: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        for member in members:  # in archive order, so a link's target is checked against what is on disk
            check_member(member, dest, archive)
            tar.extract(_sanitised(member), dest, numeric_owner=True, **trusted)
