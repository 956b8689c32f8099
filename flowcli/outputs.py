"""One output file per input file, for ``logprob``/``encode``/``decode`` over a directory of tables.

On a cluster the files of a dataset are the natural unit of work: K workers each run the command with
``--shard k/K`` and take the files ``i % K == k`` (in name order), writing ``OUTDIR/<same file name>``.
No worker reads or writes another's files, so no coordination is needed beyond the shared OUTDIR.

A run is all or nothing (``write_all``): its outputs are written into a hidden directory inside OUTDIR
and moved to their names only when every file succeeded, so a failure at the third file leaves OUTDIR
as it was, including the files of an earlier run the new ones would have replaced. Every error names
the file it happened in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DataError, FlowcliError
from .files import Staged
from .io import extension_list, format_of, table_files


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/K"`` -> (k, K) with 0 <= k < K; None -> (0, 1), every file."""
    if text is None:
        return 0, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise DataError(f"--shard {text}: expected k/K with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise DataError(f"--shard {text}: need 0 <= k < K")
    return k, n


def input_files(directory: Path) -> list[Path]:
    """The tables of a directory in name order; hidden and ``_``-prefixed files (``_SUCCESS``) are skipped."""
    files = table_files(directory)
    if not files:
        raise DataError(f"{directory}: is a directory with no {extension_list()} files")
    return files


def per_file_jobs(data: str, output: str, shard: str | None) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs for this worker; creates OUTDIR (its parent must exist)."""
    k, n = parse_shard(shard)
    source = Path(data)
    files = input_files(source)
    if output == "-":
        raise DataError(f"{data}: is a directory; write one output per input file with -o OUTDIR")
    target = Path(output)
    if target.exists() and not target.is_dir():
        raise DataError(f"{output}: exists and is not a directory (the input is a directory, so -o names one)")
    if target.exists() and target.resolve() == source.resolve():
        raise DataError(f"{output}: is the input directory; choose another so the inputs are not overwritten")
    if not target.exists():
        if format_of(target) is not None:  # -o scores.csv: a slip, not a wish for a directory of that name
            raise DataError(
                f"{output}: names a file, but the input is a directory: give -o OUTDIR, a directory for one "
                "output per input file"
            )
        if not target.parent.is_dir():
            raise DataError(f"{output}: directory {str(target.parent)!r} does not exist")
        target.mkdir(exist_ok=True)  # several workers may create it at once
    return [(f, target / f.name) for i, f in enumerate(files) if i % n == k]


@contextlib.contextmanager
def _naming(source: Path, target: Path) -> Iterator[None]:
    """Errors inside the block name the input file they happened in (unless they already name it or
    its output): "column 'b', row 2: ..." alone does not say which of a hundred files has that row."""
    try:
        yield
    except FlowcliError as exc:
        if str(source) not in str(exc) and target.name not in str(exc):
            exc.args = (f"{source}: {exc}",)  # the same error, with the file in its message
        raise


def write_all(jobs: list[tuple[Path, Path]], work: Callable[[Path, Path], None]) -> None:
    """Run ``work(source, output)`` for each (input, output) job, all or nothing: each output is written
    to a hidden directory in OUTDIR and moved onto its name only after the last job succeeded. On any
    failure (or Ctrl-C) the hidden directory is removed and OUTDIR is as it was before the run."""
    if not jobs:
        return
    outdir = jobs[0][1].parent
    try:
        staging = Staged(outdir / "flowcli-run", directory=True)  # hidden: .flowcli-run.<random>.tmp
    except OSError as exc:
        raise DataError(f"{outdir}: cannot write here ({exc.strerror})") from None
    with staging:
        done = []
        for source, target in jobs:
            staged = staging.path / target.name
            with _naming(source, target):
                work(source, staged)
            done.append((staged, target))
        for staged, target in done:
            os.replace(staged, target)
