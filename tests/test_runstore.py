"""Unpacking a sweep's runs.tar.xz: safe on every Python the project admits.

Python >= 3.11.4 has tarfile's ``data`` filter; Debian 12's 3.11.2 has none, and runstore checks by
hand there. Both paths get the same hostile archives (the filter path only where the filter exists).
"""

import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from fedalign import runstore
from fedalign.runstore import UnsafeArchive, archive_runs, extract, runs_dir, unarchive_runs


@pytest.fixture(params=["filter", "by-hand"])
def path(request, monkeypatch):
    """Which extraction path runstore takes: tarfile's ``data`` filter, or its own checks."""
    if request.param == "filter" and not runstore.HAS_FILTERS:
        pytest.skip(f"Python {sys.version.split()[0]} has no tarfile extraction filters")
    monkeypatch.setattr(runstore, "HAS_FILTERS", request.param == "filter")
    return request.param


def member(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, len(data)
    info.uid = info.gid = 4321  # not this machine's user: extraction must not chown to it
    return info, data


def write_archive(target: Path, *members) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:xz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return target


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


HOSTILE = {
    "absolute path": [member("/tmp/fedalign-evil", data=b"x")],
    "dot-dot": [member("runs/../../evil", data=b"x")],
    "symlink to an absolute path": [member("runs/link", tarfile.SYMTYPE, linkname="/etc")],
    "symlink climbing out": [member("runs/link", tarfile.SYMTYPE, linkname="../../outside")],
    "hard link to an absolute path": [member("runs/link", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "hard link climbing out": [member("runs/link", tarfile.LNKTYPE, linkname="../outside")],
    "character device": [member("runs/null", tarfile.CHRTYPE)],
    "block device": [member("runs/disk", tarfile.BLKTYPE)],
    "fifo": [member("runs/pipe", tarfile.FIFOTYPE)],
    # each link alone points inside; on disk, the second one points above the destination
    "chained symlinks": [member("runs", tarfile.DIRTYPE, mode=0o755),
                         member("runs/here", tarfile.SYMTYPE, linkname="."),
                         member("runs/here/up", tarfile.SYMTYPE, linkname=".."),
                         member("runs/here/up/up", tarfile.SYMTYPE, linkname="..")],
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_member_is_refused_on_both_paths(tmp_path, path, case):
    archive = write_archive(tmp_path / "in" / "runs.tar.xz", *HOSTILE[case])
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchive, match="runs.tar.xz"):
        extract(archive, dest)
    assert files_under(tmp_path / "box") <= {"dest", "dest/runs", "dest/runs/here", "dest/runs/up"}  # nothing outside
    assert not Path("/tmp/fedalign-evil").exists()


def test_members_refused_before_anything_is_written(tmp_path, path):
    archive = write_archive(tmp_path / "runs.tar.xz", member("runs", tarfile.DIRTYPE, mode=0o755),
                            member("runs/a.json", data=b"{}"), member("runs/../evil", data=b"x"))
    with pytest.raises(UnsafeArchive, match=r"'runs/\.\./evil'"):
        extract(archive, tmp_path / "dest")
    assert files_under(tmp_path / "dest") == set()


def test_a_benign_archive_unpacks_alike_with_modes_made_safe(tmp_path, path):
    archive = write_archive(
        tmp_path / "runs.tar.xz", member("runs", tarfile.DIRTYPE, mode=0o700),
        member("runs/cell", tarfile.DIRTYPE, mode=0o777),
        member("runs/cell/summary.json", data=b'{"status": "finished"}', mode=0o6777),
        member("runs/cell/log.txt", data=b"hello", mode=0o400),
        member("runs/cell/config.yaml", data=b"seed: 0", mode=0o664),
        member("runs/cell/latest", tarfile.SYMTYPE, linkname="summary.json"),
        member("runs/cell/copy.yaml", tarfile.LNKTYPE, linkname="runs/cell/config.yaml", mode=0o664))
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest)
    cell = dest / "runs" / "cell"
    assert (cell / "latest").is_symlink() and (cell / "latest").read_text() == '{"status": "finished"}'
    assert (cell / "copy.yaml").read_text() == "seed: 0"
    modes = {name: stat.S_IMODE((cell / name).stat().st_mode) for name in ("summary.json", "log.txt", "copy.yaml")}
    # no set-id bits, no group/other write; the owner can read and write
    assert modes == {"summary.json": 0o755, "log.txt": 0o600, "copy.yaml": 0o644}
    assert {(cell / name).stat().st_uid for name in modes} == {os.geteuid()}  # as root too: nothing chowned


def test_runs_dir_and_unarchive_refuse_a_hostile_archive(tmp_path, path):
    output = tmp_path / "sweep"
    write_archive(output / "runs.tar.xz", member("runs/link", tarfile.SYMTYPE, linkname=str(tmp_path)))
    with pytest.raises(UnsafeArchive, match="a link to"):
        runs_dir(output)
    with pytest.raises(UnsafeArchive, match="a link to"):
        unarchive_runs(output)
    assert (output / "runs.tar.xz").is_file() and not (output / "runs").exists()


def test_archive_round_trip_on_both_paths(tmp_path, path):
    output = tmp_path / "sweep"
    run = output / "runs" / "seed=0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "finished"}')
    (run / "server-state.npz").write_bytes(b"resume only")
    archive_runs(output)
    assert not (output / "runs").exists()
    assert runstore.finished_summary(runs_dir(output) / "seed=0") == {"status": "finished"}
    unarchive_runs(output)
    assert files_under(output / "runs") == {"seed=0", "seed=0/summary.json"}
    assert not (output / "runs.tar.xz").exists()
