"""Sharding, streaming statistics, the shuffle buffer, out-of-core fit, per-file outputs, bf16 and compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import SMALL_CONFIG, banana
from typer.testing import CliRunner

import flowcli
from flowcli import accel
from flowcli.cli import app
from flowcli.config import parse_config
from flowcli.datasource import Shard, StreamingData, row_groups, shard_groups, shuffle_batches, validation_mask
from flowcli.distributed import DistContext
from flowcli.fitting import fit
from flowcli.model import load_model, save_model
from flowcli.moments import Moments, merge_all, row_hash, schema_from_moments
from flowcli.schema import Schema
from flowcli.train import Trainer

runner = CliRunner()
CPU = torch.device("cpu")


def write_parquet_dir(root: Path, frame: pd.DataFrame, files: int, row_group_size: int) -> Path:
    root.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), files)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, root / f"part-{i:02d}.parquet", row_group_size=row_group_size)
    (root / "_SUCCESS").write_text("")  # marker files of Spark-style outputs are skipped
    return root


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = banana(3000, seed=3)
    frame["constant"] = 7  # an int column that never changes: not modelled
    return write_parquet_dir(tmp_path_factory.mktemp("pq") / "table", frame, files=3, row_group_size=250), frame


# ------------------------------------------------------------------------------------- sharding


def rank_rows(path: str, world: int) -> list[np.ndarray]:
    out = []
    for rank in range(world):
        shard = Shard(path, DistContext(rank=rank, world=world), chunk_rows=97)
        rows = [r for r, _ in shard.chunks()]
        out.append(np.concatenate(rows) if rows else np.zeros(0, dtype=int))
    return out


def test_parquet_row_groups_are_dealt_round_robin(parquet_dir: tuple[Path, pd.DataFrame]) -> None:
    path, frame = parquet_dir
    groups, names = row_groups([str(p) for p in sorted(path.glob("*.parquet"))])
    assert names == list(frame.columns) and sum(g.rows for g in groups) == len(frame)
    mine, filtered = shard_groups(groups, DistContext(rank=1, world=3))
    assert mine == groups[1::3] and not filtered
    parts = rank_rows(str(path), 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(frame)))  # disjoint and complete
    assert max(map(len, parts)) - min(map(len, parts)) <= 250  # balanced to within a row group


def test_csv_rows_are_split_by_index_modulo_world(tmp_path: Path) -> None:
    frame = banana(1001)
    frame.to_csv(tmp_path / "t.csv", index=False)
    parts = rank_rows(str(tmp_path / "t.csv"), 2)
    assert (parts[0] % 2 == 0).all() and (parts[1] % 2 == 1).all()
    assert len(parts[0]) + len(parts[1]) == 1001
    # The matrix rows are the right rows of the table, not just the right indices.
    shard = Shard(str(tmp_path / "t.csv"), DistContext(rank=1, world=2), chunk_rows=100)
    rows, matrix = zip(*shard.chunks(), strict=False)
    np.testing.assert_array_equal(np.concatenate(matrix), frame.to_numpy()[np.concatenate(rows)])


def test_fewer_row_groups_than_ranks_falls_back_to_row_modulo(tmp_path: Path) -> None:
    frame = banana(100)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "one.parquet")
    parts = rank_rows(str(tmp_path / "one.parquet"), 3)
    assert [len(p) for p in parts] == [34, 33, 33] and all((p % 3 == r).all() for r, p in enumerate(parts))


# ---------------------------------------------------------------------------------- statistics


def test_streamed_moments_match_the_in_memory_schema(parquet_dir: tuple[Path, pd.DataFrame]) -> None:
    path, frame = parquet_dir
    frame = frame.assign(count=np.arange(len(frame)) % 500 + 3)  # whole numbers over a wide range: integer
    root = path.parent / "with_count"
    if not root.exists():
        write_parquet_dir(root, frame, files=3, row_group_size=250)
    expected = Schema.infer(frame)
    # Moments of uneven chunks on three "ranks", merged: the statistics of the whole table.
    per_rank = []
    for rank in range(3):
        shard = Shard(str(root), DistContext(rank=rank, world=3), chunk_rows=61)
        m = Moments()
        for rows, matrix in shard.chunks():
            m = m.merge(Moments.of(matrix, rows))
        per_rank.append(m)
    schema = schema_from_moments(list(frame.columns), [str(frame[c].dtype) for c in frame.columns], merge_all(per_rank))
    assert [(c.name, c.role, c.dtype) for c in schema.columns] == [
        ("height_cm", "continuous", "float64"),
        ("weight_kg", "continuous", "float64"),
        ("constant", "constant", "int64"),
        ("count", "integer", "int64"),
    ]
    assert [(c.name, c.role, c.dtype) for c in schema.columns] == [(c.name, c.role, c.dtype) for c in expected.columns]
    # A table within the sample's size gets the in-memory statistics: support, range and scale alike.
    for got, want in zip(schema.columns, expected.columns, strict=False):
        assert (got.low, got.high) == (want.low, want.high)
        for field in ("mean", "std", "bound_scale"):
            want_value = getattr(want, field)
            assert getattr(got, field) == (want_value and pytest.approx(want_value, rel=1e-9)), (got.name, field)
    assert schema.columns[0].low == 0.0  # heights are all > 0: support > 0, as in memory


def test_a_streamed_columns_support_and_lattice_come_from_every_row() -> None:
    """The bottom-k sample may miss the one row that widens a support: the exact extremes and whole-ness
    are merged separately. Here the sample holds 100 of 5,000 rows."""
    rng = np.random.default_rng(0)
    positive = rng.gamma(2.0, 3.0, 5000) + 0.5
    counts = rng.integers(10, 400, 5000).astype(float)
    rows = np.arange(5000)
    outside = int(np.argmax(row_hash(rows)))  # the row the sample surely lacks
    positive[outside], counts[outside] = 0.0, 17.5

    def sketched(matrix: np.ndarray) -> Moments:
        total = Moments()
        for part in np.array_split(rows, 7):
            total = total.merge(Moments.of(matrix[part], rows[part], k=100), k=100)
        return total

    moments = sketched(np.column_stack([positive, counts]))
    assert len(moments.sample) == 100 and not (moments.sample[:, 0] == 0).any()
    amount, visits = schema_from_moments(["amount", "visits"], ["float64", "float64"], moments).columns
    assert amount.role == "continuous" and amount.low is None  # a 0 among the values: no support > 0
    assert visits.role == "continuous"  # one 17.5: not a lattice of whole numbers
    moments = sketched(np.column_stack([positive + 1, np.round(counts)]))
    amount, visits = schema_from_moments(["amount", "visits"], ["float64", "float64"], moments).columns
    assert amount.low == 0.0 and visits.role == "integer" and (visits.low, visits.high) == (10.0, 399.0)


def test_moments_are_stable_far_from_zero() -> None:
    # sum(x^2) - n mean^2 would lose every digit here; the pairwise update keeps them.
    x = 1e9 + np.random.default_rng(0).normal(size=(10000, 1))
    merged = merge_all([Moments.of(part) for part in np.array_split(x, 37)])
    assert merged.std[0] == pytest.approx(x.std(), rel=1e-9)


# ------------------------------------------------------------------------------- shuffle buffer


def test_shuffle_buffer_emits_every_row_once_and_mixes_within_its_window() -> None:
    n, chunk, capacity, batch = 5000, 100, 800, 64
    stream = (np.arange(s, min(s + chunk, n), dtype=np.float32)[:, None] for s in range(0, n, chunk))
    batches = list(shuffle_batches(stream, capacity, batch, np.random.default_rng(0)))
    out = np.concatenate(batches)[:, 0].astype(int)
    assert sorted(out.tolist()) == list(range(n))
    assert all(len(b) == batch for b in batches[:-1]) and len(batches[-1]) <= batch
    position = np.empty(n, dtype=int)
    position[out] = np.arange(n)
    # A row can only leave after it entered, and it entered at most chunk + capacity + batch rows
    # after the rows already gone; and the stream really is mixed, not passed through.
    assert (position >= np.arange(n) - (chunk + capacity + batch)).all()
    assert np.abs(position - np.arange(n)).mean() > capacity / 8


def test_validation_rows_are_a_deterministic_hash_of_the_row_index() -> None:
    rows = np.arange(200_000)
    mask = validation_mask(rows, 0.1)
    assert 0.098 < mask.mean() < 0.102
    np.testing.assert_array_equal(mask[1000:2000], validation_mask(rows[1000:2000], 0.1))  # chunking-free
    assert not validation_mask(rows, 0.0).any()


# ------------------------------------------------------------------------------- out-of-core fit


def test_streaming_fit_matches_in_memory_fit(parquet_dir: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    path, frame = parquet_dir
    cfg = parse_config({**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 6, "shuffle_buffer": 500}})
    dist = DistContext()
    source = StreamingData(
        str(path), cfg.training, dist, cfg.training.batch_size, cfg.training.shuffle_buffer, chunk_rows=128
    )
    assert source.n_train + source.n_val == len(frame) and 200 < source.n_val < 400
    torch.manual_seed(0)
    streamed = Trainer(source, cfg, dist, seed=0, generator=torch.Generator().manual_seed(0)).run()
    in_memory = fit(frame, cfg, device=CPU, seed=0)
    assert [c.role for c in streamed.schema.columns] == ["continuous", "continuous", "constant"]
    test = banana(2000, seed=4).assign(constant=7)
    ll_streamed, ll_memory = streamed.log_prob(test).mean(), in_memory.log_prob(test).mean()
    assert abs(ll_streamed - ll_memory) < 0.1, (ll_streamed, ll_memory)
    save_model(streamed, str(tmp_path / "s.flow"))
    assert load_model(str(tmp_path / "s.flow")).schema.to_dict() == streamed.schema.to_dict()


def test_cli_fit_streams_a_directory(parquet_dir: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    path, _ = parquet_dir
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 2}}))
    result = runner.invoke(
        app, ["fit", str(path), "-c", str(cfg), "-o", str(tmp_path / "m.flow"), "--seed", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.stderr
    assert "fitting streaming 3000 rows" in result.stderr
    model = load_model(str(tmp_path / "m.flow"))
    assert model.info["n_train"] + model.info["n_val"] == 3000


def test_streaming_rejects_csv_and_max_rows(tmp_path: Path, parquet_dir: tuple[Path, pd.DataFrame]) -> None:
    banana(50).to_csv(tmp_path / "t.csv", index=False)
    result = runner.invoke(
        app, ["fit", str(tmp_path / "t.csv"), "--stream", "-o", str(tmp_path / "m.flow"), "--device", "cpu"]
    )
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "Parquet" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["fit", str(empty), "-o", str(tmp_path / "m.flow"), "--device", "cpu"])
    assert result.exit_code == 1 and "is a directory with no .parquet files" in result.stderr
    assert not (tmp_path / "m.flow").exists()


# ------------------------------------------------------------------------------ per-file outputs


def test_logprob_and_encode_write_one_file_per_input_file(
    parquet_dir: tuple[Path, pd.DataFrame], banana_files: dict, tmp_path: Path
) -> None:
    path, _ = parquet_dir
    ckpt = str(banana_files["ckpt"])
    out = tmp_path / "scores"
    for k in range(2):  # two workers split the three files
        result = runner.invoke(
            app, ["logprob", ckpt, str(path), "-o", str(out), "--shard", f"{k}/2", "--chunk-size", "100"]
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["part-00.parquet", "part-01.parquet", "part-02.parquet"]
    model = load_model(ckpt, dtype=torch.float32)  # logprob's default precision
    for f in sorted(path.glob("*.parquet")):
        written = pd.read_parquet(out / f.name)
        source = pd.read_parquet(f)
        np.testing.assert_allclose(written["logprob"], model.log_prob(source))
        pd.testing.assert_frame_equal(written.drop(columns="logprob"), source)
    result = runner.invoke(app, ["encode", ckpt, str(path), "-o", str(tmp_path / "z"), "--shard", "2/3"])
    assert result.exit_code == 0 and [p.name for p in (tmp_path / "z").iterdir()] == ["part-02.parquet"]
    assert list(pd.read_parquet(tmp_path / "z" / "part-02.parquet").columns) == ["z0", "z1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "-"], "write one output per input file with -o OUTDIR"),
        (["-o", "{data}"], "is the input directory"),
        (["-o", "{tmp}/o", "--shard", "2/2"], "need 0 <= k < K"),
        (["-o", "{tmp}/o", "--shard", "x"], "expected k/K"),
    ],
)
def test_per_file_output_errors(
    parquet_dir: tuple[Path, pd.DataFrame], banana_files: dict, tmp_path: Path, args: list[str], message: str
) -> None:
    path, _ = parquet_dir
    args = [a.format(data=path, tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["logprob", str(banana_files["ckpt"]), str(path), *args])
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------------- bf16, compile


def test_bf16_autocast_covers_only_the_conditioners(banana_frame: pd.DataFrame) -> None:
    from flowcli.model import Flow

    cfg = parse_config(SMALL_CONFIG)
    flow = Flow(Schema.infer(banana_frame), cfg)
    nets = accel.conditioner_networks(flow)
    assert len(nets) == 2  # the coupling MLP and the MAF's MADE (not the MADE's inner Sequential)
    seen: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
        for m in flow.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    x = torch.randn(16, 2)
    with accel.Bf16Conditioners(flow, "cpu") as amp:
        with amp.step():
            ll = flow.log_prob(x)
        assert seen and set(seen) == {torch.bfloat16}  # the matmuls ran in bf16 ...
        assert ll.dtype == torch.float32  # ... log|det| and the density did not
        seen.clear()
        flow.log_prob(x)  # outside a training step: float32
        assert set(seen) == {torch.float32}
    assert all("forward" not in vars(m) for m in nets)  # unwrapped afterwards
    for h in hooks:
        h.remove()


def test_bf16_fit_is_close_to_float32(banana_frame: pd.DataFrame) -> None:
    raw = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 4}}
    full = fit(banana_frame, parse_config(raw), device=CPU, seed=0)
    half = fit(banana_frame, parse_config({**raw, "training": {**raw["training"], "amp": "bf16"}}), device=CPU, seed=0)
    test = banana(2000, seed=5)
    assert abs(full.log_prob(test).mean() - half.log_prob(test).mean()) < 0.1


def test_compile_path_and_its_eager_fallback(banana_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    # "aot_eager" runs TorchDynamo's capture and AOTAutograd without a C++ compiler (inductor would need
    # one and about 35 s here); the fallback is checked with a backend that always fails.
    raw = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 2, "compile": True}}
    eager = fit(
        banana_frame, parse_config({**raw, "training": {**raw["training"], "compile": False}}), device=CPU, seed=0
    )
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "aot_eager")
    compiled = fit(banana_frame, parse_config(raw), device=CPU, seed=0)
    assert compiled.info["best_val_nll"] == pytest.approx(eager.info["best_val_nll"], abs=1e-3)

    def broken(gm: torch.fx.GraphModule, inputs: list) -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(accel, "COMPILE_BACKEND", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        fallback = fit(banana_frame, parse_config(raw), device=CPU, seed=0)
    assert fallback.info["best_val_nll"] == pytest.approx(eager.info["best_val_nll"], abs=1e-5)


def test_a_streamed_table_with_a_derived_column_is_refused_naming_it(tmp_path: Path) -> None:
    frame = banana(3000, seed=4).assign(height_in=lambda t: t.height_cm / 2.54)
    root = write_parquet_dir(tmp_path / "derived", frame, files=2, row_group_size=500)
    result = runner.invoke(app, ["fit", str(root), "-o", str(tmp_path / "m.flow"), "--epochs", "1"])
    assert result.exit_code == 1 and not (tmp_path / "m.flow").exists()
    assert (
        "column 'height_in' is a linear function of other columns (height_in = 0.393701 * height_cm)" in result.output
    )
    assert "Leave it out (write the files without it)" in result.output  # a streamed fit takes no columns: section


def test_a_streamed_fit_prints_its_column_table_and_refuses_dates(tmp_path: Path) -> None:
    frame = banana(2000, seed=5).assign(count=lambda t: (t.weight_kg * 10).round().astype(int))
    root = write_parquet_dir(tmp_path / "plain", frame, files=2, row_group_size=500)
    result = runner.invoke(app, ["fit", str(root), "-o", str(tmp_path / "m.flow"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "whole numbers (streamed)" in result.output and "numbers (streamed)" in result.output  # the table
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(frame["count"], unit="D")
    dated = write_parquet_dir(tmp_path / "dated", frame.assign(day=days), files=2, row_group_size=500)
    result = runner.invoke(app, ["fit", str(dated), "-o", str(tmp_path / "d.flow"), "--epochs", "1"])
    assert result.exit_code == 1 and not (tmp_path / "d.flow").exists()
    assert (
        f"{dated / 'part-00.parquet'}: column 'day': dates and times are not modelled in a streamed fit"
        in result.output
    )
    # A Parquet date32 column (datetime.date objects) too, not "is not a number"
    dates = pa.table({"x": pa.array(frame["height_cm"]), "day": pa.array(list(days.dt.date), pa.date32())})
    pq.write_table(dates, tmp_path / "d32.parquet")
    result = runner.invoke(app, ["fit", str(tmp_path / "d32.parquet"), "--stream", "-o", str(tmp_path / "d.flow")])
    assert result.exit_code == 1 and "column 'day': dates and times are not modelled" in result.output


def test_files_that_disagree_on_columns_and_partitioned_layouts_are_refused(tmp_path: Path) -> None:
    """Rows of a subdirectory, or a column only later files have, were left out without a word."""
    frame = banana(400, seed=6)
    extra = write_parquet_dir(tmp_path / "extra", frame, files=2, row_group_size=100)
    pq.write_table(pa.Table.from_pandas(frame.assign(z=1.0).iloc[:50], preserve_index=False), extra / "part-09.parquet")
    result = runner.invoke(app, ["fit", str(extra), "-o", str(tmp_path / "m.flow"), "--epochs", "1"])
    assert result.exit_code == 1 and "part-09.parquet: column 'z' is not in" in result.output
    nested = write_parquet_dir(tmp_path / "nested", frame, files=2, row_group_size=100)
    (nested / "year=2024").mkdir()
    pq.write_table(pa.Table.from_pandas(frame.iloc[:50], preserve_index=False), nested / "year=2024" / "p.parquet")
    result = runner.invoke(app, ["fit", str(nested), "-o", str(tmp_path / "m.flow"), "--epochs", "1"])
    assert result.exit_code == 1 and "its subdirectory 'year=2024' holds .parquet files" in result.output
    assert not (tmp_path / "m.flow").exists()


def test_a_streamed_nullable_integer_column_is_integer(tmp_path: Path) -> None:
    """A Parquet file written from pandas' Int64 (no missing value) keeps that dtype name: np.dtype cannot read it."""
    frame = banana(2000, seed=7).assign(n=lambda t: pd.array((t.weight_kg * 10).round().astype(int), dtype="Int64"))
    root = write_parquet_dir(tmp_path / "nullable", frame, files=2, row_group_size=500)
    model = flowcli.fit(str(root), epochs=1, seed=0, threads=1)
    assert [(c.role, c.dtype) for c in model.schema.columns][-1] == ("integer", "Int64")
    assert str(model.sample(5, seed=0)["n"].dtype) == "Int64"
