"""Conditional questions of one flowcli model against a closed-form truth, and their speed (issue 15).

The data: a mixture of ``K`` = 5 Gaussians in ``D`` = 5 columns (``c0 .. c4``), each component with its own
mean (uniform in [-3, 3]^D) and its own full covariance (a random rotation of scales log-uniform in
[0.3, 1.2]); weights 0.15-0.3. Its marginals and conditionals are closed-form: p(y | x) is again a
Gaussian mixture, with component weights w_k(x) proportional to pi_k N(x; mu_k,x, S_k,xx), component means
mu_k,y + S_k,yx S_k,xx^-1 (x - mu_k,x) and covariances S_k,yy - S_k,yx S_k,xx^-1 S_k,xy. ``--rows`` training
rows (default 20,000) and as many held-out rows are drawn from it with ``--seed``; flowcli's default config
is fitted to the training rows (``flowcli.fit(train, seed=--seed, threads=--threads)``).

What it prints (Markdown tables on stdout, progress on stderr):

- (a) conditional log-likelihood: for each split of the columns into given x and target y (``--splits``,
  default ``c0,c1|c2,c3,c4`` and ``c0,c1,c2,c3|c4``), the mean over the held-out rows of
  ``model.log_prob(held_out, target=y)`` against the true log p(y | x), in nats; gap = true - model
  (target: gap <= 0.15). The mean entropy of the component weights w(x) says how multimodal p(y | x) is
  (0: one component; log 5 = 1.61: all five alike).
- (b) conditional samples: for each split and each of three fixed x (the held-out rows at the 50%, 10% and
  1% quantiles of the true log p(x): a common, an unusual and a rare condition), ``--draws`` rows of
  ``model.sample(draws, given={x: value})`` against as many exact draws from the true p(y | x); the
  two-sample Kolmogorov-Smirnov statistic per y column (target: < 0.05; with 5,000 draws of each the 95%
  critical value of the statistic between two samples of one distribution is 1.36 * sqrt(2 / 5000) = 0.027).
  Also checked: every row holds the given values exactly, and exactly ``draws`` rows come back.
- (c) joint log-likelihood: the mean held-out ``model.log_prob(held_out)`` against the true log p(row); with
  ``--before TREE`` (a checkout of flowcli before issue 15, e.g. ``git worktree add ../wt-before 84c1d91``)
  the same data and seed are also fitted by that code, in a subprocess with ``PYTHONPATH=TREE``, and both
  are printed (the issue: the joint no worse than before by more than 0.05 nats). Fit seconds of both.
- (d) speed, on a 10-column model (``data-samples/magic_gamma.csv``, 19,020 rows, fitted with the default):
  rows/s of ``model.sample(10000, given={fLength: median, fWidth: median})`` (a mapping) and of
  ``model.sample(1, given=frame)`` for a frame of 10,000 rows each giving two cells (the ``--given-file``
  route), beside unconditional ``model.sample(10000)``; the best of three passes (target: >= 10,000
  rows/s on 2 cores); and the seconds of ``model.impute`` of 10,000 of its rows with 20% of the cells
  missing completely at random (target: < 30 s), with the imputation NRMSE (see imputation.py) as a
  sanity check. Timed with ``--threads`` torch threads (default 1: a lower bound for 2 cores).
- (e) imputation on the mixture: ``model.impute`` of the held-out rows with 20% of the cells missing
  completely at random, NRMSE (as in imputation.py) beside that of the true conditional means
  E[missing | observed] of the mixture, the least any imputation can reach.
- (f) (not in the default parts; needs scikit-learn) part (b) for a reference that is not a flow: a
  Gaussian mixture fitted by EM to the same training rows, the data's own model family. Its KS figures say
  how close to the target a near-exact density estimate of ``--rows`` rows gets.

    PYTHONPATH=. python benchmarks/conditional.py --before ../wt-before      # the recorded run
    PYTHONPATH=. python benchmarks/conditional.py --rows 2000 --epochs 5 --draws 1000 --parts a,b  # smoke

Recorded figures: benchmarks/CONDITIONAL.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import ks_2samp

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"c{i}" for i in range(5)]
DEFAULT_SPLITS = "c0,c1|c2,c3,c4;c0,c1,c2,c3|c4"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- the truth


@dataclass
class Mixture:
    """A Gaussian mixture with full covariances: weights (K,), means (K, D), covariances (K, D, D)."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @classmethod
    def make(cls, seed: int, k: int = 5, d: int = 5) -> Mixture:
        rng = np.random.default_rng(1000 + seed)
        weights = rng.uniform(0.15, 0.3, k)
        means = rng.uniform(-3.0, 3.0, (k, d))
        covs = np.empty((k, d, d))
        for j in range(k):
            rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
            scales = np.exp(rng.uniform(np.log(0.3), np.log(1.2), d))
            covs[j] = rotation @ np.diag(scales**2) @ rotation.T
        return cls(weights / weights.sum(), means, covs)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.means.shape[1]))
        for j in range(len(self.weights)):
            rows = component == j
            out[rows] = rng.multivariate_normal(self.means[j], self.covs[j], size=int(rows.sum()))
        return out

    def component_log_pdf(self, values: np.ndarray, cols: list[int]) -> np.ndarray:
        """(n, K): log N(values; mu_k[cols], S_k[cols, cols]) for each component k."""
        out = np.empty((len(values), len(self.weights)))
        for j in range(len(self.weights)):
            cov = self.covs[j][np.ix_(cols, cols)]
            chol = np.linalg.cholesky(cov)
            z = np.linalg.solve(chol, (values - self.means[j, cols]).T)
            out[:, j] = -0.5 * (z**2).sum(axis=0) - np.log(np.diag(chol)).sum() - 0.5 * len(cols) * np.log(2 * np.pi)
        return out

    def log_pdf(self, values: np.ndarray, cols: list[int]) -> np.ndarray:
        """log p(values) of the marginal of the columns ``cols``."""
        return logsumexp(self.component_log_pdf(values, cols) + np.log(self.weights), axis=1)

    def log_weights_given(self, x: np.ndarray, x_cols: list[int]) -> np.ndarray:
        """(n, K): log w_k(x), the components' posterior weights given x."""
        joint = self.component_log_pdf(x, x_cols) + np.log(self.weights)
        return joint - logsumexp(joint, axis=1, keepdims=True)

    def conditional(self, j: int, x: np.ndarray, x_cols: list[int], y_cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Component j's conditional mean (for one x) and covariance of y given x."""
        cov = self.covs[j]
        s_xx, s_yx, s_yy = cov[np.ix_(x_cols, x_cols)], cov[np.ix_(y_cols, x_cols)], cov[np.ix_(y_cols, y_cols)]
        gain = np.linalg.solve(s_xx, s_yx.T).T
        return self.means[j, y_cols] + gain @ (x - self.means[j, x_cols]), s_yy - gain @ s_yx.T

    def sample_given(
        self, n: int, x: np.ndarray, x_cols: list[int], y_cols: list[int], rng: np.random.Generator
    ) -> np.ndarray:
        """n exact draws of y from p(y | x) for one x."""
        w = np.exp(self.log_weights_given(x[None, :], x_cols)[0])
        component = rng.choice(len(w), size=n, p=w / w.sum())
        out = np.empty((n, len(y_cols)))
        for j in range(len(w)):
            rows = component == j
            mean, cov = self.conditional(j, x, x_cols, y_cols)
            out[rows] = rng.multivariate_normal(mean, cov, size=int(rows.sum()))
        return out


def parse_splits(text: str) -> list[tuple[list[str], list[str]]]:
    splits = []
    for part in text.split(";"):
        given, target = part.split("|")
        splits.append((given.split(","), target.split(",")))
    return splits


def data(seed: int, rows: int) -> tuple[Mixture, pd.DataFrame, pd.DataFrame]:
    mixture = Mixture.make(seed)
    rng = np.random.default_rng(seed)
    train = pd.DataFrame(mixture.sample(rows, rng), columns=COLUMNS)
    held = pd.DataFrame(mixture.sample(rows, rng), columns=COLUMNS)
    return mixture, train, held


def fit(frame: pd.DataFrame, args: argparse.Namespace) -> tuple[Any, float, float]:
    """The fitted model, the fit's wall seconds, and the seconds of those in fitting the network of conditional
    questions (``flowcli.train.fit_conditional``, timed by wrapping it; NaN in a flowcli without one)."""
    import flowcli
    import flowcli.train as train_module

    spent = [float("nan")]
    original = getattr(train_module, "fit_conditional", None)
    if original is not None:

        def timed(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[0] = time.perf_counter() - started

        train_module.fit_conditional = timed  # type: ignore[attr-defined]
    started = time.perf_counter()
    try:
        model = flowcli.fit(frame, args.config, epochs=args.epochs, seed=args.seed, device="cpu", threads=args.threads)
    finally:
        if original is not None:
            train_module.fit_conditional = original  # type: ignore[attr-defined]
    return model, time.perf_counter() - started, spent[0]


def flowcli_commit() -> str:
    """The commit (and whether dirty) of the flowcli tree imported: the figures belong to it."""
    import flowcli

    tree = Path(flowcli.__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "flowcli"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{tree} (not a git tree)"
    return f"{head}{' (dirty)' if dirty else ''} ({tree})"


# --------------------------------------------------------------------------------------- the parts


def part_joint(model: Any, mixture: Mixture, held: pd.DataFrame) -> tuple[float, float]:
    """Mean held-out joint log-likelihood of the model and of the truth."""
    return float(np.mean(model.log_prob(held))), float(np.mean(mixture.log_pdf(held.to_numpy(), list(range(5)))))


def part_a(model: Any, mixture: Mixture, held: pd.DataFrame, splits: list[tuple[list[str], list[str]]]) -> None:
    print("\n(a) mean held-out conditional log-likelihood, nats (target: gap <= 0.15)\n")
    print("| given x | target y | flowcli log p(y \\| x) | true | gap | entropy of w(x) | s |")
    print("|---|---|---|---|---|---|---|")
    values = held.to_numpy()
    for given, target in splits:
        x_cols, y_cols = [COLUMNS.index(c) for c in given], [COLUMNS.index(c) for c in target]
        true = mixture.log_pdf(values[:, x_cols + y_cols], x_cols + y_cols) - mixture.log_pdf(values[:, x_cols], x_cols)
        log_w = mixture.log_weights_given(values[:, x_cols], x_cols)
        entropy = float(np.mean(-(np.exp(log_w) * log_w).sum(axis=1)))
        started = time.perf_counter()
        ours = np.asarray(model.log_prob(held, target=target), dtype=float)
        seconds = time.perf_counter() - started
        bad = int((~np.isfinite(ours)).sum())
        note = f" ({bad} rows not finite, left out)" if bad else ""
        mean_ours = float(np.mean(ours[np.isfinite(ours)]))
        print(
            f"| {','.join(given)} | {','.join(target)} | {mean_ours:.3f}{note} | {true.mean():.3f} | "
            f"{true.mean() - mean_ours:+.3f} | {entropy:.2f} | {seconds:.1f} |",
            flush=True,
        )


def part_b(
    model: Any, mixture: Mixture, held: pd.DataFrame, splits: list[tuple[list[str], list[str]]], draws: int, seed: int
) -> None:
    print(f"\n(b) {draws:,} samples given x vs as many exact draws: two-sample KS per y column (target: < 0.05)\n")
    print("| given x | condition (quantile of true log p(x)) | x values | KS per y column | max KS | rows/s |")
    print("|---|---|---|---|---|---|")
    values = held.to_numpy()
    rng = np.random.default_rng(seed + 7)
    for given, target in splits:
        x_cols, y_cols = [COLUMNS.index(c) for c in given], [COLUMNS.index(c) for c in target]
        log_px = mixture.log_pdf(values[:, x_cols], x_cols)
        order = np.argsort(log_px)
        for quantile in (0.5, 0.1, 0.01):
            x = values[order[int(quantile * (len(order) - 1))], x_cols]
            condition = {c: float(v) for c, v in zip(given, x, strict=True)}
            started = time.perf_counter()
            ours = model.sample(draws, seed=seed, given=condition)
            seconds = time.perf_counter() - started
            problems = []
            if len(ours) != draws:
                problems.append(f"{len(ours)} rows, not {draws}")
            for c, v in condition.items():
                if not np.all(ours[c].to_numpy() == v):
                    problems.append(f"{c} not held at {v!r}")
            exact = mixture.sample_given(draws, x, x_cols, y_cols, rng)
            ks = [ks_2samp(ours[c].to_numpy(dtype=float), exact[:, i]).statistic for i, c in enumerate(target)]
            cells = ", ".join(f"{c} {s:.3f}" for c, s in zip(target, ks, strict=True))
            xs = ", ".join(f"{v:.2f}" for v in x)
            note = f" **{'; '.join(problems)}**" if problems else ""
            print(
                f"| {','.join(given)} | {quantile:.0%} | {xs} | {cells}{note} | {max(ks):.3f} | "
                f"{draws / seconds:,.0f} |",
                flush=True,
            )


def part_e(model: Any, mixture: Mixture, held: pd.DataFrame, seed: int) -> None:
    """``model.impute`` of the held-out rows with 20% of the cells missing completely at random, against
    the true conditional mean E[missing cells | observed cells] (the least NRMSE any imputation can have)."""
    values = held.to_numpy()
    mask = np.random.default_rng(seed + 11).random(values.shape) < 0.2
    started = time.perf_counter()
    filled = model.impute(held.mask(mask), seed=seed)[COLUMNS].to_numpy(dtype=float)
    seconds = time.perf_counter() - started
    best = values.copy()
    for i in np.flatnonzero(mask.any(axis=1)):
        miss, seen = list(np.flatnonzero(mask[i])), list(np.flatnonzero(~mask[i]))
        if not seen:
            best[i, miss] = (mixture.weights[:, None] * mixture.means).sum(axis=0)[miss]
            continue
        w = np.exp(mixture.log_weights_given(values[i, seen][None, :], seen)[0])
        best[i, miss] = sum(w[j] * mixture.conditional(j, values[i, seen], seen, miss)[0] for j in range(len(w)))
    sd = values.std(axis=0)

    def rms(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.mean((((a - b) / sd) ** 2)[mask])))

    print("\n(e) impute of the held-out rows, 20% of cells missing completely at random (NRMSE as imputation.py)\n")
    print("| masked cells | flowcli NRMSE | true conditional mean NRMSE (the floor) | RMS flowcli - true mean | s |")
    print("|---|---|---|---|---|")
    print(
        f"| {int(mask.sum()):,} | {rms(filled, values):.3f} | {rms(best, values):.3f} | {rms(filled, best):.3f} | "
        f"{seconds:.1f} |"
    )


class ReferenceMixture:
    """A Gaussian mixture fitted by EM to the training rows (scikit-learn, the ``bench`` extra), answering
    ``sample(n, seed=, given=)`` as part (b) asks a flowcli model: the model family of the data itself, so
    its conditionals are the best a density estimate of this many rows can be expected to give."""

    def __init__(self, train: pd.DataFrame, seed: int) -> None:
        from sklearn.mixture import GaussianMixture

        values = train.to_numpy()
        fits = [
            GaussianMixture(k, covariance_type="full", n_init=10, random_state=seed).fit(values) for k in range(5, 9)
        ]
        best = min(fits, key=lambda g: g.bic(values))  # K from the data, as a user of EM would choose it
        self.k = best.n_components
        self.mixture = Mixture(best.weights_, best.means_, best.covariances_)

    def log_prob(self, frame: pd.DataFrame) -> np.ndarray:
        return self.mixture.log_pdf(frame[COLUMNS].to_numpy(), list(range(len(COLUMNS))))

    def sample(self, n: int, seed: int, given: dict[str, float]) -> pd.DataFrame:
        x_cols = [COLUMNS.index(c) for c in given]
        y_cols = [i for i in range(len(COLUMNS)) if i not in x_cols]
        x = np.array([given[COLUMNS[i]] for i in x_cols])
        drawn = self.mixture.sample_given(n, x, x_cols, y_cols, np.random.default_rng(seed))
        out = pd.DataFrame(drawn, columns=[COLUMNS[i] for i in y_cols])
        for c, v in given.items():
            out[c] = v
        return out[COLUMNS]


def part_f(
    train: pd.DataFrame,
    mixture: Mixture,
    held: pd.DataFrame,
    splits: list[tuple[list[str], list[str]]],
    args: argparse.Namespace,
) -> None:
    """Part (b)'s protocol for ``ReferenceMixture``: how far below the target a near-exact estimate gets."""
    reference = ReferenceMixture(train, args.seed)
    ours, true = part_joint(reference, mixture, held)
    print(
        f"\n(f) the reference: scikit-learn GaussianMixture, K = {reference.k} by BIC among 5-8, fitted by EM to the same "
        f"training rows; held-out joint log-likelihood {ours:.4f} against the true {true:.4f} (gap {true - ours:+.4f} nats)"
    )
    part_b(reference, mixture, held, splits, args.draws, args.seed)


def part_c(args: argparse.Namespace, now: dict[str, float]) -> None:
    rows = [("this tree: " + flowcli_commit(), now)]
    if args.before:
        log(f"fitting the same data with the flowcli of {args.before} ...")
        command = [sys.executable, __file__, "--only-joint", *forwarded(args)]
        env = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            log(done.stderr)
            raise SystemExit(f"the run at {args.before} failed (exit {done.returncode})")
        before = json.loads(done.stdout.strip().splitlines()[-1])
        rows.insert(0, ("before: " + before.pop("commit"), before))
    print("\n(c) mean held-out joint log-likelihood, nats (target: after no worse than before by more than 0.05)\n")
    print("| flowcli | log p(row) | true | gap | epochs (best) | fit s | of which conditional network s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['model']:.3f} | {r['true']:.3f} | {r['true'] - r['model']:+.3f} | "
            f"{r['epochs']:.0f} ({r['best']:.0f}) | {r['fit_s']:.0f} | {r['conditional_s']:.0f} |"
        )
    if len(rows) == 2:
        print(f"\nafter - before: {rows[1][1]['model'] - rows[0][1]['model']:+.3f} nats")


def forwarded(args: argparse.Namespace) -> list[str]:
    out = ["--seed", str(args.seed), "--rows", str(args.rows), "--threads", str(args.threads)]
    if args.epochs is not None:
        out += ["--epochs", str(args.epochs)]
    if args.config is not None:
        out += ["--config", args.config]
    return out


def best_rate(fn: Any, rows: int, passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
        if len(out) != rows:
            raise SystemExit(f"expected {rows} rows, got {len(out)}")
    return rows / best


def part_d(args: argparse.Namespace) -> None:
    frame = pd.read_csv(ROOT / "data-samples" / "magic_gamma.csv")
    log(f"(d) fitting magic_gamma ({len(frame)} x {frame.shape[1]}) ...")
    model, fit_seconds, conditional_seconds = fit(frame, args)
    n = 10_000
    given = {"fLength": float(frame["fLength"].median()), "fWidth": float(frame["fWidth"].median())}
    rows = frame.sample(n, random_state=args.seed).reset_index(drop=True)
    per_row = rows[["fLength", "fWidth"]]
    rates = {
        "sample(10000) (unconditional)": best_rate(lambda: model.sample(n, seed=1), n),
        "sample(10000, given={fLength, fWidth: medians})": best_rate(lambda: model.sample(n, seed=1, given=given), n),
        "sample(1, given=10,000-row frame of fLength, fWidth)": best_rate(
            lambda: model.sample(1, seed=1, given=per_row), n
        ),
    }
    mask = np.random.default_rng(args.seed).random(rows.shape) < 0.2
    masked = rows.mask(mask)
    started = time.perf_counter()
    filled = model.impute(masked, seed=1)
    impute_seconds = time.perf_counter() - started
    truth, got = rows.to_numpy(), filled[rows.columns].to_numpy(dtype=float)
    unchanged = bool(np.array_equal(got[~mask], truth[~mask]))
    nrmse = float(np.sqrt(np.mean((((got - truth) / rows.std(ddof=0).to_numpy()) ** 2)[mask])))
    print(
        f"\n(d) speed of a 10-column model (magic_gamma, fitted in {fit_seconds:.0f} s, of which {conditional_seconds:.0f} s the conditional network), {args.threads} torch thread(s)\n"
    )
    print("| call | rows/s (best of 3) |")
    print("|---|---|")
    for name, rate in rates.items():
        print(f"| `{name}` | {rate:,.0f} |")
    print(
        f"| `impute` of 10,000 rows x 10 columns, {mask.mean():.1%} cells missing | {impute_seconds:.1f} s "
        f"(NRMSE {nrmse:.3f}; observed cells unchanged: {unchanged}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="training rows (and as many held-out rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (smoke runs only)")
    parser.add_argument("--config", default=None, help="a preset name or YAML (default: the default config)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for fits and timings")
    parser.add_argument("--draws", type=int, default=5000, help="samples per condition in (b)")
    parser.add_argument("--splits", default=DEFAULT_SPLITS, help="given|target column lists, ';'-separated")
    parser.add_argument(
        "--parts", default="a,b,c,d,e", help="which of the parts a,b,c,d,e,f to run (f: the parametric reference)"
    )
    parser.add_argument("--before", default=None, help="a flowcli checkout before issue 15, for (c)")
    parser.add_argument("--only-joint", action="store_true", help=argparse.SUPPRESS)  # the --before subprocess
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    if "f" in parts:
        mixture, train, held = data(args.seed, args.rows)
        part_f(train, mixture, held, parse_splits(args.splits), args)
    if args.only_joint or parts & {"a", "b", "c", "e"}:
        mixture, train, held = data(args.seed, args.rows)
        log(f"fitting the mixture ({len(train)} x {train.shape[1]}) with {flowcli_commit()} ...")
        model, seconds, conditional_seconds = fit(train, args)
        ours, true = part_joint(model, mixture, held)
        joint = {
            "model": ours,
            "true": true,
            "fit_s": seconds,
            "conditional_s": conditional_seconds,
            "epochs": model.info.get("epochs_run", float("nan")),
            "best": model.info.get("best_epoch", float("nan")),
        }
        if args.only_joint:
            print(json.dumps({**joint, "commit": flowcli_commit()}))
            return
        print(f"flowcli {flowcli_commit()}; {args.rows:,} training and held-out rows; seed {args.seed}")
        if "a" in parts:
            part_a(model, mixture, held, parse_splits(args.splits))
        if "b" in parts:
            part_b(model, mixture, held, parse_splits(args.splits), args.draws, args.seed)
        if "e" in parts:
            part_e(model, mixture, held, args.seed)
        if "c" in parts:
            part_c(args, joint)
    if "d" in parts:
        part_d(args)


if __name__ == "__main__":
    sys.exit(main())
