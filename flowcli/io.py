"""Tables in and out: CSV (and other delimited text, plain or compressed), Parquet, and ``-`` for
stdin/stdout, as whole frames or streams of chunks.

The one place that knows table formats: ``FORMATS`` lists them, each a ``TableFormat`` with its name,
its file extensions, the first bytes that give it away, its readers and its writer; adding a format is
one class added there. Other modules ask ``format_of``/``is_format``/``table_files`` rather than look at
extensions themselves. How text is read (encodings, separators, rows, column types) is ``delimited.py``;
``ReadOptions`` carries the reading options of the command line to every reader.

A path is read in the format of ``--format``, else of its extension (also of the file a symlink such as
``/dev/stdin`` points to); a pipe, fifo or process substitution ``<(...)`` without one, and stdin, are
recognized by their first bytes (Parquet, gzip, bzip2, xz, zstd; else text).

Readers turn every way a file can be wrong into a one-line ``DataError``. Streaming readers yield
chunks as soon as rows arrive (so ``tail -f | flowcli logprob`` works) and hold at most one chunk in
memory. Writers to files go through a temporary file renamed into place on success, so a failure never
leaves a half-written output nor destroys an existing file; stdout is written and flushed per chunk.
"""

from __future__ import annotations

import importlib
import lzma
import os
import re
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Protocol

import pandas as pd

from .delimited import InputLines, ReadOptions, has_pending_input, iter_text_lines, iter_text_table, read_text_table
from .errors import DataError, NoDataRows
from .files import AtomicBytesFile, stage_output

STDIO = "-"  # stdin or stdout; read in the format its first bytes show, written as CSV
DEFAULT_CHUNK_ROWS = 65536
_SNIFF_MAGIC = 6  # bytes that tell the binary formats apart (the longest magic, xz's)
# What a failing decompressor raises (gzip.BadGzipFile is an OSError).
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)

__all__ = ["ReadOptions"]  # re-exported: io is where commands find the reading options


def _check_readable(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file not found")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a {extension_list()} file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{path}: permission denied")


def _check_frame(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if frame.shape[1] == 0:
        raise DataError(f"{source}: the file has no columns")
    if len(frame) == 0:
        raise NoDataRows(source, frame)
    return frame


class _Input:
    """A binary input stream as the readers use it: the bytes already read to recognize its format come
    first, and a failing decompressor is a DataError naming the file."""

    def __init__(self, stream: Any, source: str, head: bytes = b"", what: str = "") -> None:
        self._stream, self._source, self._head, self._what = stream, source, head, what

    def _call(self, method: str, size: int) -> bytes:
        if self._head:
            data = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(data) :]
            return data
        try:
            return bytes(getattr(self._stream, method)(size))
        except _DECOMPRESS_ERRORS as exc:
            raise DataError(f"{self._source}: not a readable {self._what} file ({exc})") from None

    def read(self, size: int = -1, /) -> bytes:
        if self._head and size < 0:
            return self._call("read", size) + self._call("read", size)
        return self._call("read", size)

    def read1(self, size: int = -1, /) -> bytes:
        return self._call("read1" if hasattr(self._stream, "read1") else "read", size)

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def pending(self) -> bool:
        """More bytes can be read without blocking (or we cannot tell)."""
        return bool(self._head) or has_pending_input(self._stream)


def iter_csv(
    stream: IO[bytes], source: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, options: ReadOptions | None = None
) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most about ``chunk_rows`` rows as soon as their lines have arrived: a
    complete line is parsed and yielded when no more input is waiting, without waiting for the next
    one; many waiting rows are parsed together (see ``delimited.iter_text_table``)."""
    yield from iter_text_table(stream, source, chunk_rows, options)


# A field is quoted only when it must be (RFC 4180: it holds the separator, a quote or a line break) or
# when leading/trailing space would otherwise be lost to readers that trim (ours reads with
# skipinitialspace). The empty string is quoted too: it is `""`, while a missing value is an empty
# field, as PostgreSQL's COPY ... CSV writes them, so the two stay distinguishable.
_NEEDS_QUOTES = r'[,"\r\n]|^\s|\s$|^$'


def _needs_quotes(sep: str) -> str:
    """``_NEEDS_QUOTES`` for a separator (a tab-separated field quotes a tab, not a comma)."""
    return _NEEDS_QUOTES if sep == "," else _NEEDS_QUOTES.replace(",", re.escape(sep), 1)


def _quote_field(text: str, sep: str = ",") -> str:
    """One field as CSV, quoted only if it needs it (the header's names go through this too)."""
    return '"' + text.replace('"', '""') + '"' if re.search(_needs_quotes(sep), text) else text


def _text_scalar(text: str) -> Any:
    """A pyarrow large_string scalar: the join kernels want every argument of one string type, and
    large_string (64-bit offsets) because a chunk's text may exceed 2 GiB."""
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


def _quoted(strings: Any, sep: str) -> Any:
    """A pyarrow string array with the fields that need it quoted (vectorized ``_quote_field``)."""
    import pyarrow.compute as pc

    needs = pc.match_substring_regex(strings, _needs_quotes(sep))
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


def _python_text(column: pd.Series, sep: str) -> Any:
    """Pandas' own text of each value (dates as ``2020-01-01`` in a date-only column, as ``to_csv``
    writes them), quoted where needed, missing values null."""
    import numpy as np
    import pyarrow as pa

    missing = column.isna().to_numpy()
    nested = [v for v in column.to_numpy(dtype=object)[~missing][:1] if isinstance(v, (list, tuple, dict, np.ndarray))]
    if nested:  # lists and structs (a Parquet list column passed through): JSON, not numpy's ['a' 'b']
        text = column.map(_json_text, na_action="ignore").to_numpy(dtype=object)
    else:
        text = column.astype(str).to_numpy(dtype=object)
    return _quoted(pa.array(text, pa.large_string(), mask=missing), sep)


def _json_text(value: Any) -> str:
    """A list or struct as JSON text (numpy arrays and scalars as their Python values)."""
    import json

    import numpy as np

    def plain(v: Any) -> Any:
        return v.tolist() if isinstance(v, np.ndarray | np.generic) else str(v)

    return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, ensure_ascii=False, default=plain)


def _column_text(column: pd.Series, sep: str = ",") -> Any:
    """A column as a pyarrow large_string array of CSV fields (separated by ``sep``), null where the value is
    missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _python_text(column, sep)  # mixed Python objects, e.g. numbers and strings in one column
    if isinstance(values, pa.ChunkedArray):
        # A pyarrow-backed column made by pd.concat (pandas' str dtype) comes in several chunks; the
        # fields are joined into one array below, whose buffers are the CSV body.
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):  # a pandas categorical: write its labels
        values = values.dictionary_decode()
        column = values.to_pandas()
    kind = values.type
    if pa.types.is_floating(kind):
        return _float_text(values, column)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return pc.cast(values, pa.large_string())  # booleans as true/false
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _quoted(pc.cast(values, pa.large_string()), sep)
    return _python_text(column, sep)


def _csv_bytes(
    frame: pd.DataFrame, header: bool, lines: InputLines | None = None, sep: str = ","
) -> list[bytes | memoryview]:
    """CSV text of a frame, fields quoted only when needed (see ``_NEEDS_QUOTES``), in pieces to write one
    after the other (the body is a view of pyarrow's buffer: tens of MB not copied again).

    Every column is turned into text by pyarrow's vectorized kernels and the fields joined row by row
    in one pass: as fast as pyarrow's own CSV writer (which is about 10x faster than pandas' and
    dominated ``flowcli logprob``), but pyarrow's writer quotes every string and writes 181.0 as 181.
    ``lines``: the input's own text of the frame's leading columns, written as it is (see InputLines): comma-
    separated lines, so only with ``sep`` a comma. ``sep``: the separator (TSV: a tab).
    """
    import numpy as np
    import pyarrow.compute as pc

    head = (sep.join(_quote_field(str(c), sep) for c in frame.columns) + "\n").encode() if header else b""
    if len(frame) == 0 or frame.shape[1] == 0:
        return [head]
    from .devices import map_on_threads  # torch: only when there is a frame to write

    written: list[Any] = []  # the input's own text of the leading columns, when it stands for them
    first = 0
    if (
        sep == ","
        and lines is not None
        and len(lines) == len(frame)
        and tuple(frame.columns[: len(lines.columns)]) == lines.columns
    ):
        written, first = [lines.text], len(lines.columns)
    columns = [frame.iloc[:, i] for i in range(first, frame.shape[1])]
    fields = written + map_on_threads(lambda column: _column_text(column, sep), columns, len(frame) * len(columns))
    comma, newline, empty = _text_scalar(sep), _text_scalar("\n"), _text_scalar("")
    # The line break joins the last field (a narrow copy), so the wide join below is the only one.
    fields[-1] = pc.binary_join_element_wise(fields[-1], newline, empty, null_handling="replace", null_replacement="")
    body = pc.binary_join_element_wise(*fields, comma, null_handling="replace", null_replacement="")
    # The string data of the joined lines, back to back, is the CSV body: no per-row Python work.
    offsets = np.frombuffer(body.buffers()[1], dtype=np.int64)[body.offset : body.offset + len(body) + 1]
    return [head, memoryview(body.buffers()[2])[int(offsets[0]) : int(offsets[-1])]]


# ------------------------------------------------------------------------------------------ formats


class FrameWriter(Protocol):
    """Writes DataFrames one after another to one open binary file; ``close`` finishes the file (not
    the file object, which its owner closes)."""

    def write(self, frame: pd.DataFrame) -> None: ...

    def close(self) -> None: ...


class TableFormat(ABC):
    """A table file format: its name, the file extensions that select it, its readers and its writer.

    Readers get a path that exists and is readable (or an open binary stream), and raise a one-line
    DataError naming it for anything else wrong with the file.
    """

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]  # lower case, with the dot; the first is the one to suggest
    magic: ClassVar[bytes | None] = None  # how a file starts: recognizes the format in a pipe or fifo

    def read(self, path: str, options: ReadOptions) -> pd.DataFrame:
        """The whole table, checked (columns named and unique, at least one row)."""
        with open(path, "rb") as f:
            return self.read_stream(f, path, options)

    def chunks(self, path: str, chunk_rows: int, options: ReadOptions) -> Iterator[pd.DataFrame]:
        """The table in frames of at most about ``chunk_rows`` rows."""
        with open(path, "rb") as f:
            yield from self.stream_chunks(f, path, chunk_rows, options)

    @abstractmethod
    def read_stream(self, stream: Any, source: str, options: ReadOptions) -> pd.DataFrame:
        """The whole table from an open binary stream (a pipe, stdin)."""

    @abstractmethod
    def stream_chunks(self, stream: Any, source: str, chunk_rows: int, options: ReadOptions) -> Iterator[pd.DataFrame]:
        """The table from an open binary stream, in frames as they arrive."""

    def chunk_lines(
        self, path: str, chunk_rows: int, options: ReadOptions, keep_lines: bool
    ) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
        """``chunks``, each frame with its input's lines when ``keep_lines`` and the format has them
        (delimited text; see ``delimited.InputLines``), else None."""
        for frame in self.chunks(path, chunk_rows, options):
            yield frame, None

    def stream_chunk_lines(
        self, stream: Any, source: str, chunk_rows: int, options: ReadOptions, keep_lines: bool
    ) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
        """``stream_chunks``, each frame with its input's lines as ``chunk_lines`` says."""
        for frame in self.stream_chunks(stream, source, chunk_rows, options):
            yield frame, None

    @abstractmethod
    def writer(self, file: IO[bytes]) -> FrameWriter:
        """A writer of frames into ``file``."""


def _zstandard(what: str) -> Any:
    """The optional zstandard module, or a DataError saying how to install it."""
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise DataError(f"{what} needs the zstandard package: pip install zstandard") from None


class Csv(TableFormat):
    """Delimited text with a header line, the separator sniffed unless given (``delimited.py``); also
    what ``-`` (stdout) carries."""

    name = "csv"
    extensions: ClassVar[tuple[str, ...]] = (".csv",)
    separator: ClassVar[str | None] = None  # None: sniffed (or --sep)
    compression: ClassVar[str | None] = None  # the module that decompresses it: gzip, bz2, lzma, zstandard

    def _options(self, options: ReadOptions) -> ReadOptions:
        return replace(options, sep=self.separator) if options.sep is None and self.separator else options

    def _text(self, stream: Any, source: str) -> Any:
        """``stream`` decompressed, if the format is compressed."""
        if self.compression is None:
            return stream
        if self.compression == "zstandard":
            zstandard = _zstandard(f"{source}: reading zstd-compressed tables")
            reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        else:
            reader = importlib.import_module(self.compression).open(stream, "rb")
        return _Input(reader, source, what=self.name)

    def read_stream(self, stream: Any, source: str, options: ReadOptions) -> pd.DataFrame:
        return read_text_table(self._text(stream, source).read(), source, self._options(options))

    def stream_chunks(self, stream: Any, source: str, chunk_rows: int, options: ReadOptions) -> Iterator[pd.DataFrame]:
        yield from iter_text_table(self._text(stream, source), source, chunk_rows, self._options(options))

    def chunk_lines(
        self, path: str, chunk_rows: int, options: ReadOptions, keep_lines: bool
    ) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
        with open(path, "rb") as f:
            yield from self.stream_chunk_lines(f, path, chunk_rows, options, keep_lines)

    def stream_chunk_lines(
        self, stream: Any, source: str, chunk_rows: int, options: ReadOptions, keep_lines: bool
    ) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
        text, options = self._text(stream, source), self._options(options)
        yield from iter_text_lines(text, source, chunk_rows, options, keep_lines)

    def writer(self, file: IO[bytes]) -> FrameWriter:
        return _CsvWriter(file)


class Tsv(Csv):
    """Tab-separated text with a header line."""

    name = "tsv"
    extensions = (".tsv", ".tab")
    separator = "\t"

    def writer(self, file: IO[bytes]) -> FrameWriter:
        return _CsvWriter(file, self.separator)


class CsvGzip(Csv):
    """CSV (or other delimited text: the separator is sniffed) compressed with gzip."""

    name = "csv.gz"
    extensions = (".csv.gz",)
    magic = b"\x1f\x8b"
    compression = "gzip"

    def writer(self, file: IO[bytes]) -> FrameWriter:
        return _CompressedWriter(file, self.compression)


class CsvBz2(CsvGzip):
    """CSV compressed with bzip2."""

    name = "csv.bz2"
    extensions = (".csv.bz2",)
    magic = b"BZh"
    compression = "bz2"


class CsvXz(CsvGzip):
    """CSV compressed with xz (lzma)."""

    name = "csv.xz"
    extensions = (".csv.xz",)
    magic = b"\xfd7zXZ\x00"
    compression = "lzma"


class CsvZstd(CsvGzip):
    """CSV compressed with zstd; needs the optional ``zstandard`` package."""

    name = "csv.zst"
    extensions = (".csv.zst",)
    magic = b"\x28\xb5\x2f\xfd"
    compression = "zstandard"


def write_all(file: IO[bytes], data: bytes | memoryview) -> None:
    """Write every byte of ``data``. A buffered file does, but stdout under PYTHONUNBUFFERED (``python -u``,
    common in containers) is a raw file whose ``write`` may take part of a chunk and return the count: when
    a signal or a closing reader cuts a write to a pipe short, the rest was lost and the command exited 0.
    Writing the rest gets it through, or the EPIPE that exits 141."""
    view = memoryview(data).cast("B")
    while view:
        written = file.write(view)
        if written is None:  # a non-blocking file that takes nothing now
            raise BlockingIOError(0, "the output takes no more bytes now")
        view = view[written:]


class _CsvWriter:
    """The header before the first chunk; each chunk flushed, so a reader of stdout gets rows as they come.
    ``sep``: the separator (a tab for TSV, whose writer this is too)."""

    def __init__(self, file: IO[bytes], sep: str = ",") -> None:
        self._file = file
        self._sep = sep
        self._wrote_header = False

    def write(self, frame: pd.DataFrame, lines: InputLines | None = None) -> None:
        for piece in _csv_bytes(frame, header=not self._wrote_header, lines=lines, sep=self._sep):
            write_all(self._file, piece)
        self._file.flush()
        self._wrote_header = True

    def close(self) -> None:
        pass


class Parquet(TableFormat):
    """Apache Parquet, read whole or by record batches (from a pipe: read into memory first, since
    Parquet keeps its schema at the end)."""

    name = "parquet"
    extensions = (".parquet", ".pq")
    magic = b"PAR1"

    def read(self, path: str, options: ReadOptions) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        return _check_frame(table.to_pandas(), path)

    def chunks(self, path: str, chunk_rows: int, options: ReadOptions) -> Iterator[pd.DataFrame]:
        yield from self._batches(path, path, chunk_rows)

    def read_stream(self, stream: Any, source: str, options: ReadOptions) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(stream.read()))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{source}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        return _check_frame(table.to_pandas(), source)

    def stream_chunks(self, stream: Any, source: str, chunk_rows: int, options: ReadOptions) -> Iterator[pd.DataFrame]:
        import pyarrow as pa

        yield from self._batches(pa.BufferReader(stream.read()), source, chunk_rows)

    def _batches(self, where: Any, source: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(where)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{source}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        if parquet.metadata.num_rows == 0:
            raise NoDataRows(source, parquet.schema_arrow.empty_table().to_pandas())
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


class _CompressedWriter:
    """CSV written through a compressor into ``file`` (which stays open: its owner closes it)."""

    def __init__(self, file: IO[bytes], compression: str) -> None:
        if compression == "zstandard":
            zstandard = _zstandard("writing zstd-compressed tables")
            self._stream: Any = zstandard.ZstdCompressor().stream_writer(file, closefd=False)
        elif compression == "gzip":
            import gzip

            self._stream = gzip.GzipFile(fileobj=file, mode="wb")
        else:
            self._stream = importlib.import_module(compression).open(file, "wb")
        self._csv = _CsvWriter(self._stream)

    def write(self, frame: pd.DataFrame, lines: InputLines | None = None) -> None:
        self._csv.write(frame, lines)

    def close(self) -> None:
        self._csv.close()
        self._stream.close()


FORMATS: tuple[TableFormat, ...] = (Csv(), Tsv(), Parquet(), CsvGzip(), CsvBz2(), CsvXz(), CsvZstd())
STDIO_FORMAT = Csv()


def format_of(path: str | Path) -> TableFormat | None:
    """The format that the extension of ``path`` names (the longest that matches: ``.csv.gz`` before
    ``.gz``), or None (``-`` is not a file name: see ``STDIO``)."""
    name = Path(path).name.lower()
    found = [(len(ext), f) for f in FORMATS for ext in f.extensions if name.endswith(ext) and name != ext]
    return max(found, key=lambda pair: pair[0])[1] if found else None


def is_format(path: str | Path, name: str) -> bool:
    """True if the extension of ``path`` names the format called ``name`` (e.g. ``"parquet"``)."""
    found = format_of(path)
    return found is not None and found.name == name


def format_named(name: str) -> TableFormat:
    """The format called ``name`` (``--format``); a DataError listing the names otherwise."""
    found = next((f for f in FORMATS if f.name == name.lower().lstrip(".")), None)
    if found is None:
        raise DataError(f"--format {name!r}: one of {', '.join(f.name for f in FORMATS)}")
    return found


def extension_list() -> str:
    """The formats' main extensions for messages: ``.csv, .tsv, ... or .csv.zst``."""
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


def _unknown(path: str, hint: str) -> DataError:
    suffix = Path(path).suffix.lower() or "(no extension)"
    main = ", ".join(f.extensions[0] for f in FORMATS)
    return DataError(f"{path}: unknown table format {suffix!r}; use {main}, {hint}")


def _format(path: str) -> TableFormat:
    """The format to write ``path`` in (its extension; ``-`` is CSV)."""
    if path == STDIO:
        return STDIO_FORMAT
    found = format_of(path)
    if found is None:
        raise _unknown(path, "or - for CSV on stdin/stdout")
    return found


def table_format(path: str) -> str:
    """The name of the format of ``path`` (``-``, stdin/stdout, is CSV); a DataError for an unknown extension."""
    return _format(path).name


def _reading_format(path: str, options: ReadOptions) -> TableFormat | None:
    """The format to read ``path`` in: ``--format``, else its extension or that of the file a symlink
    (``/dev/stdin``) points to; None for a pipe, fifo or device without one (recognized by its content)."""
    if options.format is not None:
        return format_named(options.format)
    found = format_of(path) or format_of(os.path.realpath(path))
    if found is not None or not Path(path).is_file():
        return found
    raise _unknown(path, "or --format csv|tsv|parquet")


def _recognized(stream: Any, source: str, options: ReadOptions) -> tuple[TableFormat, _Input]:
    """The format of a stream by ``--format`` or by its first bytes (a binary format's magic; else
    delimited text), and the stream with those bytes given back. Reads no further than needed to rule the
    magics out, so the first line of a slow pipe is not held back."""
    if options.format is not None:
        return format_named(options.format), _Input(stream, source)
    read = getattr(stream, "read1", stream.read)
    head = b""
    while len(head) < _SNIFF_MAGIC:
        candidates = [f for f in FORMATS if f.magic and f.magic[: len(head)] == head[: len(f.magic)]]
        if not candidates or any(f.magic and head.startswith(f.magic) for f in candidates):
            break
        more = read(_SNIFF_MAGIC - len(head))
        if not more:
            break
        head += more
    found = next((f for f in FORMATS if f.magic and head.startswith(f.magic)), STDIO_FORMAT)
    return found, _Input(stream, source, head)


# ------------------------------------------------------------------------------------ reading, writing


def read_table(path: str, stdin: IO[bytes] | None = None, options: ReadOptions | None = None) -> pd.DataFrame:
    """Read a whole table (for fitting). ``-`` reads stdin."""
    options = options or ReadOptions()
    if path == STDIO:
        fmt, stream = _recognized(stdin or sys.stdin.buffer, "stdin", options)
        return fmt.read_stream(stream, "stdin", options)
    _check_readable(path)
    known = _reading_format(path, options)
    if known is not None:
        return known.read(path, options)
    with open(path, "rb") as f:
        found, stream = _recognized(f, path, options)
        return found.read_stream(stream, path, options)


def iter_table(
    path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, stdin: IO[bytes] | None = None, options: ReadOptions | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a table in chunks: text from a file, a pipe or stdin as its lines arrive, Parquet by record batches."""
    for frame, _ in _chunks(path, chunk_rows, stdin, options, keep_lines=False):
        yield frame


def iter_table_lines(
    path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, stdin: IO[bytes] | None = None, options: ReadOptions | None = None
) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
    """``iter_table``, each chunk with the input's own text of its rows where the input is comma-separated
    text with one line per row (``delimited.InputLines``), else None: for writing the rows as they came."""
    yield from _chunks(path, chunk_rows, stdin, options, keep_lines=True)


def _chunks(
    path: str, chunk_rows: int, stdin: IO[bytes] | None, options: ReadOptions | None, keep_lines: bool
) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
    options = options or ReadOptions()
    if path == STDIO:
        fmt, stream = _recognized(stdin or sys.stdin.buffer, "stdin", options)
        yield from fmt.stream_chunk_lines(stream, "stdin", chunk_rows, options, keep_lines)
        return
    _check_readable(path)
    known = _reading_format(path, options)
    if known is not None:
        yield from known.chunk_lines(path, chunk_rows, options, keep_lines)
        return
    with open(path, "rb") as f:
        found, stream = _recognized(f, path, options)
        yield from found.stream_chunk_lines(stream, path, chunk_rows, options, keep_lines)


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

    def write(self, frame: pd.DataFrame, lines: InputLines | None = None) -> None:
        """Write a chunk; ``lines`` (from ``iter_table_lines``), where the output is CSV, are written in
        place of the frame's leading columns: pass them only when those columns are the input's, unchanged."""
        if lines is not None and isinstance(self._writer, _CsvWriter | _CompressedWriter):
            self._writer.write(frame, lines)
        else:
            self._writer.write(frame)  # the FrameWriter protocol: what a new format implements

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The writer finishes the file, then the atomic file is moved into place (or removed on error).
        self._stack.__exit__(exc_type, exc, tb)
