"""The shared plumbing: the name registry, the stored-quantile reader, the table-format list, atomic writes."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, ClassVar

import numpy as np
import pandas as pd
import pytest

from flowcli import io as tables
from flowcli.errors import CheckpointError, ConfigError, DataError
from flowcli.files import AtomicBytesFile, AtomicTextFile, Staged, atomic_write_bytes, check_writable
from flowcli.quantiles import QUANTILE_LEVELS, StoredQuantiles, logprob_quantiles
from flowcli.registry import Registry

# ----------------------------------------------------------------------------------------- registry


class Thing:
    type_name: ClassVar[str]


def test_registry_files_classes_by_name_and_names_them() -> None:
    things: Registry[Thing] = Registry("thing")

    @things.register("round")
    class Round(Thing):
        pass

    @things.register("square")
    class Square(Thing):
        pass

    assert Round.type_name == "round" and things["square"] is Square
    assert things.names() == ["round", "square"] and sorted(things) == ["round", "square"] and len(things) == 2
    assert "round" in things and dict(things.items()) == {"round": Round, "square": Square}
    assert things.lookup("square", "shapes[0]") is Square
    with pytest.raises(RuntimeError, match="thing type 'round' registered twice"):
        things.register("round")(Square)


def test_registry_errors_name_the_place_the_allowed_types_and_a_close_match() -> None:
    things: Registry[Thing] = Registry("thing")
    for name in ("round", "square"):
        things.register(name)(type(name, (Thing,), {}))
    with pytest.raises(ConfigError) as exc:
        things.lookup("rund", "shapes[1]")
    assert str(exc.value) == "shapes[1].type: unknown thing type 'rund' (did you mean 'round'?); allowed: round, square"
    with pytest.raises(ConfigError) as exc:
        things.lookup(3, "shapes[1]")
    assert str(exc.value) == "shapes[1].type: unknown thing type 3; allowed: round, square"
    assert str(things.missing("base")) == "base.type: missing; allowed thing types: round, square"


# ---------------------------------------------------------------------------------------- quantiles


def test_stored_quantiles_answer_thresholds_and_percentiles() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    stored = StoredQuantiles.from_info({"logprob_quantiles": logprob_quantiles(values, "validation")})
    assert stored.usable and stored.source == "5000 validation rows"
    assert list(stored.levels) == QUANTILE_LEVELS
    assert stored.threshold(0.5) == pytest.approx(np.median(values))
    assert stored.threshold(0.0) == values.min() and stored.threshold(1.0) == values.max()
    np.testing.assert_allclose(stored.percentile(np.array([np.median(values), -99.0, 99.0])), [50.0, 0.0, 100.0])
    assert [q for q, _ in stored.at((0.01, 0.05))] == [0.01, 0.05]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "nonsense",
        {"source": "validation", "rows": 3, "levels": [0.0, 1.0], "values": []},  # no finite scores at fit
        {"levels": [0.0, 1.0], "values": [1.0, float("nan")]},
        {"levels": [1.0, 0.0], "values": [1.0, 2.0]},
        {"levels": [[0.0, 1.0]], "values": [[1.0, 2.0]]},
        {"levels": ["a", "b"], "values": [1.0, 2.0]},
    ],
)
def test_missing_or_malformed_quantiles_are_unusable(raw: object) -> None:
    stored = StoredQuantiles.from_info({} if raw is None else {"logprob_quantiles": raw})
    assert not stored.usable and stored.at((0.01,)) == []
    with pytest.raises(CheckpointError, match="holds no logprob quantiles"):
        stored.threshold(0.01)
    with pytest.raises(CheckpointError, match="holds no logprob quantiles"):
        stored.percentile(np.zeros(2))


def test_the_source_of_stored_quantiles_reads_as_rows() -> None:
    assert StoredQuantiles.from_info({}).source == "held-out rows"
    assert StoredQuantiles.from_info({"logprob_quantiles": {"source": "training"}}).source == "training rows"


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.parquet", "parquet"),
        ("dir/a.PQ", "parquet"),
        ("a.tsv", "tsv"),
        ("a.csv.gz", "csv.gz"),
        ("a.CSV.ZST", "csv.zst"),
        ("a.gz", None),
        ("a.txt", None),
        ("a", None),
    ],
)
def test_formats_are_known_by_extension(name: str, fmt: str | None) -> None:
    found = tables.format_of(name)
    assert (found.name if found else None) == fmt
    assert tables.is_format(name, "parquet") == (fmt == "parquet")


def test_table_files_skip_hidden_markers_and_other_files(tmp_path: Path) -> None:
    names = ("b.csv", "a.parquet", "c.pq", "d.tsv", "e.csv.gz", ".a.csv.x1.tmp", "_SUCCESS", "_meta.csv", "notes.txt")
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "sub.csv").mkdir()
    assert [p.name for p in tables.table_files(tmp_path)] == ["a.parquet", "b.csv", "c.pq", "d.tsv", "e.csv.gz"]
    assert [p.name for p in tables.table_files(tmp_path, "parquet")] == ["a.parquet", "c.pq"]
    assert tables.extension_list() == ".csv, .tsv, .parquet, .csv.gz, .csv.bz2, .csv.xz or .csv.zst"


class JsonLines(tables.TableFormat):
    """A format a test adds: JSON lines, to show that one class in FORMATS is all it takes."""

    name = "jsonl"
    extensions = (".jsonl",)

    def read_stream(self, stream: IO[bytes], source: str, options: tables.ReadOptions) -> pd.DataFrame:
        return pd.read_json(stream, lines=True)

    def stream_chunks(
        self, stream: IO[bytes], source: str, chunk_rows: int, options: tables.ReadOptions
    ) -> Iterator[pd.DataFrame]:
        yield from pd.read_json(stream, lines=True, chunksize=chunk_rows)

    def writer(self, file: IO[bytes]) -> tables.FrameWriter:
        return JsonLinesWriter(file)


class JsonLinesWriter:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def write(self, frame: pd.DataFrame) -> None:
        self.file.write(frame.to_json(orient="records", lines=True).encode())

    def close(self) -> None:
        pass


def test_a_format_added_to_the_list_is_read_written_and_suggested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "FORMATS", (*tables.FORMATS, JsonLines()))
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]})
    path = str(tmp_path / "t.jsonl")
    with tables.TableWriter(path) as writer:
        writer.write(frame.iloc[:2])
        writer.write(frame.iloc[2:])
    pd.testing.assert_frame_equal(tables.read_table(path), frame, check_dtype=False)
    pd.testing.assert_frame_equal(pd.concat(tables.iter_table(path, 2), ignore_index=True), frame, check_dtype=False)
    with pytest.raises(DataError, match=r"use \.csv, \.tsv, .*, \.jsonl, or - for CSV on stdin/stdout"):
        tables.table_format("t.txt")


def test_stdin_and_stdout_are_csv() -> None:
    assert tables.table_format("-") == "csv"
    out = io.BytesIO()
    with tables.TableWriter("-", stdout=out) as writer:
        writer.write(pd.DataFrame({"x": [1, 2]}))
        writer.write(pd.DataFrame({"x": [3]}))
    assert out.getvalue() == b"x\n1\n2\n3\n"
    frame = tables.read_table("-", stdin=io.BytesIO(out.getvalue()))
    assert frame["x"].tolist() == [1, 2, 3]


# ------------------------------------------------------------------------------------- atomic writes


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_an_atomic_file_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError), AtomicBytesFile(target) as f:
        f.write(b"half")
        1 / 0  # noqa: B018
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_table_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    pd.DataFrame({"x": [1.0]}).to_parquet(target)
    with pytest.raises(RuntimeError), tables.TableWriter(str(target)) as writer:
        writer.write(pd.DataFrame({"x": [2.0]}))
        raise RuntimeError("interrupted")
    assert pd.read_parquet(target)["x"].tolist() == [1.0] and _leftovers(tmp_path) == []


def test_user_named_files_fail_with_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"), AtomicTextFile(tmp_path / "nowhere" / "m.jsonl"):
        pass
    with pytest.raises(DataError, match="is a directory"):
        check_writable(tmp_path)
    check_writable(tmp_path / "fine.flow")
    assert list(tmp_path.iterdir()) == []


def test_a_staged_directory_is_removed_unless_committed(tmp_path: Path) -> None:
    with Staged(tmp_path / "report", directory=True) as staged:
        (staged.path / "a.png").write_bytes(b"png")
    assert list(tmp_path.iterdir()) == []
    with Staged(tmp_path / "report", directory=True) as staged:
        (staged.path / "a.png").write_bytes(b"png")
        staged.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and (tmp_path / "report" / "a.png").exists()
