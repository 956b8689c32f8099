"""Peak memory of a 2-million-row CSV piped through ``flowcli logprob`` (streaming keeps it bounded).

Fits the default config for one epoch on 5,000 rows of a mixed table (text category, integer, two
floats, a few missing values), writes a CSV of ``--rows`` rows, then runs

    cat big.csv | /usr/bin/time -v python -m flowcli logprob model.flow - > /dev/null

and prints the peak resident memory of the flowcli process and the wall time. Not a timed test.

    python benchmarks/stream_memory.py               # 2,000,000 rows
    python benchmarks/stream_memory.py --rows 200000 # quicker
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def mixed_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kind = rng.choice(["alpha", "beta", "gamma"], size=n, p=[0.5, 0.3, 0.2])
    size = rng.poisson(40, size=n) + 10 * (kind == "beta")
    x = rng.normal(size=n) + (kind == "gamma")
    y = 0.5 * x**2 + rng.normal(scale=0.3, size=n)
    y[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame({"kind": kind, "size": size, "x": x.round(4), "y": y.round(4)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        train, big, ckpt = Path(tmp, "train.csv"), Path(tmp, "big.csv"), Path(tmp, "m.flow")
        mixed_table(5000, 0).to_csv(train, index=False)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flowcli",
                "fit",
                str(train),
                "-o",
                str(ckpt),
                "--epochs",
                "1",
                "--seed",
                "0",
                "--quiet",
            ],
            check=True,
            env=env,
        )
        with open(big, "w") as f:  # written in pieces so this script's own memory stays small too
            for start in range(0, args.rows, 500_000):
                mixed_table(min(500_000, args.rows - start), start + 1).to_csv(f, index=False, header=start == 0)
        size_mb = big.stat().st_size / 1e6
        command = f"cat {big} | /usr/bin/time -v {sys.executable} -m flowcli logprob {ckpt} - | tail -n +2 | wc -l"
        started = time.perf_counter()
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], check=False, capture_output=True, text=True, env=env
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"flowcli logprob failed:\n{done.stderr}")
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        rows_out = int(done.stdout.strip())
        print(f"rows in: {args.rows:,} ({size_mb:.0f} MB of CSV); rows out: {rows_out:,}")
        print(
            f"peak memory of flowcli logprob: {peak_kb / 1024:.0f} MiB; wall time {seconds:.0f} s "
            f"({args.rows / seconds:,.0f} rows/s)"
        )


if __name__ == "__main__":
    main()
