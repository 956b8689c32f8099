"""CSV as the shell expects it: fields quoted only when they must be, passed-through values as they were
read, scores at the precision they carry, and missing values distinguishable from empty strings."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT
from typer.testing import CliRunner

import flowcli
from flowcli.cli import app
from flowcli.io import TableWriter

runner = CliRunner()
PENGUINS = ROOT / "data-samples" / "penguins.csv"


def csv_text(frame: pd.DataFrame) -> str:
    sink = io.BytesIO()
    with TableWriter("-", stdout=sink) as writer:
        writer.write(frame)
    return sink.getvalue().decode()


def test_plain_strings_are_not_quoted_and_special_ones_are() -> None:
    frame = pd.DataFrame(
        {
            "species": ["Adelie", "a,b", 'say "hi"', "line\nbreak", " lead", "trail ", "", None],
            "n": range(8),
        }
    )
    text = csv_text(frame)
    assert text.splitlines()[:2] == ["species,n", "Adelie,0"]
    assert '"a,b",1\n"say ""hi""",2\n"line\nbreak",3\n" lead",4\n"trail ",5\n' in text
    # The empty string is "" and a missing value an empty field (as PostgreSQL's COPY ... CSV writes them).
    assert text.endswith('"",6\n,7\n')
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert [r[0] for r in rows[:6]] == ["Adelie", "a,b", 'say "hi"', "line\nbreak", " lead", "trail "]


def test_header_names_are_quoted_only_when_needed() -> None:
    assert csv_text(pd.DataFrame({"a b": [1], 'q"': [2], "x,y": [3]})) == 'a b,"q""","x,y"\n1,2,3\n'


def test_floats_stay_floats_integers_stay_integers_booleans_are_true_false() -> None:
    frame = pd.DataFrame(
        {
            "f": [181.0, 181.5, -0.0],
            "i": [181, 2, 3],
            "b": [True, False, True],
            "gaps": [181.0, np.nan, 186.0],  # an integer column that pandas read as floats (its gap)
            "nullable": pd.Series([1, None, 3], dtype="Int64"),
            "f32": np.array([-58.34260559082031, 0.1, 1.0], dtype=np.float32),
            "cat": pd.Series(["x", None, "y"], dtype="category"),
        }
    )
    assert csv_text(frame).splitlines() == [
        "f,i,b,gaps,nullable,f32,cat",
        "181.0,181,true,181,1,-58.342606,x",
        "181.5,2,false,,,0.1,",
        "-0.0,3,true,186,3,1.0,y",
    ]


def significant_digits(text: str) -> str:
    return text.lower().split("e")[0].lstrip("-").replace(".", "").strip("0")


def test_floats_are_written_in_the_shortest_text_that_reads_back_exactly() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-12, 12, 200), [0.1 + 0.2, 1e300, 5e-324]])
    text = csv_text(pd.DataFrame({"x": values, "x32": np.clip(values, -1e30, 1e30).astype(np.float32)}))
    rows = [line.split(",") for line in text.splitlines()[1:]]
    assert [float(r[0]) for r in rows] == values.tolist()
    assert [significant_digits(r[0]) for r in rows] == [significant_digits(repr(float(v))) for v in values]
    singles = np.clip(values, -1e30, 1e30).astype(np.float32)
    assert [np.float32(r[1]) for r in rows] == singles.tolist()
    assert [significant_digits(r[1]) for r in rows] == [significant_digits(str(v)) for v in singles]


def test_dates_and_mixed_columns_are_written_as_pandas_writes_them() -> None:
    frame = pd.DataFrame(
        {"day": pd.to_datetime(["2020-01-01", None]), "mixed": [1, "x,y"], "td": pd.to_timedelta([1, None], unit="s")}
    )
    assert csv_text(frame) == frame.to_csv(index=False)


def test_a_text_column_made_by_concatenating_frames_is_written() -> None:
    # pandas' str columns are pyarrow arrays; pd.concat keeps the pieces as chunks of one column.
    frame = pd.concat([pd.DataFrame({"s": ["a", "b,c"], "n": [1, 2]}), pd.DataFrame({"s": ["d"], "n": [3]})])
    assert csv_text(frame.reset_index(drop=True)) == 's,n\na,1\n"b,c",2\nd,3\n'


def test_large_frames_are_formatted_on_the_commands_threads_to_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``PARALLEL_CELLS`` the columns are formatted on torch's thread count (``devices.map_on_threads``):
    the text is the one the serial loop writes, and an error is the one it raises."""
    import torch

    from flowcli import devices
    from flowcli import io as flowcli_io

    rng = np.random.default_rng(0)
    n = devices.PARALLEL_CELLS // 4 + 1
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 9, n),
            "s": rng.choice(["a", "b,c", None], n),
            "y": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        }
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = csv_text(frame)
        torch.set_num_threads(2)
        assert csv_text(frame) == serial

        def fails(column: pd.Series, sep: str) -> object:
            raise ValueError(f"column {column.name}")

        monkeypatch.setattr(flowcli_io, "_column_text", fails)
        with pytest.raises(ValueError, match="column x"):
            csv_text(frame)
    finally:
        torch.set_num_threads(threads)
    assert devices.map_on_threads(lambda v: v * 2, range(5), cells=10) == [0, 2, 4, 6, 8]


def test_chunks_write_one_header() -> None:
    sink = io.BytesIO()
    with TableWriter("-", stdout=sink) as writer:
        writer.write(pd.DataFrame({"a": [1.5], "s": ["x"]}))
        writer.write(pd.DataFrame({"a": [2.0], "s": ["y z"]}))
    assert sink.getvalue().decode() == "a,s\n1.5,x\n2.0,y z\n"


@pytest.fixture(scope="module")
def penguins_flow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("penguins") / "p.flow"
    result = runner.invoke(
        app, ["fit", str(PENGUINS), "-o", str(path), "-c", "maf", "--epochs", "1", "--seed", "0", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    return path


def test_logprob_passes_rows_through_as_read_and_prints_float32_scores(penguins_flow: Path) -> None:
    result = runner.invoke(app, ["logprob", str(penguins_flow), str(PENGUINS), "--flag-below", "0.01"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0] == "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,logprob,anomaly"
    )
    first, score, flag = lines[1].rsplit(",", 2)
    assert first == "Adelie,Torgersen,39.1,18.7,181,3750,male,2007"  # the input row, unquoted and unchanged
    assert flag in ("true", "false")
    assert len(score.lstrip("-").replace(".", "")) <= 9 and repr(np.float32(score)) == f"np.float32({score})"


def test_grep_and_awk_find_the_labels(penguins_flow: Path, tmp_path: Path) -> None:
    """The habits the issue names, in a real shell: `grep '^Adelie,'` and `awk -F, '$1=="Adelie"'`."""
    out = tmp_path / "scored.csv"
    result = runner.invoke(app, ["logprob", str(penguins_flow), str(PENGUINS), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    adelie = sum(1 for line in PENGUINS.read_text().splitlines() if line.startswith("Adelie,"))
    grep = subprocess.run(["grep", "-c", "^Adelie,", str(out)], capture_output=True, text=True)
    awk = subprocess.run(["awk", "-F,", '$1=="Adelie"{n++} END{print n}', str(out)], capture_output=True, text=True)
    assert int(grep.stdout) == int(awk.stdout) == adelie > 100


def test_sampled_csv_reads_back_with_the_same_values(penguins_flow: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    assert runner.invoke(app, ["sample", str(penguins_flow), "-n", "200", "--seed", "1", "-o", str(out)]).exit_code == 0
    parquet = tmp_path / "s.parquet"
    assert (
        runner.invoke(app, ["sample", str(penguins_flow), "-n", "200", "--seed", "1", "-o", str(parquet)]).exit_code
        == 0
    )
    from_csv, from_parquet = pd.read_csv(out), pd.read_parquet(parquet)

    def cells(series: pd.Series) -> list:
        return [None if pd.isna(v) else v for v in series.astype(object)]

    for name in from_parquet.columns:  # every value, floats to the last bit, survives the CSV text
        assert cells(from_csv[name]) == cells(from_parquet[name]), name
    assert '"' not in out.read_text()  # labels are plain words: nothing to quote


# Rows as a person or a spreadsheet wrote them: trailing zeros, an exponent, "NA" markers, a quoted label,
# spaces after commas and an extra column the model does not know.
WRITTEN_ROWS = [
    'Adelie,Torgersen,39.10,18.7,181,3750,male,2007,"first, of all"',
    "Adelie,Torgersen,NA,NA,NA,NA,NA,2007,",
    '"Gentoo",Biscoe,4.65e1,15.0,217,4875, female,2008,x',
    "Chinstrap,Dream,46.5,17.9,192,3500,female,2007,plain",
]
WRITTEN_HEADER = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,note"


def logprob_lines(flow: Path, path: Path, *options: str) -> list[str]:
    result = runner.invoke(app, ["logprob", str(flow), str(path), *options])
    assert result.exit_code == 0, result.stderr
    return result.stdout.split("\n")


def scores_of(lines: list[str]) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("\n".join(lines)), keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_logprob_writes_each_input_row_as_it_was_written(penguins_flow: Path, tmp_path: Path, newline: str) -> None:
    """`logprob` appends a column and changes nothing else: each data line comes out byte for byte, with
    `,score` after it (whatever chunks the rows are read in), as `paste -d,` would make it."""
    path = tmp_path / "written.csv"
    # Empty lines (skipped by the reader) in the middle and at the end do not count as rows.
    rows = [*WRITTEN_ROWS[:2], "", *WRITTEN_ROWS[2:], "", ""]
    path.write_bytes(newline.join([WRITTEN_HEADER, *rows]).encode())
    for chunk_size in ("1", "3", "65536"):  # the last, one batch, is compared below (float32 sums by batch)
        lines = logprob_lines(penguins_flow, path, "--chunk-size", chunk_size)
        assert lines[0] == WRITTEN_HEADER + ",logprob"
        assert lines[-1] == ""  # the last line ends with a line break
        for written, line in zip(WRITTEN_ROWS, lines[1:-1], strict=True):
            head, score = line.rsplit(",", 1)
            assert head == written, chunk_size
            assert np.isfinite(float(score))
    # The same rows written as flowcli writes them score the same.
    plain = tmp_path / "plain.csv"
    pd.read_csv(path, skipinitialspace=True).to_csv(plain, index=False)
    scores = scores_of(logprob_lines(penguins_flow, plain))["logprob"].to_numpy()
    np.testing.assert_array_equal(scores_of(lines)["logprob"].to_numpy(), scores)


@pytest.mark.parametrize(
    "case",
    [
        "a logprob column replaced",
        "a logprob column replaced, flags added",
        "semicolons",
        "a quoted line break",
        "lines ending in CR",
    ],
)
def test_logprob_writes_values_where_input_lines_cannot_stand_for_the_rows(
    penguins_flow: Path, tmp_path: Path, case: str
) -> None:
    """Where the input's lines cannot be copied (another separator, a row over two lines, a column being
    replaced), the values are written as read: the output reads back as the input with its scores."""
    header, rows = WRITTEN_HEADER, list(WRITTEN_ROWS)
    if case.startswith("a logprob column replaced"):
        header, rows = header + ",logprob", [row + ",0.5" for row in rows]
    elif case == "a quoted line break":
        rows[1] = rows[1] + '"two\nlines"'
    ending = "\r" if case == "lines ending in CR" else "\n"
    text = ending.join([header, *rows, ""])
    if case == "semicolons":
        text = text.replace(",", ";").replace('"first; of all"', '"first, of all"')
    path = tmp_path / "input.csv"
    path.write_bytes(text.encode())
    if case == "lines ending in CR":  # an old Mac file is refused with a way out, not misread
        result = runner.invoke(app, ["logprob", str(penguins_flow), str(path)])
        assert result.exit_code == 1 and "\\r" in result.stderr
        return
    flags = ["--flag-below", "0.01"] if "flags" in case else []
    out = scores_of(logprob_lines(penguins_flow, path, *flags))
    expected = pd.read_csv(
        io.StringIO(text), sep=";" if case == "semicolons" else ",", skipinitialspace=True, skip_blank_lines=True
    )
    added = ["logprob", "anomaly"] if flags else ["logprob"]
    assert list(out.columns) == [c for c in expected.columns if c != "logprob"] + added
    assert len(out) == len(WRITTEN_ROWS)
    for name in expected.columns.drop("logprob", errors="ignore"):
        pd.testing.assert_series_equal(out[name], expected[name], check_dtype=False, obj=name)
    assert np.isfinite(out["logprob"]).all() and (out["logprob"] != 0.5).all()


def test_compressed_output_holds_the_same_lines(penguins_flow: Path, tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "written.csv"
    path.write_text("\n".join([WRITTEN_HEADER, *WRITTEN_ROWS, ""]))
    out = tmp_path / "scored.csv.gz"
    assert runner.invoke(app, ["logprob", str(penguins_flow), str(path), "-o", str(out)]).exit_code == 0
    assert gzip.decompress(out.read_bytes()).decode().split("\n") == logprob_lines(penguins_flow, path)


def test_a_true_false_column_with_empty_cells_is_scored_and_imputed(tmp_path: Path) -> None:
    """Read with its empty cells, a true/false column holds Python booleans (an object column); scoring must
    read it so again, not as the text 'true' (which was an 'unseen category' on the training file itself)."""
    path = tmp_path / "paid.csv"
    rows = [f"{['true', 'FALSE', ''][i % 3]},{i * 0.37 % 5:.2f}" for i in range(120)]
    path.write_text("\n".join(["paid,x", *rows, ""]))
    flow = tmp_path / "paid.flow"
    fit = runner.invoke(app, ["fit", str(path), "-o", str(flow), "-c", "maf", "--epochs", "1", "--seed", "0", "-q"])
    assert fit.exit_code == 0, fit.stderr
    scored = scores_of(logprob_lines(flow, path))
    assert len(scored) == 120 and np.isfinite(scored["logprob"]).all()
    sampled = tmp_path / "sampled.csv"
    assert runner.invoke(app, ["sample", str(flow), "-n", "50", "--seed", "1", "-o", str(sampled)]).exit_code == 0
    assert set(pd.read_csv(sampled)["paid"].dropna()) <= {True, False}
    assert np.isfinite(scores_of(logprob_lines(flow, sampled))["logprob"]).all()
    imputed = runner.invoke(app, ["impute", str(flow), str(path)])
    assert imputed.exit_code == 0, imputed.stderr
    filled = pd.read_csv(io.StringIO(imputed.stdout))["paid"]
    assert filled.notna().all() and filled[:2].tolist() == [True, False]


class _Trickle(io.RawIOBase):
    """stdout under PYTHONUNBUFFERED: a raw file whose write takes at most 1,000 bytes and says how many."""

    def __init__(self) -> None:
        self.received = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        taken = bytes(data[:1000])
        self.received += taken
        return len(taken)


def test_every_byte_reaches_an_output_that_takes_part_of_each_write() -> None:
    """A raw stdout may take part of a write (a signal, a slow pipe): the rest was dropped, exit 0."""
    frame = pd.DataFrame({"x": np.arange(5000) * 0.25, "label": ["a,b"] * 5000})
    sink = _Trickle()
    with TableWriter("-", stdout=sink) as writer:  # type: ignore[arg-type]
        writer.write(frame)
        writer.write(frame)
    assert sink.received.decode() == csv_text(frame) + csv_text(frame).split("\n", 1)[1]


def test_lists_and_structs_are_written_as_json() -> None:
    """A Parquet list or struct column passed through into CSV: JSON text, not numpy's repr ['a' 'b']."""
    import json

    frame = pd.DataFrame(
        {
            "tags": [np.array(["a", "b"], dtype=object), np.array([], dtype=object), None],
            "meta": [{"k": np.int64(1), "name": "é"}, None, {"k": 2, "name": "x"}],
        }
    )
    back = pd.read_csv(io.StringIO(csv_text(frame)), keep_default_na=False, na_values=[""])
    assert [json.loads(v) for v in back["tags"][:2]] == [["a", "b"], []] and pd.isna(back["tags"][2])
    assert json.loads(back["meta"][0]) == {"k": 1, "name": "é"} and pd.isna(back["meta"][1])


def test_tsv_is_written_as_csv_is_with_tabs(tmp_path: Path) -> None:
    """One writer for both: whole numbers with gaps stay integers (pandas wrote 57.0), floats never look like
    integers, a field holding a tab or a quote is quoted, a comma needs no quotes; read back, the same frame."""
    frame = pd.DataFrame(
        {
            "age": [57.0, None, 31.0],
            "x": [1.0, 2.5, None],
            "text": ["a\tb", 'say "hi"', "x,y"],
            "tab\tname": [1, 2, 3],
        }
    )
    path = tmp_path / "out.tsv"
    with TableWriter(str(path)) as writer:
        writer.write(frame)
    assert path.read_text().splitlines() == [
        'age\tx\ttext\t"tab\tname"',
        '57\t1.0\t"a\tb"\t1',
        '\t2.5\t"say ""hi"""\t2',
        "31\t\tx,y\t3",
    ]
    pd.testing.assert_frame_equal(pd.read_csv(path, sep="\t"), frame)


def test_tsv_writes_booleans_as_csv_does(tmp_path: Path) -> None:
    """true/false in TSV too (pandas' own writer gave True/False); the text 'True' stays as it is."""
    frame = pd.DataFrame({"b": [True, False], "o": [True, None], "t": ["True", "x"], "n": [1.5, None]})
    path = tmp_path / "out.tsv"
    with TableWriter(str(path)) as writer:
        writer.write(frame)
    assert path.read_text().splitlines() == ["b\to\tt\tn", "true\ttrue\tTrue\t1.5", "false\t\tx\t"]
    assert frame["b"].dtype == bool and frame["o"].tolist() == [True, None]  # the frame itself untouched


def test_whole_numbers_keep_their_training_type_whatever_the_rows_drawn(tmp_path: Path) -> None:
    """A float column without gaps stays float (``181.0``: penguin_measures.csv); an integer column with
    gaps, which the reader holds as floats, is written as integers whether or not a drawn row is empty,
    also when few values make it categorical (before: ``5.0,3.0`` in one sample, ``1,,3`` in another)."""
    rng = np.random.default_rng(0)
    n = 400
    stars = rng.integers(1, 6, n).astype(float)
    stars[::4] = np.nan
    flipper = rng.integers(170, 231, n).astype(float)
    frame = pd.DataFrame(
        {"stars": stars, "flipper": flipper, "count": np.where(np.arange(n) % 5 == 0, np.nan, rng.integers(0, 500, n))}
    )
    (tmp_path / "t.csv").write_text(
        "stars,flipper,count\n"
        + "".join(
            f"{'' if np.isnan(s) else int(s)},{f:.1f},{'' if np.isnan(c) else int(c)}\n"
            for s, f, c in frame.itertuples(index=False)
        )
    )
    model = flowcli.fit(
        str(tmp_path / "t.csv"), {"layers": [{"type": "maf", "hidden": [8]}]}, epochs=1, seed=0, threads=1
    )
    assert [c.role for c in model.schema.columns] == ["categorical", "integer", "integer"]
    for seed in range(4):
        drawn = model.sample(6, seed=seed)
        assert str(drawn["stars"].dtype) == "Int64" and str(drawn["count"].dtype) == "Int64", seed
        assert drawn["flipper"].dtype == np.float64 and (drawn["flipper"] == drawn["flipper"].round()).all()
        text = csv_text(drawn)
        assert all(line.split(",")[1].endswith(".0") for line in text.splitlines()[1:])
        assert ".0" not in "".join(line.split(",")[0] + line.split(",")[2] for line in text.splitlines()[1:])
