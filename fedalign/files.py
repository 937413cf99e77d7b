"""Private files: what a client or the server keeps on its own disk (weights, ledgers, its own logs).

Every file is created mode 0600 inside folders created 0700. :func:`replaced_privately` writes
a whole file atomically (a crash leaves the old file or the new one, never a torn one);
:func:`append_private_line` adds one line to a log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replaced_privately(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose contents replace ``path`` once the block ends without error.

    Args:
        path: the file to replace; created with mode 0600, its directory with 0700.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            yield handle
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def append_private_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``.

    Args:
        path: the file, created with mode 0600 if missing (its directory with 0700).
        line: the text to append, without the newline.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
        handle.write(line + "\n")
