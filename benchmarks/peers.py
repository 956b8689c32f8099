"""flowcli against zuko and nflows on the same recipe, in one run on the same machine.

Recipe: 5 autoregressive layers (MAF, or rational-quadratic splines with 8 bins), MADE conditioners
with 2 hidden layers of 128, reverse permutation between layers, Adam at 1e-3, batch 512, a fixed
number of epochs, no early stopping, no learning-rate schedule. Every library gets the same
standardized training rows and is scored on the same test rows, in the same (standardized) units.

Each library runs in its own subprocess so that peak memory is its own. Usage:

    pip install -e ".[bench]"
    python benchmarks/peers.py                 # full table (takes a while on 2 cores)
    python benchmarks/peers.py --epochs 2 --rows 20000 --quick   # smoke run

Prints a Markdown table; see benchmarks/RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM, COMPONENTS = 16, 8


# --------------------------------------------------------------------------------------- data


def gaussian_mixture(n: int, seed: int) -> tuple[np.ndarray, object]:
    """A 16-D mixture of 8 full-covariance Gaussians; returns samples and a log-density function."""
    rng = np.random.default_rng(1234)  # the mixture itself is fixed; `seed` only draws the samples
    means = rng.normal(scale=3.0, size=(COMPONENTS, DIM))
    covs = []
    for _ in range(COMPONENTS):
        a = rng.normal(size=(DIM, DIM)) / math.sqrt(DIM)
        covs.append(a @ a.T + 0.1 * np.eye(DIM))
    weights = rng.dirichlet(np.full(COMPONENTS, 5.0))
    chols = [np.linalg.cholesky(c) for c in covs]
    draw = np.random.default_rng(seed)
    comp = draw.choice(COMPONENTS, size=n, p=weights)
    x = means[comp] + np.einsum("nij,nj->ni", np.stack(chols)[comp], draw.normal(size=(n, DIM)))

    def log_density(points: np.ndarray) -> np.ndarray:
        terms = []
        for w, m, L in zip(weights, means, chols, strict=False):
            diff = np.linalg.solve(L, (points - m).T).T
            logdet = 2 * np.log(np.diag(L)).sum()
            terms.append(np.log(w) - 0.5 * (diff**2).sum(1) - 0.5 * logdet - 0.5 * DIM * math.log(2 * math.pi))
        t = np.stack(terms)
        top = t.max(0)
        return top + np.log(np.exp(t - top).sum(0))

    return x, log_density


def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    """Write standardized train/test arrays (.npy) and CSVs for each data set; return their descriptions."""
    sets = {}
    x, logpdf = gaussian_mixture(args.rows + args.test_rows, seed=0)
    train, test = x[: args.rows], x[args.rows :]
    mean, std = train.mean(0), train.std(0)
    # The ceiling in standardized units: log p_std(x') = log p(x) + sum(log std).
    ceiling = float(logpdf(test).mean() + np.log(std).sum())
    sets["gmm16"] = {"train": (train - mean) / std, "test": (test - mean) / std, "ceiling": ceiling}
    import pandas as pd

    # The same rows in data units, for the default-config run (flowcli standardizes by itself).
    cols = [f"x{i}" for i in range(DIM)]
    pd.DataFrame(train, columns=cols).to_csv(workdir / "gmm16_raw_train.csv", index=False)
    pd.DataFrame(test, columns=cols).to_csv(workdir / "gmm16_raw_test.csv", index=False)
    sets["gmm16"]["ceiling_data_units"] = float(logpdf(test).mean())

    real = pd.read_csv(ROOT / "data-samples" / "magic_gamma.csv").to_numpy()
    order = np.random.default_rng(0).permutation(len(real))
    n_test = len(real) // 5
    r_train, r_test = real[order[n_test:]], real[order[:n_test]]
    mean, std = r_train.mean(0), r_train.std(0)
    sets["magic_gamma"] = {"train": (r_train - mean) / std, "test": (r_test - mean) / std, "ceiling": None}
    for name, s in sets.items():
        for part in ("train", "test"):
            np.save(workdir / f"{name}_{part}.npy", s[part].astype(np.float32))
            cols = [f"x{i}" for i in range(s[part].shape[1])]
            pd.DataFrame(s[part], columns=cols).to_csv(workdir / f"{name}_{part}.csv", index=False)
    return sets


# --------------------------------------------------------------------------------------- models


def recipe_layers(recipe: str) -> list[dict]:
    """The recipe as flowcli layers. flowcli's autoregressive layers alternate their variable order
    (natural, reversed) with their position in the stack, which *is* a reverse permutation between
    layers, so no separate permute layers are needed (zuko's MAF/NSF do the same)."""
    layer = (
        {"type": "maf", "hidden": [128, 128]}
        if recipe == "maf"
        else {"type": "spline_autoregressive", "hidden": [128, 128], "bins": 8}
    )
    return [dict(layer) for _ in range(5)]


def build(lib: str, recipe: str, dim: int):

    if lib in ("zuko", "zuko-fused"):
        import zuko

        if recipe == "maf":
            flow = zuko.flows.MAF(dim, transforms=5, hidden_features=(128, 128))
        else:
            flow = zuko.flows.NSF(dim, transforms=5, bins=8, hidden_features=(128, 128))
        return flow, (lambda x: flow().log_prob(x)), (lambda n: flow().sample((n,)))
    if lib == "nflows":
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import (
            MaskedAffineAutoregressiveTransform,
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        )
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.permutations import ReversePermutation

        layers = []
        for i in range(5):
            if recipe == "maf":
                layers.append(MaskedAffineAutoregressiveTransform(dim, 128, num_blocks=1))
            else:
                layers.append(
                    MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                        dim, 128, num_bins=8, tails="linear", tail_bound=5.0, num_blocks=1, use_residual_blocks=False
                    )
                )
            if i < 4:
                layers.append(ReversePermutation(dim))
        flow = Flow(CompositeTransform(layers), StandardNormal([dim]))
        return flow, flow.log_prob, flow.sample
    if lib == "flowcli":
        from flowcli.config import parse_config
        from flowcli.model import Flow
        from flowcli.schema import Column, Schema

        config = parse_config({"layers": recipe_layers(recipe)})
        schema = Schema([Column(f"x{i}", "continuous", "float64", 0.0, 1.0) for i in range(dim)])
        flow = Flow(schema, config)
        return flow, flow.log_prob, flow.sample
    raise ValueError(lib)


def worker(args: argparse.Namespace) -> None:
    """Train one library on one data set with the recipe, print a JSON line of figures."""
    import torch

    torch.manual_seed(0)
    workdir = Path(args.workdir)
    train = torch.from_numpy(np.load(workdir / f"{args.data}_train.npy"))
    test = torch.from_numpy(np.load(workdir / f"{args.data}_test.npy"))
    flow, log_prob, sample = build(args.lib, args.recipe, train.shape[1])
    if args.lib == "flowcli":
        from flowcli.train import make_optimizer  # what `flowcli fit` uses: Adam, fused where supported

        optimizer = make_optimizer(flow, lr=1e-3, weight_decay=0.0)
    else:  # the peers' documented way; "zuko-fused" shows zuko with the same fused Adam, for fairness
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3, fused=args.lib == "zuko-fused")
    epoch_seconds = []
    for _ in range(args.epochs):
        flow.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(train))
        for start in range(0, len(train), 512):
            batch = train[perm[start : start + 512]]
            loss = -log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - t0)
    flow.eval()
    with torch.inference_mode():
        test_ll = float(torch.cat([log_prob(test[i : i + 8192]) for i in range(0, len(test), 8192)]).double().mean())
        scoring = torch.cat([test] * max(1, 200_000 // len(test)))
        t0 = time.perf_counter()
        for i in range(0, len(scoring), 65536):
            log_prob(scoring[i : i + 65536])
        logprob_rps = len(scoring) / (time.perf_counter() - t0)
        n_sample = 20_000
        t0 = time.perf_counter()
        for _ in range(2):
            sample(n_sample // 2)
        sample_rps = n_sample / (time.perf_counter() - t0)
    result = {
        "lib": args.lib,
        "recipe": args.recipe,
        "data": args.data,
        "epoch_s": float(np.median(epoch_seconds)),
        "test_ll": test_ll,
        "logprob_rows_s": logprob_rps,
        "sample_rows_s": sample_rps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result), flush=True)


def cli_figures(workdir: Path, recipe: str, data: str, epochs: int) -> dict:
    """End-to-end CLI: fit with the same recipe, then `flowcli logprob` from a CSV file, timed as a whole."""
    import yaml

    cfg = workdir / f"{recipe}.yaml"
    training = {
        "epochs": epochs,
        "batch_size": 512,
        "lr": 1e-3,
        "val_fraction": 0.0,
        "schedule": "constant",
        "patience": epochs + 1,
    }
    cfg.write_text(yaml.safe_dump({"layers": recipe_layers(recipe), "training": training}))
    ckpt = workdir / f"{recipe}_{data}.flow"
    train_csv, test_csv = workdir / f"{data}_train.csv", workdir / f"{data}_test.csv"
    metrics = workdir / f"{recipe}_{data}.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flowcli",
            "fit",
            str(train_csv),
            "-c",
            str(cfg),
            "-o",
            str(ckpt),
            "--seed",
            "0",
            "-q",
            "--device",
            "cpu",
            "--metrics",
            str(metrics),
        ],
        check=True,
    )
    fit_epoch_s = float(np.median([json.loads(line)["seconds"] for line in metrics.read_text().splitlines()]))
    # Whole processes (start-up included) on ~200,000 and ~2,000,000 rows: torch's import alone is
    # ~2.5 s here, so the small file mostly measures start-up and the large one the streaming rate.
    rates = {}
    lines = test_csv.read_text().splitlines(keepends=True)
    for label, target in (("", 200_000), ("_2m", 2_000_000)):
        big = workdir / f"{data}_big{label}.csv"
        reps = max(1, target // (len(lines) - 1))
        body = "".join(lines[1:])
        with big.open("w") as f:  # repeat by writing, not in one string: the workers fork from this
            f.write(lines[0])  # process and inherit its peak RSS, which would spoil their memory figure
            for _ in range(reps):
                f.write(body)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flowcli",
                "logprob",
                str(ckpt),
                str(big),
                "-o",
                str(workdir / "scored.csv"),
                "--device",
                "cpu",
            ],
            check=True,
        )
        rates[f"cli_logprob_rows_s{label}"] = reps * (len(lines) - 1) / (time.perf_counter() - t0)
        big.unlink()
    ten = workdir / "ten_rows.csv"
    ten.write_text("".join(test_csv.read_text().splitlines(keepends=True)[:11]))
    ten_s = best_of([sys.executable, "-m", "flowcli", "logprob", str(ckpt), str(ten), "--device", "cpu"])
    return {**rates, "cli_fit_epoch_s": fit_epoch_s, "logprob_10_rows_s": ten_s}


def best_of(cmd: list[str], runs: int = 5) -> float:
    """Fastest of a few runs of a whole command (start-up included), in seconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def default_vs_ceiling(workdir: Path, ceiling: float) -> dict:
    """`flowcli fit` with the packaged default config and its own training budget, on the mixture in data units."""
    ckpt = workdir / "default_gmm16.flow"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flowcli",
            "fit",
            str(workdir / "gmm16_raw_train.csv"),
            "-o",
            str(ckpt),
            "--seed",
            "0",
            "-q",
            "--device",
            "cpu",
        ],
        check=True,
    )
    fit_s = time.perf_counter() - t0
    out = subprocess.run(
        [sys.executable, "-m", "flowcli", "logprob", str(ckpt), str(workdir / "gmm16_raw_test.csv")],
        check=True,
        capture_output=True,
        text=True,
    )
    import io

    import pandas as pd

    test_ll = float(pd.read_csv(io.StringIO(out.stdout))["logprob"].mean())
    return {"default_fit_s": fit_s, "default_test_ll": test_ll, "ceiling": ceiling}


def startup_figures() -> dict:
    return {
        "help_s": best_of([sys.executable, "-m", "flowcli", "--help"]),
        "import_torch_s": best_of([sys.executable, "-c", "import torch"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=50_000, help="training rows of the Gaussian mixture")
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--recipes", default="maf,nsf")
    parser.add_argument("--libs", default="flowcli,zuko,nflows")
    parser.add_argument("--data", default="gmm16,magic_gamma")
    parser.add_argument("--skip-default", action="store_true", help="skip the default-config-vs-ceiling fit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="flowcli-bench-") as tmp:
        workdir = Path(tmp)
        sets = prepare(args, workdir)
        rows = []
        for data in args.data.split(","):
            for recipe in args.recipes.split(","):
                for lib in args.libs.split(","):
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            "--lib",
                            lib,
                            "--recipe",
                            recipe,
                            "--data",
                            data,
                            "--workdir",
                            str(workdir),
                            "--epochs",
                            str(args.epochs),
                        ],
                        check=False,
                        capture_output=True,
                        text=True,
                    )
                    if out.returncode != 0:
                        print(f"{lib} {recipe} {data} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                        continue
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    if lib == "flowcli":
                        row.update(cli_figures(workdir, recipe, data, args.epochs))
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        start = startup_figures()
        default = None if args.skip_default else default_vs_ceiling(workdir, sets["gmm16"]["ceiling_data_units"])
    report(args, sets, rows, start, default)


def report(args: argparse.Namespace, sets: dict, rows: list[dict], start: dict, default: dict | None) -> None:
    """The Markdown table, then each target of the issue with the ratio measured in this run."""
    print(
        f"\n{args.rows} training rows (gmm16), {args.epochs} epochs, torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}\n"
    )
    for data, s in sets.items():
        if s["ceiling"] is not None:
            print(f"{data}: true mean test log-likelihood (ceiling) = {s['ceiling']:.3f} (standardized units)")
    print(
        "\n| data | recipe | library | s/epoch | CLI fit s/epoch | test LL | logprob rows/s (memory) "
        "| logprob rows/s (CLI, CSV, 200k / 2M rows) | sample rows/s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cli = f"{r['cli_logprob_rows_s']:,.0f} / {r['cli_logprob_rows_s_2m']:,.0f}" if "cli_logprob_rows_s" in r else ""
        fit = f"{r['cli_fit_epoch_s']:.2f}" if "cli_fit_epoch_s" in r else ""
        print(
            f"| {r['data']} | {r['recipe']} | {r['lib']} | {r['epoch_s']:.2f} | {fit} | {r['test_ll']:.3f} | "
            f"{r['logprob_rows_s']:,.0f} | {cli} | {r['sample_rows_s']:,.0f} | {r['peak_rss_mb']:.0f} |"
        )
    print(f"\nflowcli --help: {start['help_s']:.3f} s; python -c 'import torch': {start['import_torch_s']:.3f} s")
    print("\nTargets (ratios from this run):")
    by = {(r["data"], r["recipe"], r["lib"]): r for r in rows}
    for (data, recipe, lib), ours in by.items():
        zuko = by.get((data, recipe, "zuko"))
        if lib != "flowcli" or zuko is None:
            continue
        limit = 0.8 if recipe == "maf" else 0.5
        ratio = ours["epoch_s"] / zuko["epoch_s"]
        gap = ours["test_ll"] - zuko["test_ll"]
        print(
            f"- {data} {recipe}: epoch time {ratio:.2f}x zuko's (target <= {limit}) {'met' if ratio <= limit else 'MISSED'}; "
            f"test LL {gap:+.3f} vs zuko (target >= -0.05) {'met' if gap >= -0.05 else 'MISSED'}"
        )
        cli = ours["cli_logprob_rows_s"] / zuko["logprob_rows_s"]
        cli_2m = ours["cli_logprob_rows_s_2m"] / zuko["logprob_rows_s"]
        print(
            f"  CLI logprob from CSV {cli:.2f}x (200k rows) / {cli_2m:.2f}x (2M rows) zuko's in-memory rows/s (target >= 0.5) "
            f"{'met' if cli >= 0.5 else 'met on 2M rows only' if cli_2m >= 0.5 else 'MISSED'}; "
            f"sampling {ours['sample_rows_s'] / zuko['sample_rows_s']:.1f}x zuko's (target >= 5) "
            f"{'met' if ours['sample_rows_s'] >= 5 * zuko['sample_rows_s'] else 'MISSED'}"
        )
        ten = ours["logprob_10_rows_s"] / start["import_torch_s"]
        print(
            f"  logprob on 10 rows {ours['logprob_10_rows_s']:.2f} s = {ten:.2f}x import torch (target <= 1.5) {'met' if ten <= 1.5 else 'MISSED'}"
        )
    print(f"- flowcli --help {start['help_s']:.3f} s (target <= 0.3) {'met' if start['help_s'] <= 0.3 else 'MISSED'}")
    if default:
        gap = default["ceiling"] - default["default_test_ll"]
        print(
            f"- default config on gmm16 (data units): test LL {default['default_test_ll']:.3f} vs ceiling {default['ceiling']:.3f}, "
            f"gap {gap:.3f} nats (target <= 0.15) in {default['default_fit_s']:.0f} s (target <= 600) "
            f"{'met' if gap <= 0.15 and default['default_fit_s'] <= 600 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
