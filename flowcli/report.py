"""``flowcli report``: how well a fitted model matches a table, as PNG figures, summary.json and index.html.

The work is in three places: ``compare.py`` computes the real-against-synthetic figures, ``plots.py``
draws, and this module scores the data, collects the summary and writes the page. Everything is
written into a temporary directory beside the output first; only when every file is complete are
the files moved into place, ``index.html`` last, so the page never refers to a missing or half-written
figure and a failure leaves the output directory as it was.
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .compare import TableComparison, compare_tables, ks_statistic, strongest_pairs
from .errors import DataError
from .files import Staged
from .model import Model
from .quantiles import StoredQuantiles

DEFAULT_MAX_SAMPLES = 100_000
PAIRS_SHOWN = 6
DATA_QUANTILES = (0.01, 0.05)
# The fit facts the summary repeats (``flowcli inspect`` shows them all).
TRAINING_KEYS = ("epochs_run", "best_epoch", "best_val_nll", "fit_seconds", "n_train", "n_val", "device")


@dataclass
class Plot:
    section: str
    file: str


@dataclass
class ReportResult:
    summary: dict[str, Any]
    figures: list[Plot] = field(default_factory=list)


def check_output_dir(path: str) -> Path:
    """The report directory: new, or an existing directory; never a file; its parent must exist."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError(f"{path}: exists and is not a directory; -o names the report directory")
    if out.is_symlink() and not out.exists():  # the staged directory could not be moved onto the link
        raise DataError(f"{path}: a symlink to nothing ({os.readlink(out)}); -o names the report directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (out.is_dir() and not os.access(out, os.W_OK)):
        raise DataError(f"{path}: directory is not writable")
    return out


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out``; on success its files replace those of ``out`` (created if
    needed), ``index.html`` last; on failure it is removed and ``out`` is untouched."""
    with Staged(out, directory=True) as staged:
        yield staged.path
        if not out.exists():
            staged.commit()
            return
        # The figures first, the page last: a reader never sees a page that refers to a missing figure.
        names = sorted(p.name for p in staged.path.iterdir())
        names.sort(key=lambda n: n == "index.html")
        for name in names:
            os.replace(staged.path / name, out / name)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null (and round floats for a readable file)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def stored_thresholds(info: dict[str, Any], levels: tuple[float, ...] = DATA_QUANTILES) -> list[tuple[float, float]]:
    """The thresholds at ``levels`` from the quantiles ``fit`` stored in the checkpoint; [] without them."""
    return StoredQuantiles.from_info(info).at(levels)


def _base_samples(model: Model, n: int, seed: int) -> np.ndarray:
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.inference_mode():
        return model.flow.sample_latent(n, generator).double().cpu().numpy()


def _latent_summary(z: np.ndarray, base: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for d in range(z.shape[1]):
        values = z[np.isfinite(z[:, d]), d]
        rows.append(
            {
                "name": names[d],
                "rows": len(values),
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std()) if len(values) else None,
                "ks_vs_base": ks_statistic(values, base[:, d]) if len(values) else None,
            }
        )
    return rows


@dataclass
class Scores:
    """DATA and synthetic rows with what the model says about them: the input of every figure."""

    data: pd.DataFrame
    synthetic: pd.DataFrame
    logprob: np.ndarray
    logprob_synthetic: np.ndarray  # NaN where the model cannot score its own samples
    z: np.ndarray  # DATA in the latent space; no columns when the rows cannot be mapped there
    base: np.ndarray  # samples of the base distribution, the reference for the latent figures
    # DATA and the synthetic rows as the column figures compare them (``by_value``), made once.
    data_values: pd.DataFrame
    synthetic_values: pd.DataFrame


def by_value(model: Model, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the columns that the model reads as numbers but that are not numbers to pandas (dates
    and timestamps, text in a date format, Decimals, numbers written with separators) as those numbers
    (dates in days), so that they are compared and drawn as distributions (KS, histograms), not as labels."""
    from .roles.numeric import NumericRole

    out = frame.copy()
    for col in model.schema.columns:
        if col.name not in out.columns or not isinstance(col.rules, NumericRole):
            continue
        series = out[col.name].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            continue
        values, _ = col.rules.parse(col, series, 0)
        out[col.name] = pd.Series(values, index=out.index)
    return out


@dataclass
class Thresholds:
    """Anomaly thresholds: quantiles of log p(x) on DATA, and those ``fit`` stored, if any."""

    data: dict[str, float]  # "0.01" -> value
    stored: list[tuple[float, float]]
    stored_source: str
    # Per missingness pattern (what ``logprob --flag-below`` compares a row with), when rows with missing
    # cells have thresholds of their own: {"absent": [...], "rows": n, "quantiles": {"0.01": value}}.
    patterns: list[dict[str, Any]] = field(default_factory=list)

    def labelled(self) -> list[tuple[str, float]]:
        """(legend label, value) pairs for the log p(x) histogram."""
        labels = [(f"DATA {float(q):.0%} quantile", v) for q, v in self.data.items()]
        return labels + [(f"{q:.0%} quantile of {self.stored_source} (stored at fit)", v) for q, v in self.stored]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_quantiles": self.data,
            "stored_quantiles": {f"{q:g}": v for q, v in self.stored},
            "stored_source": self.stored_source if self.stored else None,
            "stored_pattern_quantiles": self.patterns,
        }


def pattern_thresholds(stored: StoredQuantiles, levels: tuple[float, ...] = DATA_QUANTILES) -> list[dict[str, Any]]:
    """The stored thresholds at ``levels`` of each missingness pattern; [] when there are none worth
    showing beside the overall ones (``StoredQuantiles.per_pattern``)."""
    if not stored.per_pattern:
        return []
    return [
        {
            "absent": list(p.absent),
            "rows": p.rows,
            "source": p.source,
            "quantiles": {f"{q:g}": v for q, v in stored.at(levels, p.values)},
        }
        for p in stored.patterns
    ]


@dataclass
class Findings:
    """What the report measured on the scores: the numbers behind the figures and the summary."""

    comparison: TableComparison
    pairs: list[tuple[str, str, float]]  # the most correlated column pairs in DATA, strongest first
    latent: list[dict[str, Any]]
    thresholds: Thresholds
    ks_noise: float  # two-sample KS values below this are within sampling noise at the 5% level


def _model_columns(model: Model, data: pd.DataFrame) -> pd.DataFrame:
    """DATA's columns the model reads, in its order (ignored ones need not be there, as for logprob); a
    DataError names the first one missing."""
    names = model.schema.read_names
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise DataError(f"missing column {missing[0]!r}; the model needs: {', '.join(names)}")
    return data[names]


def _sample_count(data: pd.DataFrame, samples: int | None) -> int:
    n_samples = samples if samples is not None else min(len(data), DEFAULT_MAX_SAMPLES)
    if n_samples < 1:
        raise DataError(f"--samples {n_samples}: the number of synthetic rows must be at least 1")
    return n_samples


def _score(model: Model, data: pd.DataFrame, n_samples: int, seed: int, say: Callable[[str], None]) -> Scores:
    """Score and encode DATA; sample ``n_samples`` synthetic rows (seed ``seed``) and score them too."""
    say(f"scoring {len(data)} rows")
    logprob = model.log_prob(data)
    try:
        z = model.encode(data).to_numpy()
    except DataError:  # rows the model scores but cannot map to the latent space: no latent figures
        z = np.zeros((len(data), 0))
    say(f"sampling {n_samples} synthetic rows (seed {seed})")
    synthetic = model.sample(n_samples, seed=seed)
    try:
        logprob_synthetic = model.log_prob(synthetic)
    except DataError:  # e.g. a diverged model sampling non-finite rows: report on DATA alone
        logprob_synthetic = np.full(len(synthetic), np.nan)
    base = _base_samples(model, max(len(z), 2000), seed + 1)
    values = by_value(model, data), by_value(model, synthetic)
    return Scores(data, synthetic, logprob, logprob_synthetic, z, base, *values)


def _measure(model: Model, scores: Scores) -> Findings:
    s = scores
    data, synthetic = s.data_values, s.synthetic_values
    # Ignored columns are not sampled: compare the columns both tables have.
    comparison = compare_tables(data, synthetic, [n for n in data.columns if n in synthetic.columns])
    finite = s.logprob[np.isfinite(s.logprob)]
    quantiles = {f"{q:g}": float(np.quantile(finite, q)) for q in DATA_QUANTILES} if len(finite) else {}
    stored = StoredQuantiles.from_info(model.info)
    return Findings(
        comparison=comparison,
        pairs=strongest_pairs(comparison.corr_real, PAIRS_SHOWN),
        latent=_latent_summary(s.z, s.base, model.latent_names),
        thresholds=Thresholds(quantiles, stored.at(DATA_QUANTILES), stored.source, pattern_thresholds(stored)),
        ks_noise=1.36 * math.sqrt((len(s.data) + len(s.synthetic)) / (len(s.data) * len(s.synthetic))),
    )


def _draw(model: Model, scores: Scores, found: Findings, out_dir: Path, rng: np.random.Generator) -> list[Plot]:
    """Every figure of the page, in page order, drawn into ``out_dir``."""
    with warnings.catch_warnings():
        # Labels in a script the font lacks (東京) are drawn as boxes; matplotlib's warning, with its source
        # path, would reach stderr once per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        drawn = _figures(model, scores, found, out_dir, rng)
    return [Plot(section, f) for section, files in drawn for f in files]


def _figures(
    model: Model, scores: Scores, found: Findings, out_dir: Path, rng: np.random.Generator
) -> list[tuple[str, list[str]]]:
    """The figures of each section (``_draw``)."""
    from . import plots

    s, info, c = scores, model.info, found.comparison
    metrics, with_validation = info.get("metrics") or [], bool(info.get("n_val", 1))
    latent_ks = [d["ks_vs_base"] for d in found.latent]
    return [
        ("training", plots.training_curves(metrics, info.get("best_epoch"), with_validation, out_dir)),
        ("columns", plots.column_distributions(s.data_values, s.synthetic_values, c.columns, out_dir)),
        ("distances", plots.distances(c.columns, found.ks_noise, out_dir)),
        ("pairs", plots.pair_plots(s.data_values, s.synthetic_values, found.pairs, c.corr_synthetic, out_dir, rng)),
        ("correlation", plots.correlation_heatmaps(c.corr_real, c.corr_synthetic, out_dir)),
        ("missing", plots.missing_rates(c.columns, out_dir)),
        ("latent", plots.latent_qq(s.z, s.base, model.latent_names, latent_ks, out_dir)),
        ("logprob", plots.logprob_histogram(s.logprob, s.logprob_synthetic, found.thresholds.labelled(), out_dir)),
    ]


def _summary(
    model: Model, scores: Scores, found: Findings, figures: list[Plot], seed: int, sources: dict[str, str]
) -> dict[str, Any]:
    """Every number of the report as plain JSON values (non-finite ones as null)."""
    s, info, c = scores, model.info, found.comparison
    finite = s.logprob[np.isfinite(s.logprob)]
    finite_synthetic = np.isfinite(s.logprob_synthetic)
    best_val_nll = info.get("best_val_nll")
    summary = {
        "sources": sources,
        "rows": len(s.data),
        "synthetic_rows": len(s.synthetic),
        "seed": seed,
        "test_loglik": float(finite.mean()) if len(finite) else None,
        "test_loglik_std": float(finite.std()) if len(finite) else None,
        "nonfinite_logprob_rows": int(len(s.logprob) - len(finite)),
        "synthetic_loglik": float(np.nanmean(np.where(finite_synthetic, s.logprob_synthetic, np.nan)))
        if finite_synthetic.any()
        else None,
        "best_val_loglik": -best_val_nll if isinstance(best_val_nll, (int, float)) else None,
        "ks_noise_level": found.ks_noise,
        "thresholds": found.thresholds.to_dict(),
        "columns": [col.to_dict() for col in c.columns],
        "max_abs_corr_difference": c.max_abs_corr_difference,
        "correlation": {
            "method": "spearman",
            "columns": list(c.corr_real.columns),
            "real": c.corr_real.to_numpy().tolist(),
            "synthetic": c.corr_synthetic.to_numpy().tolist(),
        },
        "strongest_pairs": [
            {"x": x, "y": y, "real": r, "synthetic": float(c.corr_synthetic.loc[x, y])} for x, y, r in found.pairs
        ],
        "latent": found.latent,
        "training": {k: info.get(k) for k in TRAINING_KEYS} | _fit_time(info, sources),
        "figures": [{"section": f.section, "file": f.file} for f in figures],
    }
    return _finite(summary)


def _fit_time(info: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """The fit time, which a checkpoint does not hold: from the metrics file beside it, when known."""
    if "checkpoint" not in sources:
        return {}
    from .fitting import fit_seconds

    return {"fit_seconds": fit_seconds(info, sources["checkpoint"])}


def build_report(
    model: Model,
    data: pd.DataFrame,
    out_dir: Path,
    *,
    samples: int | None = None,
    seed: int = 0,
    sources: dict[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> ReportResult:
    """Score ``data``, sample from the model, draw every figure into ``out_dir``; returns the summary."""
    say = say or (lambda text: None)
    data = _model_columns(model, data)
    scores = _score(model, data, _sample_count(data, samples), seed, say)
    found = _measure(model, scores)
    say("drawing figures")
    figures = _draw(model, scores, found, out_dir, np.random.default_rng(seed))
    summary = _summary(model, scores, found, figures, seed, sources or {})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out_dir / "index.html").write_text(render_html(summary, figures), encoding="utf-8")
    return ReportResult(summary, figures)


SECTIONS = [
    (
        "training",
        "Training curves",
        (
            "Negative log-likelihood per epoch on the training rows and on the held-out validation rows; the dashed line is "
            "the epoch whose weights the checkpoint kept. A validation curve rising while training keeps falling is overfitting."
        ),
    ),
    (
        "columns",
        "Each column: real against synthetic",
        (
            "Distribution of every column in DATA (blue) and in rows sampled from the model (orange): histograms for "
            "numbers (over the central 99% of the values; the KS distance covers all of them), bar charts for labels and "
            "few-valued integers, missing values as their own bar."
        ),
    ),
    (
        "distances",
        "Per-column distances",
        (
            "Kolmogorov-Smirnov statistic (largest gap between the two cumulative distributions) for numeric columns, total "
            "variation distance for labels; 0 means identical; KS values below the noise level in the table above are "
            "within sampling noise."
        ),
    ),
    (
        "pairs",
        "Most related column pairs",
        "The column pairs with the largest rank correlation in DATA, real (left) beside synthetic (right) on the same axes.",
    ),
    (
        "correlation",
        "Correlation matrices",
        "Spearman rank correlation between numeric columns in DATA and in the synthetic rows, and their difference.",
    ),
    ("missing", "Missing values", "Share of rows with a missing value in each column that has any."),
    (
        "latent",
        "Latent space",
        (
            "Each latent dimension of the encoded DATA rows against the base distribution: quantile against quantile. Points on "
            "the diagonal mean the flow maps the data onto its base; an S-shape means heavier or lighter tails than the base."
        ),
    ),
    (
        "logprob",
        "Log-likelihood of the rows",
        (
            "Histogram of log p(x) on DATA and on synthetic rows, with anomaly thresholds: a row whose log p(x) falls left "
            "of the 1% line is rarer than 99% of DATA (flowcli logprob gives the same numbers)."
        ),
    ),
]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _overview_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the table at the top of the page."""
    src = summary.get("sources", {})
    thresholds = summary["thresholds"]
    rows = [
        ("checkpoint", src.get("checkpoint", "")),
        ("data", f"{src.get('data', '')} ({summary['rows']} rows)"),
        ("synthetic rows", f"{summary['synthetic_rows']} (seed {summary['seed']})"),
        (
            "test log-likelihood (mean log p(x) of DATA)",
            f"{_fmt(summary['test_loglik'])} nats/row (std {_fmt(summary['test_loglik_std'])})",
        ),
        ("best validation log-likelihood at fit", f"{_fmt(summary['best_val_loglik'])} nats/row"),
        ("mean log p(x) of synthetic rows", f"{_fmt(summary['synthetic_loglik'])} nats/row"),
        ("KS within sampling noise below (5% level)", _fmt(summary["ks_noise_level"], 3)),
        ("max |correlation difference|", _fmt(summary["max_abs_corr_difference"], 3)),
    ]
    for q, v in thresholds["data_quantiles"].items():
        rows.append((f"anomaly threshold: {float(q):.0%} quantile of log p(x) on DATA", f"{_fmt(v, 3)} nats"))
    for q, v in thresholds["stored_quantiles"].items():
        label = f"anomaly threshold: {float(q):.0%} quantile of {thresholds['stored_source']} (stored at fit)"
        rows.append((label, f"{_fmt(v, 3)} nats"))
    for pattern in thresholds.get("stored_pattern_quantiles") or []:
        absent = ", ".join(pattern["absent"]) or "none"
        source = pattern.get("source", "held-out")
        for q, v in pattern["quantiles"].items():
            label = f"anomaly threshold: {float(q):.0%} quantile of the {pattern['rows']} {source} rows with absent cells: {absent}"
            rows.append((label, f"{_fmt(v, 3)} nats"))
    if not any(c["missing_real"] or c["missing_synthetic"] for c in summary["columns"]):
        rows.append(("missing values", "none, in DATA or in the synthetic rows"))
    if summary["nonfinite_logprob_rows"]:
        rows.append(("rows with a non-finite log p(x)", str(summary["nonfinite_logprob_rows"])))
    return rows


def _figure_sections(figures: list[Plot]) -> list[str]:
    """One <section> per part of the report that has figures, in the order of ``SECTIONS``."""
    e = html.escape
    parts = []
    for key, title, text in SECTIONS:
        files = [f.file for f in figures if f.section == key]
        if not files:
            continue
        images = "\n".join(
            f'<a href="{e(f, quote=True)}"><img src="{e(f, quote=True)}" alt="{e(title, quote=True)}"></a>'
            for f in files
        )
        parts.append(f'<section id="{e(key, quote=True)}"><h2>{e(title)}</h2><p>{e(text)}</p>\n{images}</section>')
    return parts


def render_html(summary: dict[str, Any], figures: list[Plot]) -> str:
    """A self-contained page (inline CSS, no scripts); figures by relative path; all text escaped."""
    e = html.escape
    src = summary.get("sources", {})
    overview = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _overview_rows(summary))
    column_rows = "\n".join(
        f"<tr><td>{e(c['name'])}</td><td>{e(c['kind'])}</td><td>{e(c['metric'].upper())}</td><td>{e(_fmt(c['distance'], 3))}</td>"
        f"<td>{c['missing_real']:.1%}</td><td>{c['missing_synthetic']:.1%}</td></tr>"
        for c in summary["columns"]
    )
    sections = "\n".join(_figure_sections(figures))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flowcli report: {e(src.get("checkpoint", ""))}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
th {{ background: #f4f4f4; font-weight: 600; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }}
section {{ margin-top: 2.5em; }}
</style>
</head>
<body>
<h1>flowcli report</h1>
<table>
{overview}
</table>
<h2>Columns</h2>
<table>
<tr><th>column</th><th>kind</th><th>metric</th><th>distance</th><th>missing (real)</th><th>missing (synthetic)</th></tr>
{column_rows}
</table>
<p>Every number on this page, and more (correlation matrices, latent statistics), is in <a href="summary.json">summary.json</a>.</p>
{sections}
</body>
</html>
"""
