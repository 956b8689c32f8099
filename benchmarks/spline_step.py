"""Training-step and scoring time of the spline recipes: the autograd spline arithmetic against the
hand-written forward and backward of ``flowcli/layers/rqs_autograd.py``, in one process, interleaved.

Recipes (16 columns, batch 512, Adam as ``flowcli fit`` makes it):

- ``default``: the packaged default config's layers (5 ``spline_autoregressive``, 8 bins, MADE [64, 64]);
- ``nsf``: the peers' NSF recipe of ``benchmarks/peers.py`` (the same with MADE [128, 128]).

For each recipe, one training step (forward, backward, optimizer step) is timed with the old arithmetic
(``spline._rational_quadratic_autograd``, autograd through every operation) and the new one
(``spline.rational_quadratic``), alternating old and new in every round and keeping the best round of
each, so that load from other processes hits both alike; the figure to read is the ratio. Then the same
for scoring without a graph (``torch.inference_mode``, float32, 65,536-row batches as ``flowcli logprob``)
and for sampling (16,384 rows: the spline's inverse, one variable at a time), in ms per 1,000 rows.
With zuko installed (``pip install -e ".[bench]"``), zuko's NSF on the ``nsf`` recipe is timed in the
same rounds, for the ratio the speed issue targets.

    OMP_NUM_THREADS=1 python benchmarks/spline_step.py                    # 3-6 minutes on 2 busy cores
    OMP_NUM_THREADS=1 python benchmarks/spline_step.py --rounds 2 --steps 3   # smoke run

Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flowcli.layers.spline as spline  # noqa: E402  (after the sys.path line above)
from flowcli.config import load_config, parse_config  # noqa: E402
from flowcli.model import Flow  # noqa: E402
from flowcli.schema import Column, Schema  # noqa: E402
from flowcli.train import make_optimizer  # noqa: E402

DIM, BATCH, SCORE_ROWS, SAMPLE_ROWS = 16, 512, 65536, 16384
IMPLEMENTATIONS = {"old": spline._rational_quadratic_autograd, "new": spline.rational_quadratic}


def build(recipe: str) -> Flow:
    """A flowcli flow of the recipe on DIM continuous columns, its weights moved off the identity start."""
    torch.manual_seed(0)
    if recipe == "default":
        config = load_config(None)
    else:
        layer = {"type": "spline_autoregressive", "hidden": [128, 128], "bins": 8}
        config = parse_config({"layers": [dict(layer) for _ in range(5)]})
    schema = Schema([Column(f"x{i}", "continuous", "float64", 0.0, 1.0) for i in range(DIM)])
    flow = Flow(schema, config)
    with torch.no_grad():  # the MADEs' output layers start at zero: perturb so that bins differ
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return flow


def training_step(flow: torch.nn.Module, log_prob: Callable, batches: torch.Tensor) -> Callable[[int], None]:
    optimizer = (
        make_optimizer(flow, lr=1e-3, weight_decay=0.0)  # type: ignore[arg-type]
        if isinstance(flow, Flow)
        else torch.optim.Adam(flow.parameters(), lr=1e-3)
    )

    def run(i: int) -> None:
        loss = -log_prob(batches[i % len(batches)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return run


def timed(run: Callable[[int], None], steps: int) -> float:
    """Seconds per call of ``run``, averaged over ``steps`` calls after one warm-up call."""
    run(0)
    start = time.perf_counter()
    for i in range(steps):
        run(i)
    return (time.perf_counter() - start) / steps


def with_implementation(name: str, run: Callable[[int], None]) -> Callable[[int], None]:
    def swapped(i: int) -> None:
        spline.rational_quadratic = IMPLEMENTATIONS[name]  # SplineAutoregressive looks it up per call
        try:
            run(i)
        finally:
            spline.rational_quadratic = IMPLEMENTATIONS["new"]

    return swapped


def zuko_nsf() -> tuple[torch.nn.Module, Callable] | None:
    try:
        import zuko
    except ImportError:
        return None
    torch.manual_seed(0)
    flow = zuko.flows.NSF(DIM, transforms=5, bins=8, hidden_features=(128, 128))
    return flow, (lambda x: flow().log_prob(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    batches = torch.randn(8, BATCH, DIM)
    scoring = torch.randn(SCORE_ROWS, DIM)
    jobs: dict[str, Callable[[int], None]] = {}
    for recipe in ("default", "nsf"):
        for name in IMPLEMENTATIONS:
            flow = build(recipe)
            jobs[f"{recipe} step {name}"] = with_implementation(name, training_step(flow, flow.log_prob, batches))

            def score(i: int, flow: Flow = flow) -> None:
                with torch.inference_mode():
                    flow.log_prob(scoring)

            def sample(i: int, flow: Flow = flow) -> None:
                with torch.inference_mode():
                    flow.sample(SAMPLE_ROWS)

            jobs[f"{recipe} score {name}"] = with_implementation(name, score)
            jobs[f"{recipe} sample {name}"] = with_implementation(name, sample)
    peer = zuko_nsf()
    if peer is not None:
        jobs["nsf step zuko"] = training_step(peer[0], peer[1], batches)
    best = {key: float("inf") for key in jobs}
    for _ in range(args.rounds):
        for key, run in jobs.items():
            steps = args.steps if " step " in key else 2
            best[key] = min(best[key], timed(run, steps))
    print(f"threads {args.threads}, best of {args.rounds} rounds, torch {torch.__version__}\n")
    print("| recipe | old | new | new / old |")
    print("|---|---|---|---|")
    for recipe, hidden in (("default", "[64, 64]"), ("nsf", "[128, 128]")):
        old, new = best[f"{recipe} step old"] * 1e3, best[f"{recipe} step new"] * 1e3
        print(f"| {recipe} {hidden}: ms per training step | {old:.2f} | {new:.2f} | {new / old:.2f} |")
        for task, rows in (("score", SCORE_ROWS), ("sample", SAMPLE_ROWS)):
            old, new = (best[f"{recipe} {task} {name}"] * 1e6 / rows for name in ("old", "new"))
            print(f"| {recipe} {hidden}: ms per 1,000 rows, {task} | {old:.3f} | {new:.3f} | {new / old:.2f} |")
    if peer is not None:
        zuko_ms = best["nsf step zuko"] * 1e3
        print(f"\nzuko NSF [128, 128]: {zuko_ms:.2f} ms per training step; flowcli nsf / zuko: ", end="")
        print(f"old {best['nsf step old'] * 1e3 / zuko_ms:.2f}, new {best['nsf step new'] * 1e3 / zuko_ms:.2f}")


if __name__ == "__main__":
    main()
