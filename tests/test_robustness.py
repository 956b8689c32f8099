"""Robust on dirty data (issue 16): outliers, heavy tails and divergence never yield a silently bad model;
--threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.config import resolve_config
from flowcli.devices import default_threads, use_threads
from flowcli.fitting import fit
from flowcli.model import Model

runner = CliRunner()
PRESETS = sorted(
    p.name.removesuffix(".yaml") for p in (resources.files("flowcli") / "presets").iterdir() if p.name.endswith(".yaml")
)

# ------------------------------------------------------------------------------------------ threads


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The fits here are small: on one thread they do not wait on each other (as in test_faults.py)."""
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # what the CLI's --threads defaults to
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """Put torch's thread count back after a test that changes it (it is process-wide)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_threads_follow_omp_num_threads_else_the_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # nested levels: the first is ours
    assert default_threads() == 2
    for unusable in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert default_threads() == len(os.sched_getaffinity(0))


def test_use_threads_sets_torch_and_refuses_zero(keep_threads: None) -> None:
    assert use_threads(1) == 1 and torch.get_num_threads() == 1
    from flowcli.errors import DataError

    with pytest.raises(DataError, match="--threads 0"):
        use_threads(0)


def test_every_command_that_runs_the_model_takes_threads() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("fit", "sample", "logprob", "encode", "decode", "report"):
        assert "--threads" in {opt for p in commands[name].params for opt in p.opts}, name


def test_threads_option_applies(keep_threads: None, banana_files: dict, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["sample", str(banana_files["ckpt"]), "-n", "5", "-o", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------------------- dirty tables
# Small versions of the tables of benchmarks/robustness.py (which runs the full grid, longer).


def dirty(n: int, seed: int = 0) -> pd.DataFrame:
    """Every shape of issue 16 in one table: outliers, heavy tails, a log-normal column, an exact function
    of another column, a near-collinear pair, a column of range 1e9 beside one of 1e-4."""
    rng = np.random.default_rng(seed)
    latency = rng.normal(100, 10, n)
    latency[rng.choice(n, 5, replace=False)] = [2.5e4, 1e5, 4e5, 1.2e6, 3e6]
    a = rng.normal(0, 1, n)
    return pd.DataFrame(
        {
            "latency": latency,
            "t": rng.standard_t(1.5, n),
            "income": np.exp(10 + rng.normal(0, 0.8, n)),
            "a": a,
            "a2": a**2 + 1,
            "b": 2 * a + 1e-3 * rng.normal(0, 1, n),
            "big": 5e8 + 1.5e8 * rng.normal(0, 1, n),
            "small": 1e-4 * rng.normal(0, 1, n),
        }
    )


def tables(n: int, seed: int) -> dict[str, pd.DataFrame]:
    """The shapes one at a time (two or three columns each), for the comparison with a Gaussian."""
    rng = np.random.default_rng(seed)
    d = dirty(n, seed)
    cov = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    return {
        "outliers": d[["latency"]].assign(
            cpu=0.5 + 0.01 * (np.minimum(d["latency"], 200) - 100) + rng.normal(0, 0.05, n)
        ),
        "heavy_tails": pd.DataFrame({"t1": d["t"], "t2": 0.5 * d["t"] + rng.standard_t(1.5, n)}),
        "lognormal": pd.DataFrame({"age": rng.normal(40, 10, n)}).assign(income=d["income"]),
        "exact_function": d[["a", "a2"]],
        "collinear": d[["a", "b"]].assign(skew=rng.gamma(1.5, 2.0, n)),
        "scales": pd.DataFrame(
            {"big": d["big"], "small": 1e-4 * (0.6 * (d["big"] - 5e8) / 1.5e8 + 0.8 * rng.normal(0, 1, n))}
        ),
        "small": pd.DataFrame(rng.multivariate_normal([10.0, -2.0, 0.5], cov, n), columns=["x", "y", "w"]),
    }


def gaussian_loglik(train: pd.DataFrame, test: pd.DataFrame) -> float:
    """Mean log-density of ``test`` under the maximum-likelihood normal of ``train``, in the data's units."""
    x, y = train.to_numpy(np.float64), test.to_numpy(np.float64)
    mean, cov = x.mean(0), np.cov(x, rowvar=False, bias=True)
    _, logdet = np.linalg.slogdet(cov)
    diff = y - mean
    maha = np.einsum("ij,ij->i", diff @ np.linalg.inv(cov), diff)
    return float(np.mean(-0.5 * (maha + logdet + x.shape[1] * np.log(2 * np.pi))))


def brief(preset: str, frame: pd.DataFrame, epochs: int, **training: object) -> Model:
    config = resolve_config(preset)
    config.training.epochs = epochs
    for key, value in training.items():
        setattr(config.training, key, value)
    return fit(frame, config, device=torch.device("cpu"), seed=0)


def sane(frame: pd.DataFrame, samples: pd.DataFrame) -> np.ndarray:
    """Per sample row: every value finite and within 10 times the 0.1%-99.9% training range of it."""
    ok = np.ones(len(samples), dtype=bool)
    for col in frame.columns:
        lo, hi = np.quantile(frame[col], [0.001, 0.999])
        values = samples[col].to_numpy(np.float64)
        ok &= np.isfinite(values) & (values >= lo - 10 * (hi - lo)) & (values <= hi + 10 * (hi - lo))
    return ok


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits_the_dirty_table_and_scores_its_own_samples_finitely(preset: str) -> None:
    frame = dirty(400)
    model = brief(preset, frame, epochs=8, batch_size=100, lr=0.01)  # a hurried fit: the unstable kind
    assert all(np.isfinite(m["train_nll"]) and np.isfinite(m["val_nll"]) for m in model.info["metrics"])
    samples = model.sample(400, seed=1)
    assert np.isfinite(samples.to_numpy(np.float64)).all()
    assert np.isfinite(model.log_prob(samples)).all(), preset
    # A hurried fit of an exotic family may still draw a few wild (finite) rows: umnn 2% here, the rest none.
    assert sane(frame, samples).mean() > 0.95, preset


NON_GAUSSIAN = ("outliers", "heavy_tails", "lognormal", "exact_function", "collinear")


@pytest.fixture(scope="module")
def split_tables() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """1000 training rows of each shape (60 for 'small'), and 2000 new rows of it to test on."""
    train = tables(1000, 0)
    train["small"] = tables(60, 0)["small"]
    return train, tables(2000, 1)


@pytest.mark.parametrize("preset", ["default", "maf"])
@pytest.mark.parametrize("name", [*NON_GAUSSIAN, "scales", "small"])
def test_default_and_maf_never_lose_to_a_single_gaussian_on_new_rows(
    preset: str, name: str, split_tables: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]
) -> None:
    train, test = split_tables[0][name], split_tables[1][name]
    model = brief(preset, train, epochs=30, batch_size=128)
    flow, gaussian = float(np.mean(model.log_prob(test))), gaussian_loglik(train, test)
    assert sane(train, model.sample(2000, seed=1)).mean() >= 0.995  # exact_function: 0.2% wild rows
    # 'scales' and 'small' are normal tables: a Gaussian is the truth, and a tie is the best a flow can do.
    assert flow >= gaussian + (0.1 if name in NON_GAUSSIAN else -0.01), (flow, gaussian)
    assert model.info["best_val_nll"] <= model.info["gaussian_val_nll"] + 1e-3


# ------------------------------------------------------------------------------- the pieces, one by one


def test_robust_scale_ignores_outliers_and_falls_back_to_the_sd() -> None:
    from flowcli.columns import parse_column_overrides
    from flowcli.schema import Schema

    frame = dirty(4000)[["latency"]].assign(zeros=np.where(np.arange(4000) % 5 == 0, 1.0, 0.0) * np.arange(4000))
    latency, zeros = Schema.infer(frame, parse_column_overrides({"zeros": {"atoms": []}})).columns
    # latency > 0 keeps its support: t = log(expm1(x / s)), which is x / s this far from 0.
    assert latency.fill == pytest.approx(100, abs=1) and latency.bound_scale == pytest.approx(10, rel=0.1)
    assert latency.std == pytest.approx(1, rel=0.01)
    assert frame["latency"].std() > 4e4  # what scaled it before
    assert zeros.std == pytest.approx(frame["zeros"].std(ddof=0))  # IQR 0 (atoms switched off): the sd


def test_streamed_quantiles_come_from_a_sample_independent_of_chunking_and_ranks() -> None:
    from flowcli.moments import Moments

    x = np.random.default_rng(0).standard_t(3, size=(20000, 2))

    def merged(parts: int, k: int = 2000) -> Moments:
        total = Moments()
        for rows in np.array_split(np.random.default_rng(parts).permutation(len(x)), parts):
            total = total.merge(Moments.of(x[rows], rows, k), k)
        return total

    a, b = merged(7), merged(31)
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.sample, b.sample)
    # A uniform sample of 2000 rows: the median within a few standard errors of the whole column's.
    assert abs(np.median(a.sample[:, 0]) - np.median(x[:, 0])) < 0.1


def test_the_untrained_flow_is_the_maximum_likelihood_gaussian() -> None:
    from flowcli.model import Flow
    from flowcli.schema import Schema

    frame = tables(2000, 0)["collinear"][["a", "b"]].assign(w=np.random.default_rng(5).normal(3, 2, 2000))
    schema = Schema.infer(frame)
    x = torch.tensor(schema.to_features(frame)[0])
    for preset in ("default", "maf"):
        flow = Flow(schema, resolve_config(preset)).double()
        flow.initialize(x)
        flow.eval()
        with torch.no_grad():
            torch.testing.assert_close(flow.log_prob(x), flow.gaussian_log_prob(x))
            whitened, _ = flow(x)  # the config's layers start as the identity: the latent is the whitened data
        torch.testing.assert_close(whitened.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-8, rtol=0)
        torch.testing.assert_close(
            torch.cov(whitened.T, correction=0), torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0
        )
    # ... which is the Gaussian of the data in its own units: the robust scaling and the whitening are
    # affine, and no value reaches the soft tails (4 robust units out; a skewed column would).
    assert float(flow.gaussian_log_prob(x).mean()) == pytest.approx(gaussian_loglik(frame, frame), abs=1e-4)


def test_the_inverse_of_the_preprocessing_keeps_every_value_representable() -> None:
    from flowcli.config import parse_config
    from flowcli.schema import Schema

    frame = pd.DataFrame({"c": np.arange(20.0), "p": np.exp(np.arange(20.0)), "u": np.linspace(0.05, 0.95, 20)})
    overrides = parse_config(
        {"layers": ["maf"], "columns": {"p": "positive", "u": {"role": "bounded", "low": 0, "high": 1}}}
    )
    pre = Schema.infer(frame, overrides.columns).preprocessing().eval()
    for dtype in (torch.float32, torch.float64):
        y = torch.tensor([[1e30, 1e30, 1e30], [-1e30, -1e30, -1e30], [1e6, -1e6, 40.0]], dtype=dtype)
        x, _ = pre.to(dtype).inverse(y)
        assert torch.isfinite(x).all() and (x[:, 1] > 0).all() and ((x[:, 2] > 0) & (x[:, 2] < 1)).all()
        z, ladj = pre(x)
        assert torch.isfinite(z).all() and torch.isfinite(ladj).all()


def test_a_layer_with_wild_weights_cannot_blow_up_a_sample() -> None:
    from flowcli.layers import build_layer

    torch.manual_seed(0)
    for name in ("maf", "affine_coupling"):
        layer = build_layer(name, 4, 1, {}).double()
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0, 30.0)  # conditioners far from anything training would give
        z = torch.randn(2000, 4, dtype=torch.float64) * 8
        x, _ = layer.inverse(z)
        # Bounded inputs and a soft-clamped log-scale: at most e^5 times (|z| + the shift's bound) per layer.
        assert torch.isfinite(x).all()
        torch.testing.assert_close(layer(x)[0], z, rtol=1e-6, atol=1e-6)


def test_positive_columns_never_sample_zero_or_infinity(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"income": np.exp(rng.normal(10, 3, 500)), "age": rng.normal(40, 10, 500)})
    config = resolve_config("maf")
    config.training.epochs, config.training.lr = 10, 0.01
    from flowcli.columns import parse_column_overrides

    config.columns = parse_column_overrides({"income": "positive"})
    model = fit(frame, config, device=torch.device("cpu"), seed=0)
    samples = model.sample(20000, seed=1)
    assert np.isfinite(samples["income"]).all() and (samples["income"] > 0).all()
    assert np.isfinite(model.log_prob(samples)).all()


def test_weight_decay_auto_shrinks_small_tables() -> None:
    from flowcli.train import weight_decay

    assert weight_decay("auto", 54) == pytest.approx(1 / 54)
    assert weight_decay("auto", 10_000) == weight_decay("auto", 1_000_000) == pytest.approx(1e-4)
    assert weight_decay(0.0, 54) == 0.0 and weight_decay(0.003, 10) == 0.003


def test_learning_rate_auto_is_the_long_runs_rate_scaled_up_for_short_runs() -> None:
    from flowcli.train import learning_rate

    assert learning_rate("auto", 200) == learning_rate("auto", 1000) == pytest.approx(1e-3)
    assert learning_rate("auto", 50) == pytest.approx(2e-3)  # sqrt(200 / 50)
    assert learning_rate("auto", 8) == learning_rate("auto", 1) == pytest.approx(5e-3)  # at most 5x
    assert learning_rate(0.02, 3) == 0.02  # a number is the rate, whatever the length


def test_the_rate_a_fit_used_is_recorded_and_a_config_may_say_auto() -> None:
    from flowcli.config import load_config, parse_config

    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=300)})
    default = load_config(None)  # the packaged default config says lr: auto
    default.training.epochs = 2
    assert fit(frame, default, device=torch.device("cpu"), seed=0).info["lr"] == 5e-3
    config = parse_config({"layers": ["maf"], "training": {"epochs": 2, "lr": "auto"}})
    assert fit(frame, config, device=torch.device("cpu"), seed=0).info["lr"] == 5e-3
    config = parse_config({"layers": ["maf"], "training": {"epochs": 2, "lr": 0.002}})
    assert fit(frame, config, device=torch.device("cpu"), seed=0).info["lr"] == 0.002


def test_the_gain_threshold_is_students_t() -> None:
    from flowcli.health import gain_threshold

    # t quantiles at 0.975 for 3, 5, 10, 99 degrees of freedom; the start is kept below 4 rows.
    for rows, t in ((4, 3.182), (6, 2.571), (11, 2.228), (100, 1.984)):
        assert gain_threshold(rows) == pytest.approx(t, rel=0.01)
    assert gain_threshold(3) == float("inf")


# ------------------------------------------------------------------------------------------ warnings


def history(*val: float, train: list[float] | None = None) -> list[dict]:
    train = train or list(val)
    return [{"epoch": i + 1, "train_nll": t, "val_nll": v} for i, (t, v) in enumerate(zip(train, val, strict=True))]


def test_warnings_name_divergence_an_early_best_epoch_and_no_gain_over_a_gaussian() -> None:
    from flowcli.health import fit_warnings

    healthy = {"metrics": history(5, 4, 3, 2.5), "best_epoch": 4, "best_val_nll": 2.5, "gaussian_val_nll": 5.5}
    assert fit_warnings(healthy, dim=3) == []
    diverged = {**healthy, "metrics": history(5, 4, 1103, 33928), "best_epoch": 2, "best_val_nll": 4}
    (warning,) = fit_warnings(diverged, dim=10)
    assert warning.startswith("training diverged") and "3.393e+04 (epoch 4)" in warning and "training.lr" in warning
    runs = history(*[3.0] + [3.5] * 20, train=[4.0 - 0.1 * i for i in range(21)])
    early = {"metrics": runs, "best_epoch": 1, "best_val_nll": 3.0, "gaussian_val_nll": 5.0}
    (warning,) = fit_warnings(early, dim=3)
    assert "epoch 1 of 21" in warning and "kept improving" in warning
    start = {**healthy, "best_epoch": 0, "best_val_nll": 5.5, "gain_over_gaussian": [0.01, 0.05]}
    (warning,) = fit_warnings(start, dim=3)
    assert "kept is the start" in warning and "0.01 +- 0.05 nats/row, is not significant" in warning
    worse = {**healthy, "best_val_nll": 6.0}
    (warning,) = fit_warnings(worse, dim=3)
    assert "worse than a single full-covariance Gaussian" in warning
    (warning,) = fit_warnings({**worse, "best_epoch": 0}, dim=3)  # a studentt or uniform base's start
    assert "the untrained start" in warning
    unsure = {**healthy, "best_val_nll": 5.4, "gain_over_gaussian": [0.1, 0.08], "gain_significant": False}
    (warning,) = fit_warnings(unsure, dim=3)
    assert "not significantly better than a single full-covariance Gaussian" in warning


@pytest.fixture(scope="module")
def gaussian_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 rows of a normal table: no flow can do better than a Gaussian, so a fit keeps its start and warns."""
    path = tmp_path_factory.mktemp("g") / "g.csv"
    tables(60, 0)["small"].to_csv(path, index=False)
    return path


def test_fit_prints_the_gaussian_and_the_warnings_and_inspect_shows_them(gaussian_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.flow"
    result = runner.invoke(
        app, ["fit", str(gaussian_csv), "-c", "maf", "-o", str(out), "--epochs", "15", "--seed", "0"]
    )
    assert result.exit_code == 0, result.stderr
    assert "(a single Gaussian: " in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings and "the model kept is the start" in warnings[0]
    shown = runner.invoke(app, ["inspect", str(out), "--json"])
    training = __import__("json").loads(shown.stdout)["training"]
    assert training["warnings"] and training["gaussian_val_nll"] == pytest.approx(training["best_val_nll"])
    assert "warning" in runner.invoke(app, ["inspect", str(out)]).stdout
    quiet = runner.invoke(app, ["fit", str(gaussian_csv), "-c", "maf", "-o", str(out), "--epochs", "15", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""  # --quiet: nothing, warnings included


def test_strict_fails_and_saves_nothing(gaussian_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.flow"
    out.write_bytes(b"precious")
    args = ["fit", str(gaussian_csv), "-c", "maf", "-o", str(out), "--epochs", "15", "--seed", "0", "--strict"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("Error: --strict: the fit has 1 warning(s), so nothing was saved")
    assert out.read_bytes() == b"precious" and not (tmp_path / "g.metrics.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g.flow"]  # no temporary file left either
    import flowcli

    with pytest.raises(flowcli.StrictFitError) as raised:  # the package exports it (README)
        fit(pd.read_csv(gaussian_csv), "maf", epochs=15, seed=0, strict=True)
    assert raised.value.model.info["warnings"]
