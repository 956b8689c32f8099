"""Conditional questions on DataFrames: sample given values, score targets given the rest, impute.

The tensor work is ``conditional.py``'s; this module turns tables with some cells known into the
network's observed and target masks and back into tables (``Model.sample(given=...)``,
``Model.log_prob(target=...)``, ``Model.impute``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import pandas as pd
import torch

from . import conditional, joint_given
from .conditional import Roles, feature_columns
from .errors import DataError, shown
from .roles.base import bool_from_text
from .schema import redraw_outside, text_labels

if TYPE_CHECKING:
    from .columns import Column
    from .schema import Schema


class Model(Protocol):
    """What these questions need of a ``model.Model`` (which imports this module: no import back)."""

    schema: Schema
    flow: Any  # a model.Flow, whose ``conditional`` and ``preprocess`` answer the questions
    config: Any  # a config.Config: ``training.conditional`` says whether ``conditional`` was fitted

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


GivenLike: TypeAlias = Mapping[str, Any] | pd.DataFrame
MEAN_DRAWS = 256  # draws of a numeric cell's conditional distribution averaged for its conditional mean
DRAW_COLUMN = "_draw"


@dataclass
class Cells:
    """A table's cells as the network's feature rows. ``x``: (n, features) in data units (a stand-in where a
    cell is unknown); ``known``: (n, columns) the cell is given (the column is in the table and the cell is
    not empty); ``log_mass``: (n, columns) 0, or -inf for a value outside its column's support (or an
    invalid one, with ``on_invalid='neg-inf'``). Columns are ``conditional.feature_columns``. ``fixed``: (n,)
    the same for the given cells of the columns without features (a constant column: -inf for any other
    value than its own)."""

    x: np.ndarray
    known: np.ndarray
    log_mass: np.ndarray
    fixed: np.ndarray


def encode_cells(model: Model, frame: pd.DataFrame, row_offset: int = 0, on_invalid: str = "error") -> Cells:
    n = len(frame)
    parts, known, mass = [], [], []
    for col in feature_columns(model.schema):
        if col.name in frame.columns:
            series = frame[col.name].reset_index(drop=True)
            present = series.notna().to_numpy()
        else:
            series, present = pd.Series(np.nan, index=pd.RangeIndex(n)), np.zeros(n, dtype=bool)
        values, log_mass, invalid = col.encode(series, row_offset)
        invalid = [(p, message) for p, message in invalid if present[p]]  # an empty cell is merely unknown
        if invalid:
            if on_invalid == "error":
                raise DataError(min(invalid)[1])
            log_mass[[p for p, _ in invalid]] = -np.inf
        parts += [np.asarray(v, dtype=np.float64) for v in values]
        known.append(present)
        mass.append(np.where(present, log_mass, 0.0))
    x = np.column_stack(parts) if parts else np.zeros((n, 0))
    fixed = sum((mass for _, mass in _featureless_mass(model, frame, row_offset)), np.zeros(n))
    if not known:
        return Cells(x, np.zeros((n, 0), dtype=bool), np.zeros((n, 0)), fixed)
    return Cells(x, np.column_stack(known), np.column_stack(mass), fixed)


def _featureless_mass(model: Model, frame: pd.DataFrame, row_offset: int) -> Iterator[tuple[Column, np.ndarray]]:
    """Per column of the frame that the model reads but gives no features (a constant column): the log mass
    of its given cells (0, or -inf for a value the column never holds), empty cells 0."""
    for col in model.schema.columns:
        if col.rules.reads_values and not col.width and col.name in frame.columns:
            series = frame[col.name].reset_index(drop=True)
            _, log_mass, _ = col.encode(series, row_offset)
            yield col, np.where(series.notna().to_numpy(), log_mass, 0.0)


def parse_targets(options: Sequence[str] | None, split: bool = True) -> list[str] | None:
    """``--target a,b --target c`` as ``['a', 'b', 'c']`` (None without the option). ``split=False``: each
    option is one column name (the API's list, where a name may hold a comma); an empty list is an error."""
    if options is None or (split and not options):
        return None
    names = [name.strip() for option in options for name in (option.split(",") if split else [option])]
    if not names:
        raise DataError("target: no column given; name at least one target column (or none for the whole row)")
    if any(not name for name in names):
        raise DataError(f"--target {','.join(options)!r}: an empty column name; give --target COL[,COL...]")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"--target names {duplicated[0]!r} twice")
    return names


def require_conditional(model: Model, question: str) -> None:
    """Refuse a conditional question of a model fitted without its network (``training.conditional: false``)."""
    if not model.config.training.conditional:
        raise DataError(
            f"{question} needs the network of conditional questions, and this model was fitted with "
            "training.conditional: false; fit it again without that setting"
        )


def check_columns(model: Model, names: Sequence[str], what: str) -> None:
    """A DataError naming the first of ``names`` the model does not read (unknown, or ignored)."""
    read = model.schema.read_names
    for name in names:
        if name in model.schema.names and name not in read:
            raise DataError(
                f"{what} column {name!r} is ignored by the model (not modelled: an identifier, or no values); "
                f"nothing depends on it. The columns it models: {', '.join(read)}"
            )
        if name not in read:
            raise DataError(f"{what} column {name!r} is not a column of the model; its columns: {', '.join(read)}")


def _tensor(model: Model, array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array).to(device=model.device, dtype=model.dtype if array.dtype != bool else torch.bool)


# --- logprob ------------------------------------------------------------------------------------------------


def log_prob(
    model: Model,
    frame: pd.DataFrame,
    target: Sequence[str] | None,
    row_offset: int = 0,
    on_invalid: str = "error",
) -> np.ndarray:
    """log p(targets | the row's other known cells); with ``target`` None, log p(the known cells). A row
    without a known target cell gets NaN (0 without ``target``: the probability of observing nothing is 1)."""
    columns = feature_columns(model.schema)
    names = [c.name for c in columns]
    if target is not None:
        check_columns(model, target, "target")
        for name in target:
            if name not in names:
                raise DataError(f"target column {name!r} is constant or ignored in the model; it has no probability")
            if name not in frame.columns:
                raise DataError(f"target column {name!r} is not in the data")
    read = model.schema.read_names  # constant columns included
    if not any(name in frame.columns for name in read):
        raise DataError(f"the data has none of the model's columns ({', '.join(read)}); nothing to score")
    lacking = [name for name in names if name not in frame.columns]
    question = "logprob --target" if target is not None else "scoring data that lacks some of the model's columns"
    cells = encode_cells(model, frame, row_offset, on_invalid)
    chosen = np.ones(len(names), dtype=bool) if target is None else np.isin(names, list(target))
    targets = cells.known & chosen
    observed = cells.known & ~chosen
    out = np.empty(len(frame))
    # Rows whose known cells are all discrete: exact marginals of the joint's discrete part (joint_given.py).
    # As the network does, a target's probability is among the values it can hold, "missing" not one of
    # them: log P(targets | observed, the targets not missing), the other columns summed out.
    exact = np.flatnonzero(joint_given.answerable_rows(model, cells.x, cells.known))
    if len(exact):
        x = cells.x[exact]
        both, answered = joint_given.log_marginal(model, x, cells.known[exact])
        given, answered_given = joint_given.log_marginal(model, x, observed[exact], present=targets[exact])
        answered &= answered_given
        out[exact[answered]] = (both - given)[answered]
        exact = exact[answered]
    by_network = np.setdiff1d(np.arange(len(frame)), exact)
    if len(by_network):
        require_conditional(
            model, f"scoring data without column {lacking[0]!r}" if target is None and lacking else question
        )
    net, preprocess = model.flow.conditional, model.flow.preprocess
    for sl in _slices(len(by_network)):
        part = by_network[sl]
        with torch.inference_mode():
            rows = conditional.prepare(net, preprocess, _tensor(model, cells.x[part]))
            roles = Roles(net, _tensor(model, observed[part]), _tensor(model, targets[part]))
            out[part] = conditional.log_prob(net, rows, roles).double().cpu().numpy()
    # A target outside its support has probability 0; so has a condition outside the support.
    out += np.where(cells.known, cells.log_mass, 0.0).sum(1)
    out[~np.isfinite(out)] = -np.inf
    # Nothing to score: with targets, the row's are all empty (NaN, written as an empty cell); without, the
    # row has no cell of the model's columns, and observing nothing has probability 1.
    out[~targets.any(1)] = np.nan if target is not None else 0.0
    # A constant column's other value (as a target's condition too) has probability 0.
    out[np.isneginf(cells.fixed) & ~np.isnan(out)] = -np.inf
    return out


def _slices(n: int, size: int = 65536) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# --- sample given -------------------------------------------------------------------------------------------


def given_frame(model: Model, given: GivenLike) -> pd.DataFrame:
    """``given`` as a DataFrame of the model's columns, checked: unknown columns are an error."""
    if isinstance(given, pd.DataFrame):
        # Rows of a table (`--given-file`) may hold the columns the model ignores (an id): left out, as
        # `logprob` passes them by; named one by one (`--given id=...`), they are an error.
        ignored = set(model.schema.names) - set(model.schema.read_names)
        frame = text_labels(given)
        frame = frame.drop(columns=[c for c in frame.columns if c in ignored])
    else:
        for name, value in given.items():
            # A mapping names each condition: a missing value there is a mistake, not "leave it free" (as
            # an empty cell of a given frame is), which would silently answer an unconditional question.
            if pd.api.types.is_scalar(value) and pd.isna(value):
                raise DataError(
                    f"given column {name!r}: {value!r} is a missing value, not a condition; leave the column "
                    "out to leave it free"
                )
        frame = text_labels(pd.DataFrame({k: [v] for k, v in given.items()}))
    check_columns(model, [str(c) for c in frame.columns], "given")
    return frame.reset_index(drop=True)


def check_given(model: Model, frame: pd.DataFrame, cells: Cells, row_offset: int) -> None:
    """A given value outside its column's support is an error: nothing can be drawn given it. So is one its
    samples never hold (an integer or a date outside the training range, to which samples are clipped): the
    rows drawn given it could not come from the model."""
    columns = feature_columns(model.schema)
    bad = cells.known & np.isneginf(cells.log_mass)
    for j, col in enumerate(columns):
        if col.name in frame.columns:
            bad[:, j] |= cells.known[:, j] & col.never_drawn(frame[col.name].reset_index(drop=True), row_offset)
    # ``cells.fixed`` holds their sum already: the columns are looked at again only to name the one at fault.
    for constant, mass in _featureless_mass(model, frame, row_offset) if np.isneginf(cells.fixed).any() else ():
        if np.isneginf(mass).any():
            row = int(np.flatnonzero(np.isneginf(mass))[0])
            raise DataError(
                f"given column {constant.name!r}, row {row_offset + row + 1}: {shown(frame[constant.name].iloc[row])} "
                f"is not the column's one value in the training data ({shown(constant.value)}); nothing can be "
                "drawn given it"
            )
    _refuse_first(
        bad,
        frame,
        columns,
        row_offset,
        "given column",
        "is outside the values the column can hold (its support, or for integers and dates the training range "
        "that samples keep to); nothing can be drawn given it",
    )


def _refuse_first(
    bad: np.ndarray, frame: pd.DataFrame, columns: list[Column], row_offset: int, what: str, why: str
) -> None:
    """A DataError naming the first cell that ``bad`` (n, columns) marks: ``<what> 'name', row r: value <why>``."""
    if bad.any():
        row, j = (int(i[0]) for i in np.nonzero(bad))
        name = columns[j].name
        raise DataError(f"{what} {name!r}, row {row_offset + row + 1}: {shown(frame[name].iloc[row])} {why}")


def sample_given(
    model: Model, n: int, given: GivenLike, generator: torch.Generator, batch: int, row_offset: int = 0
) -> Iterator[pd.DataFrame]:
    """``n`` rows per row of ``given``, in its order: the given cells exactly, the others drawn from
    p(others | given). Complete rows (see ``conditional.py`` on missing values)."""
    frame = given_frame(model, given)
    cells = encode_cells(model, frame, row_offset)
    check_given(model, frame, cells, row_offset)
    total = n * len(frame)
    for sl in _slices(total, batch):
        source = np.arange(sl.start, sl.stop) // max(n, 1)
        x = _draw(model, cells.x[source], cells.known[source], ~cells.known[source], generator)
        out = model.schema.to_frame(x)
        yield _with_given(out, frame, cells, source)


def _draw(
    model: Model, x: np.ndarray, observed: np.ndarray, target: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    """Feature rows with the ``target`` cells drawn given the ``observed`` ones: by the joint model itself
    where every observed cell is discrete (``joint_given.py``), else by the conditional network. A row whose
    drawn cells hold a value beyond an integer or date column's training range is drawn again, as in
    ``schema.redraw_outside``."""
    out = _draw_once(model, x, observed, target, generator)

    def redraw(rows: np.ndarray) -> np.ndarray:
        return _draw_once(model, x[rows], observed[rows], target[rows], generator)

    return redraw_outside(model.schema, out, redraw, target)


def _draw_once(
    model: Model, x: np.ndarray, observed: np.ndarray, target: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    out = np.empty_like(x)
    exact = joint_given.answerable_rows(model, x, observed)
    if exact.any():
        drawn, answered = joint_given.draw(model, x[exact], observed[exact], generator)
        exact[np.flatnonzero(exact)[~answered]] = False
        out[exact] = drawn[answered]
    if not exact.all():
        require_conditional(model, "sample --given")
        out[~exact] = _draw_by_network(model, x[~exact], observed[~exact], target[~exact], generator)
    return out


def _draw_by_network(
    model: Model, x: np.ndarray, observed: np.ndarray, target: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    net, preprocess = model.flow.conditional, model.flow.preprocess
    with torch.inference_mode():
        features = _tensor(model, x)
        rows = conditional.prepare(net, preprocess, features)
        roles = Roles(net, _tensor(model, observed), _tensor(model, target))
        drawn = conditional.sample(net, rows, roles, generator)
        return conditional.to_features(net, preprocess, drawn, features, roles).double().cpu().numpy()


def _with_given(out: pd.DataFrame, frame: pd.DataFrame, cells: Cells, source: np.ndarray) -> pd.DataFrame:
    """``out`` with the given cells as given (``_merge``: exactly, for numbers that decoding would round)."""
    for name in frame.columns:
        if name not in out.columns:
            continue  # a constant or ignored column
        given = frame[name].to_numpy()[source]
        known = pd.notna(given)
        if known.any():
            out[name] = _merge(out[name], pd.Series(given, index=out.index), known)
    return out


def _merge(drawn: pd.Series, kept: pd.Series, keep: np.ndarray) -> pd.Series:
    """``kept`` where ``keep``, else ``drawn``, in ``drawn``'s dtype (the column's), and the kept values as
    they are: never clamped to the training range nor rounded, as decoding would do them.

    A kept value that is not of the column's type is converted, its value kept: text of an integer column
    (``070``, ``+70``) becomes the number, a date given as text in a date column the date (in the column's
    time zone), so an output column holds one type (a Parquet file can store it). One that does not
    convert at all takes the decoded cell: the model's reading of the same cell (``drawn`` decodes the
    known cells too)."""
    merged = drawn.astype(object).where(~keep, kept.astype(object))
    try:
        typed = merged.astype(drawn.dtype)
        if (typed.astype(object).where(keep, None) == merged.where(keep, None)).where(keep, True).all():
            return typed
    except (TypeError, ValueError, OverflowError):
        pass
    converted = _converted(kept, drawn.dtype)
    use = keep & converted.notna().to_numpy()
    merged = drawn.astype(object).where(~use, converted.astype(object))
    try:
        return merged.astype(drawn.dtype)
    except (TypeError, ValueError, OverflowError):
        return merged.infer_objects()


def _converted(values: pd.Series, dtype: Any) -> pd.Series:
    """``values`` read as the type ``dtype`` holds (numbers, dates), missing where one does not read so;
    other dtypes (labels, text) as they are."""
    kind = getattr(dtype, "kind", "O")
    if kind == "M":
        dates = pd.to_datetime(values, errors="coerce", format="mixed")
        zone = getattr(dtype, "tz", None)
        if zone is not None and dates.dt.tz is None:
            dates = dates.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        return dates
    if kind in "iuf":
        numbers = pd.to_numeric(values, errors="coerce")
        if kind in "iu":  # a whole number only: 3.5 does not read as an integer
            numbers = numbers.where(numbers == np.round(numbers))
        return numbers
    if kind == "b":  # "false" as False (``astype(bool)`` makes any text True)
        read = values.map(bool_from_text)
        return read.where(read.map(lambda v: isinstance(v, (bool, np.bool_))))
    return values


# --- impute -------------------------------------------------------------------------------------------------


def impute(
    model: Model, frame: pd.DataFrame, draws: int | None, generator: torch.Generator, row_offset: int = 0
) -> pd.DataFrame:
    """Every unknown cell of the model's columns filled (see ``Model.impute``)."""
    cells = encode_cells(model, frame, row_offset)
    columns = feature_columns(model.schema)
    # Multiple imputation of a row whose known cells are all labels is the joint model's (``_draw``): only
    # the other rows, and conditional means, need the network.
    unknown = (~cells.known).any(1)
    if draws is None or (unknown & ~joint_given.answerable_rows(model, cells.x, cells.known)).any():
        require_conditional(model, "impute" if draws is None else "impute --draws of a row with a known number")
    _check_possible(frame, cells, columns, row_offset)
    n = len(frame)
    if draws is None:
        x = _conditional_means(model, cells, columns, generator)
        source = np.arange(n)
    else:
        source = np.repeat(np.arange(n), draws)
        x = _draw(model, cells.x[source], cells.known[source], ~cells.known[source], generator)
    filled = model.schema.to_frame(x)
    out = frame.reset_index(drop=True).iloc[source].reset_index(drop=True)
    for j, col in enumerate(columns):
        known = cells.known[source, j]
        if col.name in out.columns:
            out[col.name] = _merge(filled[col.name], out[col.name], known)
        else:
            out[col.name] = filled[col.name]
    for name in filled.columns.difference([c.name for c in columns], sort=False):  # constant columns: their value
        if name in out.columns:
            out[name] = out[name].where(out[name].notna(), filled[name])
        else:
            out[name] = filled[name]
    if draws is not None:
        # Last, as documented; an input column of that name is replaced (as `logprob` replaces a `logprob`).
        out = out.drop(columns=[DRAW_COLUMN], errors="ignore")
        out[DRAW_COLUMN] = np.tile(np.arange(1, draws + 1), n)
    out.index = frame.index[source]  # each completed row under its input row's label, so it joins back
    return out


def _check_possible(frame: pd.DataFrame, cells: Cells, columns: list[Column], row_offset: int) -> None:
    """An observed value of probability 0 (outside its column's support: -5 in a column of amounts >= 0) is
    an error: no completion of its row is possible, and the network would condition on a value it cannot
    place. Values merely beyond the training range (an age of 90 where training ended at 79) are conditioned
    on as they are."""
    bad = cells.known & np.isneginf(cells.log_mass)
    why = "is outside the values the column can hold (probability 0); its row cannot be completed given it"
    _refuse_first(bad, frame, columns, row_offset, "column", why)


def _conditional_means(model: Model, cells: Cells, columns: list[Column], generator: torch.Generator) -> np.ndarray:
    """Feature rows with every unknown cell at its conditional mean (numbers) or most probable label
    (categories), each from its own exact one-cell conditional p(cell | known cells)."""
    layout = model.flow.conditional.layout
    x = cells.x.copy()
    for j, col in enumerate(columns):
        rows = np.flatnonzero(~cells.known[:, j])
        features = [i for i, c in enumerate(layout.column_of) if c == j]
        for sl in _slices(len(rows)):
            part = rows[sl]
            target = np.zeros((len(part), len(columns)), dtype=bool)
            target[:, j] = True
            with torch.inference_mode():
                x[part] = _one_cell(model, x[part], cells.known[part], target, features, col, generator)
    return x


def _one_cell(
    model: Model,
    x: np.ndarray,
    known: np.ndarray,
    target: np.ndarray,
    features: list[int],
    col: Column,
    generator: torch.Generator,
) -> np.ndarray:
    """``x`` with one column's cell (its ``features``) set to its conditional mean or most probable label."""
    net, preprocess = model.flow.conditional, model.flow.preprocess
    layout = net.layout
    features_t = _tensor(model, x)
    rows = conditional.prepare(net, preprocess, features_t)
    disc = [i for i in features if layout.levels[i] > 0]
    cont = [i for i in features if layout.levels[i] == 0]
    if disc and cont:  # the value's factor is read with the state "a value" (code 0) in the input
        rows.codes[:, net.disc.index(disc[0])] = 0
        rows.present[:, net.cont.index(cont[0])] = True
    roles = Roles(net, _tensor(model, known), _tensor(model, target))
    logps, weights, means, log_scale = net.split_outputs(net.outputs(roles.inputs(net, rows), roles.context(net, rows)))
    out = features_t.clone()
    if not cont:  # a categorical column: the most probable label
        i = disc[0]
        out[:, i] = logps[net.disc.index(i)].argmax(1).to(out.dtype) + 0.5
        return out.double().cpu().numpy()
    c = net.cont.index(cont[0])
    draws = torch.stack(
        [conditional.draw_values(net, c, weights, means, log_scale, generator) for _ in range(MEAN_DRAWS)], 1
    )  # (n, draws) in standardized units
    y = rows.y.repeat_interleave(MEAN_DRAWS, 0)
    y[:, c] = draws.reshape(-1)
    values = preprocess.inverse(y)[0][:, c].reshape(-1, MEAN_DRAWS).mean(1)
    if disc:  # E[x] = P(value) E[x | value] + sum over atoms P(atom) atom
        probs = logps[net.disc.index(disc[0])].exp()
        atoms = torch.tensor(
            [0.0, *([0.0] if col.missing else []), *(col.atoms or [])], dtype=out.dtype, device=out.device
        )
        values = probs[:, 0] * values + (probs[:, 1:] * atoms[1:]).sum(1)
        out[:, disc[0]] = 0.5  # a value (the mean is one, even where the likeliest state is an atom)
    out[:, cont[0]] = values
    return out.double().cpu().numpy()
