"""Where the fit loop's batches come from: a table in memory, or Parquet files streamed from disk.

Both sources give the loop the same four things: a batch for data-dependent initialization, the
batches of one epoch, the validation batches, and row counts. Under torch.distributed each rank reads
only its own shard of the rows:

- Parquet (a file or a directory of files): the row groups, listed over all files in name order, are
  dealt out round-robin (row group ``i`` goes to rank ``i % world``), so a rank never reads another
  rank's row groups. With fewer row groups than ranks, every rank reads everything and keeps rows
  ``i % world == rank``.
- CSV: every rank parses the file and keeps rows ``i % world == rank`` (CSV has no index to seek by).

The column statistics (standardization) come from one pass over the shard, merged across ranks
(``moments.py``), so every rank builds the same schema, equal to ``Schema.infer`` on the whole table
up to rounding (up to the sampling error of the quantiles for tables beyond 65536 rows).

Streaming (``StreamingData``) never holds the table: each epoch reads the rank's row groups in a
random order, ``chunk_rows`` rows at a time, through a shuffle buffer of ``shuffle_buffer`` rows from
which batches are drawn at random. Validation rows are chosen by a hash of the global row index
(row ``i`` is held out when ``hash(i) < val_fraction``), so the split is the same in every epoch, on
every rank count and in every run, and is read again for each validation pass. Memory: the shuffle
buffer (``shuffle_buffer x modelled columns x 4 bytes``) plus one chunk being decoded (``chunk_rows x
columns x`` about 24 bytes for Arrow, float64 and float32 copies), plus the model; not the table.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .columns import _parse_numbers
from .distributed import DistContext
from .errors import DataError
from .io import is_format, table_files
from .moments import Moments, common_dtype, merge_all, schema_from_moments
from .redundancy import check_independent
from .schema import Schema, column_names, text_labels
from .trainstate import data_fingerprint

CHUNK_ROWS = 65536


# --------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int  # row group number inside its file
    start: int  # global index of its first row (over all files, in name order)
    rows: int


def parquet_files(path: str) -> list[str]:
    """The Parquet files of ``path``: the file itself, or a directory's ``*.parquet``/``*.pq`` files in
    name order (names starting with ``.`` or ``_``, e.g. ``_SUCCESS`` or temporary files, are skipped)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file not found")
    if p.is_file():
        if not is_format(p, "parquet"):
            raise DataError(f"{path}: streaming reads Parquet files (.parquet or .pq)")
        return [str(p)]
    files = [str(f) for f in table_files(p, "parquet")]
    nested = [
        d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith((".", "_")) and any(d.rglob("*.parquet"))
    ]
    if nested:  # a partitioned layout (year=2024/part-0.parquet): reading only the top level would lose rows
        raise DataError(
            f"{path}: its subdirectory {nested[0].name!r} holds .parquet files, which fit does not read "
            "(partitioned layouts are not supported); gather the files in one directory"
        )
    if not files:
        raise DataError(
            f"{path}: is a directory with no .parquet files (fit reads a .csv or .parquet file, "
            "or a directory of .parquet files)"
        )
    return files


def row_groups(files: list[str]) -> tuple[list[RowGroup], list[str]]:
    """Every row group of ``files`` with its global row offset, and the column names of the first file
    (every file must have them, and no other)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: list[RowGroup] = []
    names: list[str] | None = None
    start = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        file_names = list(meta.schema.to_arrow_schema().names)
        if names is None:
            names = file_names
        else:
            missing = [n for n in names if n not in file_names]
            if missing:
                raise DataError(f"{f}: missing column {missing[0]!r} (present in {files[0]})")
            extra = [n for n in file_names if n not in names]
            if extra:  # silently left out, it would be modelled in no row
                raise DataError(f"{f}: column {extra[0]!r} is not in {files[0]}; the files must have the same columns")
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                groups.append(RowGroup(f, i, start, n))
                start += n
    if not start:
        raise DataError(f"{files[0] if len(files) == 1 else os.path.dirname(files[0])}: the table has no data rows")
    return groups, names or []


def shard_groups(groups: list[RowGroup], dist: DistContext) -> tuple[list[RowGroup], bool]:
    """This rank's row groups, and whether rows must still be filtered by ``i % world == rank``."""
    if len(groups) >= dist.world:
        return groups[dist.rank :: dist.world], False
    return groups, dist.active


STREAMED_DATES = (
    "column {name!r}: dates and times are not modelled in a streamed fit; fit the table in memory, or write the "
    "files without the column (or with it as a number)"
)


def _numeric_values(series: pd.Series, row_offset: int) -> np.ndarray:
    """A column as float64; a non-number or a missing value is a DataError naming the column and row.

    Streamed data is modelled with numeric roles only (``moments.schema_from_moments``): the roles of
    ``columns.py`` for text, categories and missing values need the discrete part, which a stream does not fit."""
    # (A Parquet date32 column holds datetime.date objects: an object column; looked at by its first value,
    # as this runs on every chunk of every epoch.)
    first = series.first_valid_index() if series.dtype == object else None
    if (
        pd.api.types.is_datetime64_any_dtype(series)
        or pd.api.types.is_timedelta64_dtype(series)
        or (first is not None and isinstance(series[first], (datetime.date, datetime.time, datetime.timedelta)))
    ):
        raise DataError(STREAMED_DATES.format(name=series.name))
    values, invalid = _parse_numbers(series, str(series.name), row_offset)
    if invalid:
        raise DataError(min(invalid)[1])
    if np.isnan(values).any():
        pos = int(np.argmax(np.isnan(values)))
        raise DataError(
            f"column {series.name!r}, row {row_offset + pos + 1}: missing value (a streamed fit needs "
            "numeric columns without missing values; fit a table that fits in memory to model them)"
        )
    return values


def numeric_chunk(frame: pd.DataFrame, names: list[str], row_offset: int) -> np.ndarray:
    """The named columns as a float64 matrix; a bad value is a DataError naming its column and global row."""
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"missing column {missing[0]!r}")
    return np.column_stack([_numeric_values(frame[n], row_offset) for n in names])


def read_group(group: RowGroup, names: list[str], chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(global index of the first row, frame) for each chunk of one row group."""
    import pyarrow.parquet as pq

    offset = group.start
    for batch in pq.ParquetFile(group.path).iter_batches(
        batch_size=chunk_rows, row_groups=[group.index], columns=names
    ):
        frame = batch.to_pandas()
        yield offset, frame
        offset += len(frame)


def validation_mask(rows: np.ndarray, val_fraction: float) -> np.ndarray:
    """True for held-out rows: a splitmix64 hash of the global row index, mapped to [0, 1), below the
    fraction. Deterministic, independent of files, chunking and rank count, and uncorrelated with row order."""
    if val_fraction <= 0:
        return np.zeros(len(rows), dtype=bool)
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < val_fraction


# ---------------------------------------------------------------------------------- a shard's rows


class Shard:
    """The rows of a table that belong to this rank, read chunk by chunk as float64 matrices."""

    def __init__(self, path: str, dist: DistContext, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path, self.dist, self.chunk_rows = path, dist, chunk_rows
        self.is_parquet = Path(path).is_dir() or is_format(path, "parquet")
        if self.is_parquet:
            groups, self.names = row_groups(parquet_files(path))
            self.groups, self.filter_rows = shard_groups(groups, dist)
            # The global index of each file's first row, to name a bad value's row within its file.
            self.file_start: dict[str, int] = {}
            for group in groups:
                self.file_start.setdefault(group.path, group.start)
        else:
            from .io import iter_table

            first = next(iter_table(path, 2))
            self.names, self.groups, self.filter_rows = [str(c) for c in first.columns], [], dist.active
        self.dtypes: list[str] | None = None

    def chunks(self, groups: list[RowGroup] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(global row indices, matrix of all columns) of this rank's rows; ``groups`` reorders them."""
        for start, frame, source, first in self._frames(groups):
            self._note_dtypes(frame)
            try:
                matrix = numeric_chunk(frame, self.names, start - first)
            except DataError as exc:  # which file, and the row in it (``first``: the global index of its row 1)
                raise DataError(f"{source}: {exc}") from None
            rows = np.arange(start, start + len(frame))
            if self.filter_rows:
                keep = rows % self.dist.world == self.dist.rank
                rows, matrix = rows[keep], matrix[keep]
            yield rows, matrix

    def _frames(self, groups: list[RowGroup] | None) -> Iterator[tuple[int, pd.DataFrame, str, int]]:
        """(global index of the first row, frame, its file, the global index of that file's first row)."""
        if self.is_parquet:
            for group in self.groups if groups is None else groups:
                for start, frame in read_group(group, self.names, self.chunk_rows):
                    yield start, frame, group.path, self.file_start[group.path]
            return
        from .io import iter_table

        start = 0
        for frame in iter_table(self.path, self.chunk_rows):
            yield start, frame, self.path, 0
            start += len(frame)

    def _note_dtypes(self, frame: pd.DataFrame) -> None:
        found = [str(frame[n].dtype) for n in self.names]
        self.dtypes = (
            found if self.dtypes is None else [common_dtype(a, b) for a, b in zip(self.dtypes, found, strict=False)]
        )


def agreed_schema(shard: Shard, moments: Moments) -> Schema:
    """Merge every rank's column moments and dtypes in rank order: the same schema on every rank."""
    parts = shard.dist.gather((moments.to_state(), shard.dtypes))
    dtypes: list[str] | None = None
    for _, part_dtypes in parts:
        if part_dtypes is not None:
            dtypes = (
                part_dtypes
                if dtypes is None
                else [common_dtype(a, b) for a, b in zip(dtypes, part_dtypes, strict=False)]
            )
    merged = merge_all([Moments.from_state(state) for state, _ in parts])
    return schema_from_moments(shard.names, dtypes or ["float64"] * len(shard.names), merged)


def _to_device(batch: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        # Page-locked memory lets the copy run asynchronously, overlapping the previous step's kernels.
        return t.pin_memory().to(device, non_blocking=True)
    return t


# ------------------------------------------------------------------------------------- sources


class InMemoryData:
    """Training and validation rows held as tensors on the device; each epoch a random permutation."""

    def __init__(self, schema: Schema, train: Tensor, val: Tensor, batch_size: int, fingerprint: str = "") -> None:
        self.schema, self.train, self.val, self.batch_size = schema, train, val, batch_size
        self.n_train, self.n_val = len(train), len(val)
        self.fingerprint = fingerprint  # SHA-256 of the training matrix (see ``data_fingerprint``)

    def init_batch(self, n: int) -> Tensor:
        return self.train[:n]

    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[Tensor]:
        order = torch.randperm(len(self.train), generator=generator).to(self.train.device)
        for start in range(0, len(self.train), self.batch_size):
            yield self.train[order[start : start + self.batch_size]]

    def validation(self, batch: int) -> Iterator[Tensor]:
        for start in range(0, len(self.val), batch):
            yield self.val[start : start + batch]


def split_rows(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random train/validation row indices; validation is empty when the fraction or the table is too small."""
    order = torch.randperm(n, generator=generator)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 10:
        n_val = max(n_val, 1)
    else:
        n_val = 0
    return order[n_val:], order[:n_val]


def in_memory_source(
    table: pd.DataFrame | str,
    tc: Any,
    dist: DistContext,
    generator: torch.Generator,
    schema: Schema | None = None,
    overrides: dict | None = None,
    read_options: Any = None,
) -> InMemoryData:
    """This rank's rows (i % world == rank) of a table that fits in memory, split at random into training
    and validation rows; with one process, the whole table. Every rank reads the whole table (a frame,
    or a path to read) and infers the schema from it (unless ``schema`` is given, as when resuming), so
    the schema is exactly the one a single-process fit builds. The training matrix is fingerprinted
    for ``--resume``, which checks it is given the same data. ``read_options``: how to read a text
    table (``io.ReadOptions``). Errors about the table's columns name the file."""
    from .io import read_table

    frame = dist.agree(lambda: read_table(table, options=read_options)) if isinstance(table, str) else table
    frame = text_labels(frame)  # the names a model stores (a Parquet file's ' a ' is 'a')
    source = ("stdin" if table == "-" else table) if isinstance(table, str) else None
    schema = schema or dist.agree(lambda: _infer(frame, overrides, source))
    mine = frame.iloc[dist.rank :: dist.world] if dist.active else frame
    matrix = dist.agree(lambda: schema.to_features(mine)[0])
    dist.agree(lambda: _check_independent(schema, matrix, source))
    fingerprint = data_fingerprint(matrix)
    max_rows = -(-tc.max_rows // dist.world) if tc.max_rows else 0
    if max_rows and len(matrix) > max_rows:
        matrix = matrix[torch.randperm(len(matrix), generator=generator)[:max_rows].numpy()]
    rows = torch.as_tensor(matrix, dtype=torch.get_default_dtype())
    train_idx, val_idx = split_rows(len(rows), tc.val_fraction, generator)
    train, val = rows[train_idx].to(dist.device), rows[val_idx].to(dist.device)
    return InMemoryData(schema, train, val, dist.local_batch(tc.batch_size), fingerprint)


def _check_independent(schema: Schema, matrix: np.ndarray, source: str | None) -> None:
    """``redundancy.check_independent``, its error naming the file the table came from."""
    try:
        check_independent(schema, matrix)
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"{source}: {exc}") from None


def _infer(frame: pd.DataFrame, overrides: dict | None, source: str | None) -> Schema:
    """``Schema.infer``, its errors naming the file the table came from."""
    try:
        return Schema.infer(frame, overrides)
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"{source}: {exc}") from None


class StreamingData:
    """Batches streamed from Parquet row groups through a shuffle buffer; the table is never loaded."""

    def __init__(
        self, path: str, tc: Any, dist: DistContext, batch_size: int, shuffle_buffer: int, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        self.dist, self.batch_size, self.val_fraction = dist, batch_size, tc.val_fraction
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.shard = dist.agree(lambda: Shard(path, dist, chunk_rows))
        if not self.shard.is_parquet:
            raise DataError(f"{path}: streaming reads Parquet files; load CSV whole or convert it to Parquet")
        # The scan may fail on one rank (a bad value in its files): agreed on before the next collective,
        # the merge of every rank's moments, which the others would otherwise enter alone.
        moments, self.n_train, self.n_val = dist.agree(self._scan)
        try:
            self.schema = agreed_schema(self.shard, moments)  # the same error on every rank: merged moments
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        self.fingerprint = ""  # streamed data is not fingerprinted: a streamed fit cannot be resumed
        names = column_names(self.shard.names)  # the schema's names: stripped as a model stores them
        self.columns = [names.index(c.name) for c in self.schema.modelled]

    def _scan(self) -> tuple[Moments, int, int]:
        """One streaming pass: moments of every row of the shard, and the train/validation counts."""
        moments, n_val, n_all = Moments(), 0, 0
        for rows, matrix in self.shard.chunks():
            moments = moments.merge(Moments.of(matrix, rows))
            n_val += int(validation_mask(rows, self.val_fraction).sum())
            n_all += len(rows)
        return moments, n_all - n_val, n_val

    def _rows(self, groups: list[RowGroup] | None, validation: bool) -> Iterator[np.ndarray]:
        for rows, matrix in self.shard.chunks(groups):
            keep = validation_mask(rows, self.val_fraction)
            if not validation:
                keep = ~keep
            if keep.any():
                yield np.ascontiguousarray(matrix[keep][:, self.columns], dtype=np.float32)

    def init_batch(self, n: int) -> Tensor:
        taken, got = [], 0
        for part in self._rows(None, False):
            taken.append(part[: n - got])
            got += len(taken[-1])
            if got >= n:
                break
        return _to_device(np.concatenate(taken), self.dist.device) if taken else torch.zeros(0, len(self.columns))

    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[Tensor]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        groups = [self.shard.groups[i] for i in rng.permutation(len(self.shard.groups))]
        for batch in shuffle_batches(self._rows(groups, False), self.shuffle_buffer, self.batch_size, rng):
            yield _to_device(batch, self.dist.device)

    def validation(self, batch: int) -> Iterator[Tensor]:
        pending: list[np.ndarray] = []
        size = 0
        for part in self._rows(None, True):
            pending.append(part)
            size += len(part)
            if size >= batch:
                yield _to_device(np.concatenate(pending), self.dist.device)
                pending, size = [], 0
        if pending:
            yield _to_device(np.concatenate(pending), self.dist.device)


def shuffle_batches(
    chunks: Iterator[np.ndarray], capacity: int, batch_size: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Batches drawn at random from a buffer of about ``capacity`` rows, refilled from ``chunks``.

    Whenever the buffer holds more than ``capacity + batch_size`` rows it is shuffled and the excess
    over ``capacity`` leaves as whole batches; at the end the remainder is shuffled and emitted. Every
    row is emitted exactly once, and a row can leave at any time after it entered, mixed with the
    ``capacity`` rows around it in the stream (a full shuffle when ``capacity`` >= the table).
    """
    buffer = np.zeros((0, 0), dtype=np.float32)
    for chunk in chunks:
        buffer = chunk if buffer.size == 0 else np.concatenate([buffer, chunk])
        if len(buffer) >= capacity + batch_size:
            buffer = buffer[rng.permutation(len(buffer))]
            n_out = (len(buffer) - capacity) // batch_size * batch_size
            for start in range(0, n_out, batch_size):
                yield buffer[start : start + batch_size]
            buffer = buffer[n_out:]
    if len(buffer):
        buffer = buffer[rng.permutation(len(buffer))]
        for start in range(0, len(buffer), batch_size):
            yield buffer[start : start + batch_size]
