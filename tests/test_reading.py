"""Files as people have them: a corpus of tables generated at test time, read the way users' files are.

Each case gives the right result, or exactly one line `Error: ...` on stderr naming the file and the
column or line, exit code 1, no traceback and no output written. Reading is checked through the library
(``flowcli.io.read_table``, quick) and through the CLI where the whole path matters: fit, sample, logprob
and inspect on the new column types, the reading options, pipes and fifos, and a stream scored row by row.
"""

from __future__ import annotations

import bz2
import dataclasses
import decimal
import gzip
import io
import json
import lzma
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import ROOT, assert_clean_error, lines_within
from typer.testing import CliRunner

import flowcli
from flowcli import checkpoint
from flowcli.cli import app
from flowcli.errors import DataError
from flowcli.io import ReadOptions, TableWriter, iter_csv, iter_table, read_table
from flowcli.model import load_model
from flowcli.schema import Schema

runner = CliRunner()
N = 80
TINY = {"layers": [{"type": "maf", "hidden": [8]}], "training": {"epochs": 1, "batch_size": 64}}


def run(*args: str, input: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reading")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def fit(work: Path, data: Path, *extra: str, name: str = "m.flow") -> Path:
    out = work / name
    result = run("fit", data, "-c", work / "tiny.yaml", "-o", out, "--seed", "0", "--device", "cpu", *extra)
    assert result.exit_code == 0, result.stderr
    return out


def fails(work: Path, *args: object, input: bytes | None = None, fragments: tuple[str, ...] = ()) -> None:
    """The command ends with one clean Error line holding ``fragments``, and writes no output."""
    before = sorted(p.name for p in work.iterdir())
    result = run(*(str(a) for a in args), input=input)
    assert_clean_error(result, *fragments)
    assert result.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == before  # no output, no temporary file


def rng() -> np.random.Generator:
    return np.random.default_rng(17)


def heights() -> np.ndarray:
    return np.round(rng().normal(1.7, 0.1, N), 2)


def incomes() -> np.ndarray:
    return np.round(rng().lognormal(10, 0.4, N), 2)


# ------------------------------------------------------------------------------------- separators


def semicolon_text() -> str:
    lines = ["age;income;height;city"]
    for i, (h, m) in enumerate(zip(heights(), incomes(), strict=True)):
        lines.append(f"{20 + i % 50};{m:.2f};{h:.2f};{['Paris', 'Lyon', 'Nice'][i % 3]}".replace(".", ","))
    return "\n".join(lines) + "\n"


def test_a_semicolon_file_with_decimal_commas_is_read_as_its_columns(tmp_path: Path) -> None:
    frame = read_table(str(write(tmp_path / "eu.csv", semicolon_text())))
    assert list(frame.columns) == ["age", "income", "height", "city"]
    np.testing.assert_allclose(frame["income"], incomes())
    np.testing.assert_allclose(frame["height"], heights())
    assert frame["age"].dtype == np.int64 and frame["city"].tolist()[:2] == ["Paris", "Lyon"]


def test_thousands_dots_with_decimal_commas(tmp_path: Path) -> None:
    values = np.round(rng().lognormal(12, 0.4, N), 2)
    german = str.maketrans(",.", ".,")
    text = "price;n\n" + "".join(f"{v:,.2f};{i}\n".translate(german) for i, v in enumerate(values))
    frame = read_table(str(write(tmp_path / "prices.csv", text)))
    column = Schema.infer(frame).columns[0]
    # Read as the numbers they were written as: the column's stand-in (its median) is the values' median.
    assert column.role == "continuous" and column.fill == pytest.approx(np.median(values))


@pytest.mark.parametrize(
    ("name", "sep", "compress"),
    [
        ("t.tsv", "\t", None),
        ("tab_named.csv", "\t", None),  # a TSV renamed .csv: sniffed
        ("pipes.csv", "|", None),
        ("t.csv.gz", ",", gzip.compress),
        ("t.csv.bz2", ";", bz2.compress),
        ("t.csv.xz", "\t", lzma.compress),
    ],
)
def test_delimited_and_compressed_files(tmp_path: Path, name: str, sep: str, compress: Callable | None) -> None:
    expected = pd.DataFrame({"h": heights(), "m": incomes(), "c": ["a b", "c"] * (N // 2)})
    text = expected.to_csv(index=False, sep=sep).encode()
    path = write(tmp_path / name, compress(text) if compress else text)
    pd.testing.assert_frame_equal(read_table(str(path)), expected, check_dtype=False)
    chunks = list(iter_table(str(path), 7))
    assert len(chunks) > 1
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), expected, check_dtype=False)


def test_zstd_needs_the_optional_package(work: Path) -> None:
    data = work / "t.csv.zst"
    try:
        import zstandard
    except ImportError:
        write(data, b"\x28\xb5\x2f\xfd not really zstd")
        fails(work, "fit", data, "-o", work / "z.flow", fragments=("t.csv.zst", "zstandard", "pip install"))
        data.unlink()
        return
    write(data, zstandard.ZstdCompressor().compress(b"a,b\n1,2\n3,4\n"))
    assert read_table(str(data))["b"].tolist() == [2, 4]
    data.unlink()


def test_separator_and_header_options(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", "1.5;2.5\n3.5;4.5\n")
    with pytest.raises(DataError, match=r"data.txt: unknown table format '.txt'.*--format csv"):
        read_table(str(path))
    frame = read_table(str(path), options=ReadOptions(format="csv", header=False))
    assert list(frame.columns) == ["c0", "c1"] and frame["c1"].tolist() == [2.5, 4.5]
    frame = read_table(str(path), options=ReadOptions(format="csv", header=False, sep="\\t"))
    assert list(frame.columns) == ["c0"]  # --sep is obeyed; a one-column file is fine without a header
    quoted = write(tmp_path / "q.csv", 'a,b\r\n"x, y",1\r\n"two\nlines",2\r\n5\'6",3\r\n')
    assert read_table(str(quoted))["a"].tolist() == ["x, y", "two\nlines", "5'6\""]


def test_what_the_csv_writer_writes_reads_back_the_same(tmp_path: Path) -> None:
    """Quoted spaces, quotes, separators, line breaks, and an empty string distinct from a missing value."""
    frame = pd.DataFrame(
        {"s": ["Adelie", "a,b", 'say "hi"', "line\nbreak", " lead", "trail ", "", None], "n": np.arange(8) * 1.5}
    )
    path = str(tmp_path / "out.csv")
    with TableWriter(path) as writer:
        writer.write(frame)
    back = read_table(path)
    assert back["s"].tolist()[:7] == frame["s"].tolist()[:7] and pd.isna(back["s"].iloc[7])
    np.testing.assert_array_equal(back["n"], frame["n"])


def test_spaces_after_separators_and_quoted_markers(tmp_path: Path) -> None:
    text = 'a, b, c\n"",1, x\n,2,"NA"\n" lead",3, "q, r"\n"x","","y"\n'
    back = read_table(str(write(tmp_path / "spaces.csv", text)))
    assert list(back.columns) == ["a", "b", "c"]  # spaces after the separator skipped, as pandas did
    assert back["a"].tolist()[0::2] == ["", " lead"] and back["b"].tolist()[:3] == [1, 2, 3]
    assert back["c"].tolist()[0] == "x" and pd.isna(back["c"].iloc[1]) and back["c"].tolist()[2:] == ["q, r", "y"]
    assert pd.isna(back["b"].iloc[3])  # a quoted "" in a column of numbers is missing


def test_header_names_lose_the_spaces_around_them(tmp_path: Path) -> None:
    back = read_table(str(write(tmp_path / "h.csv", " a , b ,c \n1,2,3\n")))
    assert list(back.columns) == ["a", "b", "c"]  # before: 'a ', 'b ', 'c ' (only leading spaces went)


def test_not_known_marks_in_a_column_of_numbers_are_missing(tmp_path: Path) -> None:
    text = "score,mark,only\n1.5,-,?\n?,ok,-\n2.5, -,?\n-,?,.\n 3 ,bad,?\n"
    back = read_table(str(write(tmp_path / "q.csv", text)))
    assert back["score"].tolist()[0::2] == [1.5, 2.5, 3.0] and back["score"].isna().tolist() == [
        False,
        True,
        False,
        True,
        False,
    ]
    assert back["mark"].tolist() == ["-", "ok", "-", "?", "bad"]  # labels among labels: kept as written
    assert back["only"].tolist() == ["?", "-", "?", ".", "?"]  # no number at all: labels, as before


def test_not_known_marks_among_written_numbers_and_in_a_scored_chunk_of_them(tmp_path: Path) -> None:
    """Percentages and amounts with a "-" (a report's "not known") are numbers with missing cells, at the
    fit and when a chunk being scored holds only marks; amounts with decimal commas are amounts too."""
    r = rng()
    lines = [
        f"{v:.2f};{p}%;{a:,.2f} €".replace(",", "X").replace(".", ",").replace("X", ".") if i % 10 else "?;-;-"
        for i, (v, p, a) in enumerate(zip(heights(), r.integers(1, 90, N), incomes(), strict=True))
    ]
    data = write(tmp_path / "marks.csv", "x;share;amount\n" + "\n".join(lines) + "\n")
    model = flowcli.fit(str(data), TINY, epochs=1, seed=0, threads=1, read_options=ReadOptions(sep=";"))
    roles = {c.name: (c.role, c.missing) for c in model.schema.columns}
    assert roles == {"x": ("continuous", True), "share": ("integer", True), "amount": ("continuous", True)}
    assert model.schema.columns[2].written["currency"] == "| €"
    marks = read_table(str(write(tmp_path / "m2.csv", "x;share;amount\n-;?;-\n?;-;?\n")), options=ReadOptions(sep=";"))
    scores = model.log_prob(marks)
    assert np.isfinite(scores).all() and scores[0] == scores[1]  # every cell missing in both rows


def test_a_column_mixing_currencies_names_the_odd_value(tmp_path: Path) -> None:
    amounts = [f"${v}.50" for v in range(20, 40)]
    for odd in ("€7.50", "7.50"):
        with pytest.raises(DataError, match=f"column 'p', row 21: '{re.escape(odd)}' is not a number written like"):
            Schema.infer(pd.DataFrame({"p": [*amounts, odd]}))
    spaced = [f"$ {v}.00" if v % 2 else f"${v}.00" for v in range(20, 40)]  # "$ 5" and "$5": one way
    assert Schema.infer(pd.DataFrame({"p": spaced})).columns[0].written["currency"] == "$|"


def test_long_values_keep_their_type_rules(tmp_path: Path) -> None:
    """Values longer than 18 characters: floats written with 17 digits are numbers (a quoted "NA" among them
    missing); a whole number with more digits than int64 holds is an identifier, text, even beside floats
    and in exponent-free form only (1e+25 is a number)."""
    text = (
        "f,ident,mixed,big\n"
        "-0.40496668219566345,12345678901234567890123,0.12345678901234567890,1e+25\n"
        '"NA",98765432109876543210987,12345678901234567890123,-2.5e+30\n'
        "1.0163215443611145123,11111111111111111111111,0.5,3\n"
    )
    back = read_table(str(write(tmp_path / "long.csv", text)))
    assert back["f"].dtype == np.float64 and pd.isna(back["f"].iloc[1]) and back["f"].iloc[0] == -0.40496668219566345
    assert back["ident"].tolist() == ["12345678901234567890123", "98765432109876543210987", "11111111111111111111111"]
    assert back["mixed"].tolist()[1] == "12345678901234567890123"
    assert back["big"].dtype == np.float64 and back["big"].tolist() == [1e25, -2.5e30, 3.0]


def test_encodings(tmp_path: Path) -> None:
    text = "nom,n\nRené,1\nZoë,2\nçà,3\n"
    assert read_table(str(write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + text.encode())))["nom"].tolist()[0] == "René"
    assert list(read_table(str(write(tmp_path / "u16.csv", text, "utf-16"))).columns) == ["nom", "n"]
    latin = write(tmp_path / "latin.csv", text, "latin-1")
    assert read_table(str(latin), options=ReadOptions(encoding="latin-1"))["nom"].tolist() == ["René", "Zoë", "çà"]
    for chunk_rows in (1, 100):  # the streaming reader says the same
        with pytest.raises(DataError, match=r"latin.csv, line 2: byte .* at offset 9 .*--encoding latin-1"):
            list(iter_table(str(latin), chunk_rows))


def test_bad_encoding_and_rows_through_the_cli(work: Path) -> None:
    latin = write(work / "latin.csv", "nom,n\nRené,1\nZoë,2\n", "latin-1")
    fails(
        work, "fit", latin, "-o", work / "o.flow", fragments=("latin.csv", "line 2", "offset 9", "--encoding latin-1")
    )
    extra = write(work / "extra.csv", "a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    fails(work, "fit", extra, "-o", work / "o.flow", fragments=("extra.csv", "line 4", "3 fields", "header has 2"))
    short = write(work / "short.csv", "a,b\n1,2\n3\n5,6\n")
    fails(work, "fit", short, "-o", work / "o.flow", fragments=("short.csv", "line 3", "1 fields"))
    # Every row with one more field than the header: no first field taken for a row index.
    shifted = write(work / "shifted.csv", "a,b\n0,1,2\n1,3,4\n")
    fails(work, "fit", shifted, "-o", work / "o.flow", fragments=("shifted.csv", "line 2"))
    semi = write(work / "semi.csv", semicolon_text())
    fails(work, "fit", semi, "--sep", ",", "-o", work / "o.flow", fragments=("semi.csv", "semicolon", "--sep ';'"))
    headless = write(work / "headless.csv", "".join(f"{h},{m}\n" for h, m in zip(heights(), incomes(), strict=True)))
    fails(work, "fit", headless, "-o", work / "o.flow", fragments=("headless.csv", "--no-header"))
    for args, fragment in [
        (("--sep", "ab"), "--sep"),
        (("--decimal", ";"), "--decimal"),
        (("--encoding", "klingon"), "--encoding"),
        (("--format", "xls"), "--format"),
    ]:
        fails(work, "fit", semi, *args, "-o", work / "o.flow", fragments=(fragment,))
    for path in (latin, extra, short, shifted, semi, headless):
        path.unlink()


def test_errors_about_columns_name_the_file(work: Path) -> None:
    flat = write(work / "flat.csv", "a,b\n1,x\n1,x\n1,x\n")
    fails(work, "fit", flat, "-o", work / "o.flow", fragments=("flat.csv", "every column is constant or ignored"))
    data = write(
        work / "ok.csv", "".join(["a,b\n"] + [f"{h},{m}\n" for h, m in zip(heights(), incomes(), strict=True)])
    )
    ckpt = fit(work, data, name="ok.flow")
    bad = write(work / "bad.csv", "a,b\n1.7,20000\n1.8,lots\n")
    fails(work, "logprob", ckpt, bad, fragments=("bad.csv", "column 'b'", "row 2", "'lots'"))
    for path in (flat, data, ckpt, work / "ok.metrics.jsonl", bad):
        path.unlink()


def test_a_header_less_file_with_no_header(work: Path) -> None:
    data = write(work / "nh.csv", "".join(f"{h},{m}\n" for h, m in zip(heights(), incomes(), strict=True)))
    model = load_model(str(fit(work, data, "--no-header")))
    assert model.schema.names == ["c0", "c1"]
    assert model.info["n_train"] + model.info["n_val"] == len(heights())  # the first row is data


# ---------------------------------------------------------------------------------------- numbers


def test_numbers_as_people_write_them(work: Path) -> None:
    r = rng()
    shares = r.integers(1, 60, N)
    frame = pd.DataFrame(
        {
            "amount": [f"{v:,.2f}" for v in 10 * incomes()],
            "share": [f"{v}%" for v in shares],
            "rate": [f"{v:.1f} %" for v in r.uniform(0, 20, N)],
            "x": heights(),
            "price": [f"{'-' if i % 9 == 0 else ''}${v:,.2f}" for i, v in enumerate(incomes())],
            "fee": [f"{v:.2f} €" for v in r.uniform(1, 30, N)],
        }
    )
    data = work / "written.csv"
    frame.to_csv(data, index=False)
    model = load_model(str(fit(work, data)))
    roles = {c.name: c.role for c in model.schema.columns}
    assert {k: roles[k] for k in ("amount", "share", "rate", "x", "price", "fee")} == {
        "amount": "continuous",
        "share": "integer",
        "rate": "continuous",
        "x": "continuous",
        "price": "continuous",
        "fee": "continuous",
    }
    mixed = pd.DataFrame({"mixed": [f"{'$' if i % 2 else '£'}{v:.2f}" for i, v in enumerate(r.uniform(1, 30, N))]})
    with pytest.raises(DataError, match="column 'mixed', row 1: '£"):  # two currencies: not one quantity
        Schema.infer(mixed)
    assert model.schema.columns[1].low == shares.min() and model.schema.columns[1].high == shares.max()
    sample = model.sample(200, seed=1)
    assert sample["amount"].str.fullmatch(r"-?\d{1,3}(,\d{3})*\.\d\d").all(), sample["amount"].head()
    assert sample["share"].str.fullmatch(r"\d+%").all()
    assert sample["rate"].str.fullmatch(r"-?\d+(\.\d)? %").all()
    assert sample["x"].round(2).eq(sample["x"]).all()  # the column's two decimals
    assert sample["price"].str.fullmatch(r"-?\$\d{1,3}(,\d{3})*\.\d\d").all(), sample["price"].head()
    assert sample["fee"].str.fullmatch(r"\d+\.\d\d €").all(), sample["fee"].head()
    # Scoring reads amounts written so, and refuses one written otherwise, naming it
    scored = model.log_prob(frame.head(3))
    assert np.isfinite(scored).all()
    with pytest.raises(DataError, match="'12.00' is not a number written like '\\$1,234.50'"):
        model.log_prob(frame.head(1).assign(price="12.00"))
    result = run("logprob", work / "m.flow", data, "--chunk-size", "7")
    assert result.exit_code == 0, result.stderr
    scored = pd.read_csv(io.StringIO(result.stdout), dtype=str)
    assert scored["amount"].tolist() == frame["amount"].tolist()  # passed through as written
    data.unlink()


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        (["13,786.89", "1,200.50", "tbd", "999.00"] * 20, ("column 'v'", "row 3", "'tbd'", "'13,786.89'")),
        (["1,234.5", "2,345.5", "3 456.5", "4,567.5"] * 20, ("column 'v'", "row 3", "'3 456.5'")),
        (["12%", "13%", "14", "15%"] * 20, ("column 'v'", "row 3", "'14'")),
        ([f"2020-01-{d:02d}" for d in range(1, 21)] * 3 + ["soon"], ("column 'v'", "row 61", "'soon'", "'2020-01-01'")),
    ],
)
def test_mostly_numbers_or_dates_with_an_odd_value_is_an_error(work: Path, values: list, fragments: tuple) -> None:
    data = work / "odd.csv"
    pd.DataFrame({"v": values, "x": np.arange(len(values)) * 0.37}).to_csv(data, index=False)
    fails(work, "fit", data, "-o", work / "o.flow", fragments=("odd.csv", *fragments))
    data.unlink()


def test_codes_stay_text_as_written(work: Path) -> None:
    r = rng()
    frame = pd.DataFrame(
        {
            "zip": r.choice(["00501", "00544", "10001", "94105"], N),
            "phone": r.choice(["+33612345678", "+33698765432"], N),
            "x": heights(),
        }
    )
    data = work / "codes.csv"
    frame.to_csv(data, index=False)
    model = load_model(str(fit(work, data)))
    zip_column = model.schema.columns[0]
    assert zip_column.role == "categorical" and zip_column.categories == ["00501", "00544", "10001", "94105"]
    assert "kept as written" in zip_column.reason
    assert set(model.sample(100, seed=0)["phone"]) <= {"+33612345678", "+33698765432"}
    # A chunk of the column without any leading zero is still text: known labels, not the number 10001.
    later = write(work / "later.csv", "zip,phone,x\n10001,+33612345678,1.7\n94105,+33698765432,1.8\n")
    result = run("logprob", work / "m.flow", later, "--chunk-size", "1")
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(io.StringIO(result.stdout), dtype=str)["zip"].tolist() == ["10001", "94105"]
    # Declared categorical, the codes keep their zeros too.
    config = work / "cat.yaml"
    config.write_text(yaml.safe_dump({**TINY, "columns": {"zip": "categorical"}}))
    result = run("fit", data, "-c", config, "-o", work / "cat.flow", "--seed", "0")
    assert result.exit_code == 0, result.stderr
    assert load_model(str(work / "cat.flow")).schema.columns[0].categories[0] == "00501"
    for path in (data, later, config, work / "cat.flow"):
        path.unlink()


# ---------------------------------------------------------------------------------------- dates and times


def test_csv_dates_and_datetimes(work: Path) -> None:
    r = rng()
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(r.integers(0, 600, N), unit="D")
    stamps = days + pd.to_timedelta(r.integers(0, 86400, N), unit="s")
    frame = pd.DataFrame(
        {
            "day": days.strftime("%Y-%m-%d"),
            # Other days than "day": the same dates twice would be a table without a density (redundancy.py)
            "eu": days[r.permutation(N)].strftime("%d/%m/%Y"),
            "when": stamps.strftime("%Y-%m-%dT%H:%M:%S"),
            "x": heights(),
        }
    )
    data = work / "dates.csv"
    frame.to_csv(data, index=False)
    result = run("fit", data, "-c", work / "tiny.yaml", "-o", work / "d.flow", "--seed", "0")
    assert result.exit_code == 0, result.stderr
    assert "'%d/%m/%Y'" in result.stderr  # the column table says which format was read
    model = load_model(str(work / "d.flow"))
    assert [c.role for c in model.schema.columns] == ["datetime", "datetime", "datetime", "continuous"]
    assert [c.unit for c in model.schema.columns[:3]] == ["D", "D", "s"]
    sample = model.sample(300, seed=2)
    parsed = pd.to_datetime(sample["day"], format="%Y-%m-%d")
    assert parsed.min() >= days.min() and parsed.max() <= days.max()
    assert pd.to_datetime(sample["eu"], format="%d/%m/%Y").between(days.min(), days.max()).all()
    when = pd.to_datetime(sample["when"], format="%Y-%m-%dT%H:%M:%S")
    assert when.between(stamps.min(), stamps.max()).all()
    scored = run("logprob", work / "d.flow", data, "--chunk-size", "9")
    assert scored.exit_code == 0, scored.stderr
    assert len(scored.stdout.splitlines()) == N + 1
    inspected = run("inspect", work / "d.flow", "--json")
    assert inspected.exit_code == 0 and json.loads(inspected.stdout)["columns"][0]["unit"] == "D"
    assert run("inspect", work / "d.flow").exit_code == 0
    data.unlink()


def parquet_types() -> pa.Table:
    r = rng()
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(r.integers(0, 600, N), unit="D")
    stamps = days + pd.to_timedelta(r.integers(0, 86400, N), unit="s")
    sizes = pd.Categorical(r.choice(["small", "medium", "large"], N), ["small", "medium", "large"], ordered=True)
    return pa.table(
        {
            "d": pa.array(list(days.date), pa.date32()),
            "ts": pa.array(list(stamps.tz_localize("Europe/Paris")), pa.timestamp("ms", tz="Europe/Paris")),
            # Other instants than ts: the same ones twice would be a table without a density (redundancy.py)
            "naive": pa.array(list(days + pd.to_timedelta(r.integers(0, 86400, N), unit="s")), pa.timestamp("us")),
            "size": pa.array(sizes),
            "price": pa.array([decimal.Decimal(f"{v:.2f}") for v in incomes()], pa.decimal128(12, 2)),
            "tags": pa.array([["a", "b"]] * N),
            "point": pa.array([{"x": 1, "y": 2}] * N),
            "blob": pa.array([b"\x00\x01"] * N),
            "nothing": pa.array([None] * N, pa.string()),
            "no_int": pa.array([None] * N, pa.int64()),
            "x": heights(),
        }
    )


def test_parquet_types_come_back_as_they_were(work: Path) -> None:
    table = parquet_types()
    data = work / "types.parquet"
    pq.write_table(table, data)
    result = run("fit", data, "-c", work / "tiny.yaml", "-o", work / "p.flow", "--seed", "0")
    assert result.exit_code == 0, result.stderr
    for why in ("nested values", "binary values", "every value is missing"):
        assert why in result.stderr
    model = load_model(str(work / "p.flow"))
    roles = {c.name: c.role for c in model.schema.columns}
    assert roles == {
        "d": "datetime",
        "ts": "datetime",
        "naive": "datetime",
        "size": "categorical",
        "price": "continuous",
        "tags": "ignore",
        "point": "ignore",
        "blob": "ignore",
        "nothing": "ignore",
        "no_int": "ignore",
        "x": "continuous",
    }
    out = work / "s.parquet"
    sampled = run("sample", work / "p.flow", "-n", "200", "-o", out, "--seed", "3")
    assert sampled.exit_code == 0, sampled.stderr
    schema = pq.read_schema(out)
    assert schema.field("d").type == pa.date32()
    assert schema.field("ts").type == pa.timestamp("ms", tz="Europe/Paris")
    assert schema.field("naive").type == pa.timestamp("us")
    assert schema.field("size").type.ordered and schema.field("price").type.scale == 2
    back = pd.read_parquet(out)
    assert list(back["size"].cat.categories) == ["small", "medium", "large"] and back["size"].cat.ordered
    original = table.to_pandas()
    assert back["d"].min() >= original["d"].min() and back["d"].max() <= original["d"].max()
    assert back["ts"].between(original["ts"].min(), original["ts"].max()).all()
    assert (back["naive"].dt.microsecond == 0).all()  # written to the second: sampled to the second
    scored = run("logprob", work / "p.flow", data, "-o", work / "scored.parquet")
    assert scored.exit_code == 0, scored.stderr
    assert np.isfinite(pd.read_parquet(work / "scored.parquet")["logprob"]).all()
    assert run("inspect", work / "p.flow").exit_code == 0


def test_an_old_checkpoint_without_the_new_fields_loads(work: Path, tmp_path: Path) -> None:
    data = work / "plain.csv"
    pd.DataFrame({"x": heights(), "c": ["a", "b"] * (N // 2)}).to_csv(data, index=False)
    header, tensors = checkpoint.load(str(fit(work, data, name="plain.flow")))
    new = {"written", "decimals", "origin", "unit", "tz", "ordered"}
    header["schema"] = [{k: v for k, v in c.items() if k not in new} for c in header["schema"]]
    old = tmp_path / "old.flow"
    checkpoint.save(str(old), header, tensors)
    model = load_model(str(old))
    assert [c.role for c in model.schema.columns] == ["continuous", "categorical"]
    assert len(model.sample(5, seed=0)) == 5


def test_an_all_missing_csv_column_is_ignored_with_a_reason(work: Path) -> None:
    data = write(
        work / "gaps.csv", "a,b,e\n" + "".join(f"{h},{m},\n" for h, m in zip(heights(), incomes(), strict=True))
    )
    result = run("fit", data, "-c", work / "tiny.yaml", "-o", work / "g.flow")
    assert result.exit_code == 0, result.stderr
    assert "every value is missing: not modelled" in result.stderr
    assert list(load_model(str(work / "g.flow")).sample(3, seed=0).columns) == ["a", "b"]
    data.unlink()


def test_report_on_a_table_with_ignored_and_datetime_columns(work: Path) -> None:
    r = rng()
    days = pd.Timestamp("2021-03-01") + pd.to_timedelta(r.integers(0, 300, 150), unit="D")
    frame = pd.DataFrame(
        {"id": [f"row-{i}" for i in range(150)], "day": days.strftime("%Y-%m-%d"), "x": r.normal(size=150), "e": None}
    )
    data = work / "report.csv"
    frame.to_csv(data, index=False)
    ckpt = fit(work, data, name="report.flow")
    result = run("report", ckpt, data, "-o", work / "report", "--samples", "100", "--quiet")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert {c["name"] for c in summary["columns"]} == {"day", "x"}  # ignored columns are not compared


# ---------------------------------------------------------------------------------------- pipes and streams


def _feed(path: str, data: bytes) -> threading.Thread:
    def writer() -> None:
        with open(path, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return thread


def test_fifos_and_process_substitution(tmp_path: Path) -> None:
    expected = pd.DataFrame({"h": heights(), "m": incomes()})
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    cases = [
        (expected.to_csv(index=False, sep=";").encode(), ReadOptions()),
        (gzip.compress(expected.to_csv(index=False).encode()), ReadOptions()),
        (expected.to_csv(index=False, sep="\t").encode(), ReadOptions(format="tsv")),
        (pa_bytes(expected), ReadOptions()),  # Parquet, recognized by its magic
    ]
    for data, options in cases:
        thread = _feed(fifo, data)
        pd.testing.assert_frame_equal(read_table(fifo, options=options), expected, check_dtype=False)
        thread.join(5)
    read_end, write_end = os.pipe()  # what <(...) gives: /dev/fd/N
    os.write(write_end, expected.to_csv(index=False).encode())
    os.close(write_end)
    try:
        pd.testing.assert_frame_equal(read_table(f"/dev/fd/{read_end}"), expected, check_dtype=False)
    finally:
        os.close(read_end)


def pa_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


def test_parquet_on_stdin(work: Path) -> None:
    data = work / "stdin.csv"
    pd.DataFrame({"h": heights(), "m": incomes()}).to_csv(data, index=False)
    ckpt = fit(work, data, name="stdin.flow")
    result = run("logprob", ckpt, "-", input=pa_bytes(pd.DataFrame({"h": heights(), "m": incomes()})))
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == N + 1
    result = run("logprob", ckpt, "-", "--format", "tsv", input=b"h\tm\n1.7\t20000\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("h,m,logprob\n1.7,")
    data.unlink()


def test_a_line_is_parsed_as_soon_as_it_is_read() -> None:
    """The reader of a pipe yields a row while the writer is still writing: no look-ahead for the next."""
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb", buffering=0)
    os.write(write_end, b"x,y\n1.5,2\n")
    got: list[pd.DataFrame] = []
    chunks = iter_csv(reader, "pipe", 1000)
    thread = threading.Thread(target=lambda: got.append(next(chunks)), daemon=True)
    thread.start()
    thread.join(10)
    try:
        assert got and got[0].to_dict("list") == {"x": [1.5], "y": [2]}
        os.write(write_end, b"3.5,4\n")
        assert next(chunks).to_dict("list") == {"x": [3.5], "y": [4]}
        os.write(write_end, b"5,6,7\n")
        with pytest.raises(DataError, match="pipe, line 4: 3 fields"):
            next(chunks)
    finally:
        os.close(write_end)
        reader.close()


def test_a_stream_sniffs_the_decimal_mark_on_its_first_rows() -> None:
    """A slow pipe whose first read holds only the header: the decimal comma is seen in the first rows."""
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb", buffering=0)
    os.write(write_end, b"a;b\n")
    chunks = iter_csv(reader, "pipe", 1000)
    got: list[pd.DataFrame] = []
    thread = threading.Thread(target=lambda: got.append(next(chunks)), daemon=True)
    thread.start()
    time.sleep(0.3)  # the reader has read the header alone
    os.write(write_end, b"1,5;2\n")
    thread.join(10)
    try:
        assert got and got[0].to_dict("list") == {"a": [1.5], "b": [2]}
    finally:
        os.close(write_end)
        reader.close()


def test_logprob_scores_a_row_while_stdin_stays_open(tmp_path: Path) -> None:
    data = tmp_path / "xy.csv"
    pd.DataFrame({"x": heights(), "y": incomes()}).to_csv(data, index=False)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    ckpt = fit(tmp_path, data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowcli", "logprob", str(ckpt), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None

    try:
        proc.stdin.write(b"x,y\n1.7,20000\n")
        proc.stdin.flush()
        first = lines_within(proc.stdout, 2, 120)  # generous: the interpreter and torch start on a busy machine
        assert first.startswith(b"x,y,logprob\n1.7,20000,") and first.count(b"\n") == 2, first
        proc.stdin.write(b"1.8,30000\n")
        proc.stdin.flush()
        second = lines_within(proc.stdout, 1, 5)  # once running: a line written comes out within seconds
        assert second.startswith(b"1.8,30000,") and second.count(b"\n") == 1, second
        assert proc.poll() is None  # stdin is still open
        proc.stdin.close()
        assert proc.stdout.read() == b""
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_names_with_spaces_from_pandas_and_old_checkpoints_match_the_stripped_names(tmp_path: Path) -> None:
    """The reader strips header names; so do the API (a frame read by pandas keeps 'height ') and the loading
    of a checkpoint written before (its name 'height '): both columns are scored, none marginalised out."""
    r = rng()
    frame = pd.DataFrame({"height": heights(), "weight": r.normal(70, 5, N)})
    model = flowcli.fit(frame, TINY, epochs=1, seed=0, threads=1)
    spaced = frame.rename(columns={"height": "height ", "weight": " weight"})
    expected = model.log_prob(frame)
    np.testing.assert_array_equal(model.log_prob(spaced), expected)
    old = dataclasses.replace(model.schema.columns[0], name="height ")
    model.schema.columns[0] = old  # as a checkpoint of an earlier version stored a header `height ,weight`
    model.save(tmp_path / "old.flow")
    loaded = load_model(str(tmp_path / "old.flow"))
    assert loaded.schema.names == ["height", "weight"]
    np.testing.assert_array_equal(loaded.log_prob(frame), expected)
