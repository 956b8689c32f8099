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
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .compare import TableComparison, compare_tables, ks_statistic, strongest_pairs
from .errors import DataError
from .model import Model

DEFAULT_MAX_SAMPLES = 100_000
PAIRS_SHOWN = 6
DATA_QUANTILES = (0.01, 0.05)


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
    parent = out.parent if str(out.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if not out.exists():
            os.chmod(tmp, 0o777 & ~_umask())
            os.replace(tmp, out)
            return
        names = sorted(p.name for p in tmp.iterdir())
        names.sort(key=lambda n: n == "index.html")
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    """The logprob quantiles of held-out rows that ``fit`` stores in the checkpoint, at ``levels``.

    ``fit`` stores ``{"source", "rows", "levels": [...], "values": [...]}`` (the quantile function on
    a grid of levels); values between grid points are interpolated. A checkpoint without them (or with
    anything malformed) gives [], and the report then uses the quantiles of DATA only.
    """
    raw = info.get("logprob_quantiles")
    if not isinstance(raw, dict):
        return []
    try:
        grid = np.asarray(raw.get("levels"), dtype=float)
        values = np.asarray(raw.get("values"), dtype=float)
    except (TypeError, ValueError):
        return []
    if (
        grid.ndim != 1
        or grid.shape != values.shape
        or len(grid) < 2
        or not np.isfinite(values).all()
        or np.any(np.diff(grid) < 0)
    ):
        return []
    return [(q, float(np.interp(q, grid, values))) for q in levels if grid[0] <= q <= grid[-1]]


def stored_source(info: dict[str, Any]) -> str:
    """Which rows the stored quantiles come from, e.g. '1522 validation rows'."""
    raw = info.get("logprob_quantiles")
    if not isinstance(raw, dict):
        return "held-out rows"
    return " ".join(str(x) for x in (raw.get("rows"), raw.get("source")) if x is not None) + " rows"


def _base_samples(model: Model, n: int, seed: int) -> np.ndarray:
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.inference_mode():
        return model.flow.base.sample(n, generator).double().cpu().numpy()


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


def build_report(
    model: Model,
    data: pd.DataFrame,
    out_dir: Path,
    *,
    samples: int | None = None,
    seed: int = 0,
    sources: dict[str, str] | None = None,
    say: Any = None,
) -> ReportResult:
    """Score ``data``, sample from the model, draw every figure into ``out_dir``; returns the summary."""
    from . import plots

    say = say or (lambda text: None)
    names = model.schema.names
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise DataError(f"missing column {missing[0]!r}; the model needs: {', '.join(names)}")
    data = data[names]
    n_samples = samples if samples is not None else min(len(data), DEFAULT_MAX_SAMPLES)
    if n_samples < 1:
        raise DataError(f"--samples {n_samples}: the number of synthetic rows must be at least 1")
    rng = np.random.default_rng(seed)

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
    comparison: TableComparison = compare_tables(data, synthetic, names)

    finite = logprob[np.isfinite(logprob)]
    quantiles = {f"{q:g}": float(np.quantile(finite, q)) for q in DATA_QUANTILES} if len(finite) else {}
    stored = stored_thresholds(model.info)
    thresholds = [(f"DATA {float(q):.0%} quantile", v) for q, v in quantiles.items()]
    thresholds += [(f"{q:.0%} quantile of {stored_source(model.info)} (stored at fit)", v) for q, v in stored]
    latent = _latent_summary(z, base, model.latent_names)

    say("drawing figures")
    info = model.info
    metrics = info.get("metrics") or []
    figures: list[Plot] = []

    def add(section: str, files: list[str]) -> None:
        figures.extend(Plot(section, f) for f in files)

    add("training", plots.training_curves(metrics, info.get("best_epoch"), bool(info.get("n_val", 1)), out_dir))
    add("columns", plots.column_distributions(data, synthetic, comparison.columns, out_dir))
    ks_noise = 1.36 * math.sqrt((len(data) + n_samples) / (len(data) * n_samples))
    add("distances", plots.distances(comparison.columns, ks_noise, out_dir))
    pairs = strongest_pairs(comparison.corr_real, PAIRS_SHOWN)
    add("pairs", plots.pair_plots(data, synthetic, pairs, comparison.corr_synthetic, out_dir, rng))
    add("correlation", plots.correlation_heatmaps(comparison.corr_real, comparison.corr_synthetic, out_dir))
    add("missing", plots.missing_rates(comparison.columns, out_dir))
    add("latent", plots.latent_qq(z, base, model.latent_names, [d["ks_vs_base"] for d in latent], out_dir))
    add("logprob", plots.logprob_histogram(logprob, logprob_synthetic, thresholds, out_dir))

    corr_cols = list(comparison.corr_real.columns)
    summary = {
        "sources": sources or {},
        "rows": len(data),
        "synthetic_rows": n_samples,
        "seed": seed,
        "test_loglik": float(finite.mean()) if len(finite) else None,
        "test_loglik_std": float(finite.std()) if len(finite) else None,
        "nonfinite_logprob_rows": int(len(logprob) - len(finite)),
        "synthetic_loglik": float(np.nanmean(np.where(np.isfinite(logprob_synthetic), logprob_synthetic, np.nan)))
        if np.isfinite(logprob_synthetic).any()
        else None,
        "best_val_loglik": -info["best_val_nll"] if isinstance(info.get("best_val_nll"), (int, float)) else None,
        # Two-sample KS values below this are within sampling noise at the 5% level.
        "ks_noise_level": ks_noise,
        "thresholds": {
            "data_quantiles": quantiles,
            "stored_quantiles": {f"{q:g}": v for q, v in stored},
            "stored_source": stored_source(model.info) if stored else None,
        },
        "columns": [c.to_dict() for c in comparison.columns],
        "max_abs_corr_difference": comparison.max_abs_corr_difference,
        "correlation": {
            "method": "spearman",
            "columns": corr_cols,
            "real": comparison.corr_real.to_numpy().tolist(),
            "synthetic": comparison.corr_synthetic.to_numpy().tolist(),
        },
        "strongest_pairs": [
            {"x": x, "y": y, "real": r, "synthetic": float(comparison.corr_synthetic.loc[x, y])} for x, y, r in pairs
        ],
        "latent": latent,
        "training": {
            k: info.get(k)
            for k in ("epochs_run", "best_epoch", "best_val_nll", "fit_seconds", "n_train", "n_val", "device")
        },
        "figures": [{"section": f.section, "file": f.file} for f in figures],
    }
    summary = _finite(summary)
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


def render_html(summary: dict[str, Any], figures: list[Plot]) -> str:
    """A self-contained page (inline CSS, no scripts); figures by relative path; all text escaped."""
    e = html.escape
    src = summary.get("sources", {})
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
    for q, v in summary["thresholds"]["data_quantiles"].items():
        rows.append((f"anomaly threshold: {float(q):.0%} quantile of log p(x) on DATA", f"{_fmt(v, 3)} nats"))
    for q, v in summary["thresholds"]["stored_quantiles"].items():
        rows.append(
            (
                f"anomaly threshold: {float(q):.0%} quantile of {summary['thresholds']['stored_source']} (stored at fit)",
                f"{_fmt(v, 3)} nats",
            )
        )
    if not any(c["missing_real"] or c["missing_synthetic"] for c in summary["columns"]):
        rows.append(("missing values", "none, in DATA or in the synthetic rows"))
    if summary["nonfinite_logprob_rows"]:
        rows.append(("rows with a non-finite log p(x)", str(summary["nonfinite_logprob_rows"])))
    overview = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    column_rows = "\n".join(
        f"<tr><td>{e(c['name'])}</td><td>{e(c['kind'])}</td><td>{e(c['metric'].upper())}</td><td>{e(_fmt(c['distance'], 3))}</td>"
        f"<td>{c['missing_real']:.1%}</td><td>{c['missing_synthetic']:.1%}</td></tr>"
        for c in summary["columns"]
    )
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
{chr(10).join(parts)}
</body>
</html>
"""
