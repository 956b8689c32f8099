"""flowcli report and flowcli inspect: valid PNGs, a page that references them, honest summary figures,
generic plotting of label and missing-value columns, and clean errors."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.compare import compare_tables, ks_statistic, total_variation
from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Model, save_model
from flowcli.report import build_report, stored_thresholds

matplotlib = pytest.importorskip("matplotlib")
from helpers import assert_clean_error  # noqa: E402  (after the importorskip above)
from matplotlib import image as mpimg  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def image_sources(page: str) -> list[str]:
    parser = ImageSources()
    parser.feed(page)
    return parser.sources


def assert_valid_png(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5000, (path, len(data))  # a real figure, not an empty canvas
    pixels = mpimg.imread(path)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width, (path, pixels.shape)
    assert pixels[..., :3].std() > 0.01  # not a blank image


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, banana_files: dict) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report") / "banana_report"
    result = run(
        "report",
        str(banana_files["ckpt"]),
        str(banana_files["csv"]),
        "-o",
        str(out),
        "--samples",
        "800",
        "--seed",
        "3",
        "--device",
        "cpu",
    )
    return out, result


def test_report_writes_valid_pngs_and_a_page_referencing_each(report_dir: tuple[Path, object]) -> None:
    out, result = report_dir
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # messages go to stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    for section in ("training", "columns", "distances", "pairs", "correlation", "latent", "logprob"):
        assert any(name.startswith(section) for name in pngs), (section, pngs)
    for name in pngs:
        assert_valid_png(out / name)
    sources = image_sources((out / "index.html").read_text(encoding="utf-8"))
    assert sorted(sources) == pngs  # every figure shown once, nothing missing
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_report_summary_figures_match_the_model(
    report_dir: tuple[Path, object], banana_files: dict, banana_model: Model
) -> None:
    out, _ = report_dir
    summary = json.loads((out / "summary.json").read_text())
    frame = pd.read_csv(banana_files["csv"])
    logprob = banana_model.log_prob(frame)
    assert summary["rows"] == len(frame) and summary["synthetic_rows"] == 800
    assert summary["test_loglik"] == pytest.approx(logprob.mean(), abs=1e-5)
    q = summary["thresholds"]["data_quantiles"]
    assert q["0.01"] == pytest.approx(np.quantile(logprob, 0.01), abs=1e-5)
    assert q["0.01"] < q["0.05"]
    assert [c["name"] for c in summary["columns"]] == ["height_cm", "weight_kg"]
    for column in summary["columns"]:
        assert column["metric"] == "ks" and 0 <= column["distance"] < 0.25  # a fitted model, not a wrong one
    assert 0 <= summary["max_abs_corr_difference"] < 0.3
    assert len(summary["latent"]) == 2 and all(abs(d["mean"]) < 0.5 for d in summary["latent"])
    files = {f["file"] for f in summary["figures"]}
    assert files == {p.name for p in out.glob("*.png")}


def test_report_is_reproducible_and_replaces_files_in_an_existing_directory(
    tmp_path: Path, banana_files: dict, report_dir: tuple[Path, object]
) -> None:
    out = tmp_path / "again"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "index.html").write_text("old")
    result = run(
        "report",
        str(banana_files["ckpt"]),
        str(banana_files["csv"]),
        "-o",
        str(out),
        "--samples",
        "800",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0 and result.stderr == ""
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "index.html").read_text() != "old"
    first = json.loads((report_dir[0] / "summary.json").read_text())
    again = json.loads((out / "summary.json").read_text())
    assert first["columns"] == again["columns"] and first["test_loglik"] == again["test_loglik"]


def test_distances_are_zero_for_equal_and_large_for_shifted_samples() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    assert ks_statistic(a, a.copy()) == 0.0
    assert ks_statistic(a, a + 10) == 1.0
    assert 0.3 < ks_statistic(a, a + 1) < 0.5  # KS of N(0,1) vs N(1,1) is 2*Phi(0.5)-1 = 0.383
    scipy_stats = pytest.importorskip("scipy.stats")
    b = rng.normal(0.2, 1.3, size=1500)
    assert ks_statistic(a, b) == pytest.approx(scipy_stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert total_variation(pd.Series(list("aabb")), pd.Series(list("abbb"))) == pytest.approx(0.25)
    assert total_variation(pd.Series(list("aa")), pd.Series(list("cc"))) == pytest.approx(1.0)


def mixed_table(n: int, seed: int, shift: float) -> pd.DataFrame:
    """Labels, bools, few-valued integers and missing values: what the schema will soon model."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "species <b>&amp;": rng.choice(["Adelie", "Gentoo", "Chinstrap"], n, p=[0.5 - shift, 0.3, 0.2 + shift]),
            "length_mm": rng.normal(44 + 10 * shift, 5, n),
            "year": rng.choice([2007, 2008, 2009], n),
            "male": rng.random(n) < 0.5,
            "mass_g": rng.normal(4200, 800, n),
        }
    )
    frame.loc[rng.random(n) < 0.1 + shift, "length_mm"] = np.nan
    frame.loc[rng.random(n) < 0.05, "species <b>&amp;"] = None
    return frame


def test_plots_handle_labels_bools_and_missing_values(tmp_path: Path) -> None:
    from flowcli import plots

    real, synthetic = mixed_table(400, 0, 0.0), mixed_table(500, 1, 0.2)
    names = list(real.columns)
    comparison = compare_tables(real, synthetic, names)
    kinds = {c.name: (c.kind, c.metric) for c in comparison.columns}
    assert kinds["species <b>&amp;"] == ("categorical", "tv") and kinds["male"] == ("categorical", "tv")
    assert kinds["length_mm"] == ("numeric", "ks")
    length = next(c for c in comparison.columns if c.name == "length_mm")
    assert length.missing_real == pytest.approx(real["length_mm"].isna().mean())
    assert length.missing_synthetic > length.missing_real
    assert list(comparison.corr_real.columns) == ["length_mm", "year", "mass_g"]  # labels are not correlated
    files = plots.column_distributions(real, synthetic, comparison.columns, tmp_path)
    files += plots.missing_rates(comparison.columns, tmp_path)
    files += plots.distances(comparison.columns, 0.08, tmp_path)
    assert files == ["columns.png", "missing.png", "distances.png"]
    for name in files:
        assert_valid_png(tmp_path / name)


def test_page_and_inspect_show_odd_column_names_verbatim(tmp_path: Path, banana_frame: pd.DataFrame) -> None:
    name = "<script>alert(1)</script>[bold]w[/bold]"
    frame = banana_frame.rename(columns={"height_cm": name}).iloc[:300]
    config = parse_config({"layers": [{"type": "affine_coupling", "hidden": [8]}], "training": {"epochs": 2}})
    model = fit(frame, config, device=torch.device("cpu"), seed=0)
    model.info["logprob_quantiles"] = {
        "source": "validation",
        "rows": 30,
        "levels": [0.0, 0.01, 0.05, 1.0],
        "values": [-20.0, -12.5, -9.25, 3.0],
    }
    result = build_report(model, frame, tmp_path, samples=200, seed=0)
    page = (tmp_path / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert result.summary["thresholds"]["stored_quantiles"] == {"0.01": -12.5, "0.05": -9.25}
    assert "quantile of 30 validation rows" in page
    # inspect prints the name as it is (rich would otherwise read "[bold]" as markup)
    save_model(model, str(tmp_path / "odd.flow"))
    result = run("inspect", str(tmp_path / "odd.flow"))
    assert result.exit_code == 0, result.stderr
    assert name in result.stdout
    assert "1.0%: -12.5" in result.stdout  # the stored thresholds, summarized


def test_stored_thresholds_read_the_quantile_grid_fit_stores() -> None:
    stored = {
        "source": "validation",
        "rows": 150,
        "levels": [0.0, 0.01, 0.02, 0.1, 1.0],
        "values": [-30.0, -20.0, -16.0, -8.0, 0.0],
    }
    assert stored_thresholds({"logprob_quantiles": stored}) == [(0.01, -20.0), (0.05, pytest.approx(-13.0))]
    assert stored_thresholds({"logprob_quantiles": {**stored, "values": [1.0, 2.0]}}) == []  # malformed: ignored
    assert stored_thresholds({"logprob_quantiles": "nonsense"}) == []
    assert stored_thresholds({}) == []


# --- bad input ---------------------------------------------------------------------------------------------


def test_report_missing_checkpoint(tmp_path: Path, banana_files: dict) -> None:
    out = tmp_path / "r"
    assert_clean_error(
        run("report", str(tmp_path / "nope.flow"), str(banana_files["csv"]), "-o", str(out)), "not found"
    )
    assert not out.exists()


def test_report_data_without_a_model_column(tmp_path: Path, banana_files: dict) -> None:
    data = tmp_path / "d.csv"
    pd.read_csv(banana_files["csv"]).drop(columns=["weight_kg"]).to_csv(data, index=False)
    out = tmp_path / "r"
    assert_clean_error(
        run("report", str(banana_files["ckpt"]), str(data), "-o", str(out), "--device", "cpu"), f"{data}: ", "weight_kg"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]  # no report dir, no temporary leftovers


def test_report_output_is_a_dangling_symlink(tmp_path: Path, banana_files: dict) -> None:
    (tmp_path / "r").symlink_to(tmp_path / "gone")
    result = run("report", str(banana_files["ckpt"]), str(banana_files["csv"]), "-o", str(tmp_path / "r"))
    assert_clean_error(result, "a symlink to nothing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_report_output_is_a_file(tmp_path: Path, banana_files: dict) -> None:
    out = tmp_path / "taken"
    out.write_text("keep")
    assert_clean_error(
        run("report", str(banana_files["ckpt"]), str(banana_files["csv"]), "-o", str(out)), "not a directory"
    )
    assert out.read_text() == "keep"


def test_report_without_matplotlib_says_how_to_install(
    tmp_path: Path, banana_files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = run("report", str(banana_files["ckpt"]), str(banana_files["csv"]), "-o", str(tmp_path / "r"))
    assert_clean_error(result, 'flowcli report needs matplotlib: pip install "flowcli[report]"')


# --- inspect -----------------------------------------------------------------------------------------------


def test_inspect_lists_columns_parameters_and_training(banana_files: dict, banana_model: Model) -> None:
    result = run("inspect", str(banana_files["ckpt"]))
    assert result.exit_code == 0, result.stderr
    total = sum(p.numel() for p in banana_model.flow.parameters())
    for text in (
        "height_cm",
        "weight_kg",
        "continuous",
        f"{total:,}",
        "affine_coupling",
        "maf",
        "best validation NLL",
        "torch",
        "python",
        "centre=",  # the median and robust scale that standardize a number, not a mean and a standard deviation
        "scale=",
    ):
        assert text in result.stdout, text
    assert "mean=" not in result.stdout and "std=" not in result.stdout


def test_inspect_json(banana_files: dict, banana_model: Model) -> None:
    result = run("inspect", str(banana_files["ckpt"]), "--json")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert [c["name"] for c in d["columns"]] == ["height_cm", "weight_kg"]
    assert d["modelled_columns"] == 2 and d["latent_dim"] == banana_model.schema.dim
    assert d["columns"][0]["mean"] == pytest.approx(banana_model.schema.columns[0].mean)
    assert d["parameters"]["total"] == sum(p.numel() for p in banana_model.flow.parameters())
    # Every flow starts with the whitening layer (model.Flow), counted apart from the config's layers.
    layers = sum(layer["parameters"] for layer in d["parameters"]["layers"])
    parts = ("whitening", "discrete", "conditioning", "conditional")
    assert layers + sum(d["parameters"][k] for k in parts) == d["parameters"]["total"]
    assert [layer["type"] for layer in d["parameters"]["layers"]] == ["affine_coupling", "permute", "maf"]
    assert d["training"]["epochs_run"] == banana_model.info["epochs_run"]
    assert d["training"]["best_val_nll"] == pytest.approx(banana_model.info["best_val_nll"])
    assert {"flowcli", "torch", "python"} <= set(d["versions"]["running"])


def test_inspect_missing_checkpoint(tmp_path: Path) -> None:
    assert_clean_error(run("inspect", str(tmp_path / "nope.flow")), "not found")
    assert_clean_error(run("inspect", str(tmp_path / "nope.flow"), "--json"), "not found")


def test_wide_tables_are_split_into_balanced_pages(tmp_path: Path) -> None:
    from flowcli import plots

    rng = np.random.default_rng(0)
    real = pd.DataFrame(rng.normal(size=(300, 14)), columns=[f"c{i}" for i in range(14)])
    synthetic = pd.DataFrame(rng.normal(size=(300, 14)), columns=real.columns)
    comparison = compare_tables(real, synthetic, list(real.columns))
    assert [len(p) for p in plots._pages(comparison.columns, plots.COLUMNS_PER_PAGE)] == [7, 7]
    files = plots.column_distributions(real, synthetic, comparison.columns, tmp_path)
    assert files == ["columns_1.png", "columns_2.png"]
    for name in files:
        assert_valid_png(tmp_path / name)


def test_dates_timestamps_decimals_and_text_dates_are_compared_as_distributions(tmp_path: Path) -> None:
    """Columns the model reads as numbers but pandas does not (timestamps with a zone, dates written as text,
    Decimals) are compared by KS and drawn as histograms: as labels, 12 dates were a bar chart plus
    "(other)" and a good model's timestamps got a total variation of 0.998."""
    import decimal

    from flowcli.report import by_value

    rng = np.random.default_rng(0)
    n = 300
    offsets = rng.integers(0, 500, n)
    stamps = pd.Timestamp("2023-01-01", tz="Europe/Paris") + pd.to_timedelta(rng.uniform(0, 365, n), unit="D")
    frame = pd.DataFrame(
        {
            "ts": stamps.floor("s"),
            "day": (pd.Timestamp("2022-01-01") + pd.to_timedelta(offsets, unit="D")).strftime("%d/%m/%Y"),
            "price": [decimal.Decimal(f"{v:.2f}") for v in rng.uniform(10, 90, n)],
            "x": rng.normal(size=n),
        }
    )
    model = fit(frame, parse_config({"layers": [{"type": "maf", "hidden": [8]}]}), epochs=1, seed=0)
    assert {c.name: c.role for c in model.schema.columns}["day"] == "datetime"
    synthetic = model.sample(400, seed=1)
    real_values, synthetic_values = by_value(model, frame), by_value(model, synthetic)
    comparison = compare_tables(real_values, synthetic_values, list(frame.columns))
    assert {c.name: c.metric for c in comparison.columns} == {"ts": "ks", "day": "ks", "price": "ks", "x": "ks"}
    days = real_values["day"].to_numpy()
    assert np.isfinite(days).all() and days.max() - days.min() == offsets.max() - offsets.min()
    assert real_values["price"].to_numpy() == pytest.approx([float(v) for v in frame["price"]])
    assert frame["ts"].dtype == model.sample(2, seed=0)["ts"].dtype  # the tables themselves keep their types


@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_into_a_closed_pipe_exits_141(banana_files: dict, as_json: bool) -> None:
    """`flowcli inspect CKPT | head -1`: the reader gone, exit 141 as for every command (rich's tables exited 1
    without a word)."""
    import subprocess

    command = [sys.executable, "-m", "flowcli", "inspect", str(banana_files["ckpt"]), *(["--json"] if as_json else [])]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first byte
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 141, stderr
    assert b"Traceback" not in stderr


def test_labels_the_font_lacks_draw_without_warnings(tmp_path: Path) -> None:
    """東京 has no glyphs in matplotlib's font: drawn as boxes, but its warning (with a source path) reached
    the terminal once per glyph."""
    import warnings

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["東京", "Paris"], 300), "x": rng.normal(size=300)})
    model = fit(frame, parse_config({"layers": [{"type": "maf", "hidden": [8]}]}), epochs=1, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report(model, frame, tmp_path)
    assert not [w for w in caught if "Glyph" in str(w.message)]
    assert (tmp_path / "columns.png").exists()


def test_inspect_shows_a_bound_of_zero_and_leaves_out_unset_fields() -> None:
    from flowcli.describe import _preprocessing

    column = {"name": "c", "role": "integer", "dtype": "int64", "mean": 5.0, "std": 2.0, "low": 0.0, "high": 96.0}
    shown = _preprocessing({**column, "missing": False, "missing_rate": 0.0, "atoms": [], "categories": None})
    assert shown == {"centre": 5.0, "scale": 2.0, "low": 0.0, "high": 96.0}  # low=0 was left out as unset
