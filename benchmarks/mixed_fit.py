"""Time to quality of a default fit on a 100,000 x 20 mixed table: fixed costs, s/epoch, silences, SIGTERM.

The table (``make_table``, seeded): 10 float columns with realistic shapes (a log-normal income with
exact zeros and missing cells, a heavy-tailed Student-t, a gamma, a bimodal mixture, a share in (0, 1),
durations with many zeros, prices with cents, a reading with missing cells, a log-uniform spanning six
orders of magnitude, an age), 5 integer columns (counts, a negative binomial, years, ...) and 5
categorical ones (a region, a product with rare levels, a flag, a segment from the income, a channel
with a rare level and missing cells), all driven by a few shared latent factors so that they are
correlated. It is written to CSV and fitted by ``flowcli fit`` (the packaged default config,
``--seed 0 --device cpu``) as a subprocess, stderr captured line by line with the time each arrives.

Reported for the fit (``--epochs N`` caps the run; the default is the config's 200 with early stopping):
wall time and peak RSS of the child (``os.wait4``), the seconds of reading and column roles, of the
separately fitted discrete part and conditional-questions network, and before the first epoch (from the
arrival of the phase lines on stderr), s/epoch and epochs run (the metrics file), the seconds after the
last epoch (gain over the Gaussian, anomaly quantiles, saving), the held-out log-likelihood, and the
longest gap between two stderr lines (stderr is a pipe here: the plain lines). With ``--sigterm``, one
more fit per moment (``--moments``: reading, discrete fit, conditional fit, epoch 1 (no model yet),
epoch 2, final scoring; or ``NAME=REGEX@DELAY``, ``NAME=t=SECONDS``), each sent SIGTERM at that moment,
recognised from its stderr: the seconds from the signal to the exit, the exit code, the last stderr line,
whether the checkpoint written (if any) loads, and leftover temporary files. ``--brief-conditional`` fits
the conditional network for two epochs so that the later moments come within minutes; ``--tree DIR``
runs another checkout of flowcli (e.g. ``git archive 2fd9f32 flowcli | tar -x -C /tmp/before``);
``--threads N`` is passed to ``flowcli fit``. Each fit's stderr, timestamped, is kept beside its
checkpoint in ``--work`` (``*.stderr.log``).

    nice -n 19 python benchmarks/mixed_fit.py --threads 1 --work /tmp/mixed      # full default fit
    nice -n 19 python benchmarks/mixed_fit.py --epochs 3 --sigterm               # fixed costs, s/epoch, SIGTERMs
    python benchmarks/mixed_fit.py --rows 5000 --epochs 2 --sigterm --threads 1   # smoke run (4 minutes)

Results: one JSON object per measurement on stdout. Figures: the commit messages of the "Time to
quality" work (issue: a 100,000 x 20 default fit took 65 min for 200 epochs, silent for minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """The 20-column mixed table (10 float, 5 integer, 5 categorical columns), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(3), [[1, 0.5, 0.2], [0.5, 1, -0.3], [0.2, -0.3, 1]], rows)
    u = rng.random((rows, 8))
    df = pd.DataFrame()
    income = np.exp(10.3 + 0.6 * z[:, 0] + 0.3 * rng.standard_normal(rows)).round(0)
    income[z[:, 1] < -1.4] = 0.0  # about 8% without income
    income[u[:, 0] < 0.01] = np.nan
    df["income"] = income
    df["heavy"] = (2.0 * rng.standard_t(3, rows) + 1.5 * z[:, 1]).round(4)
    df["wait"] = (rng.gamma(2.0, 3.0, rows) * np.exp(0.3 * z[:, 2])).round(3)
    df["bimodal"] = np.where(
        u[:, 1] < 0.35 + 0.2 * (z[:, 0] > 0), rng.normal(-3, 0.7, rows), rng.normal(2.5, 1.2, rows)
    )
    df["share"] = rng.beta(2 + np.exp(z[:, 1]), 5, rows).round(5)
    duration = rng.exponential(40.0, rows) * np.exp(0.4 * z[:, 0])
    duration[u[:, 2] < 0.3 + 0.2 * (z[:, 2] > 1)] = 0.0  # many exact zeros
    df["duration"] = duration.round(2)
    df["price"] = np.exp(3.0 + 0.8 * z[:, 2] + 0.4 * rng.standard_normal(rows)).round(2)
    reading = 20.0 + 4.0 * z[:, 1] + rng.normal(0, 1, rows)
    reading[u[:, 3] < 0.03] = np.nan
    df["reading"] = reading.round(2)
    df["magnitude"] = 10 ** (rng.uniform(-2, 4, rows) + 0.3 * z[:, 0])
    df["age"] = np.clip(42 + 13 * z[:, 0] + rng.normal(0, 5, rows), 18, 95).round(1)
    df["visits"] = rng.poisson(np.exp(1.5 + 0.5 * z[:, 0]))
    df["items"] = rng.negative_binomial(2, 1 / (1 + np.exp(1.8 + 0.4 * z[:, 2])), rows)
    df["year"] = np.clip(np.round(2010 + 6 * z[:, 1] + rng.normal(0, 2, rows)), 1990, 2024).astype(int)
    df["score"] = np.clip(np.round(500 + 80 * z[:, 2] + rng.normal(0, 40, rows)), 0, 1000).astype(int)
    df["floor"] = rng.integers(0, 40, rows) + (z[:, 1] > 1).astype(int) * 10
    regions = np.array(["north", "south", "east", "west", "centre"], dtype=object)
    df["region"] = regions[np.clip(((z[:, 0] + 2.5) * 1.0).astype(int), 0, 4)]
    weights = 1.0 / np.arange(1, 21) ** 2.2  # a Zipf-like product mix: the last levels are rare
    products = np.array([f"p{i:02d}" for i in range(20)], dtype=object)
    df["product"] = products[np.minimum(rng.choice(20, rows, p=weights / weights.sum()) + (z[:, 2] > 1.5) * 3, 19)]
    df["flag"] = (df["duration"] == 0) ^ (u[:, 4] < 0.1)
    df["segment"] = np.array(["low", "mid", "high", "top"], dtype=object)[
        np.searchsorted(np.nanquantile(income, [0.3, 0.7, 0.95]), np.nan_to_num(income))
    ]
    channel = np.where(u[:, 5] < 0.55 + 0.2 * (z[:, 0] > 0), "web", np.where(u[:, 6] < 0.8, "store", "phone"))
    channel = channel.astype(object)
    channel[u[:, 7] < 0.002] = "fax"  # a rare level (0.2%)
    channel[(u[:, 7] > 0.002) & (u[:, 7] < 0.012)] = None  # 1% missing
    df["channel"] = channel
    return df


@dataclass
class Run:
    """One ``flowcli fit`` subprocess: its stderr lines with arrival times (seconds since the start)."""

    proc: subprocess.Popen
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    usage: Any = None
    wall: float = 0.0
    exited: float = 0.0
    reader: threading.Thread | None = None
    log: Path | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# ``--brief-conditional``: the conditional-questions network fitted for two epochs (its time is then measured
# apart, in a normal run), so that the later phases of a fit are reached in a minute.
BRIEF = "import flowcli.conditional as c; c.MAX_EPOCHS, c.MIN_STEPS, c.PATIENCE, c.LR_CUTS = 2, 0, 1, 0\n"
OPTIONS: dict[str, Any] = {"brief": False, "env": None, "args": []}


def start_fit(csv: Path, out: Path, epochs: int | None, extra: list[str]) -> Run:
    main = "import sys\nfrom flowcli.cli import main\nsys.argv[0] = 'flowcli'\nmain()\n"
    code = (BRIEF if OPTIONS["brief"] else "") + main
    args = [sys.executable, "-c", code, "fit", str(csv), "-o", str(out), "--seed", "0", "--device", "cpu"]
    args += ["--epochs", str(epochs)] if epochs else []
    proc = subprocess.Popen(
        args + OPTIONS["args"] + extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=out.parent,
        env=OPTIONS["env"],
    )
    run = Run(proc, time.monotonic(), log=out.with_suffix(".stderr.log"))

    def read() -> None:
        assert proc.stderr is not None and run.log is not None
        with run.log.open("w") as log:
            for line in proc.stderr:
                run.lines.append((run.elapsed(), line.rstrip("\n")))
                log.write(f"{run.lines[-1][0]:8.1f}  {line}")
                log.flush()

    run.reader = threading.Thread(target=read, daemon=True)
    run.reader.start()
    return run


def running(run: Run) -> bool:
    """Whether the child still runs, without reaping it (``finish`` collects its resource usage)."""
    return os.waitid(os.P_PID, run.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def finish(run: Run) -> Run:
    """Wait for the child, with its own resource usage (``os.wait4``), and read the rest of its stderr."""
    _, status, usage = os.wait4(run.proc.pid, 0)
    run.exited = run.elapsed()
    run.proc.returncode = os.waitstatus_to_exitcode(status)
    run.usage, run.wall = usage, run.exited
    if run.reader is not None:
        run.reader.join(timeout=10)
    return run


def first_line(run: Run, pattern: str) -> float | None:
    return next((t for t, line in run.lines if re.search(pattern, line)), None)


def phase_times(run: Run, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds of each phase, from the arrival times of the phase lines on stderr and the metrics file (a
    flowcli without phase lines: the line announcing the fit, printed just before the first epoch then)."""
    epoch_seconds = [float(m["seconds"]) for m in metrics]
    announced = first_line(run, r"^(fitting|resuming) .*rows")
    discrete = first_line(run, r"^fitting the discrete part")
    conditional = first_line(run, r"^fitting the conditional-questions network")
    conditional_end = first_line(run, r"^conditional-questions network: validation")
    training = first_line(run, r"^training: up to") or announced
    scoring = [t for t, line in run.lines if line.startswith("scoring the held-out rows")]
    after_last = run.wall - scoring[-1] if scoring and metrics else None
    if after_last is None and training is not None and metrics:
        after_last = run.wall - training - sum(epoch_seconds)
    times = [0.0] + [t for t, _ in run.lines] + [run.wall]
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    after_line = run.lines[longest - 1][1][:90] if longest else "(start)"

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 1)

    return {
        "reading_and_roles_s": round(announced, 1) if announced is not None else None,
        "discrete_s": span(discrete, conditional),
        "conditional_s": span(conditional, conditional_end),
        "before_first_epoch_s": round(training, 1) if training is not None else None,
        "epochs_run": len(epoch_seconds),
        "s_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 2) if epoch_seconds else None,
        "s_per_epoch_min": round(min(epoch_seconds), 2) if epoch_seconds else None,
        "after_last_epoch_s": None if after_last is None else round(after_last, 1),
        "longest_stderr_gap_s": round(gaps[longest], 1),
        "longest_gap_after": after_line,
    }


def measure_fit(csv: Path, work: Path, epochs: int | None, extra: list[str]) -> dict[str, Any]:
    out = work / "fit.flow"
    run = finish(start_fit(csv, out, epochs, extra))
    metrics_path = out.with_name("fit.metrics.jsonl")
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    result: dict[str, Any] = {"measure": "fit", "exit": run.proc.returncode, "wall_s": round(run.wall, 1)}
    result["peak_rss_mib"] = round(run.usage.ru_maxrss / 1024, 0)
    result.update(phase_times(run, metrics))
    if run.proc.returncode == 0:
        sys.path.insert(0, str(ROOT))
        from flowcli.model import load_model

        info = load_model(str(out)).info
        result["val_loglik_nats_per_row"] = round(-info["best_val_nll"], 4)
        result["gaussian_val_loglik"] = round(-info["gaussian_val_nll"], 4)
        result["best_epoch"] = info["best_epoch"]
        result["discrete_fit"] = info.get("discrete_fit")
        result["conditional_fit"] = info.get("conditional_fit")
        if epochs is None or len(metrics) >= epochs:
            projected = (result["before_first_epoch_s"] or 0) + (result["after_last_epoch_s"] or 0)
            result["projected_total_s"] = round(projected + sum(m["seconds"] for m in metrics), 1)
    result["stderr_tail"] = [line for _, line in run.lines[-3:]]
    return result


# The moments of a SIGTERM: a pattern of the stderr line after which it is sent, and a delay after it
# (``--moments NAME=REGEX@DELAY`` adds others; ``t=SECONDS``: that long after the start).
MOMENTS = {
    "reading": ("t=4", 0.0),  # imports take 2-3 s; reading the 100,000 rows about 4 s more
    "discrete fit": (r"^fitting the discrete part", 1.0),
    "conditional fit": (r"^fitting the conditional-questions network", 5.0),
    "epoch 1": (r"^training: up to", 3.0),
    "epoch 2": (r"^epoch 1/\d+\s+train", 2.0),
    "final scoring": (r"^scoring the held-out rows", 0.3),
}


def parse_moment(spec: str) -> tuple[str, str, float]:
    if "=" in spec and spec not in MOMENTS:
        name, rest = spec.split("=", 1)
        pattern, _, delay = rest.rpartition("@") if "@" in rest else (rest, "", "0")
        return name, pattern, float(delay)
    return spec, *MOMENTS[spec]


def measure_sigterm(csv: Path, work: Path, spec: str, epochs: int) -> dict[str, Any]:
    moment, pattern, delay = parse_moment(spec)
    out = work / f"term-{re.sub(r'[^a-z0-9]+', '-', moment)}.flow"
    run = start_fit(csv, out, epochs, [])
    if pattern.startswith("t="):
        time.sleep(float(pattern[2:]))
    while not pattern.startswith("t=") and first_line(run, pattern) is None and running(run):
        time.sleep(0.05)
    result: dict[str, Any] = {"measure": "sigterm", "moment": moment}
    time.sleep(delay)
    if not running(run):
        finish(run)
        return {**result, "error": f"the fit ended before the moment: {run.lines[-3:]}"}
    sent = run.elapsed()
    run.proc.send_signal(signal.SIGTERM)
    finish(run)
    result.update(sent_at_s=round(sent, 1), latency_s=round(run.exited - sent, 2), exit=run.proc.returncode)
    result["last_line"] = run.lines[-1][1] if run.lines else ""
    result["checkpoint"] = "none"
    if out.exists():
        sys.path.insert(0, str(ROOT))
        from flowcli.model import load_model

        try:
            info = load_model(str(out)).info
            result["checkpoint"] = f"loads: stopped={info['stopped']} epochs_run={info['epochs_run']}"
        except Exception as exc:  # noqa: BLE001 - a broken checkpoint is the finding
            result["checkpoint"] = f"does not load: {exc}"
    result["temporary_files"] = sorted(p.name for p in work.glob(".*.tmp"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=None, help="cap on the epochs (default: the config's)")
    parser.add_argument("--sigterm", action="store_true", help="also measure SIGTERM at each of --moments")
    parser.add_argument("--sigterm-only", action="store_true", help="only the SIGTERM measurements")
    parser.add_argument("--sigterm-epochs", type=int, default=2, help="epochs of the fits stopped by SIGTERM")
    parser.add_argument("--moments", default=",".join(MOMENTS), help="comma-separated moments of SIGTERM")
    parser.add_argument("--work", type=Path, default=None, help="directory for the table and checkpoints")
    parser.add_argument("--brief-conditional", action="store_true", help="fit the conditional network briefly")
    parser.add_argument("--tree", type=Path, default=None, help="run the flowcli of this source tree")
    parser.add_argument("--threads", type=int, default=None, help="flowcli fit --threads (default: its own)")
    args = parser.parse_args()
    OPTIONS["args"] = ["--threads", str(args.threads)] if args.threads else []
    OPTIONS["brief"] = args.brief_conditional
    if args.tree is not None:
        OPTIONS["env"] = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        csv = work / "mixed.csv"
        if not csv.exists() or len(pd.read_csv(csv, usecols=[0])) != args.rows:
            make_table(args.rows).to_csv(csv, index=False)
        print(f"table {csv}: {args.rows} rows x 20 columns, {csv.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        results = []
        if not args.sigterm_only:
            results.append(measure_fit(csv, work, args.epochs, []))
            print(json.dumps(results[-1]), flush=True)
        if args.sigterm or args.sigterm_only:
            for moment in args.moments.split(","):
                results.append(measure_sigterm(csv, work, moment, args.sigterm_epochs))
                print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
