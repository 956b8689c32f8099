"""Atomic writes: readers see either the old file or the complete new one, never a partial one.

One mechanism, ``Staged``: a temporary file or directory created beside the target (same directory,
so the same filesystem and ``os.replace`` is atomic; named ``.<target>.<random>.tmp`` so directory
listings skip it), moved onto the target with ``os.replace`` only on success and removed otherwise.
``AtomicBytesFile``/``AtomicTextFile`` wrap it as a file to write; the report stages a directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

from .errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_permissions(path: str | Path) -> None:
    """mkstemp/mkdtemp create files and directories for the owner only; give them the usual
    umask-based mode instead (what ``open``/``mkdir`` would have made)."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def is_special_file(path: str | Path) -> bool:
    """``path`` is written into as it is, not replaced: it exists, and it is neither a regular file nor a
    directory (a fifo, a terminal, ``/dev/null``) or it is under ``/dev`` or ``/proc`` (``/dev/stdout`` is a
    link to the command's own output, which may be a file the shell opened for appending). A staged file
    moved onto such a path would replace it with a regular file (and a fifo's reader would get nothing)."""
    path = Path(path)
    if not path.exists():
        return False
    return str(path.absolute()).startswith(("/dev/", "/proc/")) or (not path.is_file() and not path.is_dir())


def _open_special(path: Path, mode: str, encoding: str | None = None) -> IO[Any]:
    """A special file opened for writing without truncating it (``/dev/stdout`` redirected to a file with
    ``>>`` keeps what it held), or a DataError naming it."""
    try:
        return open(path, mode.replace("w", "a"), encoding=encoding)
    except OSError as exc:
        raise DataError(f"{path}: cannot write here ({exc.strerror})") from None


def _real_target(path: Path) -> Path:
    """The file a symlink points to (the link stays a link, its target gets the new content), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


class Staged:
    """A new, empty temporary file (or directory) beside ``target``.

    ``commit()`` moves it onto ``target``; ``discard()`` (also on leaving a ``with`` block) removes
    whatever is left of it, which is nothing after a commit. Creating it raises ``OSError`` when the
    directory does not take new files.
    """

    def __init__(self, target: str | Path, *, directory: bool = False) -> None:
        self.target, self.directory = (Path(target) if directory else _real_target(Path(target))), directory
        prefix, parent = f".{self.target.name}.", _parent(self.target)
        if directory:
            self.path = Path(tempfile.mkdtemp(suffix=".tmp", prefix=prefix, dir=parent))
        else:
            fd, name = tempfile.mkstemp(suffix=".tmp", prefix=prefix, dir=parent)
            os.close(fd)
            self.path = Path(name)

    def commit(self) -> None:
        """Give the staged file the usual permissions and move it onto the target, atomically."""
        set_default_permissions(self.path)
        os.replace(self.path, self.target)

    def discard(self) -> None:
        if self.directory:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.discard()


def output_directory(path: str | Path) -> Path:
    """The directory a new file at ``path`` goes in, or a DataError saying why no file can go there."""
    path = Path(path)
    directory = _parent(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file name")
    if not directory.exists():
        raise DataError(f"{path}: directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise DataError(f"{path}: {str(directory)!r} is not a directory")
    return directory


def stage_output(path: str | Path) -> Staged:
    """``Staged(path)`` for a file the user named: every reason it cannot be made is a DataError naming ``path``."""
    output_directory(path)
    try:
        return Staged(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot write here ({exc.strerror})") from None


def check_writable(path: str | Path) -> None:
    """Fail early, with a DataError naming ``path``, if a file cannot be created there, before hours of
    work are spent on a result that could not be saved. Probes with a real temporary file because
    permission bits lie for root and on some network filesystems (a special file: by opening it)."""
    if is_special_file(path):
        if not Path(path).is_fifo():  # opening a fifo would wait for its reader
            _open_special(Path(path), "ab").close()
        return
    stage_output(path).discard()


def check_not_input(output: str | Path, inputs: list[str | Path], option: str = "-o") -> None:
    """A DataError naming ``output`` if it is one of ``inputs``: the same file, also through a symlink,
    a hard link or another relative path. Writing it would replace what the command reads, the user's
    data, with the command's output. ``-`` (stdin/stdout) is never a file here."""
    if str(output) == "-" or not Path(output).exists():
        return
    for given in inputs:
        if str(given) == "-":
            continue
        try:
            same = os.path.samefile(output, given)
        except OSError:  # an input that does not exist (yet) cannot be overwritten
            continue
        if same:
            raise DataError(
                f"{option} {output}: is the input file {given}; write to another file so the input is not overwritten"
            )


class _AtomicFile:
    """A file written through a ``Staged`` temporary file, moved onto ``path`` only if the ``with`` block
    succeeds (flushed to disk first with ``fsync=True``); on failure it is removed and ``path`` is untouched.

    ``stage`` makes the temporary file: ``Staged`` (an ``OSError`` if it cannot) or ``stage_output``
    (a DataError naming the path, for files the user named).
    """

    mode: ClassVar[str]
    encoding: ClassVar[str | None] = None

    def __init__(self, path: str | Path, *, fsync: bool = False, stage: Callable[[Path], Staged] = Staged) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._stage = stage

    def _open(self) -> IO[Any]:
        self._staged: Staged | None = None
        if is_special_file(self.path):  # a fifo or a device: written into, nothing to stage or move
            self._file: IO[Any] = _open_special(self.path, self.mode, self.encoding)
            return self._file
        self._staged = staged = self._stage(self.path)
        try:
            self._file = open(staged.path, self.mode, encoding=self.encoding)
        except BaseException:
            staged.discard()
            raise
        return self._file

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._staged is None:
            self._file.close()
            return
        try:
            if exc_type is None:
                if self._fsync:  # the data on disk before the rename, so a crash cannot leave an empty file
                    self._file.flush()
                    os.fsync(self._file.fileno())
                self._file.close()
                self._staged.commit()
        finally:
            self._file.close()
            self._staged.discard()


class AtomicBytesFile(_AtomicFile):
    mode = "wb"

    def __enter__(self) -> IO[bytes]:
        return self._open()


class AtomicTextFile(_AtomicFile):
    """A UTF-8 text file the user named (creation errors are DataErrors), written atomically."""

    mode = "w"
    encoding = "utf-8"

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        super().__init__(path, fsync=fsync, stage=stage_output)

    def __enter__(self) -> IO[str]:
        return self._open()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one, also
    after a crash (fsynced). Errors are ``OSError``s, for the caller to word."""
    with AtomicBytesFile(path, fsync=True) as f:
        f.write(data)


class WatchableTextFile:
    """A UTF-8 text file the user named, written in place so it can be watched (``tail -f``) while it
    grows, yet never replacing an existing file before the ``with`` block succeeds.

    When nothing is at ``path``, the file is created there (exclusively) and removed if the block fails.
    When a file is there (an earlier run's), it is left alone: the new one is written to a ``Staged``
    temporary file beside it (``in_place`` is False) and moved onto it only on success, as
    ``AtomicTextFile`` does. Creation errors are DataErrors naming ``path``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if is_special_file(path) else _real_target(Path(path))
        self._staged: Staged | None = None
        self._special = False

    @property
    def rewritable(self) -> bool:
        """The file can be rewritten from its start (a regular file; not a fifo, /dev/null or a terminal)."""
        return not self._special

    @property
    def in_place(self) -> bool:
        return self._staged is None

    @property
    def writing(self) -> Path:
        """The file being written: ``path`` itself, or the temporary file beside it."""
        return self.path if self._staged is None else self._staged.path

    def __enter__(self) -> IO[str]:
        output_directory(self.path)
        if is_special_file(self.path):  # a fifo or a device: written into, never removed (``is_special_file``)
            self._special = True
            self._file: IO[str] = _open_special(self.path, "w", "utf-8")
            return self._file
        try:
            self._file = open(self.path, "x", encoding="utf-8")
        except FileExistsError:
            self._staged = stage_output(self.path)
            self._file = open(self._staged.path, "w", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write here ({exc.strerror})") from None
        return self._file

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
        if self._staged is not None:
            if exc_type is None:
                self._staged.commit()
            self._staged.discard()
        elif exc_type is not None and not self._special:
            self.path.unlink(missing_ok=True)  # a failed run leaves no file it created
