"""setup.sh admits the Pythons pyproject.toml admits, and refuses an older one in one line."""

import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def older_pythons() -> list[str]:
    """A stand-in that says it is 3.10, and the real Pythons older than 3.11 found on this machine."""
    found = [shutil.which(f"python3.{minor}") for minor in range(10, 5, -1)]  # the newest first
    found += sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10.*/bin/python3")))
    found += sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.[6-9].*/bin/python3")), reverse=True)
    return ["stand-in"] + [p for p in dict.fromkeys(found) if p and "/shims/" not in p][:2]  # no pyenv shims


@pytest.mark.parametrize("python", older_pythons())
def test_setup_refuses_an_older_python_in_one_line(tmp_path, python):
    if python == "stand-in":
        python = tmp_path / "python3"
        python.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.10.0" && exit 0\nexit 1\n')
        python.chmod(0o755)
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", str(REPO / "setup.sh")], env={"PATH": "/usr/bin:/bin", "PYTHON": str(python),
                          "VENV": str(venv)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "needs Python >= 3.11" in proc.stderr, proc.stderr
    assert re.search(r"is Python (2|3\.([0-9]|10))\.", proc.stderr) and not venv.exists()


def test_setup_and_pyproject_admit_the_same_pythons():
    import tomllib

    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", requires).groups()
    setup = (REPO / "setup.sh").read_text()
    assert f"sys.version_info < ({major}, {minor})" in setup and f"needs Python >= {major}.{minor}" in setup
