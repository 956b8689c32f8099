"""Tables in and out: CSV, Parquet, and ``-`` for stdin/stdout, as whole frames or streams of chunks.

The one place that knows table formats: ``FORMATS`` lists them, each a ``TableFormat`` with its name,
its file extensions, its readers and its writer; adding a format is one class added there. Other
modules ask ``format_of``/``is_format``/``table_files`` rather than look at extensions themselves.

Readers turn every way a file can be wrong into a one-line ``DataError``. Streaming readers yield
chunks as soon as rows arrive (so ``tail -f | flowcli logprob`` works) and hold at most one chunk in
memory. Writers to files go through a temporary file renamed into place on success, so a failure never
leaves a half-written output nor destroys an existing file; stdout is written and flushed per chunk.
"""

from __future__ import annotations

import io
import os
import re
import select
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Protocol

import pandas as pd

from .errors import DataError
from .files import AtomicBytesFile, stage_output

STDIO = "-"  # stdin or stdout, always CSV
DEFAULT_CHUNK_ROWS = 65536
_READ_BYTES = 1 << 20


def _check_readable(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file not found")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a {extension_list()} file")
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
        assert header is not None  # rows are only pending once the header has been read
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


def _checked(frames: Iterator[pd.DataFrame], source: str) -> Iterator[pd.DataFrame]:
    for frame in frames:
        yield _check_frame(frame, source)


# A field is quoted only when it must be (RFC 4180: it holds the separator, a quote or a line break) or
# when leading/trailing space would otherwise be lost to readers that trim (ours reads with
# skipinitialspace). The empty string is quoted too: it is `""`, while a missing value is an empty
# field, as PostgreSQL's COPY ... CSV writes them, so the two stay distinguishable.
_NEEDS_QUOTES = r'[,"\r\n]|^\s|\s$|^$'


def _quote_field(text: str) -> str:
    """One field as CSV, quoted only if it needs it (the header's names go through this too)."""
    return '"' + text.replace('"', '""') + '"' if re.search(_NEEDS_QUOTES, text) else text


def _text_scalar(text: str) -> Any:
    """A pyarrow large_string scalar: the join kernels want every argument of one string type, and
    large_string (64-bit offsets) because a chunk's text may exceed 2 GiB."""
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


def _quoted(strings: Any) -> Any:
    """A pyarrow string array with the fields that need it quoted (vectorized ``_quote_field``)."""
    import pyarrow.compute as pc

    needs = pc.match_substring_regex(strings, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():  # the usual case: plain labels, nothing to rewrite
        return strings
    quote, empty = _text_scalar('"'), _text_scalar("")
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(strings, '"', '""'), quote, empty)
    return pc.if_else(needs, quoted, strings)


# Whole floats below this are exact integers, so writing them as integers loses nothing.
_EXACT_INTEGERS = 2.0**53


def _float_text(values: Any, column: pd.Series) -> Any:
    """Floats in the shortest text that reads back as the same value at their own precision (float32
    scores as ``-58.342606``, not ``-58.34260559082031``), and never like an integer: pyarrow writes
    181.0 as ``181``, which would turn a float column into an integer one for the next reader.

    One exception: a column of whole numbers with gaps is written as integers (``181,,186``). That is
    an integer column that pandas read as floats because of its gaps, and either text reads back as
    the same float column, so the integers a user wrote stay integers.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(numbers)
    whole = np.isfinite(numbers) & (numbers == np.trunc(numbers))
    if missing.any() and whole.any() and (whole | missing).all() and (np.abs(numbers[whole]) < _EXACT_INTEGERS).all():
        return pc.cast(pc.cast(values, pa.int64()), pa.large_string())
    text = pc.cast(values, pa.large_string())
    if whole.any():
        # Large whole numbers come out in exponent form (1e+15), which reads as a float already.
        whole &= ~np.asarray(pc.match_substring(text, "e").fill_null(False), dtype=bool)
        dotted = pc.binary_join_element_wise(text, _text_scalar(".0"), _text_scalar(""))
        text = pc.if_else(pa.array(whole), dotted, text)
    return text


def _python_text(column: pd.Series) -> Any:
    """Pandas' own text of each value (dates as ``2020-01-01`` in a date-only column, as ``to_csv``
    writes them), quoted where needed, missing values null."""
    import pyarrow as pa

    text = column.astype(str).to_numpy(dtype=object)
    return _quoted(pa.array(text, pa.large_string(), mask=column.isna().to_numpy()))


def _column_text(column: pd.Series) -> Any:
    """A column as a pyarrow large_string array of CSV fields, null where the value is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _python_text(column)  # mixed Python objects, e.g. numbers and strings in one column
    if pa.types.is_dictionary(values.type):  # a pandas categorical: write its labels
        values = values.dictionary_decode()
        column = values.to_pandas()
    kind = values.type
    if pa.types.is_floating(kind):
        return _float_text(values, column)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return pc.cast(values, pa.large_string())  # booleans as true/false
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _quoted(pc.cast(values, pa.large_string()))
    return _python_text(column)


def _csv_bytes(frame: pd.DataFrame, header: bool) -> bytes:
    """CSV text of a frame, fields quoted only when needed (see ``_NEEDS_QUOTES``).

    Every column is turned into text by pyarrow's vectorized kernels and the fields joined row by row
    in one pass: as fast as pyarrow's own CSV writer (which is about 10x faster than pandas' and
    dominated ``flowcli logprob``), but pyarrow's writer quotes every string and writes 181.0 as 181.
    """
    import numpy as np
    import pyarrow.compute as pc

    head = (",".join(_quote_field(str(c)) for c in frame.columns) + "\n").encode() if header else b""
    if len(frame) == 0 or frame.shape[1] == 0:
        return head
    fields = [_column_text(frame.iloc[:, i]) for i in range(frame.shape[1])]
    comma, newline, empty = _text_scalar(","), _text_scalar("\n"), _text_scalar("")
    rows = pc.binary_join_element_wise(*fields, comma, null_handling="replace", null_replacement="")
    lines = pc.binary_join_element_wise(rows, newline, empty)
    # The string data of the joined lines, back to back, is the CSV body: no per-row Python work.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return head + lines.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()


# ------------------------------------------------------------------------------------------ formats


class FrameWriter(Protocol):
    """Writes DataFrames one after another to one open binary file; ``close`` finishes the file (not
    the file object, which its owner closes)."""

    def write(self, frame: pd.DataFrame) -> None: ...

    def close(self) -> None: ...


class TableFormat(ABC):
    """A table file format: its name, the file extensions that select it, its readers and its writer.

    Readers get a path that exists and is readable, and raise a one-line DataError naming it for
    anything else wrong with the file.
    """

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]  # lower case, with the dot; the first is the one to suggest

    @abstractmethod
    def read(self, path: str) -> pd.DataFrame:
        """The whole table, checked (columns named and unique, at least one row)."""

    @abstractmethod
    def chunks(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The table in frames of at most about ``chunk_rows`` rows."""

    @abstractmethod
    def writer(self, file: IO[bytes]) -> FrameWriter:
        """A writer of frames into ``file``."""


class Csv(TableFormat):
    """Comma-separated text with a header line; also what ``-`` (stdin/stdout) carries."""

    name = "csv"
    extensions = (".csv",)

    def read(self, path: str) -> pd.DataFrame:
        return _check_frame(_parse_csv(path, path), path)

    def read_stream(self, stream: IO[bytes], source: str) -> pd.DataFrame:
        return _check_frame(_parse_csv(stream.read(), source), source)

    def chunks(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        with open(path, "rb") as f:
            yield from self.stream_chunks(f, path, chunk_rows)

    def stream_chunks(self, stream: IO[bytes], source: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        yield from _checked(iter_csv(stream, source, chunk_rows), source)

    def writer(self, file: IO[bytes]) -> FrameWriter:
        return _CsvWriter(file)


class _CsvWriter:
    """The header before the first chunk; each chunk flushed, so a reader of stdout gets rows as they come."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._wrote_header = False

    def write(self, frame: pd.DataFrame) -> None:
        self._file.write(_csv_bytes(frame, header=not self._wrote_header))
        self._file.flush()
        self._wrote_header = True

    def close(self) -> None:
        pass


class Parquet(TableFormat):
    """Apache Parquet, read whole or by record batches."""

    name = "parquet"
    extensions = (".parquet", ".pq")

    def read(self, path: str) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        return _check_frame(table.to_pandas(), path)

    def chunks(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
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

    def writer(self, file: IO[bytes]) -> FrameWriter:
        return _ParquetWriter(file)


class _ParquetWriter:
    """One Parquet file whose schema is the first chunk's; later chunks are cast to it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._writer: Any = None  # a pyarrow.parquet.ParquetWriter, made with the first chunk's schema

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._file, table.schema)
        else:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


FORMATS: tuple[TableFormat, ...] = (Csv(), Parquet())
STDIO_FORMAT = Csv()


def format_of(path: str | Path) -> TableFormat | None:
    """The format that the extension of ``path`` names, or None (``-`` is not a file name: see ``STDIO``)."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS if suffix in f.extensions), None)


def is_format(path: str | Path, name: str) -> bool:
    """True if the extension of ``path`` names the format called ``name`` (e.g. ``"parquet"``)."""
    found = format_of(path)
    return found is not None and found.name == name


def extension_list() -> str:
    """The formats' main extensions for messages: ``.csv or .parquet``."""
    main = [f.extensions[0] for f in FORMATS]
    return " or ".join([", ".join(main[:-1]), main[-1]] if len(main) > 1 else main)


def table_files(directory: Path, name: str | None = None) -> list[Path]:
    """The table files of ``directory`` (of format ``name`` only, if given) in name order. Names starting
    with ``.`` or ``_`` are skipped: temporary files (ours are ``.<name>.*.tmp``) and markers like ``_SUCCESS``."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and (is_format(p, name) if name else format_of(p) is not None)
        and not p.name.startswith((".", "_"))
    )


def _format(path: str) -> TableFormat:
    if path == STDIO:
        return STDIO_FORMAT
    found = format_of(path)
    if found is None:
        suffix = Path(path).suffix.lower()
        main = ", ".join(f.extensions[0] for f in FORMATS)
        raise DataError(
            f"{path}: unknown table format {suffix or '(no extension)'!r}; use {main}, or - for CSV on stdin/stdout"
        )
    return found


def table_format(path: str) -> str:
    """The name of the format of ``path`` (``-``, stdin/stdout, is CSV); a DataError for an unknown extension."""
    return _format(path).name


# ------------------------------------------------------------------------------------ reading, writing


def read_table(path: str, stdin: IO[bytes] | None = None) -> pd.DataFrame:
    """Read a whole table (for fitting). ``-`` reads CSV from stdin."""
    fmt = _format(path)
    if path == STDIO:
        return STDIO_FORMAT.read_stream(stdin or sys.stdin.buffer, "stdin")
    _check_readable(path)
    return fmt.read(path)


def iter_table(
    path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, stdin: IO[bytes] | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a table in chunks: CSV from a file or stdin, Parquet by record batches."""
    fmt = _format(path)
    if path == STDIO:
        yield from STDIO_FORMAT.stream_chunks(stdin or sys.stdin.buffer, "stdin", chunk_rows)
        return
    _check_readable(path)
    yield from fmt.chunks(path, chunk_rows)


class TableWriter:
    """Write DataFrames chunk by chunk to a table file (atomically) or as CSV to stdout.

    Use as a context manager: on success the temporary file is renamed onto ``path``; on any error it
    is removed and an existing file at ``path`` is left untouched.
    """

    def __init__(self, path: str, stdout: IO[bytes] | None = None) -> None:
        self.path = path
        self._format = _format(path)
        self.format = self._format.name
        self._stdout = stdout
        self._stack = ExitStack()

    def __enter__(self) -> TableWriter:
        with ExitStack() as stack:  # unwinds what was opened if making the writer fails
            if self.path == STDIO:
                file = self._stdout or sys.stdout.buffer  # not ours to close
            else:
                file = stack.enter_context(AtomicBytesFile(self.path, stage=stage_output))
            self._writer = stack.enter_context(closing(self._format.writer(file)))
            self._stack = stack.pop_all()
        return self

    def write(self, frame: pd.DataFrame) -> None:
        self._writer.write(frame)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The writer finishes the file, then the atomic file is moved into place (or removed on error).
        self._stack.__exit__(exc_type, exc, tb)
