"""The weight average (training.ema): its law, the swap, and that fit validates and saves it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flowcli.averaging import WeightAverage
from flowcli.config import parse_config
from flowcli.fitting import fit
from flowcli.train import SEPARATE_PARTS


def test_rate_warms_up_then_stays_at_one_minus_decay() -> None:
    average = WeightAverage([torch.zeros(2)], decay=0.999)
    assert average.rate(0) == pytest.approx(1 - 1 / 10)
    assert average.rate(90) == pytest.approx(1 - 91 / 100)
    assert average.rate(10**6) == pytest.approx(0.001)


def test_update_is_an_exponential_moving_average_and_swapped_restores_the_weights() -> None:
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    average = WeightAverage([p], decay=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([4.0, 2.0]))
    average.update(10**6)  # rate 0.5 once warmed up
    assert torch.equal(average.average[0], torch.tensor([2.0, 6.0]))
    with pytest.raises(RuntimeError), average.swapped():
        assert torch.equal(p.detach(), torch.tensor([2.0, 6.0]))
        raise RuntimeError("the trained weights come back even when the block fails")
    assert torch.equal(p.detach(), torch.tensor([4.0, 2.0]))


def _fit(ema: float) -> object:
    rng = np.random.default_rng(0)
    a = rng.normal(size=600)
    table = pd.DataFrame({"a": a, "b": a**2 + 0.2 * rng.normal(size=600)})
    config = parse_config(
        {
            "layers": [{"type": "maf", "hidden": [16], "repeat": 2}],
            "training": {"epochs": 4, "batch_size": 64, "lr": 0.003, "schedule": "constant", "ema": ema},
        }
    )
    return fit(table, config, device=torch.device("cpu"), seed=3)


def test_fit_saves_the_averaged_weights_and_zero_turns_averaging_off() -> None:
    averaged, raw = _fit(0.999), _fit(0.0)
    assert averaged.info["best_epoch"] == raw.info["best_epoch"] == 4  # early epochs keep improving
    names = [name for name, _ in averaged.flow.named_parameters() if not name.startswith(SEPARATE_PARTS)]
    saved = dict(averaged.flow.named_parameters())
    # The best (= last) epoch's saved weights are the average, not the current weights...
    for name, avg in zip(names, averaged.train_state.average, strict=True):
        assert torch.allclose(saved[name].float(), avg)
    assert any(not torch.allclose(saved[n].float(), averaged.train_state.weights[n]) for n in names)
    # ...and without averaging they are the current weights themselves.
    raw_saved = dict(raw.flow.named_parameters())
    assert raw.train_state.average == []
    for name in names:
        assert torch.allclose(raw_saved[name].float(), raw.train_state.weights[name])
