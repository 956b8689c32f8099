"""Where the time goes: a profile of one training step and of scoring 1,000 rows, for a config on the mixture.

The flow of a config (default: the packaged default) on the 16-column Gaussian mixture of peers.py,
initialized on its rows as `flowcli fit` does; then, with torch.profiler, one training step (forward,
backward, Adam) at the config's batch size, and `log_prob` of 1,000 rows without gradients (float32, as
`flowcli logprob` scores). Prints ms per step / per 1,000 rows (best of --repeats) and the operators
that take the most self time. Run it on two checkouts to compare (RESULTS.md, "Where the time goes"):

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/profile_step.py
    OMP_NUM_THREADS=1 PYTHONPATH=../old-checkout python benchmarks/profile_step.py   # before
    python benchmarks/profile_step.py --config nsf --rows 5000 --repeats 3           # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import DIM, gaussian_mixture  # noqa: E402


def build(config_name: str | None, rows: int) -> tuple[torch.nn.Module, torch.Tensor, int]:
    from flowcli.config import resolve_config
    from flowcli.model import Flow
    from flowcli.schema import Column, Schema

    x, _ = gaussian_mixture(rows, seed=0)
    data = torch.as_tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    config = resolve_config(config_name)
    schema = Schema([Column(f"x{i}", "continuous", "float64", 0.0, 1.0) for i in range(DIM)])
    flow = Flow(schema, config).float()
    flow.initialize(data[:4096], data)
    return flow, data, config.training.batch_size


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def show(title: str, fn, rows: int) -> None:
    from torch.profiler import profile

    with profile() as prof:
        fn()
    print(f"\n{title}: operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="preset name or YAML path (default: the packaged default)")
    parser.add_argument("--rows", type=int, default=50_000, help="mixture rows the flow is initialized on")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--top", type=int, default=12, help="operators listed per profile")
    args = parser.parse_args()
    torch.manual_seed(0)
    flow, data, batch = build(args.config, args.rows)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        rows = data[torch.randint(len(data), (batch,), generator=generator)]
        loss = -flow.log_prob(rows).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def score() -> None:
        with torch.inference_mode():
            flow.log_prob(data[:1000])

    flow.train()
    step_ms = best_ms(step, args.repeats)
    flow.eval()
    score_ms = best_ms(score, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), config {args.config or 'default'}")
    print(f"training step (batch {batch}): {step_ms:.1f} ms;  log_prob of 1,000 rows (float32): {score_ms:.1f} ms")
    flow.train()
    show("training step", step, args.top)
    flow.eval()
    show("log_prob of 1,000 rows", score, args.top)


if __name__ == "__main__":
    main()
