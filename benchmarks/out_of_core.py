"""Out-of-core fit: train on a Parquet dataset several times larger than the memory the fit may use.

    python benchmarks/out_of_core.py [--rows 16000000] [--cols 16] [--limit-mb 700] [--keep]

1. Writes a synthetic Parquet dataset (``--files`` files of 128k-row row groups, float64 columns with
   a curved dependence between them) block by block, so generating it needs little memory either.
2. Runs ``python -m flowcli fit DIR --epochs 1`` (streaming) in a subprocess under a resident-memory
   limit: a watchdog polls the child's RSS every 20 ms and kills it above ``--limit-mb`` (RLIMIT_AS
   is no use with torch, whose address-space reservations are far larger than what it touches). The
   peak RSS printed is the kernel's own high-water mark (``wait4`` rusage), not the watchdog's sample.
3. For contrast, loads the same dataset whole with ``pandas.read_parquet`` under the same limit.

Prints the data size, the limit, the fit's peak RSS and wall time, and whether the whole-table load
fitted. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
# A light flow, so the run measures the data path (reading, statistics, shuffling) more than the math.
CONFIG = """\
layers:
  - type: linear
  - type: affine_coupling
    hidden: [16]
training:
  epochs: 1
  batch_size: 32768
  lr: 0.003
  val_fraction: 0.01
  shuffle_buffer: 262144
"""


def generate(directory: Path, rows: int, cols: int, files: int, seed: int = 0) -> int:
    """Write the dataset; returns its size in bytes as float64 in memory (rows x cols x 8).

    Row groups are shuffled copies of a pool of 16 random blocks (2M distinct rows), which makes writing
    gigabytes fast; for a memory benchmark the repetition does not matter."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(cols, cols)) / np.sqrt(cols)
    block = 131072
    pool = []
    for _ in range(16):
        z = rng.normal(size=(block, cols))
        z[:, 1] += 0.5 * z[:, 0] ** 2  # a curved dependence for the flow to learn
        pool.append(z @ mixing)
    per_file = -(-rows // files)
    names = [f"x{i}" for i in range(cols)]
    written = 0
    for f in range(files):
        n_file = min(per_file, rows - written)
        schema = pa.schema([(n, pa.float64()) for n in names])
        with pq.ParquetWriter(
            directory / f"part-{f:03d}.parquet", schema, compression="none", use_dictionary=False
        ) as w:
            for start in range(0, n_file, block):
                n = min(block, n_file - start)
                x = pool[rng.integers(16)][rng.permutation(block)[:n]]
                w.write_table(pa.table({name: x[:, i] for i, name in enumerate(names)}), row_group_size=block)
        written += n_file
    return rows * cols * 8


def run_limited(cmd: list[str], limit_mb: int, env: dict[str, str] | None = None) -> tuple[int, float, float, bool]:
    """Run ``cmd`` under the RSS watchdog: (exit status, peak RSS in MB, seconds, killed by the watchdog)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    killed = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.returncode is None:
            try:
                rss_kb = next(
                    int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS")
                )
            except (OSError, StopIteration, ValueError):
                return
            if rss_kb > limit_mb * 1024:
                killed.set()
                proc.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, time.perf_counter() - started, killed.is_set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16_000_000)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--limit-mb", type=int, default=700)
    parser.add_argument("--dir", help="where to write the dataset (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset and the checkpoint")
    args = parser.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="flowcli-ooc-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    size = generate(data, args.rows, args.cols, args.files)
    on_disk = sum(p.stat().st_size for p in data.iterdir())
    print(
        f"dataset: {args.rows:,} rows x {args.cols} float64 columns = {size / 2**20:,.0f} MiB in memory, "
        f"{on_disk / 2**20:,.0f} MiB of Parquet in {args.files} files (written in {time.perf_counter() - t0:.0f} s)"
    )
    (work / "config.yaml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    fit = [
        sys.executable,
        "-m",
        "flowcli",
        "fit",
        str(data),
        "-c",
        str(work / "config.yaml"),
        "-o",
        str(work / "model.flow"),
        "--seed",
        "0",
        "--device",
        "cpu",
    ]
    code, peak, seconds, killed = run_limited(fit, args.limit_mb, env)
    print(f"limit: {args.limit_mb} MiB resident; data / limit = {size / 2**20 / args.limit_mb:.1f}x")
    print(
        f"streaming fit, 1 epoch: exit {code}{' (killed at the limit)' if killed else ''}, peak RSS {peak:,.0f} MiB, "
        f"{seconds:.0f} s wall"
    )
    load = [sys.executable, "-c", f"import pandas as pd; print(len(pd.read_parquet({str(data)!r})))"]
    code_l, peak_l, seconds_l, killed_l = run_limited(load, args.limit_mb, env)
    verdict = "killed at the limit" if killed_l else f"exit {code_l}"
    print(
        f"whole-table load (pandas.read_parquet) under the same limit: {verdict}, peak RSS {peak_l:,.0f} MiB, {seconds_l:.0f} s"
    )
    if code == 0:
        sys.path.insert(0, str(ROOT))
        import flowcli

        info = flowcli.load(str(work / "model.flow")).info
        print(
            f"model: n_train {info['n_train']:,}, n_val {info['n_val']:,}, validation NLL {info['best_val_nll']:.4f} nats/row"
        )
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
