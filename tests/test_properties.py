"""Property-based tests: random tables and configs fed to the readers, the schema, the model and the
config parser. The only acceptable outcomes are a result or a FlowcliError (which the CLI prints as
one line); any other exception would reach the user as a traceback."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowcli.config import TrainingConfig, class_options, load_yaml_text, parse_config
from flowcli.errors import FlowcliError
from flowcli.io import iter_table, read_table
from flowcli.layers import LAYERS
from flowcli.model import Flow
from flowcli.schema import Schema

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# --- tables --------------------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["1e300", "-1e308", "1e400", "nan", "NaN", "inf", "-inf", "", " ", "1,5", "0x10", "1_000", "+3", ".5"]
    ),
)
cells = st.one_of(
    numbers, numbers, st.text(max_size=8), st.sampled_from(['"', '""', "a,b", "line\nbreak", "ü", "\x00", "\r"])
)
names = st.one_of(st.sampled_from(["height_cm", "weight_kg", "a", "b", "logprob", "z0"]), st.text(max_size=6))


@st.composite
def csv_texts(draw: st.DrawFn) -> bytes:
    """CSV with random headers, cells, quoting, delimiters and line endings; sometimes cut mid-way."""
    width = draw(st.integers(1, 4))
    header = draw(st.lists(names, min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=6))
    out = io.StringIO()
    writer = csv.writer(
        out,
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
    )
    writer.writerow(header)
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


tables = st.one_of(csv_texts(), csv_texts(), st.binary(max_size=300))


def outcome(fn, *args, **kwargs):
    """The result of ``fn``, or None if it raised a FlowcliError (anything else fails the test)."""
    try:
        return fn(*args, **kwargs)
    except FlowcliError:
        return None


@SETTINGS
@given(data=tables)
@example(data=b"height_cm,\r,height_cm\n")  # a carriage return inside the header once escaped as csv.Error
@example(data=b"a,height_cm,b,0\n0,0,0,0\n0,nan,0,0\n")  # no cell of the model's columns: once NaN
def test_readers_give_a_table_or_a_flowcli_error(data: bytes, banana_model, tmp_path: Path) -> None:
    whole = outcome(read_table, "-", stdin=io.BytesIO(data))
    chunks = outcome(lambda: list(iter_table("-", chunk_rows=2, stdin=io.BytesIO(data))))
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    from_file = outcome(read_table, str(path))
    assert (whole is None) == (from_file is None)
    for frame in [whole, *(chunks or [])]:
        if frame is None:
            continue
        assert isinstance(frame, pd.DataFrame) and len(frame) and frame.shape[1]
        outcome(Schema.infer, frame)
        scores = outcome(banana_model.log_prob, frame)
        if scores is not None:
            assert len(scores) == len(frame) and not np.isnan(scores).any()
        latent = outcome(banana_model.encode, frame)
        if latent is not None:
            assert np.isfinite(latent.to_numpy()).all()


@SETTINGS
@given(
    st.lists(
        st.lists(st.one_of(st.floats(width=64), st.integers(-(10**20), 10**20)), min_size=2, max_size=2),
        min_size=1,
        max_size=6,
    )
)
def test_scoring_any_numbers_never_gives_nan(banana_model, rows: list) -> None:
    frame = pd.DataFrame(rows, columns=["height_cm", "weight_kg"])
    scores = outcome(banana_model.log_prob, frame)
    if scores is not None:
        assert not np.isnan(scores).any() and (scores < np.inf).all()


# --- configs -------------------------------------------------------------------------------------------

KEYS = [
    "base",
    "layers",
    "training",
    "columns",
    "type",
    "hidden",
    "repeat",
    "order",
    "activation",
    "mask",
    "scale_bound",
    *TrainingConfig.__dataclass_fields__,
]
VALUES = [
    "maf",
    "permute",
    "linear",
    "actnorm",
    "affine_coupling",
    "additive_coupling",
    "normal",
    "reverse",
    "random",
    "cosine",
    "plateau",
    "constant",
    "relu",
    "tanh",
    "alternate",
    "half",
    "1.0e-3",
    "1e30",
    "nan",
]


def scalars(max_int: int) -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(), st.integers(-3, max_int), st.floats(), st.sampled_from(VALUES), st.text(max_size=5)
    )


def config_trees(max_int: int) -> st.SearchStrategy:
    return st.recursive(
        scalars(max_int),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=4),
        ),
        max_leaves=20,
    )


def configs(max_int: int) -> st.SearchStrategy:
    """Mostly config-shaped mappings whose values are often valid (so validation goes deep and flows
    get built), with wrong types, out-of-range values and arbitrary trees mixed in at every level."""
    layer_types = st.one_of(
        st.sampled_from(VALUES[:6]),
        st.sampled_from(VALUES[:6]),
        st.lists(st.sampled_from(VALUES[:6]), max_size=2),
        st.integers(),
        st.none(),
    )
    options = {
        "hidden": st.lists(st.integers(-2, max_int), max_size=3) | scalars(max_int),
        "repeat": st.integers(-1, 3) | scalars(max_int),
        "order": st.sampled_from(["reverse", "random", "alternate", "sideways"]),
        "activation": st.sampled_from(["relu", "tanh", "elu", "gelu", "none"]),
        "mask": st.sampled_from(["alternate", "half", "quarter"]),
        "scale_bound": st.floats(-1, 10) | st.sampled_from(["1e30", "2.0e-1", "x"]),
        "bogus": scalars(max_int),
    }
    typed = [
        st.fixed_dictionaries(
            {"type": st.just(name)}, optional={k: options.get(k, scalars(max_int)) for k in class_options(cls)}
        )
        for name, cls in sorted(LAYERS.items())
    ]
    layer = st.one_of(*typed, st.fixed_dictionaries({"type": layer_types}, optional=options))
    training = st.fixed_dictionaries(
        {},
        optional={
            "epochs": st.integers(-1, 5) | scalars(max_int),
            "batch_size": st.integers(-1, 600),
            "patience": st.integers(-1, 30),
            "lr": st.floats(-1, 1) | st.sampled_from(["1.0e-3", "1e30", "nan", ".5"]),
            "val_fraction": st.floats(-0.5, 1.5),
            "weight_decay": st.floats() | st.integers(),
            "grad_clip": st.floats(),
            "max_rows": st.integers(-5, 10**6),
            "schedule": st.sampled_from(["cosine", "plateau", "constant", "linear"]),
            "trainig": scalars(max_int),
        },
    )
    shaped = st.fixed_dictionaries(
        {
            "layers": st.lists(
                st.one_of(layer, layer, layer, st.sampled_from(VALUES[:6]), config_trees(max_int)), max_size=3
            )
        },
        optional={
            "training": training | config_trees(max_int),
            "columns": config_trees(max_int),
            "base": st.fixed_dictionaries({"type": st.sampled_from(["normal", "gauss"]) | layer_types})
            | config_trees(max_int),
        },
    )
    return st.one_of(shaped, shaped, shaped, config_trees(max_int))


@SETTINGS
@given(raw=configs(max_int=10**12))
def test_config_parser_gives_a_config_or_a_flowcli_error(raw: object) -> None:
    text = yaml.safe_dump(raw)
    parsed = outcome(load_yaml_text, text, "c.yaml")
    config = outcome(parse_config, parsed)
    if config is not None:
        again = parse_config(config.to_dict())  # what a checkpoint stores must load again, unchanged
        assert yaml.safe_dump(again.to_dict()) == yaml.safe_dump(config.to_dict())


@SETTINGS
@given(raw=configs(max_int=24))
def test_a_valid_config_builds_a_flow_or_gives_a_flowcli_error(raw: object) -> None:
    config = outcome(parse_config, raw)
    if config is None:
        return
    schema = Schema.infer(pd.DataFrame({"a": [0.0, 1.0, 3.0], "b": [1.0, 0.0, 2.0], "c": [5.0, 4.0, 4.5]}))
    flow = outcome(Flow, schema, config)
    if flow is not None:
        z, ladj = flow(torch.randn(4, 3))
        assert z.shape == (4, 3) and ladj.shape == (4,)


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_text_as_yaml_gives_a_value_or_a_flowcli_error(text: str) -> None:
    outcome(parse_config, outcome(load_yaml_text, text, "c.yaml"))


@pytest.mark.parametrize(
    "text", ["training: {lr: 1.0e30}", "training: {lr: 1e-3}", "training: {lr: 1.0e+30}", "training: {lr: '2E-4'}"]
)
def test_float_options_accept_exponents_without_sign_or_dot(text: str) -> None:
    """PyYAML reads 1.0e30 and 1e-3 as strings (YAML 1.1) but 1.0e+30 as a float; all mean a number."""
    config = parse_config(load_yaml_text("layers: [maf]\n" + text, "c.yaml"))
    assert config.training.lr == float(text.rsplit(": ", 1)[1].strip("}'"))


@pytest.mark.parametrize("value", ["'1e999'", "'nan'", "'inf'", "'1_000'", "' 1'", "'1e3x'", ".inf"])
def test_float_options_refuse_other_strings_and_non_finite_values(value: str) -> None:
    with pytest.raises(FlowcliError, match="training.lr"):
        parse_config(load_yaml_text(f"layers: [maf]\ntraining: {{lr: {value}}}", "c.yaml"))
