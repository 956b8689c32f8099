"""Tables in and out: CSV, Parquet, and ``-`` for stdin/stdout, as whole frames or streams of chunks.

Readers turn every way a file can be wrong into a one-line ``DataError``. Streaming readers yield
chunks as soon as rows arrive (so ``tail -f | flowcli logprob`` works) and hold at most one chunk in
memory. Writers to files go through a temporary file renamed into place on success, so a failure never
leaves a half-written output nor destroys an existing file; stdout is written and flushed per chunk.
"""

from __future__ import annotations

import io
import os
import select
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd

from .errors import DataError
from .files import output_directory, set_default_permissions

CSV_EXTENSIONS = (".csv",)
PARQUET_EXTENSIONS = (".parquet", ".pq")
DEFAULT_CHUNK_ROWS = 65536
_READ_BYTES = 1 << 20


def table_format(path: str) -> str:
    """``csv`` or ``parquet`` from the extension; ``-`` (stdin/stdout) is CSV."""
    if path == "-":
        return "csv"
    suffix = Path(path).suffix.lower()
    if suffix in CSV_EXTENSIONS:
        return "csv"
    if suffix in PARQUET_EXTENSIONS:
        return "parquet"
    raise DataError(
        f"{path}: unknown table format {suffix or '(no extension)'!r}; use .csv, .parquet, or - for CSV on stdin/stdout"
    )


def _check_readable(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file not found")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a .csv or .parquet file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{path}: permission denied")


def _parse_csv(data: bytes | str, source: str) -> pd.DataFrame:
    """Parse CSV bytes (or a file path) into a DataFrame; every failure becomes a DataError."""
    head = data[:65536] if isinstance(data, bytes) else _peek(data)
    if b"\x00" in head:
        raise DataError(f"{source}: not a text CSV file (binary content)")
    try:
        return pd.read_csv(io.BytesIO(data) if isinstance(data, bytes) else data, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{source}: malformed CSV: {str(exc).strip().splitlines()[-1]}") from None
    except UnicodeDecodeError:
        raise DataError(f"{source}: not a text CSV file (binary or non-UTF-8 content)") from None


def _peek(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(65536)


def _check_frame(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.shape[1] == 0:
        raise DataError(f"{source}: the file has no columns")
    if len(frame) == 0:
        raise DataError(f"{source}: the table has a header but no data rows")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed:
        raise DataError(f"{source}: a column has an empty name in the header")
    dupes = [c for c in frame.columns if "." in str(c) and str(c).rsplit(".", 1)[0] in frame.columns]
    if dupes:
        raise DataError(f"{source}: column {str(dupes[0]).rsplit('.', 1)[0]!r} appears more than once in the header")
    return frame


def _read_parquet(path: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return table.to_pandas()


def read_table(path: str, stdin: IO[bytes] | None = None) -> pd.DataFrame:
    """Read a whole table (for fitting). ``-`` reads CSV from stdin."""
    fmt = table_format(path)
    if path == "-":
        frame = _parse_csv((stdin or sys.stdin.buffer).read(), "stdin")
        return _check_frame(frame, "stdin")
    _check_readable(path)
    frame = _parse_csv(path, path) if fmt == "csv" else _read_parquet(path)
    return _check_frame(frame, path)


def _has_pending_input(stream: IO[bytes]) -> bool:
    """True if more bytes can be read without blocking (or if we cannot tell, e.g. an in-memory stream)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return True
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def iter_csv(stream: IO[bytes], source: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most about ``chunk_rows`` rows as soon as they are available.

    A chunk is emitted when it is full or when the input pauses (nothing more to read right now), so
    slow streams are scored line by line and fast ones in large, efficient chunks. Cuts happen only at
    newlines outside quotes, so quoted fields may contain newlines.
    """
    read = getattr(stream, "read1", stream.read)
    header: bytes | None = None
    pending: list[bytes] = []
    pending_lines = 0
    partial = b""
    seen_rows = False

    def emit() -> pd.DataFrame:
        nonlocal pending, pending_lines
        frame = _parse_csv(header + b"".join(pending), source)
        pending, pending_lines = [], 0
        return frame

    while True:
        data = read(_READ_BYTES)
        if data:
            partial += data
            cut = partial.rfind(b"\n")
            if cut >= 0 and partial.count(b'"', 0, cut) % 2 == 0:
                block, partial = partial[: cut + 1], partial[cut + 1 :]
                if header is None:
                    first = block.find(b"\n")
                    header, block = block[: first + 1], block[first + 1 :]
                    if not header.strip():
                        raise DataError(f"{source}: the first line (the header) is empty")
                if block:
                    pending.append(block)
                    pending_lines += block.count(b"\n")
        at_end = not data
        if at_end and partial.strip():
            if header is None:
                header, partial = partial + b"\n", b""
            else:
                pending.append(partial + b"\n")
                pending_lines += 1
                partial = b""
        if pending and (at_end or pending_lines >= chunk_rows or not _has_pending_input(stream)):
            frame = emit()
            if len(frame):
                seen_rows = True
                yield frame
        if at_end:
            break
    if header is None:
        raise DataError(f"{source}: the file is empty")
    if not seen_rows:
        _check_frame(_parse_csv(header, source), source)


def iter_table(
    path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, stdin: IO[bytes] | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a table in chunks: CSV from a file or stdin, Parquet by record batches."""
    fmt = table_format(path)
    if path == "-":
        yield from _checked(iter_csv(stdin or sys.stdin.buffer, "stdin", chunk_rows), "stdin")
        return
    _check_readable(path)
    if fmt == "csv":
        with open(path, "rb") as f:
            yield from _checked(iter_csv(f, path, chunk_rows), path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if parquet.metadata.num_rows == 0:
        raise DataError(f"{path}: the table has no data rows")
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def _checked(frames: Iterator[pd.DataFrame], source: str) -> Iterator[pd.DataFrame]:
    for frame in frames:
        yield _check_frame(frame, source)


def _csv_bytes(frame: pd.DataFrame, header: bool) -> bytes:
    """CSV text of a frame. pyarrow's writer is about 10x faster than pandas' (which dominated the time
    of ``flowcli logprob``); pandas writes the header, unquoted, and any frame arrow cannot convert."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    head = frame.iloc[:0].to_csv(index=False).encode() if header else b""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return head + frame.to_csv(index=False, header=False).encode()
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    return head + sink.getvalue()


class TableWriter:
    """Write DataFrames chunk by chunk to CSV/Parquet (atomically for files) or CSV on stdout.

    Use as a context manager: on success the temporary file is renamed onto ``path``; on any error it
    is removed and an existing file at ``path`` is left untouched.
    """

    def __init__(self, path: str, stdout: IO[bytes] | None = None) -> None:
        self.path = path
        self.format = table_format(path)
        self._stdout = stdout
        self._tmp: str | None = None
        self._file: IO[bytes] | None = None
        self._parquet = None
        self._wrote_header = False

    def __enter__(self) -> TableWriter:
        if self.path == "-":
            self._file = self._stdout or sys.stdout.buffer
            return self
        target = Path(self.path)
        directory = output_directory(target)
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write here ({exc.strerror})") from None
        self._file = os.fdopen(fd, "wb")
        return self

    def write(self, frame: pd.DataFrame) -> None:
        assert self._file is not None
        if self.format == "csv":
            self._file.write(_csv_bytes(frame, header=not self._wrote_header))
            self._file.flush()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._file, table.schema)
            else:
                table = table.cast(self._parquet.schema)
            self._parquet.write_table(table)
        self._wrote_header = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.path == "-":
            return
        assert self._file is not None
        try:
            if self._parquet is not None:
                self._parquet.close()
            self._file.close()
            if exc_type is None:
                set_default_permissions(self._tmp)
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp and os.path.exists(self._tmp):
                os.unlink(self._tmp)
