"""``flowcli.fit``: everything ``flowcli fit`` does, as one library call.

A table in memory (a DataFrame, a CSV/Parquet file or ``-``), Parquet streamed from disk, a run resumed
from a checkpoint and a run on several processes all take the same path: the process group of
``distributed.init`` (one rank when not started by torchrun), a data source from datasource.py, and a
``Trainer``. With ``output`` the checkpoint and its metrics file are written atomically, also when
Ctrl-C, SIGTERM or a diverged loss stops the run (the best model so far is kept).

    import flowcli
    model = flowcli.fit(df, epochs=20, seed=0)
    model.save("table.flow")
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import pandas as pd
import torch
import yaml

from . import distributed
from .config import Config, resolve_config
from .datasource import StreamingData, in_memory_source
from .devices import default_threads, use_threads
from .errors import DataError, ReportedFailure, TrainingError, raised_by_interrupt
from .files import WatchableTextFile, check_not_input, check_writable, is_special_file
from .io import ReadOptions, format_of
from .model import Model, load_model, save_model, without_times
from .progress import Reporter
from .schema import text_labels
from .train import Diverged, EpochReport, Interrupted, Trainer
from .trainstate import ResumePoint, load_resume_point

Table: TypeAlias = "pd.DataFrame | str | Path"
ConfigLike: TypeAlias = "Config | dict[str, Any] | str | Path | None"


@dataclass
class FitPlan:
    """What a fit was asked to do, checked before any data is read."""

    data: pd.DataFrame | str
    config: Config
    seed: int | None
    output: str | None
    metrics: Path | None
    resume: ResumePoint | None
    stream: bool
    read_options: ReadOptions = ReadOptions()  # how to read a text table (--sep, --decimal, ...)
    strict: bool = False


def fit(
    data: Table,
    config: ConfigLike = None,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | torch.device = "auto",
    output: str | Path | None = None,
    metrics: str | Path | None = None,
    resume: str | Path | ResumePoint | None = None,
    stream: bool = False,
    nproc: int | None = None,
    threads: int | None = None,
    strict: bool = False,
    reporter: Reporter | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    read_options: ReadOptions | None = None,
) -> Model:
    """Fit a flow to a table and return the model with its best validation weights.

    ``data``: a DataFrame, a .csv/.parquet path, ``-`` (CSV on stdin) or a directory of Parquet files
    (always streamed). ``config``: a ``Config``, a mapping, a YAML path or a preset name; None is the
    default. ``epochs`` overrides ``training.epochs`` (with ``resume``: the total of the continued run).
    ``seed``: the same seed on CPU gives the same model; None draws one (kept in ``model.info``).
    ``output``: also save the checkpoint there, and the per-epoch metrics (``metrics``, default beside
    it: ``model.flow`` -> ``model.metrics.jsonl``). ``resume``: continue the run in this checkpoint
    (same data; its config and seed). ``stream``: read a Parquet file in chunks instead of loading it.
    ``nproc``: train on N processes of this machine (torch.distributed; needs ``data`` as a file and
    ``output``). ``threads``: torch's CPU threads (``torch.set_num_threads``; None leaves them as they are,
    and gives each ``nproc`` worker its share of the CPUs this process may use). ``reporter`` shows
    progress and messages on stderr (None: silent); ``on_epoch`` is called with each epoch's report.
    ``read_options``: how to read a text table (``io.ReadOptions``).

    After training the model is compared with a single full-covariance Gaussian of the same rows (the
    flow's start, see health.py); what went wrong (divergence, a best epoch among the first ones, no gain
    over the Gaussian) is listed in ``model.info["warnings"]`` and printed as ``Warning: ...`` lines.
    ``strict``: raise ``StrictFitError`` (carrying the model in ``.model``) instead, without saving.

    Ctrl-C or SIGTERM raise ``Interrupted`` and a diverged loss ``Diverged``; both carry the best model
    so far in ``.model`` (None before the first epoch ended), already saved when ``output`` was given.
    """
    reporter = reporter or Reporter(quiet=True)
    if threads is not None:
        use_threads(threads)
    plan = _plan(data, config, epochs, seed, output, metrics, resume, stream)
    plan.read_options = read_options or ReadOptions()
    plan.strict = strict
    if nproc is not None and not distributed.launched_by_torchrun():
        # Each worker takes its share of the CPUs: N workers with a thread per CPU each would contend.
        share = threads if threads is not None else max(1, default_threads() // nproc)
        return _launch(plan, config, epochs, device, nproc, share, reporter)
    dist = distributed.init(device)
    try:
        # From reading the data to saving the checkpoint: the separately fitted parts before the first epoch
        # and the scoring after the last one take minutes on large tables, and stop within seconds too.
        with terminate_as_interrupt() as stop:
            try:
                return _fit(plan, dist, reporter, on_epoch, stop)
            except BaseException as exc:
                # A KeyboardInterrupt, or after a signal its KeyboardInterrupt wrapped on its way out.
                if not (isinstance(exc, KeyboardInterrupt) or (stop.signals and raised_by_interrupt(exc))):
                    raise
                raise _stopped(exc, stop) from None
    finally:
        # Also when a rank fails: a process group left alive at exit can abort the interpreter's
        # shutdown ("terminate called without an active exception"), a second line after the Error.
        dist.close()


def _plan(
    data: Table,
    config: ConfigLike,
    epochs: int | None,
    seed: int | None,
    output: str | Path | None,
    metrics: str | Path | None,
    resume: str | Path | ResumePoint | None,
    stream: bool,
) -> FitPlan:
    """Resolve the config (or the resumed run's), check the output paths and the combination of options."""
    point = None
    if resume is not None:
        if config is not None or seed is not None:
            raise DataError("--resume continues with the config and seed stored in the checkpoint; drop -c/--seed")
        point = resume if isinstance(resume, ResumePoint) else load_resume_point(str(resume), epochs)
        cfg, seed = point.config, point.info.get("seed")
    else:
        cfg = resolve_config(config)
        if epochs is not None:
            cfg.training.epochs = epochs
    out = None if output is None else str(output)
    table = text_labels(data) if isinstance(data, pd.DataFrame) else str(data)
    if out is not None:
        _check_not_a_table(out, "-o", table, config)
        check_writable(out)
    stream = stream or (isinstance(table, str) and table != "-" and Path(table).is_dir())
    if point is not None and (stream or distributed.launched_by_torchrun()):
        raise DataError(
            "--resume: only for a table fitted in memory by one process (not --nproc, torchrun or streaming)"
        )
    metrics_path = Path(metrics) if metrics else default_metrics_path(out) if out is not None else None
    if metrics_path is not None and str(metrics_path) != STDOUT:
        _check_not_a_table(metrics_path, "--metrics", table, config)
        check_writable(metrics_path)
        if out is not None and metrics_path.resolve() == Path(out).resolve():
            raise DataError(f"--metrics {metrics}: the same file as the checkpoint -o {out}")
        if point is not None:  # the checkpoint being resumed is an input: metrics written there would replace it
            check_not_input(metrics_path, [point.path], "--metrics")
    if point is not None:
        files = (metrics_path, default_metrics_path(point.path))
        # Only regular files are read back: a fifo would wait for a writer that never comes.
        _restore_times(point, [p for p in files if p is not None and str(p) != STDOUT and not is_special_file(p)])
    return FitPlan(table, cfg, seed, out, metrics_path, point, stream)


def _check_not_a_table(path: str | Path, option: str, data: pd.DataFrame | str, config: ConfigLike) -> None:
    """Refuse an output of fit that would overwrite what the user has: the input table or config (the
    same file by any path), or any file named as a table (``-o data.csv`` is a slip for ``-o data.flow``)."""
    inputs = [given for given in (data, config) if isinstance(given, (str, Path))]
    check_not_input(path, inputs, option)
    if format_of(path) is not None:
        what, example = ("a checkpoint", "model.flow") if option == "-o" else ("metrics", "model.metrics.jsonl")
        raise DataError(
            f"{option} {path}: is named as a table ({Path(path).suffix}), but fit writes {what} there; use a name like {example}"
        )


def _fit(
    plan: FitPlan,
    dist: distributed.DistContext,
    reporter: Reporter,
    on_epoch: Callable[[EpochReport], None] | None,
    stop: _Stop,
) -> Model:
    """The fit of one rank (of one or many): data source, trainer, metrics and checkpoint (rank 0). ``stop``:
    the signals' state (``terminate_as_interrupt``); they are held back while the model is kept."""
    if dist.active and isinstance(plan.data, str) and plan.data == "-":
        raise DataError("reading stdin: streaming and distributed fits need the data as a file or directory")
    seed = dist.broadcast(random.SystemRandom().randrange(2**31) if plan.seed is None else plan.seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 7919 * dist.rank)  # ranks shuffle differently
    name = plan.data if isinstance(plan.data, str) else None
    with reporter.slow("preparing the table" if name is None else f"reading {'stdin' if name == '-' else name}"):
        source = _source(plan, dist, generator)
    _announce(plan, source, dist, seed, reporter)
    trainer = Trainer(source, plan.config, dist, seed, generator, reporter)
    if plan.resume is not None:
        if plan.resume.state.data_sha256 != source.fingerprint:
            raise DataError(
                f"the data differs from the table the run in {plan.resume.path} was trained on; resume needs the same table"
            )
        trainer.restore(plan.resume)
    metrics_ctx: Any = contextlib.nullcontext()
    if dist.is_main and plan.metrics is not None:
        metrics_ctx = _StdoutLines() if str(plan.metrics) == STDOUT else WatchableTextFile(plan.metrics)
    # Metrics are written and flushed per epoch at their path (`tail -f` works), but an earlier run's
    # file there is replaced only once the checkpoint is saved: until then they go to a file beside it.
    with contextlib.ExitStack() as keeping:  # see _Stop.hold
        with metrics_ctx as metrics_file:
            if metrics_file is not None and not metrics_ctx.in_place:
                reporter.message(
                    f"{plan.metrics} is an earlier run's: the metrics go to {metrics_ctx.writing.name} beside it "
                    "until the checkpoint is saved"
                )
            stopped = _train(trainer, plan, metrics_file, reporter, on_epoch)
            model = stopped.model if isinstance(stopped, (Interrupted, Diverged)) else stopped
            assert model is not None  # _train re-raises a stop that has no model
            keeping.enter_context(stop.hold())  # until the end: the checkpoint, its metrics, the summary line
            if plan.strict and model.info.get("warnings") and isinstance(stopped, Model):
                _report(model, None, reporter)
                # Raised inside the block: the metrics file is discarded with the checkpoint, nothing is written.
                raise StrictFitError(model)
            if metrics_file is not None and metrics_ctx.rewritable:  # (a fifo keeps the lines it was sent)
                # The file holds exactly the epochs of the saved state (an interrupt may cut an epoch short).
                metrics_file.seek(0)
                metrics_file.truncate()
                metrics_file.writelines(json.dumps(line) + "\n" for line in model.info["metrics"])
            if dist.is_main and plan.output is not None:
                save_model(model, plan.output)
        if isinstance(stopped, Diverged):
            raise Diverged(f"{stopped}; kept the {summary(model, plan.output)}", model)
        if isinstance(stopped, Interrupted):
            raise stopped
        dist.barrier()  # nobody exits (and tears down the group) before rank 0 has written
        _report(model, plan.output, reporter)
        return model


class StrictFitError(TrainingError):
    """``fit --strict`` and a fit with warnings: nothing was saved; ``model`` is the model that was not."""

    def __init__(self, model: Model) -> None:
        warnings = model.info["warnings"]
        super().__init__(
            f"--strict: the fit has {len(warnings)} warning(s), so nothing was saved; the first: {warnings[0]}"
        )
        self.model = model


def _report(model: Model, output: str | None, reporter: Reporter) -> None:
    """The summary line of a fit, then one ``Warning: ...`` line per warning (stderr; none with --quiet)."""
    reporter.message(summary(model, output))
    for warning in model.info.get("warnings", []):
        reporter.message(f"Warning: {warning}")


def _source(plan: FitPlan, dist: distributed.DistContext, generator: torch.Generator) -> Any:
    """The rows to train on: this rank's share of a table in memory, or Parquet streamed from disk."""
    tc = plan.config.training
    if not plan.stream:
        if plan.resume is None:
            return in_memory_source(plan.data, tc, dist, generator, None, plan.config.columns, plan.read_options)
        try:  # read with the run's schema: another table may fail there, before its hash is compared
            return in_memory_source(
                plan.data, tc, dist, generator, plan.resume.schema, plan.config.columns, plan.read_options
            )
        except DataError as exc:
            raise DataError(f"{exc} (--resume needs the table the run in {plan.resume.path} was trained on)") from None
    if not isinstance(plan.data, str):
        raise DataError("stream: streaming reads Parquet from disk; give the path of a file or directory")
    if plan.data == "-":
        raise DataError("reading stdin: streaming and distributed fits need the data as a file or directory")
    if plan.config.columns:
        raise DataError(
            "columns: role overrides are not supported when streaming (streamed columns get integer or continuous roles from the data)"
        )
    if tc.max_rows:
        raise DataError("training.max_rows: not supported when streaming; fit on a subset of the files instead")
    return StreamingData(plan.data, tc, dist, dist.local_batch(tc.batch_size), tc.shuffle_buffer)


def _announce(plan: FitPlan, source: Any, dist: distributed.DistContext, seed: int, reporter: Reporter) -> None:
    """The columns table and the one-line start message (rank 0's reporter; the others are quiet)."""
    schema = source.schema
    rows = [[c.name, c.role, c.describe(), c.reason] for c in schema.columns]
    reporter.table("columns", ["column", "role", "encoding", "why"], rows)
    where = f"{dist.world} processes ({dist.backend}, {dist.device.type})" if dist.active else str(dist.device)
    n_rows = int(sum(dist.sum(source.n_train, source.n_val)))
    start = "fitting streaming " if plan.stream else "fitting "
    if plan.resume is not None:
        start = f"resuming {plan.resume.path} after epoch {plan.resume.state.epoch}: "
    reporter.message(f"{start}{n_rows} rows x {len(schema.columns)} columns on {where} (seed {seed})")


def _train(
    trainer: Trainer,
    plan: FitPlan,
    metrics_file: IO[str] | None,
    reporter: Reporter,
    on_epoch: Callable[[EpochReport], None] | None,
) -> Model | Interrupted | Diverged:
    """Run the trainer; a stop that still has a model to keep is returned (so it is saved), not raised."""
    if plan.resume is not None and metrics_file is not None:
        metrics_file.writelines(json.dumps(line) + "\n" for line in plan.resume.state.history)

    def each_epoch(report: EpochReport) -> None:
        reporter.epoch(report)
        if on_epoch is not None:
            on_epoch(report)

    tc = plan.config.training
    reporter.start(tc.epochs, "fit", trainer.steps_per_epoch, tc.batch_size)
    try:
        return trainer.run(metrics_file, each_epoch)
    except Interrupted as exc:
        if exc.model is None:
            raise
        return exc
    except Diverged as exc:
        if exc.model is None:
            raise
        return exc
    finally:
        reporter.stop()


STDOUT = "-"  # --metrics -: the JSON lines on stdout (fit writes no other data there)


class _StdoutLines:
    """``--metrics -``: each epoch's line to stdout as it ends. Never rewritten at the end (stdout may be a
    pipe, or a file the shell opened for appending), so an interrupted epoch's line can stay."""

    in_place = True
    rewritable = False

    def __enter__(self) -> _StdoutLines:
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def writelines(self, lines: Any) -> None:
        sys.stdout.writelines(lines)

    def flush(self) -> None:
        sys.stdout.flush()


def summary(model: Model, output: str | None) -> str:
    """The line that ends a fit: best validation NLL, epochs, time, and where the checkpoint went."""
    info = model.info
    saved = f"; saved {output}" if output is not None else ""
    gaussian = info.get("gaussian_val_nll")
    baseline = f" (a single Gaussian: {gaussian:.4f})" if gaussian is not None else ""
    stopped = ""
    if info.get("stopped") == "early_stopping":  # say why fewer epochs ran than were planned
        patience = model.config.training.patience
        stopped = f", stopped early (no better validation NLL for {patience} epoch{'s' if patience != 1 else ''})"
    seconds = "?" if info.get("fit_seconds") is None else f"{info['fit_seconds']:.1f}"
    # Without held-out rows (val_fraction: 0, or a table of a handful of rows) the figure is the training rows'.
    kind, note = ("validation", "") if info.get("n_val", 1) else ("training", " (no rows held out)")
    return (
        f"best {kind} NLL {info['best_val_nll']:.4f} nats/row{note}{baseline} at epoch {info['best_epoch']} "
        f"of {info['epochs_run']}{stopped} ({seconds} s){saved}"
    )


def default_metrics_path(checkpoint: str | Path) -> Path:
    """Default metrics file beside the checkpoint: ``model.flow`` -> ``model.metrics.jsonl``."""
    path = Path(checkpoint)
    return path.with_name((path.stem if path.suffix else path.name) + ".metrics.jsonl")


def metrics_seconds(history: list[dict[str, Any]], metrics: Path) -> list[float] | None:
    """The seconds of each epoch of ``history`` (a checkpoint's, which holds no times) as the metrics file
    ``metrics`` records them; None unless that file is there and holds exactly these epochs."""
    try:
        lines = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if len(lines) != len(history) or not all(isinstance(line, dict) for line in lines):
        return None

    def same(line: dict[str, Any], epoch: dict[str, Any]) -> bool:  # as text: NaN equals NaN there
        return json.dumps(without_times(line), sort_keys=True) == json.dumps(without_times(epoch), sort_keys=True)

    if not all(
        same(line, epoch) and isinstance(line.get("seconds"), (int, float))
        for line, epoch in zip(lines, history, strict=True)
    ):
        return None
    return [float(line["seconds"]) for line in lines]


def fit_seconds(info: dict[str, Any], checkpoint: str | Path) -> float | None:
    """How long the fit of a checkpoint took: stored in checkpoints written before they were made
    reproducible, else the sum of its epochs' seconds in the metrics file beside it (None without one)."""
    if isinstance(info.get("fit_seconds"), (int, float)):
        return float(info["fit_seconds"])
    seconds = metrics_seconds(info.get("metrics") or [], default_metrics_path(checkpoint))
    return None if seconds is None else round(sum(seconds), 3)


def _restore_times(point: ResumePoint, metrics_files: list[Path]) -> None:
    """Give a resumed run the epoch times its checkpoint does not hold, from the metrics file of the run,
    so the continued metrics file and the fit time cover the whole run (resuming works without them)."""
    for path in metrics_files:
        seconds = metrics_seconds(point.state.history, path)
        if seconds is not None:
            for epoch, value in zip(point.state.history, seconds, strict=True):
                epoch["seconds"] = value
            point.state.seconds = sum(seconds)
            return


@dataclass
class _Stop:
    """How a fit was stopped from outside: Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143); ``signals``: how
    many arrived."""

    why: str = "interrupted"
    exit_code: int = 130
    signals: int = 0
    holding: bool = False  # see ``hold``
    held: bool = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """The model is being kept (its checkpoint and metrics written, a second or so): a signal waits until
        the block ends, a further one takes effect at once (a write that hangs can still be stopped). A fit
        that completed then ends as it would have, its checkpoint saved; an interrupted one raises."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


def _stopped(exc: BaseException, stop: _Stop) -> Interrupted:
    """The ``Interrupted`` a stopped fit raises: the trainer's, with the best model (saved by then), or one
    without a model when the stop came before the first epoch ended, or when another signal came while the
    best model was being kept (after the one ``_Stop.hold`` held back, or while the scores of a stopped
    run were computed): that abandons it, leaving no file half-written (``files.Staged``)."""
    stopped = exc if isinstance(exc, Interrupted) else Interrupted(None)
    stopped.why, stopped.exit_code = stop.why, stop.exit_code
    if stopped.model is None:
        stopped.why += " before the first epoch ended" if stop.signals <= 1 else " again"
    return stopped


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[_Stop]:
    """Stop the fit on SIGINT (Ctrl-C) or SIGTERM while the block runs, by raising KeyboardInterrupt, so
    it keeps its best model and can be resumed.

    SIGTERM is how batch schedulers (Slurm, Kubernetes, systemd) stop jobs. SIGINT gets its own handler
    too: a shell starts a script's background jobs (`flowcli fit ... &`) with SIGINT ignored, and Python
    then leaves it ignored, so Ctrl-C or `kill -INT` would do nothing to a fit that is meant to stop.
    """
    stop = _Stop()

    def on_signal(signum: int, frame: Any) -> None:
        stop.signals += 1
        if signum == signal.SIGTERM:
            stop.why, stop.exit_code = "terminated (SIGTERM)", 128 + signal.SIGTERM
        if stop.holding and not stop.held:
            stop.held = True
            return
        raise KeyboardInterrupt

    try:
        previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. an embedding application): leave the signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            # None: a handler installed from C, which Python cannot reinstall; the default is closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _launch(
    plan: FitPlan,
    config: ConfigLike,
    epochs: int | None,
    device: str | torch.device,
    nproc: int,
    threads: int,
    reporter: Reporter,
) -> Model:
    """``nproc`` worker processes under torch.distributed.run, each running this fit as ``flowcli fit``;
    rank 0 writes the checkpoint, which is then loaded here."""
    if not isinstance(plan.data, str):
        raise DataError("--nproc: the worker processes read the data themselves; give it as a file or directory")
    if plan.data == "-":
        raise DataError("--nproc: the worker processes cannot share stdin; give the data as a file or directory")
    if not Path(plan.data).exists():
        raise DataError(f"{plan.data}: file not found")
    if plan.output is None:
        raise DataError("--nproc: the workers write the model to a checkpoint; give an output path")
    if plan.resume is not None:
        raise DataError(
            "--resume: only for a table fitted in memory by one process (not --nproc, torchrun or streaming)"
        )
    seed = random.SystemRandom().randrange(2**31) if plan.seed is None else plan.seed  # one seed for every rank
    with contextlib.ExitStack() as stack:
        args = [plan.data, "-o", plan.output, "--device", str(device), "--seed", str(seed), "--threads", str(threads)]
        args += ["-c", _config_arg(config, plan.config, stack)] if config is not None else []
        args += ["--epochs", str(epochs)] if epochs else []
        args += ["--metrics", str(plan.metrics)] if plan.metrics is not None else []
        args += ["--quiet"] if reporter.quiet else []
        args += ["--stream"] if plan.stream else []
        args += plan.read_options.cli_args()
        args += ["--strict"] if plan.strict else []
        code = distributed.launch(nproc, args)
    if code != 0:
        raise ReportedFailure(code)  # rank 0 has printed the one-line error
    return load_model(plan.output)


def _config_arg(given: ConfigLike, config: Config, stack: contextlib.ExitStack) -> str:
    """The ``-c`` argument for the workers: the path or preset name given, or a temporary YAML file
    holding a config given as an object."""
    if isinstance(given, (str, Path)):
        return str(given)
    handle = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8"))
    yaml.safe_dump(config.to_dict(), handle)
    handle.flush()
    return handle.name
