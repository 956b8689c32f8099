"""The conditional questions through the command line (issue 15): `sample --given`, `sample --given-file`,
`logprob --target`, `logprob` of a file lacking a column, `impute` and `impute --draws`.

On a real table with categories, ZIP codes and missing cells (``helpers.shop_table``), fitted for two epochs:
these tests check what the commands promise (row counts, given values held exactly, observed cells
untouched, data alone on stdout), not how good the conditionals are (tests/test_conditional.py does).
Bad input (unknown columns, unseen labels, malformed --given, ...) is in the corpus of test_bad_input.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import ROOT, SMALL_CONFIG, assert_clean_error, lines_within
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.model import load_model

runner = CliRunner()
COLUMNS = ["group", "zip", "x", "y", "count"]


def run(*args: str, input: bytes | str | None = None):
    return runner.invoke(app, list(args), input=input)


def table(result) -> pd.DataFrame:
    """The CSV a successful command wrote on stdout, the text columns read as text (ZIP codes keep their zeros)."""
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return pd.read_csv(io.StringIO(result.stdout), dtype={"group": str, "zip": str})


@pytest.fixture(scope="module")
def ckpt(shop_files: dict) -> str:
    return str(shop_files["ckpt"])


@pytest.fixture(scope="module")
def shop(shop_files: dict) -> pd.DataFrame:
    return pd.read_csv(shop_files["csv"], dtype={"group": str, "zip": str})


# --- sample --given ----------------------------------------------------------------------------------


def test_sample_given_a_rare_label_gives_exactly_n_rows_holding_it(ckpt: str, shop: pd.DataFrame) -> None:
    assert (shop["group"] == "c").mean() < 0.05  # rare: sample-and-reject would need ~30x the rows
    result = run("sample", ckpt, "-n", "300", "--given", "group=c", "--seed", "1", "--chunk-size", "64")
    frame = table(result)
    assert len(frame) == 300 and list(frame.columns) == COLUMNS
    assert (frame["group"] == "c").all()
    assert not frame.isna().any().any()  # conditional samples are complete rows
    assert result.stderr == ""  # data on stdout, nothing else anywhere


def test_sample_given_values_are_held_exactly_and_read_as_a_file_would_be(ckpt: str) -> None:
    args = ("sample", ckpt, "-n", "50", "--given", "zip=00501", "--given", "x=1.25", "--given", "count=3")
    result = run(*args, "--seed", "3")
    frame = table(result)
    assert len(frame) == 50
    assert (frame["zip"] == "00501").all()  # a code stays the label as written, leading zeros included
    assert (frame["x"] == 1.25).all() and (frame["count"] == 3).all()
    lines = result.stdout.splitlines()
    assert all(line.split(",")[1:3] == ["00501", "1.25"] for line in lines[1:])  # the text itself, unchanged
    assert result.stdout == run(*args, "--seed", "3").stdout  # seeded: the same rows
    assert frame["y"].nunique() > 1  # the other columns are drawn, not copied


def test_sample_given_a_number_written_with_a_decimal_comma(ckpt: str) -> None:
    frame = table(run("sample", ckpt, "-n", "5", "--given", "x=0,5", "--decimal", ","))
    assert (frame["x"] == 0.5).all()


def test_sample_given_to_parquet(tmp_path: Path, ckpt: str) -> None:
    out = tmp_path / "s.parquet"
    result = run("sample", ckpt, "-n", "20", "--given", "group=b", "-o", str(out), "--chunk-size", "7")
    assert result.exit_code == 0, result.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == 20 and (frame["group"] == "b").all()


# --- sample --given-file -----------------------------------------------------------------------------

GIVEN_ROWS = "group,x\nc,\n,0.5\na,-1.5\n,\n"  # an empty cell is not given; the last row gives nothing


def check_given_rows(frame: pd.DataFrame, k: int) -> None:
    assert len(frame) == 4 * k and list(frame.columns) == COLUMNS
    assert not frame.isna().any().any()
    first, second, third = frame.iloc[:k], frame.iloc[k : 2 * k], frame.iloc[2 * k : 3 * k]
    assert (first["group"] == "c").all()
    assert (second["x"] == 0.5).all()
    assert (third["group"] == "a").all() and (third["x"] == -1.5).all()


@pytest.mark.parametrize("chunk_size", ["1", "65536"])
def test_sample_given_file_gives_k_rows_per_row_in_input_order(tmp_path: Path, ckpt: str, chunk_size: str) -> None:
    rows = tmp_path / "given.csv"
    rows.write_text(GIVEN_ROWS)
    check_given_rows(table(run("sample", ckpt, "--given-file", str(rows), "-n", "3", "--chunk-size", chunk_size)), 3)


def test_sample_given_file_defaults_to_one_row_each_and_reads_stdin_and_parquet(tmp_path: Path, ckpt: str) -> None:
    check_given_rows(table(run("sample", ckpt, "--given-file", "-", input=GIVEN_ROWS)), 1)
    rows = tmp_path / "given.parquet"
    pd.read_csv(io.StringIO(GIVEN_ROWS), dtype={"group": str}).to_parquet(rows)
    check_given_rows(table(run("sample", ckpt, "--given-file", str(rows), "-n", "2")), 2)


def test_sample_given_file_seeded_is_reproducible(tmp_path: Path, ckpt: str) -> None:
    rows = tmp_path / "given.csv"
    rows.write_text(GIVEN_ROWS)
    args = ("sample", ckpt, "--given-file", str(rows), "-n", "4", "--chunk-size", "4")
    first, again, other = run(*args, "--seed", "5"), run(*args, "--seed", "5"), run(*args, "--seed", "6")
    assert first.stdout == again.stdout and first.stdout != other.stdout


def test_sample_given_and_given_file_together_is_an_error(tmp_path: Path, ckpt: str) -> None:
    rows = tmp_path / "given.csv"
    rows.write_text(GIVEN_ROWS)
    result = run("sample", ckpt, "--given", "group=a", "--given-file", str(rows))
    assert_clean_error(result, "--given", "--given-file")
    assert result.stdout == ""


def test_sample_without_n_needs_given_file(ckpt: str) -> None:
    result = run("sample", ckpt, "--given", "group=a")
    assert result.exit_code == 2 and "-n" in result.stderr and result.stdout == ""


# --- logprob --target, and of a file lacking a column ---------------------------------------------------


def test_logprob_target_is_the_conditional_density_of_the_library(ckpt: str, shop_files: dict, shop) -> None:
    result = run("logprob", ckpt, str(shop_files["csv"]), "--target", "y", "--chunk-size", "100")
    scored = table(result)
    assert list(scored.columns) == [*COLUMNS, "logprob"] and len(scored) == len(shop)
    # logprob scores in float32: the library model loaded in float32 gives the same numbers.
    expected = load_model(ckpt, dtype=torch.float32).log_prob(shop, target=["y"])
    np.testing.assert_allclose(scored["logprob"], expected, rtol=1e-5, atol=1e-5)
    joint = load_model(ckpt, dtype=torch.float32).log_prob(shop)
    assert not np.allclose(scored["logprob"], joint)  # given the rest: not the joint density


def test_logprob_targets_comma_separated_or_repeated(ckpt: str, shop_files: dict) -> None:
    data = str(shop_files["csv"])
    comma = run("logprob", ckpt, data, "--target", "y,count")
    repeated = run("logprob", ckpt, data, "--target", "y", "--target", "count")
    assert comma.exit_code == 0, comma.stderr
    assert comma.stdout == repeated.stdout
    assert comma.stdout != run("logprob", ckpt, data, "--target", "y").stdout


def test_logprob_of_a_file_lacking_a_column_is_its_marginal(ckpt: str, shop: pd.DataFrame) -> None:
    lacking = shop.drop(columns=["count", "zip"])
    scored = table(run("logprob", ckpt, "-", input=lacking.to_csv(index=False)))
    assert list(scored.columns) == ["group", "x", "y", "logprob"] and len(scored) == len(shop)
    assert np.isfinite(scored["logprob"]).all()
    expected = load_model(ckpt, dtype=torch.float32).log_prob(lacking)
    np.testing.assert_allclose(scored["logprob"], expected, rtol=1e-5, atol=1e-5)


def test_logprob_anomaly_flags_refuse_target_and_a_file_lacking_a_column(ckpt: str, shop_files: dict, shop) -> None:
    data = str(shop_files["csv"])
    assert_clean_error(run("logprob", ckpt, data, "--target", "y", "--flag-below", "0.01"), "--flag-below", "--target")
    assert_clean_error(run("logprob", ckpt, data, "--target", "y", "--percentile"), "--percentile", "--target")
    lacking = shop.drop(columns=["count"]).to_csv(index=False)
    result = run("logprob", ckpt, "-", "--flag-below", "0.01", input=lacking)
    assert_clean_error(result, "--flag-below", "'count'")
    assert result.stdout == ""


# --- impute ------------------------------------------------------------------------------------------


def holes(shop: pd.DataFrame, rows: int = 40) -> pd.DataFrame:
    """The first rows of the table with cells knocked out in every model column, and an id passed through."""
    frame = shop.head(rows).copy()
    rng = np.random.default_rng(0)
    for name in COLUMNS:
        frame.loc[rng.random(rows) < 0.25, name] = None
    frame.insert(0, "id", [f"r{i}" for i in range(rows)])
    return frame


def assert_observed_cells_kept(completed: pd.DataFrame, original: pd.DataFrame) -> None:
    for name in COLUMNS:
        observed = original[name].notna().to_numpy()
        assert (completed[name].to_numpy()[observed] == original[name].to_numpy()[observed]).all(), name
    assert not completed[COLUMNS].isna().any().any()


def test_impute_fills_every_missing_cell_and_changes_no_observed_one(tmp_path: Path, ckpt: str, shop) -> None:
    original = holes(shop)
    data = tmp_path / "holes.csv"
    original.to_csv(data, index=False)
    result = run("impute", ckpt, str(data), "--chunk-size", "16")
    completed = table(result)
    assert list(completed.columns) == ["id", *COLUMNS] and len(completed) == len(original)
    assert (completed["id"] == original["id"]).all()  # rows in input order, other columns passed through
    assert_observed_cells_kept(completed, original)
    assert (completed["count"] == completed["count"].round()).all()  # integers stay integers
    assert set(completed["group"]) <= {"a", "b", "c"} and set(completed["zip"]) <= {"00501", "02134", "10001"}
    assert result.stderr == ""
    # The conditional means are averages of draws: without --seed, drawn as with --seed 0 (the README)
    assert run("impute", ckpt, str(data), "--chunk-size", "16", "--seed", "0").stdout == result.stdout


def test_impute_draws_writes_k_completed_copies_with_a_draw_column(tmp_path: Path, ckpt: str, shop) -> None:
    original = holes(shop, rows=30)
    data = tmp_path / "holes.csv"
    original.to_csv(data, index=False)
    args = ("impute", ckpt, str(data), "--draws", "4", "--seed", "2", "--chunk-size", "10")
    completed = table(run(*args))
    assert len(completed) == 4 * len(original) and completed.columns[-1] == "_draw"
    assert completed["_draw"].tolist() == [1, 2, 3, 4] * len(original)
    copies = [completed.iloc[i::4].reset_index(drop=True) for i in range(4)]
    for copy in copies:
        assert (copy["id"] == original["id"]).all()
        assert_observed_cells_kept(copy, original)
    assert not copies[0]["y"].equals(copies[1]["y"])  # each copy is its own draw
    assert run(*args).stdout == run(*args).stdout  # seeded: reproducible


def test_impute_a_file_lacking_a_column_fills_it_and_writes_atomically(tmp_path: Path, ckpt: str, shop) -> None:
    out = tmp_path / "completed.parquet"
    result = run("impute", ckpt, "-", "-o", str(out), input=holes(shop).drop(columns=["zip"]).to_csv(index=False))
    assert result.exit_code == 0 and result.stdout == "", result.stderr
    completed = pd.read_parquet(out)
    assert len(completed) == 40 and completed["zip"].notna().all()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_impute_a_directory_writes_one_completed_file_per_input(tmp_path: Path, ckpt: str, shop) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    holes(shop, rows=10).to_csv(source / "a.csv", index=False)
    holes(shop.iloc[10:], rows=7).to_parquet(source / "b.parquet")
    result = run("impute", ckpt, str(source), "-o", str(out), "--draws", "2")
    assert result.exit_code == 0 and result.stdout == "", result.stderr
    assert len(pd.read_csv(out / "a.csv")) == 20 and len(pd.read_parquet(out / "b.parquet")) == 14


def test_impute_help_says_what_fills_the_cells() -> None:
    text = " ".join(run("impute", "--help").stdout.split())
    for fragment in ("conditional mean", "most probable label", "--draws", "_draw", "never changed"):
        assert fragment in text, fragment


# --- streaming ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["impute"], ["sample", "--given-file"]])
def test_rows_arriving_slowly_come_out_before_stdin_closes(command: list[str], ckpt: str) -> None:
    """impute and sample --given-file stream as logprob does: a row is answered as soon as it arrives."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "flowcli", command[0], ckpt, *command[1:], "-", "--seed", "0"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"group,x\nc,\n,0.5\n")
        proc.stdin.flush()
        received = lines_within(proc.stdout, 3, 120)  # generous: the interpreter and torch start on a busy machine
        assert received.count(b"\n") == 3, received  # header + 2 rows, while stdin is still open
        assert proc.poll() is None
        proc.stdin.write(b"a,1\n")
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        assert len(pd.read_csv(io.StringIO((received + rest).decode()))) == 3
    finally:
        proc.kill()


# --- encode and decode take no conditions -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_given_with_encode_or_decode_is_one_error_line(command: str, ckpt: str) -> None:
    result = run(command, ckpt, "-", "--given", "group=a", input="z0\n1\n")
    assert_clean_error(result, "--given", command)
    assert result.stdout == ""


# --- training.conditional: false ------------------------------------------------------------------------


def test_a_model_fitted_without_the_conditional_network_refuses_its_questions_only(
    shop_files: dict, tmp_path: Path
) -> None:
    """``training.conditional: false`` skips the network's fit, leaves the joint flow exactly as with it, and
    turns every question the network answers into a one-line error; whole-row commands work as before, and
    so does sampling given labels only, which the joint model answers itself (``joint_given.py``)."""
    config = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 2, "conditional": False}}
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(config))
    plain = str(tmp_path / "plain.flow")
    options = ["--seed", "0", "--device", "cpu", "--threads", "1", "-q"]  # the fixture's seed and thread count
    fitted = run("fit", str(shop_files["csv"]), "-c", str(path), "-o", plain, *options)
    assert fitted.exit_code == 0, fitted.stderr
    model, with_network = load_model(plain), load_model(str(shop_files["ckpt"]))
    assert model.info["conditional_fit"] is None and with_network.info["conditional_fit"] is not None
    joint = {k: v for k, v in model.flow.state_dict().items() if not k.startswith("conditional.")}
    for name, value in joint.items():
        assert torch.equal(value, with_network.flow.state_dict()[name]), name
    # Unfitted, the network is at its start: it differs from the fitted one.
    assert not torch.equal(model.flow.conditional.head.weight, with_network.flow.conditional.head.weight)
    csv = str(shop_files["csv"])
    without_x = pd.read_csv(csv, dtype=str).drop(columns=["x"]).to_csv(index=False)
    for args, stdin in [
        (("sample", plain, "-n", "5", "--given", "x=0.5"), None),
        (("sample", plain, "-n", "5", "--given", "group=a", "--given", "x=0.5"), None),
        (("logprob", plain, csv, "--target", "x"), None),
        (("logprob", plain, "-"), without_x),
        (("impute", plain, csv), None),
    ]:
        assert_clean_error(run(*args, input=stdin), "training.conditional: false")
    assert len(table(run("sample", plain, "-n", "7", "--seed", "0"))) == 7
    given_label = table(run("sample", plain, "-n", "6", "--given", "group=a", "--seed", "0"))
    assert len(given_label) == 6 and (given_label["group"] == "a").all()
    assert len(table(run("logprob", plain, csv))) == len(pd.read_csv(csv))


def test_a_constant_columns_other_value_is_refused_as_given_and_scores_zero_probability(tmp_path: Path) -> None:
    """A column that always held 'FR' has no features, but its value still counts: given another value there
    is nothing to draw (an error naming it; it used to be written into every row), and a row holding one
    scores -inf, as on a full row, also when the file lacks other columns (it used to score finitely)."""
    from helpers import shop_table

    csv = tmp_path / "country.csv"
    shop_table().assign(country="FR").to_csv(csv, index=False)
    ckpt = str(tmp_path / "country.flow")
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 1}}))
    fitted = run("fit", str(csv), "-c", str(config), "-o", ckpt, "--seed", "0", "--threads", "1", "-q")
    assert fitted.exit_code == 0, fitted.stderr
    described = json.loads(run("inspect", ckpt, "--json").stdout)
    assert len(described["columns"]) == 6 and described["modelled_columns"] == 5  # 'country' is constant
    refused = run("sample", ckpt, "-n", "3", "--given", "country=DE")
    assert_clean_error(refused)
    assert "'country'" in refused.stderr and "'DE'" in refused.stderr and "'FR'" in refused.stderr
    assert (table(run("sample", ckpt, "-n", "3", "--given", "country=FR", "--seed", "0"))["country"] == "FR").all()
    scored = table(run("logprob", ckpt, "-", input="country,x\nDE,1.0\nFR,1.0\n,1.0\n"))["logprob"].to_numpy()
    assert np.isneginf(scored[0]) and np.isfinite(scored[1]) and scored[2] == scored[1]
    given = table(run("logprob", ckpt, "-", "--target", "y", input="country,x,y\nDE,1.0,3.0\nFR,1.0,3.0\n"))
    assert np.isneginf(given["logprob"][0]) and np.isfinite(given["logprob"][1])


def test_an_ignored_column_cannot_be_given_by_name_and_is_left_out_of_a_given_file(tmp_path: Path) -> None:
    """`--given id=...` on a column the model ignores (an identifier) was silently dropped, exit 0: now an
    error that says so. A `--given-file` of data rows may hold that column: it is left out, as logprob does."""
    from helpers import shop_table

    frame = shop_table().assign(id=[f"C{i:06d}" for i in range(600)])
    csv = tmp_path / "ids.csv"
    frame.to_csv(csv, index=False)
    ckpt = str(tmp_path / "ids.flow")
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 1}}))
    fitted = run("fit", str(csv), "-c", str(config), "-o", ckpt, "--seed", "0", "--threads", "1", "-q")
    assert fitted.exit_code == 0, fitted.stderr
    refused = run("sample", ckpt, "-n", "2", "--given", "id=C000001")
    assert_clean_error(refused, "'id'", "ignored")
    unknown = run("sample", ckpt, "-n", "2", "--given", "nope=1")
    assert_clean_error(unknown, "'nope'", "not a column of the model")
    assert "id" not in unknown.stderr.split("its columns:")[1].replace(",", " ").split()
    rows = tmp_path / "rows.csv"
    frame.iloc[:3][["id", "group"]].to_csv(rows, index=False)
    drawn = table(run("sample", ckpt, "--given-file", str(rows), "-n", "2", "--seed", "0"))
    assert len(drawn) == 6 and drawn["group"].tolist() == [g for g in frame["group"][:3] for _ in range(2)]
