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
        help="Input table: .csv, .tsv, .parquet or compressed CSV (.csv.gz, .bz2, .xz, .zst), - for stdin, or a pipe such as <(...) (see --format); for logprob/impute/encode/decode also a directory of tables (one output file each, -o OUTDIR).",
        metavar="DATA",
    ),
]
OutputOpt = Annotated[
    str,
    typer.Option(
        "-o",
        "--output",
        help="Output table: .csv, .tsv, .parquet or compressed CSV (.csv.gz, .csv.bz2, .csv.xz, .csv.zst), by its extension; - (default) is CSV on stdout.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
ChunkOpt = Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per streamed chunk (bounds memory).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch. Default: OMP_NUM_THREADS if set, else the CPUs this process may run on. On a shared machine give each job its share (e.g. --threads 1).",
    ),
]
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
# The reading options of every command that reads a table (README: "Reading files").
SepOpt = Annotated[
    str | None,
    typer.Option(
        "--sep",
        metavar="CHAR",
        help="Field separator of text input: , ; | or \\t (tab). Default: sniffed from the first lines among those four.",
    ),
]
DecimalOpt = Annotated[
    str | None,
    typer.Option(
        "--decimal",
        metavar=". or ,",
        help="Decimal mark of numbers in text input. Default: ',' when a ;-, tab- or |-separated file writes its numbers so (1,5), else '.'.",
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        help="Text encoding of the input, e.g. latin-1, cp1252, utf-16. Default: UTF-8 (a byte-order mark is skipped).",
    ),
]
NoHeaderOpt = Annotated[
    bool, typer.Option("--no-header", help="The input has no header line: its columns are named c0, c1, ...")
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="Input format when the path does not say (a pipe, <(...), /dev/stdin, a name without extension): csv, tsv, parquet, csv.gz, csv.bz2, csv.xz or csv.zst. Default: the extension, else the content.",
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
        from .errors import FlowcliError, ReportedFailure, Terminated, raised_by_interrupt

        try:
            _import_torch_whole()
            with _terminate_as_exception():
                return command(*args, **kwargs)
        except ReportedFailure as exc:  # already on stderr, from the process that failed
            raise typer.Exit(exc.exit_code) from None
        except FlowcliError as exc:
            _fail(str(exc).replace("\n", " "))
            raise typer.Exit(1) from None
        except MemoryError:
            _fail("out of memory; use a smaller model (layers' hidden sizes), batch_size or input")
            raise typer.Exit(1) from None
        except RuntimeError as exc:
            # typer.Exit is a RuntimeError: a command's own exit, already reported, passes through.
            if not isinstance(exc, typer.Exit) and raised_by_interrupt(exc):  # a Ctrl-C inside an import
                _fail("interrupted")
                raise typer.Exit(130) from None
            # torch reports a failed CPU allocation as a RuntimeError; any other RuntimeError is a bug.
            if "can't allocate memory" not in str(exc) and type(exc).__name__ != "OutOfMemoryError":
                raise
            _fail("out of memory; use a smaller model (layers' hidden sizes), batch_size or input")
            raise typer.Exit(1) from None
        except Terminated:
            _fail("terminated (SIGTERM)")
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            _fail("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None

    return wrapper


def _import_torch_whole() -> None:
    """Import torch with Ctrl-C and SIGTERM held until the import is done, then act on them. A
    KeyboardInterrupt inside torch's import leaves its C++ half-registered: the next import of a torch
    module then segfaults, aborts ("GradBucket is already defined") or fails with a traceback."""
    import signal

    if "torch" in sys.modules:
        return
    arrived: list[int] = []
    try:
        previous = {
            signum: signal.signal(signum, lambda n, _: arrived.append(n)) for signum in (signal.SIGINT, signal.SIGTERM)
        }
    except ValueError:  # not the main thread: signals are not ours to hold
        import torch  # noqa: F401

        return
    try:
        import torch  # noqa: F401,F811
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if arrived:
        from .errors import Terminated

        raise Terminated if signal.SIGTERM in arrived else KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` while a command runs, so that its output is abandoned as on Ctrl-C (the
    temporary file removed, an existing file untouched) instead of the process dying mid-write. ``fit``
    installs its own handlers, which keep the best model."""
    import signal

    from .errors import Terminated

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _read_options(sep: str | None, decimal: str | None, encoding: str | None, no_header: bool, fmt: str | None) -> Any:
    """The reading options as one object for the library (checked: a bad value is an error naming its option)."""
    from .io import ReadOptions, format_named

    if fmt is not None:
        format_named(fmt)
    return ReadOptions(sep=sep, decimal=decimal, encoding=encoding, header=not no_header, format=fmt)


def _load(checkpoint: str, device: str, precision: str = "float64") -> Any:
    import torch

    from .devices import resolve_device
    from .model import load_model

    dtypes = {"float64": torch.float64, "float32": torch.float32}
    if precision not in dtypes:
        raise typer.BadParameter(f"{precision!r} is not one of 'float64', 'float32'", param_hint="--precision")
    return load_model(checkpoint, resolve_device(device), dtypes[precision])


def _threads(threads: int | None) -> int:
    from .devices import use_threads

    return use_threads(threads)


# The options of fit, defined here so that its signature reads as a list.
CkptOutputOpt = Annotated[str, typer.Option("-o", "--output", help="Checkpoint to write (conventionally .flow).")]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "-c", "--config", help="YAML config, or a preset name (e.g. nsf). Default: the packaged default.yaml."
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        min=1,
        help="Override training.epochs of the config. With --resume: the total number of epochs of the continued run.",
    ),
]
FitSeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Random seed; the same seed on CPU gives the same model.")
]
MetricsOpt = Annotated[
    str | None,
    typer.Option(
        "--metrics", help="Per-epoch JSON lines (default: beside the checkpoint, model.flow -> model.metrics.jsonl)."
    ),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Continue the run saved in this checkpoint (same DATA; its config and seed are used).",
        metavar="CKPT",
    ),
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        "--nproc",
        min=1,
        help="Train one model on N processes of this machine with torch.distributed (gloo on CPU, one GPU each on CUDA); runs torch.distributed.run.",
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail (exit 1, nothing saved: an existing checkpoint at -o is kept) when the fit has a warning: diverged, best epoch among the first ones, or no better than a single Gaussian.",
    ),
]
StreamOpt = Annotated[
    bool,
    typer.Option(
        "--stream",
        help="Stream a Parquet file from disk through a shuffle buffer instead of loading it (a directory of Parquet files is always streamed).",
    ),
]


@app.command()
@handle_errors
def fit(
    data: InputArg,
    output: CkptOutputOpt,
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
    config: ConfigOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = "auto",
    seed: FitSeedOpt = None,
    metrics: MetricsOpt = None,
    resume: ResumeOpt = None,
    quiet: QuietOpt = False,
    nproc: NprocOpt = None,
    stream: StreamOpt = False,
    strict: StrictOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Learn the density of a table and save it as a checkpoint.

    Ctrl-C (exit 130) or SIGTERM (exit 143) stops after saving the best model so far; `--resume` continues such a run, or a
    finished one with a larger --epochs.

    At the end the validation NLL is printed beside a single full-covariance Gaussian's, with a
    'Warning: ...' line for a fit that diverged, kept one of its first epochs, or did not beat the
    Gaussian (also stored in the checkpoint: flowcli inspect shows them); --strict makes them errors.

    Example: flowcli fit data-samples/penguins.csv -c maf -o penguins.flow --epochs 100 --seed 0
    """
    from .distributed import is_secondary_rank
    from .fitting import fit as fit_table
    from .progress import Reporter
    from .train import Interrupted

    _threads(threads)
    reporter = Reporter(quiet=quiet or is_secondary_rank())
    try:
        fit_table(
            data,
            config,
            read_options=_read_options(sep, decimal, encoding, no_header, input_format),
            epochs=epochs,
            seed=seed,
            device=device,
            output=output,
            metrics=metrics,
            resume=resume,
            stream=stream,
            nproc=nproc,
            threads=threads,
            strict=strict,
            reporter=reporter,
        )
    except Interrupted as stop:
        if stop.model is None:
            _fail(f"{stop.why}; nothing saved")
        else:
            from .fitting import summary

            _fail(f"{stop.why}; {summary(stop.model, output)}{_resume_hint(output, stream, data, nproc)}")
        raise typer.Exit(stop.exit_code) from None


def _resume_hint(output: str, stream: bool, data: str, nproc: int | None) -> str:
    """ "; continue with --resume OUT" when ``--resume`` would take the checkpoint just saved (``fit`` in
    memory, one process: ``fitting._plan``; a run ``trainstate.load_resume_point`` accepts), else nothing."""
    from .distributed import launched_by_torchrun
    from .errors import FlowcliError
    from .trainstate import load_resume_point

    if stream or (data != "-" and Path(data).is_dir()) or (nproc or 1) > 1 or launched_by_torchrun():
        return ""
    try:
        load_resume_point(output)
    except FlowcliError:
        return ""
    return f"; continue with --resume {output}"


GivenOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--given",
        metavar="COL=VALUE",
        help="Condition on a column's value (repeatable): every row holds it exactly, the other columns are drawn from p(others | given). VALUE is read as the same text in the training file would be. Always exactly N rows, however rare the condition.",
    ),
]
GivenFileOpt = Annotated[
    str | None,
    typer.Option(
        "--given-file",
        metavar="ROWS",
        help="A table (.csv, .parquet, -) with some of the model's columns: -n rows (default 1) drawn given each of its rows, in input order; an empty cell is not given. Read with the reading options below.",
    ),
]


@app.command()
@handle_errors
def sample(
    checkpoint: CheckpointArg,
    n: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--rows",
            help="Number of rows to sample (0: the header only); with --given-file, per row of ROWS (default 1, at least 1).",
        ),
    ] = None,
    output: OutputOpt = "-",
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed for reproducible samples.")] = None,
    given: GivenOpt = None,
    given_file: GivenFileOpt = None,
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    threads: ThreadsOpt = None,
) -> None:
    """Synthesize rows with the training table's column names and types; with --given or --given-file,
    rows drawn given some columns' values (complete rows: a missing cell is taken as missing at random).

    Example: flowcli sample penguins.flow -n 1000 -o synthetic.parquet --seed 1
    """
    from .errors import DataError
    from .files import check_not_input
    from .io import TableWriter, table_format

    if given and given_file is not None:
        raise DataError("--given and --given-file: give the conditions one way, on the command line or in a file")
    if n is None and given_file is None:
        # A usage error (exit 2), as for any missing required option: -n is optional only with --given-file.
        raise typer.BadParameter("give the number of rows to sample (optional only with --given-file)", param_hint="-n")
    rows = 1 if n is None else n
    if rows < 0:  # a usage error (exit 2), as --epochs 0 is
        raise typer.BadParameter(f"{rows}: the number of rows cannot be negative", param_hint="-n")
    if rows == 0 and given_file is not None:
        raise DataError("-n 0 with --given-file: give at least 1 row to draw for each row of the file")
    _threads(threads)
    options = _read_options(sep, decimal, encoding, no_header, input_format)
    table_format(output)
    inputs: list[str | Path] = [checkpoint] if given_file is None else [checkpoint, given_file]
    check_not_input(output, inputs)
    model = _load(checkpoint, device, precision)
    conditions = None
    if given:
        from .given import parse_given

        conditions = parse_given(given, model.schema.text_columns, options.decimal)
    with TableWriter(output) as writer:
        if rows == 0:  # a count computed upstream may be 0: the header and no row, as for an empty input
            writer.write(model.sample(0, given=conditions))
            return
        if given_file is not None:
            _sample_given_file(model, given_file, rows, seed, chunk_size, options, writer)
            return
        try:
            for frame in model.sample_batches(rows, seed, chunk_size, given=conditions):
                writer.write(frame)
        except DataError as exc:  # a value the model refuses ("column 'x', row 1: ..."): say it was a --given
            if conditions is None or str(exc).startswith("given "):
                raise
            raise DataError(f"--given: {exc}") from None


def _sample_given_file(
    model: Any, path: str, rows: int, seed: int | None, chunk_size: int, options: Any, writer: Any
) -> None:
    """``rows`` draws per row of the table at ``path``, streamed: it is read in chunks of about
    chunk_size / rows rows, so each chunk gives about chunk_size rows whatever -n is (one input row at a
    time, in batches of chunk_size, when -n is larger)."""
    from .errors import NoDataRows
    from .given import chunk_seed
    from .io import iter_table

    offset = 0
    chunks = iter_table(path, max(1, chunk_size // rows), options=_knowing(model, options))
    try:
        for index, conditions in enumerate(chunks):
            with _naming(path):  # a condition the model refuses (the row is in the message)
                batches = model.sample_batches(
                    rows, chunk_seed(seed, index), chunk_size, given=conditions, row_offset=offset
                )
                for frame in batches:
                    writer.write(frame)
            offset += len(conditions)
    except NoDataRows as empty:  # no condition, no row: the header of what would have been drawn
        writer.write(model.sample(rows, seed, given=empty.frame))


def _stream(
    checkpoint: str,
    data: str,
    output: str,
    device: str,
    chunk_size: int,
    transform: Callable[[Any, Any, int], Any],
    options: Any = None,
    precision: str = "float64",
    shard: str | None = None,
    appends: tuple[str, ...] = (),
) -> None:
    """Shared body of logprob/encode/decode: read chunks, transform, write as we go. ``appends``: the
    columns that the transform appends to its input's, changing none of them: CSV input rows that hold
    none of these columns are written as they came."""
    from .files import check_not_input
    from .io import table_format
    from .outputs import per_file_jobs, write_all

    if data != "-" and Path(data).is_dir():
        created = not Path(output).exists()
        jobs = per_file_jobs(data, output, shard)  # checks everything before the model is loaded
        try:
            model = _load(checkpoint, device, precision)
            write_all(
                jobs,
                lambda source, target: _stream_one(
                    model, str(source), str(target), chunk_size, transform, options, appends
                ),
            )
        except BaseException:
            if created:  # all or nothing: an OUTDIR this run made goes too (if another worker's files are not in it)
                with contextlib.suppress(OSError):
                    Path(output).rmdir()
            raise
        return
    if shard is not None:
        from .errors import DataError

        raise DataError("--shard: only with a directory of input files")
    table_format(output)
    check_not_input(output, [data, checkpoint])
    model = _load(checkpoint, device, precision)
    _stream_one(model, data, output, chunk_size, transform, options, appends)


def _stream_one(
    model: Any,
    data: str,
    output: str,
    chunk_size: int,
    transform: Callable[[Any, Any, int], Any],
    options: Any,
    appends: tuple[str, ...] = (),
) -> None:
    from .errors import NoDataRows
    from .io import TableWriter, iter_table, iter_table_lines

    offset = 0
    reading = _knowing(model, options)
    if appends:
        chunks = iter_table_lines(data, chunk_size, options=reading)
    else:
        chunks = ((frame, None) for frame in iter_table(data, chunk_size, options=reading))
    with TableWriter(output) as writer:
        try:
            for frame, lines in chunks:
                with _naming(data):  # a value the model refuses (rows are counted in the file)
                    result = transform(model, frame, offset)
                # An input column that the transform writes (an old `logprob`) is replaced: its line is not the row.
                writer.write(result, None if set(appends) & set(frame.columns) else lines)
                offset += len(frame)
        except NoDataRows as empty:  # rows to rows: no rows in, the output's header only (a filter kept none)
            writer.write(transform(model, empty.frame, 0))


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """A DataError raised inside names the input file it is about (``stdin`` for ``-``), as reading errors do."""
    from .errors import DataError

    try:
        yield
    except DataError as exc:
        raise DataError(f"{'stdin' if path == '-' else path}: {exc}") from None


def _knowing(model: Any, options: Any) -> Any:
    """The reading options with the model's text columns kept as text (codes, dates) whatever a chunk holds."""
    from dataclasses import replace

    from .io import ReadOptions

    return replace(options or ReadOptions(), text_columns=model.schema.text_columns)


@app.command()
@handle_errors
def logprob(
    checkpoint: CheckpointArg,
    data: InputArg = "-",
    output: OutputOpt = "-",
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
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
            help="Add an 'anomaly' column: true when logprob is below the Q-quantile (0 < Q < 1) of held-out training rows with the same missing cells.",
        ),
    ] = None,
    percentile: Annotated[
        bool,
        typer.Option(
            "--percentile",
            help="Add a 'percentile' column: the row's logprob percentile (0-100) among held-out training rows with the same missing cells.",
        ),
    ] = False,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="COL[,COL...]",
            help="Score log p(targets | the row's other known columns) instead: the density of the target columns given the rest, in the targets' units (NaN where every target cell is empty). Repeatable.",
        ),
    ] = None,
    precision: LogprobPrecisionOpt = "float32",
    shard: ShardOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Append a 'logprob' column: the log of each row's probability (density of its continuous values in
    the units of their columns, times the probability of its discrete values). A column of the model that
    the input lacks is marginalised out: the row's probability of the columns it has.

    Example: cat data-samples/penguins.csv | flowcli logprob penguins.flow - --flag-below 0.001 | grep ',true$'
    """
    from .errors import DataError
    from .questions import parse_targets

    if on_invalid not in ("error", "neg-inf"):
        raise typer.BadParameter(f"{on_invalid!r} is not one of 'error', 'neg-inf'", param_hint="--on-invalid")
    if flag_below is not None and not 0 < flag_below < 1:
        raise DataError(f"--flag-below {flag_below}: the quantile must be between 0 and 1 (e.g. 0.01)")
    targets = parse_targets(target)
    if targets is not None and (flag_below is not None or percentile):
        flag = "--flag-below" if flag_below is not None else "--percentile"
        raise DataError(
            f"{flag} with --target: the anomaly quantiles are of whole rows' logprob in the training data, not of "
            "log p(targets | other columns); score with --target alone, or flag whole rows without it"
        )
    _threads(threads)
    options = _read_options(sep, decimal, encoding, no_header, input_format)
    score = _scorer(on_invalid, flag_below, percentile, targets)
    added = _scored_columns(flag_below, percentile) + ("anomaly", "percentile")  # (an earlier scoring's: dropped)
    _stream(
        checkpoint, data, output, device, chunk_size, score, options, precision=precision, shard=shard, appends=added
    )


def _scored_columns(flag_below: float | None, percentile: bool) -> tuple[str, ...]:
    """The columns that logprob appends (replacing input columns of those names)."""
    return ("logprob",) + ("anomaly",) * (flag_below is not None) + ("percentile",) * percentile


def _scorer(
    on_invalid: str, flag_below: float | None, percentile: bool, targets: list[str] | None
) -> Callable[[Any, Any, int], Any]:
    """The transform of logprob: a chunk with its scores (and anomaly flags or percentiles) appended."""
    from .errors import DataError

    def score(model: Any, frame: Any, offset: int) -> Any:
        if flag_below is not None or percentile:
            # The stored quantiles are of whole rows (each with its missing cells). A file without a
            # model column is scored on the columns it has (marginalised): another quantity, not comparable.
            lacking = [name for name in model.schema.read_names if name not in frame.columns]
            if lacking:
                flag = "--flag-below" if flag_below is not None else "--percentile"
                raise DataError(
                    f"{flag}: the input lacks the model's column {lacking[0]!r}, so its logprob is the density of "
                    "the columns present, which the anomaly quantiles (of whole training rows) do not describe"
                )
        values = model.log_prob(frame, row_offset=offset, on_invalid=on_invalid, target=targets)
        # Scored in float32, the scores carry float32 precision: keep that dtype, so they are written
        # as -58.342606 rather than with float64 digits that mean nothing (-58.34260559082031).
        values = values.astype(str(model.dtype).removeprefix("torch."))
        # A file scored before (it holds a logprob column) has that scoring's anomaly and percentile columns
        # too: replaced with the logprob, or dropped when this run does not compute them (stale beside it).
        earlier = ("anomaly", "percentile") if "logprob" in frame.columns else ()
        out = frame.drop(columns=[*_scored_columns(flag_below, percentile), *earlier], errors="ignore")
        out["logprob"] = values
        # Each row against the reference rows with the same absent cells (quantiles.py), found once.
        absent = model.absent_cells(frame) if flag_below is not None or percentile else None
        if flag_below is not None:
            out["anomaly"] = values < model.logprob_threshold(flag_below, frame, absent)
        if percentile:
            out["percentile"] = model.logprob_percentile(values, frame, absent)
        return out

    return score


# encode and decode map whole rows one to one and condition on nothing. `--given` there is a slip for
# `sample --given`: an option of theirs (hidden from --help) so that it is a user error naming it, exit 1,
# rather than click's "No such option" usage error.
RefusedGivenOpt = Annotated[list[str] | None, typer.Option("--given", hidden=True)]


def _refuse_given(given: list[str] | None, command: str, what: str) -> None:
    from .errors import DataError

    if given:
        raise DataError(
            f"--given: {command} {what} and takes no conditions; draw rows given values with "
            "flowcli sample CKPT -n N --given COL=VALUE"
        )


@app.command()
@handle_errors
def impute(
    checkpoint: CheckpointArg,
    data: InputArg = "-",
    output: OutputOpt = "-",
    draws: Annotated[
        int | None,
        typer.Option(
            "--draws",
            min=1,
            metavar="K",
            help="Multiple imputation: K completed copies of every row, each filled with one draw from p(missing | observed), consecutively, with a '_draw' column (1..K) last.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Random seed of the draws (--draws); the conditional means, averages of draws, use seed 0 unless given. The same seed and --chunk-size give the same output.",
        ),
    ] = None,
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    shard: ShardOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fill in the missing cells of each row from the model's distribution of them given the row's observed
    cells (missing at random). By default one value per cell: the conditional mean for a number (on the
    column's grid: integers stay integers), the most probable label for a category. With --draws K, K
    completed copies of each row, each filled with one draw of its missing cells, and a '_draw' column
    (1..K): multiple imputation. Observed cells are never changed; a column of the model that the input
    lacks is filled in every row; other columns pass through.

    Example: flowcli impute penguins.flow data-samples/penguins.csv -o penguins_completed.csv
    """
    from .given import chunk_seed

    _threads(threads)
    # With --draws K a chunk of rows gives K times as many: read fewer, so memory stays bounded.
    rows = chunk_size if draws is None else max(1, chunk_size // draws)
    # The conditional means are averages of draws: without --seed they are drawn as with --seed 0.
    seed = 0 if seed is None and draws is None else seed

    def complete(model: Any, frame: Any, offset: int) -> Any:
        # Each chunk its own seed (drawn from --seed and where the chunk starts), so chunks differ.
        return model.impute(frame, draws=draws, seed=chunk_seed(seed, offset), row_offset=offset)

    options = _read_options(sep, decimal, encoding, no_header, input_format)
    _stream(checkpoint, data, output, device, rows, complete, options, precision=precision, shard=shard)


@app.command()
@handle_errors
def encode(
    checkpoint: CheckpointArg,
    data: InputArg = "-",
    output: OutputOpt = "-",
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    shard: ShardOpt = None,
    threads: ThreadsOpt = None,
    given: RefusedGivenOpt = None,
) -> None:
    """Map rows to latent columns z0..z{k-1} (the base distribution's space).

    Example: flowcli encode penguins.flow data-samples/penguins.csv -o latent.csv
    """
    _refuse_given(given, "encode", "maps whole rows to latent space")
    _threads(threads)
    _stream(
        checkpoint,
        data,
        output,
        device,
        chunk_size,
        lambda m, f, o: m.encode(f, row_offset=o),
        _read_options(sep, decimal, encoding, no_header, input_format),
        precision=precision,
        shard=shard,
    )


@app.command()
@handle_errors
def decode(
    checkpoint: CheckpointArg,
    data: Annotated[
        str,
        typer.Argument(
            help="Latent table with columns z0..z{k-1}: a table file (.csv, .tsv, .parquet, compressed CSV), a directory of them, or - for stdin.",
            metavar="LATENT",
        ),
    ] = "-",
    output: OutputOpt = "-",
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
    device: DeviceOpt = "auto",
    chunk_size: ChunkOpt = 65536,
    precision: PrecisionOpt = "float64",
    shard: ShardOpt = None,
    threads: ThreadsOpt = None,
    given: RefusedGivenOpt = None,
) -> None:
    """Map latent rows z0..z{k-1} back to rows with the original column names.

    Example: flowcli encode penguins.flow data-samples/penguins.csv | flowcli decode penguins.flow - -o roundtrip.csv
    """
    _refuse_given(given, "decode", "maps latent rows back")
    _threads(threads)
    _stream(
        checkpoint,
        data,
        output,
        device,
        chunk_size,
        lambda m, f, o: m.decode(f, row_offset=o),
        _read_options(sep, decimal, encoding, no_header, input_format),
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
    sep: SepOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    input_format: FormatOpt = None,
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
    threads: ThreadsOpt = None,
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

    _threads(threads)
    reporter = Reporter(quiet=quiet)
    options = _read_options(sep, decimal, encoding, no_header, input_format)
    out = check_output_dir(output)
    model = _load(checkpoint, device)
    frame = read_table(data, options=_knowing(model, options))
    with staged_directory(out) as tmp:
        with _naming(data):  # a column or value of DATA the model refuses
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

    from .describe import describe, render

    description = describe(checkpoint)
    if as_json:
        print(json.dumps(description, indent=2))
        return
    from rich.console import Console

    class StdoutConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError  # exit 141 as every command (handle_errors); rich's own exits 1, silently

    # Not a terminal (a pipe or a file): no colours, and wide enough that tables are not squeezed.
    console = StdoutConsole(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    render(description, console)


def main() -> None:
    app()
