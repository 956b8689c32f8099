"""Faults during fit: Ctrl-C, kill -9, resuming, and non-finite losses.

Guarantees under test: an existing checkpoint is never corrupted or removed by a killed fit; Ctrl-C
stops within seconds, saves the best model so far and exits 130; `fit --resume` continues a run and
on CPU with a seed ends bit-identical to an uninterrupted run; a non-finite loss undoes the step,
halves the learning rate, and repeated failures end in a clear error that keeps the best model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import shop_table
from typer.testing import CliRunner

from flowcli import checkpoint
from flowcli.cli import app
from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.model import Flow, load_model, save_model
from flowcli.train import MAX_FAILURES, Diverged, Interrupted, StepGuard
from flowcli.trainstate import load_resume_point

ROOT = Path(__file__).parents[1]
CPU = torch.device("cpu")
runner = CliRunner()
ROWS = 200  # 180 training rows: 3 steps of 64 per epoch
STEPS_PER_EPOCH = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These fits are tiny: with torch's default of one thread per core they mostly wait on each other
    (40x slower on a busy 2-core machine), so they run on one thread, as do their subprocesses. The CLI
    sets its thread count from OMP_NUM_THREADS (--threads' default), so that is set too: a run resumed
    in this process then computes exactly as the subprocess that was interrupted."""
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


TINY_LAYERS = [{"type": "affine_coupling", "hidden": [16]}, {"type": "permute"}, {"type": "maf", "hidden": [16]}]
# Its training log-det is a random series estimate drawn from torch's global generator, which the
# training state must therefore carry.
STOCHASTIC_LAYERS = [{"type": "residual", "hidden": [8], "exact_max_dim": 0, "terms": 2}]


def tiny_config(schedule: str = "cosine", epochs: int = 6, patience: int = 50, layers: list | None = None) -> dict:
    return {
        "layers": layers or TINY_LAYERS,
        "training": {"epochs": epochs, "batch_size": 64, "lr": 0.01, "schedule": schedule, "patience": patience},
    }


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    a = rng.normal(size=ROWS)
    return pd.DataFrame({"a": 3 + 2 * a, "b": a**2 + 0.3 * rng.normal(size=ROWS), "c": rng.normal(size=ROWS)})


@pytest.fixture()
def table_csv(tmp_path: Path, table: pd.DataFrame) -> Path:
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    return path


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)[1]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [TINY_LAYERS, STOCHASTIC_LAYERS], ids=["coupling-maf", "residual-stochastic"])
def test_resume_after_an_interrupt_is_bit_identical_to_an_uninterrupted_run(
    tmp_path: Path, table: pd.DataFrame, layers: list
) -> None:
    """Cosine schedule, interrupted (as by Ctrl-C) after epoch 3 of 5, then resumed to the end."""
    config = parse_config(tiny_config("cosine", epochs=5, layers=layers))
    straight = fit(table, config, device=CPU, seed=5)

    def stop_at_3(report) -> None:
        if report.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        fit(table, parse_config(tiny_config("cosine", epochs=5, layers=layers)), device=CPU, seed=5, on_epoch=stop_at_3)
    assert stopped.value.model is not None and stopped.value.model.info["epochs_run"] == 3
    path = tmp_path / "half.flow"
    save_model(stopped.value.model, str(path))
    resumed = fit(table, device=CPU, resume=load_resume_point(str(path)))  # its config and seed are stored

    assert_identical(straight.flow.state_dict(), resumed.flow.state_dict())  # best weights
    a, b = straight.train_state, resumed.train_state
    assert_identical(a.weights, b.weights)  # current weights
    for index in a.optimizer:  # Adam moments and step counts
        assert_identical(a.optimizer[index], b.optimizer[index])
    assert len(a.average) == len(b.average) > 0  # the weight average (training.ema) is resumed too
    assert_identical(dict(enumerate(a.average)), dict(enumerate(b.average)))
    assert torch.equal(a.torch_rng, b.torch_rng) and torch.equal(a.shuffle_rng, b.shuffle_rng)
    assert a.lr == b.lr and a.epoch == b.epoch == 5
    assert [m["train_nll"] for m in straight.info["metrics"]] == [m["train_nll"] for m in resumed.info["metrics"]]


def test_cli_resume_with_more_epochs_is_bit_identical(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fit --epochs 3` then `fit --resume --epochs 6` equals a 6-epoch fit (plateau schedule: its state
    is carried over; a cosine schedule is planned over the epochs it is given, see the README), the network
    of conditional questions included, whose step budget follows the plan (200 and 400 steps here)."""
    from flowcli import conditional

    for name, value in {"FULL_BUDGET_EPOCHS": 6, "MAX_STEPS": 400, "MIN_BUDGET_STEPS": 0, "PATIENCE": 10**9}.items():
        monkeypatch.setattr(conditional, name, value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("plateau", epochs=6, patience=6)))
    common = [str(table_csv), "-c", str(cfg), "--seed", "3", "--device", "cpu", "--quiet"]
    assert runner.invoke(app, ["fit", *common, "-o", str(tmp_path / "straight.flow")]).exit_code == 0
    assert runner.invoke(app, ["fit", *common, "-o", str(tmp_path / "part.flow"), "--epochs", "3"]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "fit",
            str(table_csv),
            "-o",
            str(tmp_path / "part.flow"),
            "--resume",
            str(tmp_path / "part.flow"),
            "--epochs",
            "6",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert_identical(tensors_of(tmp_path / "straight.flow"), tensors_of(tmp_path / "part.flow"))
    lines = [json.loads(x) for x in (tmp_path / "part.metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path, table: pd.DataFrame, table_csv: Path) -> None:
    config = parse_config(tiny_config("constant", epochs=2))
    model = fit(table, config, device=CPU, seed=0)
    done = tmp_path / "done.flow"
    save_model(model, str(done))

    def error(*args: str) -> str:
        result = runner.invoke(app, ["fit", *args])
        assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.strip().splitlines()[-1]

    out = str(tmp_path / "o.flow")
    assert "--epochs N with N > 2" in error(str(table_csv), "-o", out, "--resume", str(done))
    assert "drop -c/--seed" in error(str(table_csv), "-o", out, "--resume", str(done), "--seed", "1")
    other = tmp_path / "other.csv"
    table.assign(a=table["a"] + 1).to_csv(other, index=False)
    assert "data differs" in error(str(other), "-o", out, "--resume", str(done), "--epochs", "4")
    # Another table that the run's schema cannot even read: its error, and what --resume needs
    gappy = tmp_path / "gappy.csv"
    table.assign(a=table["a"].where(table.index % 7 != 3)).to_csv(gappy, index=False)
    message = error(str(gappy), "-o", out, "--resume", str(done), "--epochs", "4")
    assert "missing value" in message and f"(--resume needs the table the run in {done} was trained on)" in message
    # A run of several processes: not "the data differs"
    model.info["world_size"] = 2
    save_model(model, str(tmp_path / "ranks.flow"))
    assert "fitted by 2 processes (--nproc)" in error(
        str(table_csv), "-o", out, "--resume", str(tmp_path / "ranks.flow"), "--epochs", "4"
    )
    model.info["world_size"] = 1
    model.train_state = None  # a checkpoint without training state
    save_model(model, str(tmp_path / "bare.flow"))
    assert "no training state" in error(
        str(table_csv), "-o", out, "--resume", str(tmp_path / "bare.flow"), "--epochs", "4"
    )
    assert not Path(out).exists()


# --- non-finite losses ---------------------------------------------------------------------------------


def test_step_guard_restores_weights_and_adam_state() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.Adam([p], lr=0.1)
    guard = StepGuard([p], opt)
    guard.save(0)  # before the first step: no Adam state yet
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    guard.restore()
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0])) and p not in opt.state
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    before = (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
    guard.save(1)
    p.grad = torch.tensor([1e3, -1e3])
    opt.step()
    guard.restore()
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(opt.state[p][k], v) for k, v in before[1].items())


def inject_nan(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None, from_call: int | None = None) -> list:
    """Make Flow.log_prob return NaN on the given training calls (numbered from 1); record each training
    call's weights so the test can see which state a step started from."""
    original = Flow.log_prob
    seen: list[dict[str, torch.Tensor]] = []

    def log_prob(self: Flow, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        if not torch.is_grad_enabled():  # validation: leave it alone
            return out
        seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        n = len(seen)
        if (bad_calls and n in bad_calls) or (from_call is not None and n >= from_call):
            return out * float("nan")
        return out

    monkeypatch.setattr(Flow, "log_prob", log_prob)
    return seen


def test_a_nan_loss_undoes_the_step_and_halves_the_learning_rate(
    monkeypatch: pytest.MonkeyPatch, table: pd.DataFrame
) -> None:
    seen = inject_nan(monkeypatch, {3})
    config = parse_config(tiny_config("constant", epochs=2))
    model = fit(table, config, device=CPU, seed=0)
    # Call 3 was NaN: the step taken after call 2 is undone, so call 4 starts from call 2's weights.
    assert_identical(seen[3], seen[1])
    assert not all(torch.equal(seen[2][k], seen[1][k]) for k in seen[1])  # (a step had indeed been taken)
    assert [m["lr"] for m in model.info["metrics"]] == [0.005, 0.005]  # halved once, from 0.01
    assert all(np.isfinite(m["train_nll"]) for m in model.info["metrics"])
    assert model.info["stopped"] == "completed"


def test_repeated_nan_losses_end_in_a_clear_error_keeping_the_best_model(
    monkeypatch: pytest.MonkeyPatch, table: pd.DataFrame
) -> None:
    inject_nan(monkeypatch, None, from_call=STEPS_PER_EPOCH + 1)  # NaN for ever from epoch 2 on
    with pytest.raises(Diverged, match=f"non-finite {MAX_FAILURES} times in a row") as diverged:
        fit(table, parse_config(tiny_config("constant", epochs=5)), device=CPU, seed=0)
    # Epoch 2 (3 steps, all undone) still ends; the 5th failure in a row comes in epoch 3.
    assert str(diverged.value).startswith("epoch 3:")
    model = diverged.value.model
    assert model is not None and model.info["epochs_run"] == 2 and model.info["stopped"] == "diverged"
    assert np.isfinite(model.log_prob(table.head(5))).all()


def test_cli_reports_divergence_in_one_line_and_saves_the_best_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table_csv: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("constant", epochs=5)))
    inject_nan(monkeypatch, None, from_call=STEPS_PER_EPOCH + 1)
    out = tmp_path / "m.flow"
    result = runner.invoke(app, ["fit", str(table_csv), "-c", str(cfg), "-o", str(out), "--seed", "0", "--quiet"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: epoch 3: the loss was non-finite"), result.stderr
    assert "kept the best validation NLL" in lines[0] and "Traceback" not in result.stderr
    assert load_model(str(out)).info["epochs_run"] == 2


def test_nan_before_the_first_epoch_ends_saves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table_csv: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("constant", epochs=5)))
    inject_nan(monkeypatch, None, from_call=1)
    out = tmp_path / "m.flow"
    out.write_bytes(b"previous")
    result = runner.invoke(app, ["fit", str(table_csv), "-c", str(cfg), "-o", str(out), "--quiet"])
    assert result.exit_code == 1 and result.stderr.startswith("Error: epoch 2: the loss was non-finite")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "m.flow", "table.csv"]


# --- signals, in a real process --------------------------------------------------------------------------


def start_fit(args: list[str], tmp_path: Path, prelude: str = "", sigint_ignored: bool = False) -> subprocess.Popen:
    # A test run started in the background (`nohup ... &`) hands its children SIGINT ignored, and Python
    # then installs no Ctrl-C handler: give the fit the handler a terminal user's process has, unless the
    # test is about a fit started that way (``sigint_ignored``: ignored before the interpreter starts).
    handler = "" if sigint_ignored else "signal.signal(signal.SIGINT, signal.default_int_handler)"
    code = (
        f"import signal, sys\n{handler}\n{prelude}\n"
        f"from flowcli.cli import main\nsys.argv = ['flowcli', *{args!r}]\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"fit ended early: {proc.returncode} {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the fit to make progress")
        time.sleep(0.05)


def metrics_lines(tmp_path: Path) -> int:
    """Epochs finished so far, from the metrics file being written: m.metrics.jsonl itself, or a hidden
    temporary file beside an earlier run's."""
    files = [*tmp_path.glob("m.metrics.jsonl"), *tmp_path.glob(".m.metrics.jsonl.*.tmp")]
    return max((len(p.read_text().splitlines()) for p in files), default=0)


def long_fit_args(tmp_path: Path, table_csv: Path, schedule: str = "constant") -> list[str]:
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(schedule, epochs=100000, patience=100000)))
    return ["fit", str(table_csv), "-c", str(cfg), "-o", "m.flow", "--seed", "2", "--device", "cpu"]


@pytest.mark.full_conditional_fit  # its interrupted fit runs in a subprocess, which fits the network as shipped
def test_sigint_saves_the_best_model_exits_130_and_resumes_bit_identically(tmp_path: Path, table_csv: Path) -> None:
    proc = start_fit(long_fit_args(tmp_path, table_csv), tmp_path)
    wait_for(lambda: metrics_lines(tmp_path) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, "Ctrl-C must stop the fit within seconds"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: interrupted; best validation NLL")
    model = load_model(str(tmp_path / "m.flow"))
    k = model.info["epochs_run"]
    assert k >= 2 and model.info["stopped"] == "interrupted"
    assert len((tmp_path / "m.metrics.jsonl").read_text().splitlines()) == k
    assert not list(tmp_path.glob(".*.tmp"))

    # Continue one more epoch; compare with a run that went straight to k + 1 epochs.
    resumed = runner.invoke(
        app,
        [
            "fit",
            str(table_csv),
            "-o",
            str(tmp_path / "m.flow"),
            "--resume",
            str(tmp_path / "m.flow"),
            "--epochs",
            str(k + 1),
            "--quiet",
        ],
    )
    assert resumed.exit_code == 0, resumed.stderr
    straight = runner.invoke(
        app,
        [
            "fit",
            str(table_csv),
            "-c",
            str(tmp_path / "long.yaml"),
            "-o",
            str(tmp_path / "s.flow"),
            "--seed",
            "2",
            "--device",
            "cpu",
            "--epochs",
            str(k + 1),
            "--quiet",
        ],
    )
    assert straight.exit_code == 0, straight.stderr
    assert_identical(tensors_of(tmp_path / "s.flow"), tensors_of(tmp_path / "m.flow"))


def test_sigint_stops_a_fit_started_with_sigint_ignored(tmp_path: Path, table_csv: Path) -> None:
    """A shell starts a script's background jobs with SIGINT ignored; fit installs its own handler, so
    `kill -INT` (or Ctrl-C reaching the script's process group) still saves the best model and exits 130."""
    proc = start_fit(long_fit_args(tmp_path, table_csv), tmp_path, sigint_ignored=True)
    probe = subprocess.run(["grep", "^SigIgn", f"/proc/{proc.pid}/status"], capture_output=True, text=True)
    assert int(probe.stdout.split()[1], 16) & (1 << (signal.SIGINT - 1)), "the fit must start with SIGINT ignored"
    wait_for(lambda: metrics_lines(tmp_path) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # if SIGINT did nothing, the fit would run on after the test
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: interrupted; best validation NLL")
    assert load_model(str(tmp_path / "m.flow")).info["stopped"] == "interrupted"
    assert not list(tmp_path.glob(".*.tmp"))


def terminate_keeping_the_best_model(proc: subprocess.Popen[str], tmp_path: Path) -> Any:
    """SIGTERM a fit that has a best model: it exits 143 with one line naming its best validation NLL and
    leaves the checkpoint m.flow, which is returned loaded."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "Error: terminated (SIGTERM); best validation NLL"
    )
    return load_model(str(tmp_path / "m.flow"))


def test_sigterm_saves_the_best_model_like_ctrl_c_and_exits_143(tmp_path: Path, table_csv: Path) -> None:
    """Batch schedulers stop jobs with SIGTERM: the fit keeps its best model and can be resumed."""
    proc = start_fit(long_fit_args(tmp_path, table_csv), tmp_path)
    wait_for(lambda: metrics_lines(tmp_path) >= 2, proc)
    model = terminate_keeping_the_best_model(proc, tmp_path)
    assert model.info["stopped"] == "interrupted" and model.info["epochs_run"] >= 2
    assert not list(tmp_path.glob(".*.tmp"))


# The separately fitted parts made endless (they stop on their own otherwise), and a file that says one runs.
ENDLESS_PART = {
    "discrete": "import flowcli.discrete as part\npart.PATIENCE = part.MAX_STEPS = 10**9\n",
    "conditional": "import flowcli.conditional as part\npart.PATIENCE = part.MAX_STEPS = part.MAX_EPOCHS = 10**9\n",
}
MARK_PART = (
    "import pathlib, flowcli.train as train\n"
    "original = getattr(train, 'fit_' + {name!r})\n"
    "def marked(*args, **kwargs):\n"
    "    pathlib.Path('in_' + {name!r}).touch()\n"
    "    return original(*args, **kwargs)\n"
    "setattr(train, 'fit_' + {name!r}, marked)\n"
)


@pytest.mark.parametrize("part", ["discrete", "conditional"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_a_separate_part_is_fitted_stops_at_once_saving_nothing(
    tmp_path: Path, part: str, signum: int
) -> None:
    """Before the first epoch there is no model to keep: the fit stops (within a step of the part's fit),
    says so in one line and leaves no file, with the exit code of the signal (also for SIGTERM, which had
    no handler before the epochs: the process died without a word)."""
    mixed = tmp_path / "mixed.csv"
    shop_table(300).to_csv(mixed, index=False)  # categorical and missing cells: a discrete part
    prelude = ENDLESS_PART[part] + MARK_PART.format(name=part)
    proc = start_fit(["fit", str(mixed), "-o", "m.flow", "--seed", "0", "--device", "cpu"], tmp_path, prelude)
    wait_for((tmp_path / f"in_{part}").exists, proc)
    time.sleep(0.5)  # inside the part's loop
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    why = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"Error: {why} before the first epoch ended; nothing saved"
    )
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in_" + part, "mixed.csv"]


def test_sigterm_while_scoring_after_the_last_epoch_saves_the_best_model(tmp_path: Path, table_csv: Path) -> None:
    """After the last epoch the best model exists: a SIGTERM during the final scoring (made endless here)
    keeps it, with the quantiles of the first held-out rows only, and exits 143."""
    marker = tmp_path / "scoring"
    prelude = (
        "import pathlib, time, flowcli.train as train\n"
        "original = train.Trainer._quantiles\n"
        "def endless(self, model, complete=True):\n"
        "    if complete:\n"
        f"        pathlib.Path({str(marker)!r}).touch()\n"
        "        time.sleep(600)\n"
        "    return original(self, model, complete)\n"
        "train.Trainer._quantiles = endless\n"
    )
    proc = start_fit([*long_fit_args(tmp_path, table_csv), "--epochs", "2"], tmp_path, prelude)
    wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1].endswith("; continue with --resume m.flow"), err
    model = load_model(str(tmp_path / "m.flow"))
    assert model.info["stopped"] == "interrupted" and model.info["epochs_run"] == 2
    assert model.info["logprob_quantiles"]["rows"] == ROWS // 10  # the held-out rows, fewer than 8192
    assert len((tmp_path / "m.metrics.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob(".*.tmp"))
    # As the hint says: resumed to its end, it trains nothing more and scores the held-out rows in full.
    ckpt = str(tmp_path / "m.flow")
    result = runner.invoke(app, ["fit", str(table_csv), "-o", ckpt, "--resume", ckpt, "-q"])
    assert result.exit_code == 0, result.stderr
    resumed = load_model(ckpt)
    assert resumed.info["epochs_run"] == 2 and resumed.info["stopped"] == "completed"
    args = long_fit_args(tmp_path, table_csv)
    args[args.index("m.flow")] = str(tmp_path / "straight.flow")
    assert runner.invoke(app, [*args, "--epochs", "2", "-q"]).exit_code == 0
    straight = load_model(str(tmp_path / "straight.flow"))  # the same run, never stopped
    assert resumed.info["logprob_quantiles"] == straight.info["logprob_quantiles"]
    for name, value in straight.flow.state_dict().items():  # (the questions' network: fitted briefly in tests)
        assert name.startswith("conditional.") or torch.equal(value, resumed.flow.state_dict()[name]), name


def test_an_early_stopped_run_stopped_while_scoring_resumes_without_training(tmp_path: Path, table_csv: Path) -> None:
    """Early stopping had ended the run when Ctrl-C came during the final scoring: resumed, it trains no
    further epoch (it trained one more) and ends as the uninterrupted run, early stopped."""
    marker = tmp_path / "scoring"
    prelude = (
        "import pathlib, flowcli.train as train\n"
        "original = train.Trainer._quantiles\n"
        "def interrupted(self, model, complete=True):\n"
        "    if complete:\n"
        f"        pathlib.Path({str(marker)!r}).touch()\n"
        "        raise KeyboardInterrupt\n"
        "    return original(self, model, complete)\n"
        "train.Trainer._quantiles = interrupted\n"
    )
    (tmp_path / "early.yaml").write_text(yaml.safe_dump(tiny_config("constant", epochs=500, patience=1)))
    args = ["fit", str(table_csv), "-c", "early.yaml", "-o", "m.flow", "--seed", "2", "--device", "cpu"]
    proc = start_fit(args, tmp_path, prelude)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and marker.exists(), err
    stopped = load_model(str(tmp_path / "m.flow"))
    assert stopped.info["stopped"] == "interrupted" and stopped.info["epochs_run"] < 500
    ckpt = str(tmp_path / "m.flow")
    result = runner.invoke(app, ["fit", str(table_csv), "-o", ckpt, "--resume", ckpt, "-q"])
    assert result.exit_code == 0, result.stderr
    resumed = load_model(ckpt)
    assert resumed.info["stopped"] == "early_stopping"
    assert resumed.info["epochs_run"] == stopped.info["epochs_run"]
    assert resumed.info["best_epoch"] == stopped.info["best_epoch"]


def hold_fsync(marker: Path, release: Path | None) -> str:
    """A prelude that holds the fit in the checkpoint's fsync (its bytes written, not yet renamed into place):
    until ``release`` exists (None: for good), after creating ``marker``."""
    wait = f"pathlib.Path({str(release)!r}).exists()" if release is not None else "False"
    return (
        "import os, pathlib, time\n"
        "real_fsync = os.fsync\n"
        "def fsync(fd):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        f"    while not {wait}:\n"
        "        time.sleep(0.05)\n"
        "    real_fsync(fd)\n"
        "os.fsync = fsync\n"
    )


def test_sigterm_while_the_finished_fit_is_saved_waits_for_the_checkpoint(tmp_path: Path, table_csv: Path) -> None:
    marker, release = tmp_path / "saving", tmp_path / "release"
    proc = start_fit([*long_fit_args(tmp_path, table_csv), "--epochs", "2"], tmp_path, hold_fsync(marker, release))
    wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the handler has run (the fit is waiting in Python code)
    release.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # the fit had completed: its checkpoint is saved, and so it ends
    assert "Error" not in err and any(line.startswith("best validation NLL") for line in err.splitlines())
    assert load_model(str(tmp_path / "m.flow")).info["stopped"] == "completed"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_signal_while_saving_abandons_the_checkpoint_leaving_no_file(tmp_path: Path, table_csv: Path) -> None:
    marker = tmp_path / "saving"
    proc = start_fit([*long_fit_args(tmp_path, table_csv), "--epochs", "2"], tmp_path, hold_fsync(marker, None))
    wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGTERM)  # held back until the checkpoint is written, which never happens here
    time.sleep(0.5)  # two signals sent at once could arrive as one
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "Error: terminated (SIGTERM) again; nothing saved"
    assert out == "" and not (tmp_path / "m.flow").exists() and not list(tmp_path.glob(".*.tmp"))


def test_sigkill_during_training_leaves_the_existing_checkpoint_intact(
    tmp_path: Path, table_csv: Path, banana_files: dict
) -> None:
    target = tmp_path / "m.flow"
    target.write_bytes(banana_files["ckpt"].read_bytes())
    before = sha256(target)
    proc = start_fit(long_fit_args(tmp_path, table_csv), tmp_path)
    wait_for(lambda: metrics_lines(tmp_path) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sha256(target) == before
    load_model(str(target))


def test_sigkill_while_saving_leaves_the_old_checkpoint_or_the_complete_new_one(
    tmp_path: Path, table_csv: Path, banana_files: dict
) -> None:
    """The fit is held just after the new checkpoint's bytes are written to the temporary file and
    before the rename (os.fsync is made to block), then killed."""
    target = tmp_path / "m.flow"
    target.write_bytes(banana_files["ckpt"].read_bytes())
    before = sha256(target)
    marker = tmp_path / "saving"
    prelude = (
        "import os, time\n"
        f"def fsync(fd):\n    open({str(marker)!r}, 'w').close()\n    time.sleep(600)\n"
        "os.fsync = fsync"
    )
    proc = start_fit([*long_fit_args(tmp_path, table_csv), "--epochs", "2"], tmp_path, prelude)
    wait_for(marker.exists, proc)
    temporary = list(tmp_path.glob(".m.flow.*.tmp"))
    assert len(temporary) == 1 and temporary[0].stat().st_size > 0  # the new bytes were being written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert sha256(target) == before
    load_model(str(target))


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
def test_ctrl_c_while_scoring_exits_130_and_leaves_the_output_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, banana_files: dict, wrapped: bool
) -> None:
    """Also when the Ctrl-C comes out wrapped, as from inside an import (errors.raised_by_interrupt)."""
    from flowcli.model import Model

    calls = []
    original = Model.log_prob

    def log_prob(self, frame, row_offset=0, **options):
        calls.append(row_offset)
        if len(calls) == 3:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                if wrapped:
                    raise RuntimeError("Error calling __set_name__ on 'Field' instance 'dtype'") from exc
                raise
        return original(self, frame, row_offset, **options)

    monkeypatch.setattr(Model, "log_prob", log_prob)
    rows = tmp_path / "rows.parquet"  # Parquet streams in chunks of exactly --chunk-size rows
    pd.read_csv(banana_files["csv"]).to_parquet(rows)
    out = tmp_path / "scores.csv"
    out.write_text("precious\n")
    result = runner.invoke(
        app, ["logprob", str(banana_files["ckpt"]), str(rows), "-o", str(out), "--chunk-size", "100"]
    )
    assert calls == [0, 100, 200]
    assert result.exit_code == 130 and result.stderr.strip() == "Error: interrupted"
    assert out.read_text() == "precious\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "rows.parquet",
        "scores.csv",
    ]


def test_a_signal_that_comes_out_wrapped_still_stops_the_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A signal landing inside an import comes out as a RuntimeError ("Error calling __set_name__", raised from
    the handler's KeyboardInterrupt): the fit stops as for any signal, not with a traceback. Seen when SIGINT
    arrived while the first Adam imported torch._dynamo during the discrete part's fit."""
    import flowcli.fitting as fitting

    table = tmp_path / "t.csv"
    shop_table(100).to_csv(table, index=False)

    def signalled_inside_an_import(plan: object, dist: object, reporter: object, on_epoch: object, stop: Any) -> None:
        stop.signals += 1
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'dtype'") from exc

    monkeypatch.setattr(fitting, "_fit", signalled_inside_an_import)
    with pytest.raises(Interrupted) as stopped:
        fit(str(table), seed=0)
    assert stopped.value.model is None and stopped.value.why == "interrupted before the first epoch ended"

    def plain_bug(plan: object, dist: object, reporter: object, on_epoch: object, stop: Any) -> None:
        raise RuntimeError("a bug, no signal")

    monkeypatch.setattr(fitting, "_fit", plain_bug)
    with pytest.raises(RuntimeError, match="a bug, no signal"):
        fit(str(table), seed=0)


def _saved_model(tmp_path: Path, table_csv: Path) -> Path:
    model = tmp_path / "m.flow"
    fit_args = ["fit", str(table_csv), "-o", str(model), "-c", "maf", "--epochs", "1", "--seed", "0", "-q"]
    assert runner.invoke(app, fit_args).exit_code == 0
    return model


def test_sigterm_while_logprob_streams_leaves_no_file(tmp_path: Path, table_csv: Path) -> None:
    """SIGTERM (a scheduler, `timeout`) while rows are still arriving: exit 143, one line, and the output's
    temporary file removed, as on Ctrl-C (the process used to die mid-write and leave it behind)."""
    model = _saved_model(tmp_path, table_csv)
    out = tmp_path / "out" / "scored.csv"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowcli", "logprob", str(model), "-", "-o", str(out)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("".join(table_csv.read_text().splitlines(keepends=True)[:3]))
    proc.stdin.flush()  # stdin stays open: the command waits for more rows, its temporary file written
    deadline = time.time() + 60
    while not list(out.parent.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    assert list(out.parent.iterdir()), "the command never started writing"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["Error: terminated (SIGTERM)"]
    assert list(out.parent.iterdir()) == []


def test_ctrl_c_during_the_torch_import_is_a_clean_interrupt(tmp_path: Path, table_csv: Path) -> None:
    """Ctrl-C in the first second, while torch is being imported: the import finishes, then the command
    stops with exit 130 and one line (an interrupted torch import used to segfault, abort or print a
    traceback at its next use)."""
    model = _saved_model(tmp_path, table_csv)
    script = f"""
import importlib.abc, os, signal, sys
class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch._C":  # in the middle of torch's import
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
sys.argv = ["flowcli", "logprob", {str(model)!r}, {str(table_csv)!r}]
from flowcli.cli import main
main()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["Error: interrupted"]
    assert proc.stdout == ""
