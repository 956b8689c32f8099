"""One output file per input file, for ``logprob``/``encode``/``decode`` over a directory of tables.

On a cluster the files of a dataset are the natural unit of work: K workers each run the command with
``--shard k/K`` and take the files ``i % K == k`` (in name order), writing ``OUTDIR/<same file name>``.
No worker reads or writes another's files, so no coordination is needed beyond the shared OUTDIR.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .io import extension_list, table_files


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
        if not target.parent.is_dir():
            raise DataError(f"{output}: directory {str(target.parent)!r} does not exist")
        target.mkdir(exist_ok=True)  # several workers may create it at once
    return [(f, target / f.name) for i, f in enumerate(files) if i % n == k]
