"""A config may hold only some sections: the others come from the packaged default, section by section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.config import TrainingConfig, load_config, parse_config, resolve_config
from flowcli.errors import ConfigError
from flowcli.model import load_model

runner = CliRunner()
DEFAULT = load_config(None)


def test_a_config_of_only_columns_is_the_default_with_those_columns() -> None:
    config = parse_config({"columns": {"sex": "categorical"}})
    assert config.columns and config.columns != DEFAULT.columns
    assert (config.base, config.layers, config.training) == (DEFAULT.base, DEFAULT.layers, DEFAULT.training)


def test_only_training_or_only_base_take_the_rest_from_the_default() -> None:
    training = parse_config({"training": {"epochs": 7}})
    assert training.layers == DEFAULT.layers and training.base == DEFAULT.base and training.training.epochs == 7
    base = parse_config({"base": {"type": "studentt"}})
    assert base.base.type == "studentt" and base.layers == DEFAULT.layers and base.training == DEFAULT.training
    assert parse_config(None) == DEFAULT  # an empty file: the default


def test_given_sections_replace_the_defaults_whole() -> None:
    config = parse_config({"layers": ["maf"], "training": {"epochs": 3}})
    assert [spec.type for spec in config.layers] == ["maf"]  # not appended to the default's five layers
    # A given training section is the user's: what it leaves out takes the built-in values.
    assert config.training == dataclasses.replace(TrainingConfig(), epochs=3)
    # ... which are the default file's: a section without lr keeps its short-run rate (`lr: auto`).
    assert TrainingConfig() == DEFAULT.training
    assert parse_config({"layers": ["maf"]}).training == DEFAULT.training
    with pytest.raises(ConfigError, match="layers: expected a non-empty list"):
        parse_config({"layers": []})  # given, and empty: still an error


def test_fit_with_a_config_of_only_columns(tmp_path: Path) -> None:
    cfg = tmp_path / "columns.yaml"
    cfg.write_text("columns:\n  body_mass_g: positive\n")  # a role never inferred
    assert resolve_config(str(cfg)).layers == DEFAULT.layers
    out = tmp_path / "p.flow"
    data = ROOT / "data-samples" / "penguins.csv"
    result = runner.invoke(app, ["fit", str(data), "-c", str(cfg), "-o", str(out), "--epochs", "1", "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    model = load_model(str(out))
    assert [spec.type for spec in model.config.layers] == [spec.type for spec in DEFAULT.layers]
    assert {c.name: c.role for c in model.schema.columns}["body_mass_g"] == "positive"


def test_a_misspelled_preset_name_gets_the_presets() -> None:
    from flowcli.config import resolve_config
    from flowcli.errors import ConfigError

    with pytest.raises(ConfigError, match="nfs: no such preset or config file; did you mean 'nsf'\\? presets: .*maf"):
        resolve_config("nfs")
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        resolve_config("nope.yaml")
