"""umnn, sos, residual and cnf end to end: fitted through the CLI on a 2-D table, each model's density
integrates to 1 over a grid in data units, decode(encode(x)) returns x, and every command works.
Plus the properties the looped layer tests cannot see: the residual training estimator is unbiased, and
sos stays finite on outliers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import banana, grid_integral
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.layers import build_layer
from flowcli.model import load_model

# Small stacks, trained briefly: enough to move every parameter away from its identity-like start.
FAMILIES = {
    "umnn": [{"type": "umnn", "hidden": [32], "integrand_hidden": [16], "steps": 16, "repeat": 2}],
    "sos": [{"type": "sos", "hidden": [32], "repeat": 2}],
    "residual": [{"type": "actnorm"}, {"type": "residual", "hidden": [32], "repeat": 2}],
    "cnf": [{"type": "cnf", "hidden": [16], "atol": 1e-3, "rtol": 1e-3, "eval_tolerance": 1e-6}],
}

runner = CliRunner()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    frame = banana(400, seed=1)
    path = tmp_path_factory.mktemp("families") / "banana.csv"
    frame.to_csv(path, index=False)
    return frame, path


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fitted(
    request: pytest.FixtureRequest, table: tuple[pd.DataFrame, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump({"layers": FAMILIES[request.param], "training": {"epochs": 8, "batch_size": 100, "lr": 0.005}})
    )
    ckpt = root / "model.flow"
    result = runner.invoke(app, ["fit", str(table[1]), "-c", str(config), "-o", str(ckpt), "--seed", "0", "--quiet"])
    assert result.exit_code == 0, result.stderr
    return ckpt


def test_density_integrates_to_one_and_round_trips(fitted: Path, table: tuple[pd.DataFrame, Path]) -> None:
    model = load_model(str(fitted))
    frame = table[0]
    assert abs(grid_integral(model, frame, points=150) - 1) < 0.02
    back = model.decode(model.encode(frame.head(100)))
    np.testing.assert_allclose(back.to_numpy(), frame.head(100).to_numpy(), atol=1e-3, rtol=0)


def test_every_command_works(fitted: Path, table: tuple[pd.DataFrame, Path]) -> None:
    frame, csv = table
    model = load_model(str(fitted))
    sampled = runner.invoke(app, ["sample", str(fitted), "-n", "50", "--seed", "1"])
    assert sampled.exit_code == 0, sampled.stderr
    rows = pd.read_csv(io.StringIO(sampled.stdout))
    assert list(rows.columns) == list(frame.columns) and len(rows) == 50 and np.isfinite(rows.to_numpy()).all()

    scored = runner.invoke(app, ["logprob", str(fitted), str(csv), "--precision", "float64"])
    assert scored.exit_code == 0, scored.stderr
    scores = pd.read_csv(io.StringIO(scored.stdout))["logprob"]
    np.testing.assert_allclose(scores, model.log_prob(frame), rtol=1e-9, atol=1e-9)
    scored = runner.invoke(app, ["logprob", str(fitted), str(csv)])  # the default: float32, as trained
    assert scored.exit_code == 0, scored.stderr
    in_float32 = load_model(str(fitted), dtype=torch.float32).log_prob(frame)
    np.testing.assert_allclose(pd.read_csv(io.StringIO(scored.stdout))["logprob"], in_float32, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(in_float32, model.log_prob(frame), rtol=1e-3, atol=1e-3)

    encoded = runner.invoke(app, ["encode", str(fitted), str(csv)])
    assert encoded.exit_code == 0, encoded.stderr
    decoded = runner.invoke(app, ["decode", str(fitted), "-"], input=encoded.stdout)
    assert decoded.exit_code == 0, decoded.stderr
    np.testing.assert_allclose(pd.read_csv(io.StringIO(decoded.stdout)).to_numpy(), frame.to_numpy(), atol=1e-3, rtol=0)


def test_residual_roulette_estimator_is_unbiased_and_truncation_is_not() -> None:
    torch.manual_seed(0)
    layer = build_layer("residual", 2, 0, {"hidden": [8], "terms": 1}).double()
    with torch.no_grad():  # large weights: spectral normalization is active, Lip(g) is near 0.9
        for p in layer.parameters():
            p.copy_(3 * torch.randn_like(p))
    x = torch.randn(1, 2, dtype=torch.float64)
    exact = layer.eval()(x)[1].item()
    layer.train()
    rows = x.expand(32, 2)  # one roulette draw per call, one Hutchinson probe per row

    def estimates(estimator: str, calls: int = 1200) -> torch.Tensor:
        layer.estimator = estimator
        with torch.no_grad():
            return torch.stack([layer(rows)[1].mean() for _ in range(calls)])

    roulette = estimates("roulette")
    error = abs(roulette.mean().item() - exact)
    assert error < 4 * roulette.std().item() / len(roulette) ** 0.5, (roulette.mean().item(), exact)
    # The check has power: one truncated term (the trace alone) is detectably biased.
    truncated = estimates("truncated")
    assert abs(truncated.mean().item() - exact) > 4 * truncated.std().item() / len(truncated) ** 0.5


def test_sos_is_finite_and_invertible_on_outliers() -> None:
    torch.manual_seed(0)
    layer = build_layer("sos", 2, 0, {}).double().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
        x = torch.tensor([[1e6, -1e6], [-3e4, 50.0]], dtype=torch.float64)
        z, ladj = layer(x)
        x_back, _ = layer.inverse(z)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    # Huge conditioning values make z huge too: the root solve is exact in z, and x as exact as float64
    # allows at that scale of z (an error in z of eps |z| moves x by at most eps |z| / c, c >= exp(-5)).
    with torch.no_grad():
        torch.testing.assert_close(layer(x_back)[0], z, rtol=1e-12, atol=0)
    assert ((x_back - x).abs() <= 1e-12 * z.abs()).all()


def test_cnf_trains_after_scoring_in_inference_mode() -> None:
    """torchdiffeq is imported on first use; if that first use is a score under inference mode, its
    tableaus must still be usable with autograd later (fresh process: the import must not have happened)."""
    code = (
        "import torch\n"
        "from flowcli.layers import build_layer\n"
        "torch.manual_seed(0)\n"
        "layer = build_layer('cnf', 2, 0, {}).double()\n"
        "with torch.no_grad():\n"
        "    [p.add_(0.1 * torch.randn_like(p)) for p in layer.parameters()]\n"
        "x = torch.randn(4, 2, dtype=torch.float64)\n"
        "with torch.inference_mode():\n"
        "    layer.eval()(x)\n"
        "layer.train()(x)[1].sum().backward()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr
