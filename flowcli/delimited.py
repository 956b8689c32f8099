"""Delimited text tables (CSV, TSV, ``;``-separated files): decoding, dialect sniffing, checked parsing,
and the typing of columns from their raw text. The same code reads a whole file and a stream of lines.

1. **Bytes**: UTF-8 by default; a byte-order mark is skipped, and a UTF-16 one selects UTF-16. Another
   encoding is named with ``--encoding`` (latin-1, cp1252, ...). A byte that is not valid in the encoding
   is an error naming the file, the line and the byte offset, suggesting ``--encoding latin-1``.
2. **Separator**: ``--sep``, or sniffed from the first lines (at most ``SNIFF_LINES``, 64 KiB): among
   ``,`` tab ``;`` ``|``, the one that splits every one of those lines (quotes respected) into the same
   number of fields, at least two; the most fields wins, ties in that order. If none does (ragged rows,
   reported below), the one the header line contains most often. **Decimal mark**: ``--decimal``; else,
   with a separator other than ``,``, a comma when numbers in those lines are written with decimal
   commas (``1,5``, ``1.234,5``) and none with decimal points; else a point. Numbers written with a
   decimal comma are read in the point convention (``1.234,5`` -> ``1,234.5``), so everything after this
   module sees one convention.
3. **Rows**: the header names the columns (``--no-header``: ``c0``, ``c1``, ... and the first line is
   data); every row must have exactly as many fields. One more or one fewer is an error naming the file
   and the line: never a shifted column, never a first field taken for a row index.
4. **Types, from the raw text of each column**: every present value a canonical number -> int64 or
   float64; every value true/false -> bool; anything else stays text as written. So codes such as
   ``00501`` or ``+33612345678`` keep their digits, and numbers written with thousands separators or
   percent signs, and dates, reach the column roles as text (they read them: ``roles/written.py``).
   When scoring, the columns the model knows as text are kept as text whatever a chunk holds
   (``ReadOptions.text_columns``), so a chunk of ZIP codes without a leading zero is still text.

Parsing is pyarrow's CSV reader with every column read as a string (about as fast as pandas with type
inference, and strict about field counts); the typing is pyarrow compute kernels over whole columns.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import select
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pandas as pd

from .errors import DataError, NoDataRows
from .roles.base import PLACEHOLDERS
from .roles.written import NUMBER

SEPARATORS = (",", "\t", ";", "|")  # the sniffed ones, in the order that breaks ties
SEP_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
SNIFF_BYTES = 65536
SNIFF_LINES = 100
DEFAULT_CHUNK_ROWS = 65536
READ_BYTES = 1 << 20
# pandas' default missing-value markers: a file means what it meant when pandas read it.
NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>"] + [
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]
MARKER_BYTES = max(len(m.encode()) for m in NA_VALUES)
_BOOLS = ["True", "False", "true", "false", "TRUE", "FALSE"]
_INTEGER = r"^[-+]?\d+$"
# Digit strings that a number is never written as: a leading zero (00501) or plus sign (+33612345678).
_CODE = r"^(\+\d+|[-+]?0\d+)$"
# A number in the decimal-comma convention (thousands '.', space or apostrophe), optionally a percentage.
# A currency symbol may stand before or after the number (12,50 €, -€5,00), as roles/written.py reads it.
_COMMA_NUMBER = (
    r"^\s*[-+]?([$\x{20ac}\x{00a3}\x{00a5}]\s?)?(\d{1,3}([. \x{00a0}']\d{3})+|\d+)(,\d+)?\s?%?"
    r"(\s?[$\x{20ac}\x{00a3}\x{00a5}])?\s*$"
)
_SNIFF_COMMA = re.compile(r"^[-+]?(\d{1,3}(\.\d{3})+|\d+),\d+\s?%?$")
_SNIFF_POINT = re.compile(r"^[-+]?(\d+|\d{1,3}(,\d{3})+)\.\d+\s?%?$")
_SNIFF_THOUSANDS_ONLY = re.compile(r"^[-+]?\d{1,3}(\.\d{3})+$")  # 1.234: a decimal point or thousands?
_DATA_LIKE = re.compile(r"^(-\d+(\.\d+)?|\d*\.\d+|\d+(\.\d+)?[eE][-+]?\d+)$")


@dataclass(frozen=True)
class ReadOptions:
    """How to read input tables: what ``--sep``, ``--decimal``, ``--encoding``, ``--no-header`` and
    ``--format`` say (None: sniffed, or the default). ``text_columns`` are read as the text they are
    (the text columns of a model, when scoring). Invalid values are a DataError naming the option."""

    sep: str | None = None
    decimal: str | None = None
    encoding: str | None = None
    header: bool = True
    format: str | None = None  # a format name of io.FORMATS (checked there)
    text_columns: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.sep is not None:
            sep = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(self.sep, self.sep)
            if len(sep) != 1 or sep in '"\r\n' or sep.isalnum():
                raise DataError(f"--sep {self.sep!r}: give one character, e.g. ';', '|' or '\\t' (tab)")
            object.__setattr__(self, "sep", sep)
        if self.decimal not in (None, ".", ","):
            raise DataError(f"--decimal {self.decimal!r}: the decimal mark is '.' or ','")
        if self.decimal is not None and self.decimal == self.sep:
            raise DataError(f"--decimal {self.decimal!r}: the same character as --sep")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise DataError(
                    f"--encoding {self.encoding!r}: unknown encoding (e.g. utf-8, latin-1, cp1252, utf-16)"
                ) from None

    def cli_args(self) -> list[str]:
        """These options as command-line arguments (for the worker processes of ``fit --nproc``)."""
        args = ["--sep", self.sep] if self.sep is not None else []
        args += ["--decimal", self.decimal] if self.decimal is not None else []
        args += ["--encoding", self.encoding] if self.encoding is not None else []
        args += ["--format", self.format] if self.format is not None else []
        return args + ([] if self.header else ["--no-header"])


# ---------------------------------------------------------------------------------------- bytes


class Decoder:
    """Bytes of a file in its encoding -> UTF-8 bytes, fed piece by piece; errors name the line and offset.

    UTF-8 passes through unchecked here (pyarrow checks every value; ``locate_bad_utf8`` explains a
    failure); other encodings are transcoded with an incremental decoder, so a stream can be cut anywhere."""

    def __init__(self, encoding: str | None, source: str) -> None:
        self.encoding, self.source = encoding, source
        self._head: bytes | None = b""  # the first bytes, held until a byte-order mark can be seen; None after
        self._decoder: Any = None
        self._offset = 0  # bytes of the file decoded so far
        self._lines = 0  # newlines of the file decoded so far

    def feed(self, data: bytes, final: bool = False) -> bytes:
        if self._head is not None:
            if len(self._head) + len(data) < 4 and not final:
                self._head += data
                return b""
            data, self._head = self._start(self._head + data), None
        if self._decoder is None:
            return data
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            line = self._lines + data.count(b"\n", 0, exc.start) + 1
            raise DataError(
                f"{self.source}, line {line}: byte {data[exc.start : exc.start + 1]!r} at offset "
                f"{self._offset + exc.start} is not {self.encoding} text; give the file's encoding with --encoding"
            ) from None
        self._offset += len(data)
        self._lines += data.count(b"\n")
        return str(text).encode("utf-8")

    def _start(self, data: bytes) -> bytes:
        """Skip a byte-order mark (a UTF-16 one selects UTF-16); refuse binary content; set up transcoding."""
        given = codecs.lookup(self.encoding).name if self.encoding else None
        if data.startswith(codecs.BOM_UTF8) and given in (None, "utf-8", "utf-8-sig"):
            data, self._offset = data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
        elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and given is None:
            self.encoding = given = "utf-16"  # its decoder reads the byte order from the mark
        if given in (None, "utf-8", "utf-8-sig"):
            if b"\x00" in data[:SNIFF_BYTES]:
                raise DataError(f"{self.source}: not a text CSV file (binary content)")
        else:
            self._decoder = codecs.getincrementaldecoder(given)("strict")
        return data


def locate_bad_utf8(block: bytes, source: str, first_line: int, first_byte: int) -> DataError:
    """The error for the first byte of ``block`` that is not UTF-8 (``block`` starts at the given line and
    byte offset of the file)."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + block.count(b"\n", 0, exc.start)
        return DataError(
            f"{source}, line {line}: byte {block[exc.start : exc.start + 1]!r} at offset {first_byte + exc.start} "
            "is not UTF-8 (non-UTF-8 text); give the file's encoding, e.g. --encoding latin-1"
        )
    return DataError(f"{source}: not UTF-8 text; give the file's encoding, e.g. --encoding latin-1")


# ---------------------------------------------------------------------------------------- dialect


def sniff_separator(lines: list[str]) -> str:
    """The separator of a text table from its first lines (see the module docstring)."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ","
    best, most = ",", 1
    for sep in SEPARATORS:
        counts = {len(row) for row in csv.reader(lines, delimiter=sep) if row}
        if len(counts) == 1 and (fields := counts.pop()) > most:
            best, most = sep, fields
    if most > 1:
        return best
    in_header = max(SEPARATORS, key=lambda s: lines[0].count(s))
    return in_header if lines[0].count(in_header) else ","


def sniff_decimal(lines: list[str], sep: str) -> str:
    """``,`` when the values of ``lines`` (data lines) show decimal commas and no decimal points."""
    if sep == ",":
        return "."
    commas = points = 0
    for row in csv.reader(lines, delimiter=sep):
        for value in row:
            value = value.strip()
            commas += bool(_SNIFF_COMMA.match(value))
            points += bool(_SNIFF_POINT.match(value)) and not _SNIFF_THOUSANDS_ONLY.match(value)
    return "," if commas and not points else "."


def _looks_separated(header: str, lines: list[str], sep: str) -> str | None:
    """Another separator that the header and every sampled line contain equally often, or None."""
    for other in SEPARATORS:
        count = header.count(other)
        if other != sep and count and all(line.count(other) == count for line in lines if line.strip()):
            return other
    return None


def sep_argument(sep: str) -> str:
    return "'\\t'" if sep == "\t" else repr(sep)


# ---------------------------------------------------------------------------------------- a table


class TextTable:
    """One text table being read: its dialect, its column names and where in the file the next block
    starts. ``start`` reads the header from the first complete lines; ``parse`` turns each further block
    of complete lines (UTF-8) into a typed, checked DataFrame."""

    def __init__(self, source: str, options: ReadOptions) -> None:
        self.source, self.options = source, options
        self.decoder = Decoder(options.encoding, source)
        self.names: list[str] | None = None
        self.sep, self.decimal = options.sep or ",", options.decimal or "."
        self.line = 1  # line number (1-based) in the file of the next block's first line
        self.byte = 0  # offset in the (UTF-8) text of the next block

    def start(self, block: bytes) -> bytes:
        """Sniff the dialect from the first complete lines of the file, read the header, and return the
        data lines of ``block`` that follow it; b"" until a line that is not blank has arrived."""
        lines = _whole_lines(block).splitlines(keepends=True)
        blank = 0
        while blank < len(lines) and not lines[blank].strip():
            blank += 1
        if blank == len(lines):
            self._advance(block)
            return b""
        sample = [line.decode("utf-8", "replace") for line in lines[blank : blank + SNIFF_LINES]]
        self.sep = self.options.sep or sniff_separator(sample)
        data_lines = sample[1:] if self.options.header else sample
        # Sniffed from data lines: a stream whose first read holds only the header decides at its first rows.
        self.decimal = self.options.decimal or (sniff_decimal(data_lines, self.sep) if data_lines else "")
        skipped = sum(len(line) for line in lines[:blank])
        self._advance(block[:skipped])
        block = block[skipped:]
        header_end = _record_end(block)
        header = block[:header_end]
        try:
            text = header.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise locate_bad_utf8(header, self.source, self.line, self.byte) from None
        if not text.strip():
            raise DataError(f"{self.source}: the first line (the header) is empty")
        try:
            fields = next(csv.reader([text], delimiter=self.sep, skipinitialspace=True))
        except csv.Error as error:
            if "\r" not in text:
                raise DataError(f"{self.source}: cannot read the header: {error}") from None
            raise DataError(
                f"{self.source}: the header holds a carriage return (\\r) that does not end a line; a file whose "
                "lines end in \\r alone (old Mac format) needs converting first, e.g. tr '\\r' '\\n'"
            ) from None
        if not self.options.header:
            self.names = [f"c{i}" for i in range(len(fields))]
            return block
        # Spaces around a name are layout (`` a , b ``), not part of it: stripped on both sides, as the space
        # after a separator is skipped in every field, so `--given a=1` and another file's `a,b` match.
        self.names = self._checked_names([field.strip() for field in fields], text, sample[1:])
        self._advance(header)
        return block[header_end:]

    def _checked_names(self, names: list[str], header: str, lines: list[str]) -> list[str]:
        if len(names) == 1 and (other := _looks_separated(header, lines, self.sep)):
            raise DataError(
                f"{self.source}: read as one column with separator {sep_argument(self.sep)}, but the lines look "
                f"{SEP_NAMES[other]}-separated; use --sep {sep_argument(other)}"
            )
        if any(not name.strip() for name in names):
            raise DataError(f"{self.source}: a column has an empty name in the header")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise DataError(f"{self.source}: column {name!r} appears more than once in the header")
            seen.add(name)
        if len(names) > 1 and any(_DATA_LIKE.match(name.strip()) for name in names):
            raise DataError(
                f"{self.source}: the first line looks like data, not a header ({header[:60]!r}); "
                "give --no-header if the file has no header line"
            )
        return names

    def _advance(self, block: bytes, lines: int | None = None) -> None:
        self.line += block.count(b"\n") if lines is None else lines
        self.byte += len(block)

    def parse(self, block: bytes, threads: bool = False, lines: int | None = None) -> pd.DataFrame:
        """A block of complete data lines as a typed DataFrame (see the module docstring). ``lines``: the
        newlines in ``block``, when the caller has counted them already."""
        assert self.names is not None, "start() reads the header first"
        if not self.decimal:
            head = _whole_lines(block).decode("utf-8", "replace").splitlines()[:SNIFF_LINES]
            self.decimal = sniff_decimal(head, self.sep) if head else ""
        table = None if not block or block.isspace() else self._strings(_skip_initial_space(block, self.sep), threads)
        self._advance(block, lines)
        return typed_frame(table, self.names, self.decimal or ".", self.options.text_columns)

    def _strings(self, block: bytes, threads: bool) -> Any:
        """The block as a pyarrow table of strings (null for the missing-value markers)."""
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        assert self.names is not None
        try:
            return pa_csv.read_csv(
                pa.BufferReader(block),
                read_options=pa_csv.ReadOptions(column_names=self.names, use_threads=threads),
                parse_options=pa_csv.ParseOptions(delimiter=self.sep, newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(self.names, pa.string()),
                    null_values=NA_VALUES,
                    strings_can_be_null=True,
                    # A quoted "" is an empty string, an empty field a missing value (as flowcli and
                    # PostgreSQL write them); quoted markers such as "NA" are made missing in type_column.
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise self._explain(block, str(exc)) from None

    def _explain(self, block: bytes, message: str) -> DataError:
        """The user's error for a block pyarrow refused: the line with the wrong number of fields, or the
        first byte that is not UTF-8 (found again by Python: only on this error path)."""
        if "UTF8" in message:
            return locate_bad_utf8(block, self.source, self.line, self.byte)
        assert self.names is not None
        expected = len(self.names)
        text = io.StringIO(block.decode("utf-8", "replace"), newline="")
        reader = csv.reader(text, delimiter=self.sep, skipinitialspace=True)
        end = 0
        for row in reader:
            if row and len(row) != expected:
                line = self.line + end
                what = "the header has" if self.options.header else "the first line has"
                return DataError(
                    f"{self.source}, line {line}: {len(row)} fields where {what} {expected} (malformed CSV, "
                    f"separator {sep_argument(self.sep)}; see --sep, and quote values that contain it)"
                )
            end = reader.line_num
        detail = message.strip().splitlines()[-1] if message.strip() else "unreadable"
        return DataError(f"{self.source}, near line {self.line}: malformed CSV: {detail}")


def _whole_lines(block: bytes) -> bytes:
    """The first ``SNIFF_BYTES`` of ``block`` cut after their last newline (all of a short block)."""
    if len(block) <= SNIFF_BYTES:
        return block
    head = block[:SNIFF_BYTES]
    cut = head.rfind(b"\n")
    return head[: cut + 1] if cut >= 0 else block


def _record_end(block: bytes) -> int:
    """The end (after its newline) of the first record of ``block``: a newline outside quotes."""
    cut, _ = last_record_end(block[:SNIFF_BYTES], 0, first=True)  # a header is short: look at the start
    if cut < 0:
        cut, _ = last_record_end(block, 0, first=True)
    return cut if cut >= 0 else len(block)


def last_record_end(data: bytes, parity: int, first: bool = False) -> tuple[int, int]:
    """The index after the last (or ``first``) newline of ``data`` outside quotes, or -1; and the quote
    parity at the end of ``data``. ``parity`` is the parity at its start (1: inside a quoted value).

    Quotes are counted wherever they are; a quote inside an unquoted value (5'6") can only delay a cut,
    never cut a record in two: a newline inside a quoted value always has an odd count before it."""
    a = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(a == 34)
    newlines = np.flatnonzero(a == 10)
    end_parity = (parity + len(quotes)) % 2
    if not len(newlines):
        return -1, end_parity
    outside = newlines[(parity + np.searchsorted(quotes, newlines)) % 2 == 0]
    if not len(outside):
        return -1, end_parity
    return int(outside[0 if first else -1]) + 1, end_parity


# ---------------------------------------------------------------------------------------- types


def typed_frame(table: Any, names: list[str], decimal: str, text_columns: frozenset[str]) -> pd.DataFrame:
    """A pyarrow table of strings (or None: no rows) as a DataFrame typed column by column."""
    if table is None:
        return pd.DataFrame({name: pd.Series([], dtype="str") for name in names})
    columns = {name: type_column(table.column(name), decimal, name in text_columns) for name in names}
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def type_column(values: Any, decimal: str, keep_text: bool) -> pd.Series:
    """One column of strings (a pyarrow ChunkedArray) as numbers, booleans, or the text as written.
    Quoted missing-value markers ("NA") are missing too, but a quoted "" is an empty string in a text
    column (in a column of numbers or booleans, it is missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # Quoted markers only (pyarrow made the unquoted ones null); none is longer than MARKER_BYTES, and a
    # column of long values (17-digit floats) skips the hash lookups.
    if pc.any(pc.less_equal(pc.binary_length(values), MARKER_BYTES)).as_py():
        markers = pc.is_in(values, value_set=pa.array(NA_VALUES[1:]))
        if pc.any(markers).as_py():
            values = pc.if_else(markers, pa.scalar(None, pa.string()), values)
    if keep_text:
        return values.to_pandas()
    if values.null_count == len(values):
        return pd.Series(np.full(len(values), np.nan))  # an empty column, as pandas read it
    text = _point_convention(values) if decimal == "," else values
    empty = pc.equal(text, "")
    plain = pc.if_else(empty, pa.scalar(None, pa.string()), text) if pc.any(empty).as_py() else text
    numbers = _numbers(plain)
    if numbers is not None:
        return numbers
    if pc.any(pc.or_(pc.starts_with(plain, " "), pc.ends_with(plain, " "))).as_py():
        plain = pc.utf8_trim_whitespace(plain)
        numbers = _numbers(plain)
        if numbers is not None:
            return numbers
    if pc.all(pc.is_in(pc.drop_null(plain), value_set=_pa_bools())).as_py():
        return pc.equal(pc.utf8_lower(plain), "true").to_pandas()  # object dtype when values are missing
    # Numbers with a placeholder for "not known" ("?" in UCI files, "-" in reports): missing, as NA is. Only
    # in a column whose other values are all numbers: elsewhere "-" or "?" may be a label.
    trimmed = pc.utf8_trim_whitespace(plain)
    placeholder = pc.is_in(trimmed, value_set=pa.array(PLACEHOLDERS))
    if pc.any(placeholder).as_py():
        rest = pc.if_else(placeholder, pa.scalar(None, pa.string()), trimmed)
        numbers = _numbers(rest)
        if numbers is not None and numbers.notna().any():  # a column of only "-" stays what it was: text
            return numbers
        present = pc.drop_null(rest).to_pandas()
        if len(present) and present.str.match(NUMBER).all():  # numbers as people write them: 12%, $5, 1,234
            return rest.to_pandas()
    return text.to_pandas()


def _skip_initial_space(block: bytes, sep: str) -> bytes:
    """``block`` without the spaces that follow a separator outside quotes, as pandas'
    ``skipinitialspace`` read it (``a, b`` is ``b``; ``" b"`` keeps its space; ``, "x"`` is quoted)."""
    separator = sep.encode()
    if b" " not in block or separator + b" " not in block:  # the first test is a memchr: most blocks stop there
        return block
    return _initial_space(separator).sub(rb"\1\2", block)


def _initial_space(separator: bytes) -> re.Pattern[bytes]:
    return re.compile(rb'("(?:[^"]|"")*")|(' + re.escape(separator) + rb") +")


def _pa_bools() -> Any:
    import pyarrow as pa

    return pa.array(_BOOLS)


def _cast(text: Any, target: Any) -> Any:
    """``text`` cast to ``target``, or None where a value does not convert. Its first values are tried
    first: a cast that fails still converts every value (slowly), and text columns fail at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.cast(text.slice(0, 64), target)
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _numbers(text: Any) -> pd.Series | None:
    """Canonical numbers as int64 (float64 with missing values) or float64; None if a value is not a
    number, is a code (00501, +33612345678), or is a whole number too long for int64 (its digits would
    be rounded away: an identifier, kept as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = _cast(text, pa.int64())
    if numbers is not None:
        # Whole numbers: a value that starts with 0 and is not "0" (or "-0") is a code.
        for prefix in ("0", "-0"):
            lead = pc.filter(text, pc.fill_null(pc.starts_with(text, prefix), False))
            if len(lead) and pc.max(pc.utf8_length(lead)).as_py() > len(prefix):
                return None
        return numbers.to_pandas()
    numbers = _cast(text, pa.float64())
    if numbers is None:
        return None
    plus = pc.filter(text, pc.fill_null(pc.starts_with(text, "+"), False))
    if len(plus) and pc.any(pc.match_substring_regex(plus, _CODE)).as_py():
        return None
    values = numbers.to_pandas()
    if pc.max(pc.binary_length(text)).as_py() > 18:
        # Only a whole (or infinite) number can be written as a digit string: test those of the long values.
        x = values.to_numpy()
        with np.errstate(invalid="ignore"):
            whole = pa.array(~np.isfinite(x) | (x == np.trunc(x)))
        long = pc.filter(text, pc.and_(pc.fill_null(pc.greater(pc.binary_length(text), 18), False), whole))
        if len(long) and pc.any(pc.match_substring_regex(long, _INTEGER)).as_py():
            return None
    return values


def _point_convention(text: Any) -> Any:
    """Values that are numbers in the decimal-comma convention, rewritten in the point one: ',' and '.'
    swapped (1.234,5 -> 1,234.5), so that one set of rules reads numbers downstream."""
    import pyarrow.compute as pc

    numbers = pc.match_substring_regex(text, _COMMA_NUMBER)
    if not pc.any(numbers).as_py():
        return text
    swapped = pc.replace_substring(text, ",", "\x00")
    swapped = pc.replace_substring(swapped, ".", ",")
    swapped = pc.replace_substring(swapped, "\x00", ".")
    return pc.if_else(pc.fill_null(numbers, False), swapped, text)


# ---------------------------------------------------------------------------------------- reading


def read_text_table(data: bytes, source: str, options: ReadOptions) -> pd.DataFrame:
    """A whole text table from its bytes."""
    table = TextTable(source, options)
    text = table.decoder.feed(data, final=True)
    if not text or text.isspace():
        raise DataError(f"{source}: the file is empty")
    body = table.start(text)
    frame = table.parse(body, threads=True)
    if len(frame) == 0:
        raise NoDataRows(source, frame)
    return frame


def has_pending_input(stream: IO[bytes]) -> bool:
    """True if more bytes can be read without blocking (or if we cannot tell, e.g. an in-memory stream)."""
    pending = getattr(stream, "pending", None)
    if callable(pending):
        return bool(pending())
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return True
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _blocks(stream: IO[bytes], decoder: Decoder) -> Iterator[tuple[bytes, bool]]:
    """(complete lines, whether more input is waiting) after every read of ``stream``: each read is
    cut after its last newline outside quotes, and the lines before it are given at once, never held
    for the next read. At the end, the last line even without a newline."""
    read = getattr(stream, "read1", stream.read)
    partial, parity = b"", 0
    while True:
        raw = read(READ_BYTES)
        data = decoder.feed(raw, final=not raw)
        cut, end_parity = last_record_end(data, parity) if data else (-1, parity)
        if cut >= 0:
            block, partial, parity = partial + data[:cut], data[cut:], end_parity
        else:
            block, partial, parity = b"", partial + data, end_parity
        if not raw:
            rest = partial + b"\n" if partial.strip() else b""
            yield block + rest, False
            return
        yield block, has_pending_input(stream)


@dataclass(frozen=True)
class InputLines:
    """The rows of a chunk as the input wrote them: ``text[i]`` is row i's line without its line break,
    the fields of ``columns`` separated by commas (a pyarrow large_string array). ``logprob`` writes these
    instead of formatting the values again: the input's rows come out byte for byte, and formatting
    every float (pyarrow's shortest round-trip text) was most of the time of writing a numeric table."""

    columns: tuple[str, ...]
    text: Any

    def __len__(self) -> int:
        return len(self.text)

    def slice(self, start: int, stop: int) -> InputLines:
        return InputLines(self.columns, self.text.slice(start, stop - start))


def input_lines(block: bytes, names: list[str], sep: str, rows: int) -> InputLines | None:
    """The lines of ``block`` (complete lines, UTF-8) as InputLines, or None where they cannot stand for
    the parsed rows as CSV: another separator than a comma, or lines that are not one row each (a
    quoted line break, a carriage return not ending a line). Empty lines, which the parser skips, are
    dropped."""
    import pyarrow as pa

    if sep != "," or not block.endswith(b"\n"):
        return None
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
        if b"\r" in block:
            return None
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    if len(ends) and (ends[0] == 0 or (np.diff(ends) == 1).any()):
        # Empty lines. A quoted value holding empty lines keeps a line break, so its rows are still miscounted below.
        block = re.sub(rb"\n\n+", b"\n", block).lstrip(b"\n")
        ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    if len(ends) != rows:
        return None
    # The lines back to back without their line breaks: line i ends where its newline was, less the i
    # newlines removed before it.
    offsets = np.empty(rows + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends - np.arange(rows)
    data = pa.py_buffer(block.replace(b"\n", b""))
    text = pa.Array.from_buffers(pa.large_string(), rows, [None, pa.py_buffer(offsets), data])
    return InputLines(tuple(names), text)


def iter_text_table(
    stream: IO[bytes], source: str, chunk_rows: int = DEFAULT_CHUNK_ROWS, options: ReadOptions | None = None
) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_rows`` rows as soon as their lines have arrived.

    A chunk is parsed and yielded when it is full or when no more input is waiting, so a line written to
    a pipe comes out as soon as its newline is read (no look-ahead for the next line), while a file or a
    fast pipe is parsed in large, efficient chunks. Cuts happen only at newlines outside quotes."""
    for frame, _ in iter_text_lines(stream, source, chunk_rows, options, keep_lines=False):
        yield frame


def iter_text_lines(
    stream: IO[bytes],
    source: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    options: ReadOptions | None = None,
    keep_lines: bool = True,
) -> Iterator[tuple[pd.DataFrame, InputLines | None]]:
    """``iter_text_table`` with each chunk's InputLines (None where ``input_lines`` finds none)."""
    table = TextTable(source, options or ReadOptions())
    pending: list[bytes] = []
    pending_lines, rows = 0, 0
    for block, waiting in _blocks(stream, table.decoder):
        if table.names is None and block:
            block = table.start(block)
        if block:
            pending.append(block)
            pending_lines += block.count(b"\n")
        if pending and (pending_lines >= chunk_rows or not waiting):
            text = b"".join(pending)
            frame = table.parse(text, lines=pending_lines)
            assert table.names is not None
            lines = input_lines(text, table.names, table.sep, len(frame)) if keep_lines else None
            pending, pending_lines = [], 0
            rows += len(frame)
            for start in range(0, len(frame), chunk_rows):  # one parse of what arrived, scored in chunks
                stop = min(start + chunk_rows, len(frame))
                piece = frame.iloc[start:stop].reset_index(drop=True)
                yield piece, (lines.slice(start, stop) if lines is not None else None)
    if table.names is None:
        raise DataError(f"{source}: the file is empty")
    if not rows:
        raise NoDataRows(source, pd.DataFrame({name: pd.Series([], dtype="str") for name in table.names}))
