"""Atomic file writes: readers see either the old file or the complete new one, never a partial one.

Everything is written to a temporary file in the target's directory and moved into place with
``os.replace`` only on success; on failure the temporary file is removed and the target untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

from .errors import DataError


def set_default_permissions(path: str | Path) -> None:
    """mkstemp creates files readable by the owner only; give them the usual umask-based mode instead."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def output_directory(path: str | Path) -> Path:
    """The directory a new file at ``path`` goes in, or a DataError saying why no file can go there."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file name")
    if not directory.exists():
        raise DataError(f"{path}: directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise DataError(f"{path}: {str(directory)!r} is not a directory")
    return directory


def check_writable(path: str | Path) -> None:
    """Fail early, with a DataError naming ``path``, if a file cannot be created there, before hours of
    work are spent on a result that could not be saved. Probes with a real temporary file because
    permission bits lie for root and on some network filesystems."""
    path = Path(path)
    directory = output_directory(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(f"{path}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        set_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicTextFile:
    """A text file written through a temporary file in the same directory, renamed onto ``path`` only
    if the ``with`` block succeeds; on failure the temporary file is removed and ``path`` is untouched."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> IO[str]:
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise DataError(f"{self.path}: directory {str(directory)!r} does not exist")
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write here ({exc.strerror})") from None
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        return self._file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._file.close()
        if exc_type is None:
            set_default_permissions(self._tmp)
            os.replace(self._tmp, self.path)
        elif os.path.exists(self._tmp):
            os.unlink(self._tmp)
