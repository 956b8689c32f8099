"""The ``flowcli`` command line: parse options, call the library, write the result.

Kept thin on purpose: the work lives in the library modules. Heavy imports (torch, pandas) happen
inside the commands so ``flowcli --help`` starts fast. Known user errors (``FlowcliError``) become one
line ``Error: ...`` on stderr with exit code 1; Ctrl-C exits 130; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="flowcli",
    help="Learn the density of a table with a normalizing flow, then sample, score, encode and decode rows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by several commands, defined once.
CheckpointArg = Annotated[
    str, typer.Argument(help="Checkpoint written by 'flowcli fit' (e.g. model.flow).", metavar="CKPT")
]
InputArg = Annotated[
    str,
    typer.Argument(
        help="Input table: .csv or .parquet, or - for CSV on stdin; for logprob/encode/decode also a directory of tables (one output file each, -o OUTDIR).",
        metavar="DATA",
    ),
]
OutputOpt = Annotated[
    str, typer.Option("-o", "--output", help="Output .csv or .parquet; - (default) is CSV on stdout.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
ChunkOpt = Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per streamed chunk (bounds memory).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="float64 (default, exact round trips) or float32 (about 2x faster; relative error ~1e-6; numerically solved layers such as cnf may lose their stated tolerance).",
    ),
]
# logprob has no round trip to keep exact: it scores in float32, the precision the model was trained in.
LogprobPrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="float32 (default: the precision of training; relative error ~1e-6 against float64) or float64 (about 2x slower).",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="k/K",
        help="With a directory: process only its files number i (in name order) with i % K == k, so K workers split the files.",
    ),
]


def _fail(message: str) -> None:
    from .distributed import is_secondary_rank

    if not is_secondary_rank():  # under torchrun, rank 0 alone reports (every rank fails the same way)
        print(f"Error: {message}", file=sys.stderr, flush=True)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one-line messages and exit codes; let bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import FlowcliError

        try:
            return command(*args, **kwargs)
        except FlowcliError as exc:
            _fail(str(exc).replace("\n", " "))
            raise typer.Exit(1) from None
        except MemoryError:
            _fail("out of memory; use a smaller model (layers' hidden sizes), batch_size or input")
            raise typer.Exit(1) from None
        except RuntimeError as exc:
            # torch reports a failed CPU allocation as a RuntimeError; any other RuntimeError is a bug.
            if "can't allocate memory" not in str(exc) and type(exc).__name__ != "OutOfMemoryError":
                raise
            _fail("out of memory; use a smaller model (layers' hidden sizes), batch_size or input")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _fail("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None

    return wrapper


def _resolve_config(config: str | None) -> Any:
    """A config path, or the name of a packaged preset (``-c nsf``); None means the default preset."""
    from .config import default_config_path, load_config

    if config is not None and not Path(config).exists():
        preset = default_config_path().parent / f"{config}.yaml"
        if "/" not in config and preset.exists():
            config = str(preset)
    return load_config(config)


def _load(checkpoint: str, device: str, precision: str = "float64") -> Any:
    import torch

    from .model import load_model
    from .train import resolve_device

    dtypes = {"float64": torch.float64, "float32": torch.float32}
    if precision not in dtypes:
        raise typer.BadParameter(f"{precision!r} is not one of 'float64', 'float32'", param_hint="--precision")
    return load_model(checkpoint, resolve_device(device), dtypes[precision])


@app.command()
@handle_errors
def fit(
    data: InputArg,
    output: Annotated[str, typer.Option("-o", "--output", help="Checkpoint to write (conventionally .flow).")],
    config: Annotated[
        str | None,
        typer.Option(
            "-c", "--config", help="YAML config, or a preset name (e.g. nsf). Default: the packaged default.yaml."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=1,
            help="Override training.epochs of the config. With --resume: the total number of epochs of the continued run.",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed; the same seed on CPU gives the same model.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Per-epoch JSON lines (default: beside the checkpoint, model.flow -> model.metrics.jsonl).",
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue the run saved in this checkpoint (same DATA; its config and seed are used).",
            metavar="CKPT",
        ),
    ] = None,
    quiet: QuietOpt = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            help="Train one model on N processes of this machine with torch.distributed (gloo on CPU, one GPU each on CUDA); runs torch.distributed.run.",
        ),
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Stream a Parquet file from disk through a shuffle buffer instead of loading it (a directory of Parquet files is always streamed).",
        ),
    ] = False,
) -> None:
    """Learn the density of a table and save it as a checkpoint.

    Ctrl-C (exit 130) or SIGTERM (exit 143) stops after saving the best model so far; `--resume` continues such a run, or a
    finished one with a larger --epochs.

    Example: flowcli fit data-samples/penguins.csv -c maf -o penguins.flow --epochs 100 --seed 0
    """
    import random

    from .distributed import is_secondary_rank, launched_by_torchrun
    from .errors import DataError, TrainingError
    from .files import AtomicTextFile, check_writable
    from .io import read_table
    from .progress import Reporter

    reporter = Reporter(quiet=quiet or is_secondary_rank())
    point = None
    if resume is not None:
        from .trainstate import load_resume_point

        if config is not None or seed is not None:
            raise DataError("--resume continues with the config and seed stored in the checkpoint; drop -c/--seed")
        point = load_resume_point(resume, epochs)
        cfg, seed = point.config, point.info.get("seed")
    else:
        cfg = _resolve_config(config)
        if epochs is not None:
            cfg.training.epochs = epochs
    check_writable(output)
    # ---- distributed / streaming hook (see distributed.py, datasource.py) ----
    sharded = nproc is not None or launched_by_torchrun() or stream or (data != "-" and Path(data).is_dir())
    if sharded and resume is not None:
        raise DataError(
            "--resume: only for a table fitted in memory by one process (not --nproc, torchrun or streaming)"
        )
    if nproc is not None and not launched_by_torchrun():
        if data == "-":
            raise DataError("--nproc: the worker processes cannot share stdin; give the data as a file or directory")
        if not Path(data).exists():
            raise DataError(f"{data}: file not found")
        from .distributed import launch

        seed = random.SystemRandom().randrange(2**31) if seed is None else seed  # one seed for every rank
        args = [data, "-o", output, "--device", device, "--seed", str(seed)]
        args += (["-c", config] if config else []) + (["--epochs", str(epochs)] if epochs else [])
        args += (
            (["--metrics", metrics] if metrics else [])
            + (["--quiet"] if quiet else [])
            + (["--stream"] if stream else [])
        )
        raise typer.Exit(launch(nproc, args))
    if sharded:
        _fit_sharded(data, output, cfg, device, seed, metrics, reporter, stream or Path(data).is_dir())
        return
    # ---- end of hook ----
    frame = read_table(data)

    from .model import save_model
    from .schema import Schema
    from .train import Diverged, Interrupted, resolve_device, write_metrics_path
    from .train import fit as fit_model

    dev = resolve_device(device)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    metrics_path = Path(metrics) if metrics else write_metrics_path(output)
    check_writable(metrics_path)
    if metrics_path.resolve() == Path(output).resolve():
        raise DataError(f"--metrics {metrics}: the same file as the checkpoint -o {output}")
    schema = point.schema if point is not None else Schema.infer(frame, cfg.columns)
    reporter.table(
        "columns",
        ["column", "role", "encoding", "why"],
        [[c.name, c.role, c.describe(), c.reason] for c in schema.columns],
    )
    start = f"resuming {resume} after epoch {point.state.epoch}: " if point is not None else "fitting "
    reporter.message(f"{start}{len(frame)} rows x {frame.shape[1]} columns on {dev} (seed {seed})")
    outcome: BaseException | None = None
    # Metrics stream to a temporary file (watchable while training) renamed into place at the end,
    # together with the checkpoint, also when Ctrl-C or a diverged loss stops the run.
    with AtomicTextFile(metrics_path) as metrics_file:
        for line in point.state.history if point is not None else []:
            metrics_file.write(json.dumps(line) + "\n")
        reporter.start(cfg.training.epochs, "fit")
        try:
            with terminate_as_interrupt() as terminated:
                model = fit_model(
                    frame,
                    cfg,
                    device=dev,
                    seed=seed,
                    metrics_file=metrics_file,
                    on_epoch=reporter.epoch,
                    schema=schema,
                    resume=point,
                )
        except (Interrupted, Diverged) as exc:
            if exc.model is None:
                if isinstance(exc, Interrupted):
                    reporter.stop()
                    _fail(f"{terminated.why} before the first epoch ended; nothing saved")
                    raise typer.Exit(terminated.exit_code) from None
                raise
            model, outcome = exc.model, exc
        finally:
            reporter.stop()
        # The file holds exactly the epochs of the saved state (an interrupt may cut an epoch short).
        metrics_file.seek(0)
        metrics_file.truncate()
        metrics_file.writelines(json.dumps(line) + "\n" for line in model.info["metrics"])
        save_model(model, output)
    info = model.info
    summary = (
        f"best validation NLL {info['best_val_nll']:.4f} nats/row at epoch {info['best_epoch']} "
        f"of {info['epochs_run']} ({info['fit_seconds']:.1f} s); saved {output}"
    )
    if isinstance(outcome, Diverged):
        raise TrainingError(f"{outcome}; kept the {summary}")
    if isinstance(outcome, Interrupted):
        _fail(f"{terminated.why}; {summary}; continue with --resume {output}")
        raise typer.Exit(terminated.exit_code)
    reporter.message(summary)


class _Stop:
    """How a fit was stopped from outside: Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143)."""

    why, exit_code = "interrupted", 130


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[_Stop]:
    """Treat SIGTERM like Ctrl-C while the block runs: batch schedulers (Slurm, Kubernetes, systemd)
    stop jobs with SIGTERM, and a fit stopped that way should keep its best model and be resumable too."""
    stop = _Stop()

    def on_sigterm(signum: int, frame: Any) -> None:
        stop.why, stop.exit_code = "terminated (SIGTERM)", 128 + signal.SIGTERM
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (e.g. an embedding application): leave SIGTERM alone
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit_sharded(
    data: str, output: str, cfg: Any, device: str, seed: int | None, metrics: str | None, reporter: Any, streaming: bool
) -> None:
    """fit under torchrun (each rank reads its shard) and/or streaming Parquet from disk; rank 0 writes."""
    import contextlib
    import random

    import torch

    from . import distributed
    from .datasource import StreamingData, load_shard
    from .errors import DataError
    from .files import AtomicTextFile
    from .model import save_model
    from .train import fit as fit_model
    from .train import write_metrics_path

    if data == "-":
        raise DataError("reading stdin: streaming and distributed fits need the data as a file or directory")
    tc = cfg.training
    if streaming and cfg.columns:
        raise DataError("columns: role overrides are not supported when streaming (streamed columns are continuous)")
    if streaming and tc.max_rows:
        raise DataError("training.max_rows: not supported when streaming; fit on a subset of the files instead")
    dist = distributed.init(device)
    try:
        seed = dist.broadcast(random.SystemRandom().randrange(2**31) if seed is None else seed)
        batch = dist.local_batch(tc.batch_size)
        if streaming:
            source = StreamingData(data, tc, dist, batch, tc.shuffle_buffer)
        else:
            source = load_shard(
                data, tc, dist, torch.Generator().manual_seed(seed + 7919 * dist.rank), batch, cfg.columns
            )
        rows = int(sum(dist.sum(source.n_train, source.n_val)))
        where = f"{dist.world} processes ({dist.backend}, {dist.device.type})" if dist.active else str(dist.device)
        how = "streaming " if streaming else ""
        reporter.message(f"fitting {how}{rows} rows x {len(source.schema.columns)} columns on {where} (seed {seed})")
        metrics_path = Path(metrics) if metrics else write_metrics_path(output)
        # Rank 0 alone writes the metrics and the checkpoint; the others train in silence.
        metrics_ctx: Any = AtomicTextFile(metrics_path) if dist.is_main else contextlib.nullcontext(None)
        with metrics_ctx as metrics_file:
            reporter.start(tc.epochs, "fit")
            try:
                model = fit_model(
                    None,
                    cfg,
                    device=dist.device,
                    seed=seed,
                    metrics_file=metrics_file,
                    on_epoch=reporter.epoch,
                    data=source,
                    dist=dist,
                )
            finally:
                reporter.stop()
            if dist.is_main:
                save_model(model, output)
        dist.barrier()  # nobody exits (and tears down the group) before rank 0 has written
    finally:
        # Also when a rank fails: a process group left alive at exit can abort the interpreter's
        # shutdown ("terminate called without an active exception"), a second line after the Error.
        dist.close()
    info = model.info
    reporter.message(
        f"best validation NLL {info['best_val_nll']:.4f} nats/row at epoch {info['best_epoch']} "
        f"of {info['epochs_run']} ({info['fit_seconds']:.1f} s); saved {output}"
    )


@app.command()
@handle_errors
def sample(
    checkpoint: CheckpointArg,
    n: Annotated[int, typer.Option("-n", "--rows", help="Number of rows to sample (>= 1).")],
    output: OutputOpt = "-",
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed for reproducible samples.")] = None,
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
) -> None:
    """Synthesize rows with the training table's column names and types.

    Example: flowcli sample penguins.flow -n 1000 -o synthetic.parquet --seed 1
    """
    from .errors import DataError
    from .io import TableWriter, table_format

    if n < 1:
        raise DataError(f"-n {n}: the number of rows must be at least 1")
    table_format(output)
    model = _load(checkpoint, device, precision)
    with TableWriter(output) as writer:
        for frame in model.sample_batches(n, seed, chunk_size):
            writer.write(frame)


def _stream(
    checkpoint: str,
    data: str,
    output: str,
    device: str,
    chunk_size: int,
    transform: Callable[[Any, Any, int], Any],
    precision: str = "float64",
    shard: str | None = None,
) -> None:
    """Shared body of logprob/encode/decode: read chunks, transform, write as we go."""
    from .io import table_format
    from .outputs import per_file_jobs

    if data != "-" and Path(data).is_dir():
        jobs = per_file_jobs(data, output, shard)  # checks everything before the model is loaded
        model = _load(checkpoint, device, precision)
        for source, target in jobs:
            _stream_one(model, str(source), str(target), chunk_size, transform)
        return
    if shard is not None:
        from .errors import DataError

        raise DataError("--shard: only with a directory of input files")
    table_format(output)
    model = _load(checkpoint, device, precision)
    _stream_one(model, data, output, chunk_size, transform)


def _stream_one(model: Any, data: str, output: str, chunk_size: int, transform: Callable[[Any, Any, int], Any]) -> None:
    from .io import TableWriter, iter_table

    offset = 0
    with TableWriter(output) as writer:
        for frame in iter_table(data, chunk_size):
            writer.write(transform(model, frame, offset))
            offset += len(frame)


@app.command()
@handle_errors
def logprob(
    checkpoint: CheckpointArg,
    data: InputArg = "-",
    output: OutputOpt = "-",
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    on_invalid: Annotated[
        str,
        typer.Option(
            "--on-invalid",
            help="error: stop at an unparseable value or unseen category, naming the column, value and row; neg-inf: score such rows -inf.",
        ),
    ] = "error",
    flag_below: Annotated[
        float | None,
        typer.Option(
            "--flag-below",
            metavar="Q",
            help="Add an 'anomaly' column: true when logprob is below the Q-quantile (0 < Q < 1) of held-out training rows.",
        ),
    ] = None,
    percentile: Annotated[
        bool,
        typer.Option(
            "--percentile",
            help="Add a 'percentile' column: the row's logprob percentile (0-100) among held-out training rows.",
        ),
    ] = False,
    precision: LogprobPrecisionOpt = "float32",
    shard: ShardOpt = None,
) -> None:
    """Append a 'logprob' column: the log of each row's probability (density of its continuous values in
    the units of their columns, times the probability of its discrete values).

    Example: cat data-samples/penguins.csv | flowcli logprob penguins.flow - --flag-below 0.001 | grep ',true$'
    """
    from .errors import DataError

    if on_invalid not in ("error", "neg-inf"):
        raise typer.BadParameter(f"{on_invalid!r} is not one of 'error', 'neg-inf'", param_hint="--on-invalid")
    if flag_below is not None and not 0 < flag_below < 1:
        raise DataError(f"--flag-below {flag_below}: the quantile must be between 0 and 1 (e.g. 0.01)")
    threshold: list[float] = []

    def score(model: Any, frame: Any, offset: int) -> Any:
        if flag_below is not None and not threshold:
            threshold.append(model.logprob_threshold(flag_below))
        values = model.log_prob(frame, row_offset=offset, on_invalid=on_invalid)
        added = ["logprob"] + ["anomaly"] * (flag_below is not None) + ["percentile"] * percentile
        out = frame.drop(columns=added, errors="ignore")
        out["logprob"] = values
        if flag_below is not None:
            out["anomaly"] = values < threshold[0]
        if percentile:
            out["percentile"] = model.logprob_percentile(values)
        return out

    _stream(checkpoint, data, output, device, chunk_size, score, precision=precision, shard=shard)


@app.command()
@handle_errors
def encode(
    checkpoint: CheckpointArg,
    data: InputArg = "-",
    output: OutputOpt = "-",
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    shard: ShardOpt = None,
) -> None:
    """Map rows to latent columns z0..z{k-1} (the base distribution's space).

    Example: flowcli encode penguins.flow data-samples/penguins.csv -o latent.csv
    """
    _stream(
        checkpoint,
        data,
        output,
        device,
        chunk_size,
        lambda m, f, o: m.encode(f, row_offset=o),
        precision=precision,
        shard=shard,
    )


@app.command()
@handle_errors
def decode(
    checkpoint: CheckpointArg,
    data: Annotated[
        str,
        typer.Argument(help="Latent table with columns z0..z{k-1}: .csv, .parquet, or - for stdin.", metavar="LATENT"),
    ] = "-",
    output: OutputOpt = "-",
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    shard: ShardOpt = None,
) -> None:
    """Map latent rows z0..z{k-1} back to rows with the original column names.

    Example: flowcli encode penguins.flow data-samples/penguins.csv | flowcli decode penguins.flow - -o roundtrip.csv
    """
    _stream(
        checkpoint,
        data,
        output,
        device,
        chunk_size,
        lambda m, f, o: m.decode(f, row_offset=o),
        precision=precision,
        shard=shard,
    )


@app.command()
@handle_errors
def report(
    checkpoint: CheckpointArg,
    data: Annotated[
        str,
        typer.Argument(
            help="Table to compare with the model (ideally rows held out from fitting): .csv, .parquet or -.",
            metavar="DATA",
        ),
    ],
    output: Annotated[
        str, typer.Option("-o", "--output", help="Report directory (created; files in an existing one are replaced).")
    ],
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", min=1, help="Synthetic rows to compare with DATA (default: as many as DATA, at most 100000)."
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Seed of the synthetic rows and subsampling (the same seed gives the same report)."
        ),
    ] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Write PNG figures, summary.json and index.html showing how well the model matches DATA.

    Example: flowcli report penguins.flow data-samples/penguins.csv -o penguins_report
    """
    from .errors import FlowcliError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FlowcliError('flowcli report needs matplotlib: pip install "flowcli[report]"') from None
    from .io import read_table
    from .progress import Reporter
    from .report import build_report, check_output_dir, staged_directory

    reporter = Reporter(quiet=quiet)
    out = check_output_dir(output)
    model = _load(checkpoint, device)
    frame = read_table(data)
    with staged_directory(out) as tmp:
        result = build_report(
            model,
            frame,
            tmp,
            samples=samples,
            seed=seed,
            say=reporter.message,
            sources={"checkpoint": checkpoint, "data": data},
        )
    s = result.summary
    loglik = "n/a" if s["test_loglik"] is None else f"{s['test_loglik']:.4f} nats/row"
    reporter.message(
        f"test log-likelihood {loglik}; {len(result.figures)} figures; wrote {Path(output) / 'index.html'}"
    )


@app.command("inspect")
@handle_errors
def inspect_checkpoint(
    checkpoint: CheckpointArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Show a checkpoint: config, columns and their preprocessing, parameter counts, training summary, versions.

    Example: flowcli inspect penguins.flow --json | jq .training
    """
    import json

    from .describe import describe, render

    description = describe(checkpoint)
    if as_json:
        print(json.dumps(description, indent=2))
        return
    from rich.console import Console

    # Not a terminal (a pipe or a file): no colours, and wide enough that tables are not squeezed.
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    render(description, console)


def main() -> None:
    app()
