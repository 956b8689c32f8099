"""A corpus of bad inputs for every subcommand, run table-driven through the CLI.

Each case must end with exactly one line `Error: ...` on stderr that names the problem (file, column,
key, option or row), a non-zero exit code (1 for bad input, 2 for a malformed command line), no
traceback, nothing on stdout, and no file created, removed or changed in the working directory; each
case that names an output file runs twice, the second time with a precious file already at that path.

Decision for extreme but finite values at scoring time (see the last tests): `logprob` of a row far
outside the training range is a finite, very negative score (the soft tails of the preprocessing keep
even 1e300 representable: its log-density is about -1e4 and more negative), or -inf if anything
overflows, never NaN; `encode` and `decode` map every finite row to finite values (see
tests/test_robustness.py), and refuse a row whose result is not finite with an error naming it.
"""

from __future__ import annotations

import os
import pickle
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from flowcli.cli import app

runner = CliRunner()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
GOOD_ROWS = "height_cm,weight_kg\n170,60\n180,70\n165,58\n"
SMALL = {"layers": [{"type": "maf", "hidden": [8]}], "training": {"epochs": 1}}


def yaml_text(training: dict | None = None, layers: list | None = None) -> str:
    return yaml.safe_dump({"layers": layers or SMALL["layers"], "training": {**SMALL["training"], **(training or {})}})


@dataclass
class Case:
    id: str
    args: str  # shell words; {out} is the output path of the case
    expect: tuple[str, ...]  # fragments of the Error line
    files: dict[str, bytes | str | None] = field(default_factory=dict)  # None makes a directory
    stdin: bytes | None = None
    code: int = 1
    out: str | None = None  # an output path that must not appear (nor change, if it existed)
    root_skip: str = ""  # a reason to skip when running as root


def csv_case(id: str, content: bytes | str, *expect: str, name: str = "bad.csv") -> Case:
    return Case(f"fit-{id}", f"fit {name} -c small.yaml -o {{out}}", expect, {name: content}, out="new.flow")


def config_case(id: str, text: str, *expect: str) -> Case:
    return Case(f"config-{id}", "fit good.csv -c c.yaml -o {out}", expect, {"c.yaml": text}, out="new.flow")


CHECKPOINT_COMMANDS = (
    "sample {ckpt} -n 3 -o {out}",
    "logprob {ckpt} good.csv -o {out}",
    "encode {ckpt} good.csv -o {out}",
    "decode {ckpt} latent.csv -o {out}",
    "impute {ckpt} good.csv -o {out}",
)

CASES: list[Case] = [
    # --- fit: the table ---
    csv_case("empty-file", "", "bad.csv", "empty"),
    csv_case("header-only", "a,b\n", "bad.csv", "no data rows"),
    csv_case("binary-garbage", bytes(range(256)) * 8, "bad.csv", "not a text CSV"),
    csv_case("not-utf8", "h\xe9ight,w\n1,2\n3,4\n".encode("latin-1"), "bad.csv", "non-UTF-8"),
    csv_case("wrong-extension", "a,b\n1,2\n3,4\n", "data.txt", "unknown table format '.txt'", name="data.txt"),
    csv_case(
        "garbage-parquet", b"PAR1 this is not parquet PAR1", "bad.parquet", "not a readable Parquet", name="bad.parquet"
    ),
    csv_case("csv-named-parquet", "a,b\n1,2\n", "bad.parquet", "not a readable Parquet", name="bad.parquet"),
    csv_case("text-in-numeric-column", "a,b\n1,2\n3,oops\n5,6\n", "column 'b'", "row 2", "'oops'"),
    csv_case("inf-in-numeric-column", "a,b\n1,2\n3,inf\n5,6\n", "column 'b'", "row 2", "not a finite number"),
    csv_case("overflowing-number", "a,b\n1,2\n3,1e400\n5,6\n", "column 'b'", "row 2", "not a finite number"),
    # An empty cell is not bad input to fit: missing values are modelled (see "Column roles" in the README).
    csv_case("duplicate-column", "a,a\n1,2\n3,4\n", "column 'a' appears more than once"),
    csv_case("unnamed-column", "a,\n1,2\n3,4\n", "bad.csv", "empty name"),
    csv_case("old-mac-line-endings", "a,b\r1,2\r3,4\r", "bad.csv", "carriage return", "tr '\\r' '\\n'"),
    csv_case("carriage-return-in-header", "a,\r,b\n1,2,3\n4,5,6\n", "bad.csv", "carriage return"),
    csv_case("ragged-rows", "a,b\n1,2\n3,4,5,6\n", "bad.csv", "malformed CSV", "line 3"),
    csv_case("single-row", "a,b\n1,2\n", "1 data row", "at least 2"),
    csv_case("constant-columns", "a,b\n1,5\n1,5\n1,5\n", "every column is constant"),
    Case("fit-empty-stdin", "fit - -c small.yaml -o {out}", ("stdin", "empty"), stdin=b"", out="new.flow"),
    Case(
        "fit-binary-stdin",
        "fit - -c small.yaml -o {out}",
        ("stdin", "not a text CSV"),
        stdin=b"\x00\x01\x02" * 50,
        out="new.flow",
    ),
    Case(
        "fit-data-is-directory",
        "fit dir.csv -c small.yaml -o {out}",
        ("dir.csv", "is a directory"),
        {"dir.csv": None},
        out="new.flow",
    ),
    Case("fit-data-missing", "fit nowhere.csv -c small.yaml -o {out}", ("nowhere.csv", "not found"), out="new.flow"),
    Case(
        "fit-data-under-a-file",
        "fit good.csv/x.csv -c small.yaml -o {out}",
        ("good.csv/x.csv", "not found"),
        out="new.flow",
    ),
    Case(
        "fit-data-unreadable",
        "fit locked.csv -c small.yaml -o {out}",
        ("locked.csv", "permission denied"),
        {"locked.csv": "a,b\n1,2\n3,4\n"},
        out="new.flow",
        root_skip="root reads files whatever their mode",
    ),
    # --- fit: the config ---
    Case("config-missing", "fit good.csv -c nowhere.yaml -o {out}", ("nowhere.yaml", "not found"), out="new.flow"),
    Case(
        "config-is-directory", "fit good.csv -c cfg -o {out}", ("cfg", "is a directory"), {"cfg": None}, out="new.flow"
    ),
    config_case("malformed-yaml", "layers: [\n  - type: maf\n", "c.yaml", "malformed YAML", "line"),
    config_case("tab-indented-yaml", "layers:\n\t- maf\n", "c.yaml", "malformed YAML", "line 2"),
    config_case("binary-yaml", "\x00\x01\x02\x03", "c.yaml", "malformed YAML"),
    config_case("nested-too-deeply", "layers: " + "[" * 600 + "]" * 600, "c.yaml", "nested too deeply"),
    config_case("top-level-list", "- maf\n- permute\n", "top level"),
    config_case("misspelled-section", "layers: [maf]\ntrainig:\n  epochs: 1\n", "trainig", "did you mean 'training'"),
    config_case("unknown-layer-type", "layers:\n  - type: mafx\n", "layers[0].type", "'mafx'", "did you mean 'maf'"),
    config_case(
        "misspelled-layer-option",
        "layers:\n  - type: maf\n    hiden: [8]\n",
        "layers[0].hiden",
        "did you mean 'hidden'",
    ),
    config_case(
        "unknown-training-key",
        "layers: [maf]\ntraining:\n  learning_rate: 0.1\n",
        "training.learning_rate",
        "allowed keys",
    ),
    config_case(
        "duplicate-key",
        "layers: [maf]\ntraining: {epochs: 1}\ntraining: {epochs: 2}\n",
        "duplicate key 'training'",
        "line 3",
    ),
    config_case("no-layers", "layers: []\n", "layers", "non-empty list"),
    config_case("layer-type-not-a-string", "layers:\n  - type: [maf]\n", "layers[0].type"),
    config_case("unknown-base", "base: {type: gauss}\nlayers: [maf]\n", "base.type", "'gauss'", "allowed"),
    config_case("negative-lr", yaml_text({"lr": -1}), "training.lr", "> 0"),
    config_case("nan-lr", "layers: [maf]\ntraining: {lr: .nan}\n", "training.lr", "got nan"),
    config_case("zero-batch-size", yaml_text({"batch_size": 0}), "training.batch_size", ">= 1"),
    config_case("zero-epochs", yaml_text({"epochs": 0}), "training.epochs", ">= 1"),
    config_case("text-epochs", yaml_text({"epochs": "ten"}), "training.epochs", "expected integer"),
    config_case("val-fraction-1.5", yaml_text({"val_fraction": 1.5}), "training.val_fraction", "[0, 1)"),
    config_case("ema-1", yaml_text({"ema": 1}), "training.ema", "[0, 1)"),
    config_case("negative-patience", yaml_text({"patience": -1}), "training.patience"),
    config_case("misspelled-schedule", yaml_text({"schedule": "cosin"}), "training.schedule", "'cosine'"),
    config_case("zero-width", yaml_text(layers=[{"type": "maf", "hidden": [0]}]), "layers[0].hidden", "positive"),
    config_case("negative-width", yaml_text(layers=[{"type": "maf", "hidden": [-5]}]), "layers[0].hidden", "positive"),
    config_case("mixture-without-components", "base:\n  type: mixture\n  components: 0\n", "base.components"),
    config_case("cnf-negative-rtol", yaml_text(layers=[{"type": "cnf", "rtol": -1}]), "layers[0].rtol", "must be > 0"),
    config_case("width-not-a-list", yaml_text(layers=[{"type": "maf", "hidden": 64}]), "layers[0].hidden", "list"),
    config_case("zero-repeat", yaml_text(layers=[{"type": "maf", "repeat": 0}]), "layers[0].repeat", ">= 1"),
    config_case("absurd-width", yaml_text(layers=[{"type": "maf", "hidden": [10**11]}]), "out of memory"),
    # --- fit: options and output ---
    Case(
        "fit-zero-epochs-option",
        "fit good.csv -c small.yaml -o {out} --epochs 0",
        ("--epochs",),
        code=2,
        out="new.flow",
    ),
    Case(
        "fit-negative-epochs-option",
        "fit good.csv -c small.yaml -o {out} --epochs -5",
        ("--epochs",),
        code=2,
        out="new.flow",
    ),
    Case("fit-unknown-option", "fit good.csv -o {out} --bogus", ("--bogus",), code=2, out="new.flow"),
    Case(
        "fit-output-is-directory",
        "fit good.csv -c small.yaml -o outdir",
        ("outdir", "is a directory"),
        {"outdir": None},
    ),
    Case(
        "fit-output-dir-missing", "fit good.csv -c small.yaml -o nowhere/m.flow", ("nowhere/m.flow", "does not exist")
    ),
    Case(
        "fit-output-under-a-file", "fit good.csv -c small.yaml -o good.csv/m.flow", ("'good.csv' is not a directory",)
    ),
    Case("fit-output-unwritable", "fit good.csv -c small.yaml -o /proc/m.flow", ("/proc/m.flow", "cannot write")),
    Case(
        "fit-output-dir-read-only",
        "fit good.csv -c small.yaml -o ro/m.flow",
        ("ro/m.flow", "cannot write"),
        {"ro": "READ_ONLY_DIR"},
        root_skip="root writes into read-only directories (the /proc case covers root)",
    ),
    Case(
        "fit-metrics-is-directory",
        "fit good.csv -c small.yaml -o {out} --metrics mdir",
        ("mdir", "is a directory"),
        {"mdir": None},
        out="new.flow",
    ),
    Case(
        "fit-metrics-same-as-checkpoint",
        "fit good.csv -c small.yaml -o {out} --metrics ./{out}",
        ("--metrics", "same file"),
        out="new.flow",
    ),
    Case(
        "fit-unknown-device",
        "fit good.csv -c small.yaml -o {out} --device tpu",
        ("--device tpu", "unknown device"),
        out="new.flow",
    ),
    Case(
        "fit-device-torch-knows-but-flowcli-does-not-support",
        "fit good.csv -c small.yaml -o {out} --device meta",
        ("--device meta", "not supported by flowcli"),
        out="new.flow",
    ),
    Case(
        "sample-on-a-cuda-device-that-is-not-there",
        "sample m.flow -n 3 -o {out} --device cuda:7",
        ("--device cuda:7",),
        out="new.csv",
    ),
    Case(
        "logprob-on-mps",
        "logprob m.flow good.csv -o {out} --device mps",
        ("--device mps", "not supported"),
        out="new.csv",
    ),
    Case(
        "fit-resume-from-garbage",
        "fit good.csv -o {out} --resume junk.flow",
        ("junk.flow", "not a flowcli checkpoint"),
        {"junk.flow": b"\x93NUMPY garbage"},
        out="new.flow",
    ),
    # --- sample ---
    Case(
        "sample-negative-rows",
        "sample m.flow -n -5 -o {out}",
        ("-n", "-5: the number of rows cannot be negative"),
        code=2,
        out="new.csv",
    ),
    Case("sample-text-rows", "sample m.flow -n abc -o {out}", ("-n",), code=2, out="new.csv"),
    Case("sample-zero-chunk", "sample m.flow -n 3 --chunk-size 0 -o {out}", ("--chunk-size",), code=2, out="new.csv"),
    Case(
        "sample-wrong-output-extension",
        "sample m.flow -n 3 -o {out}",
        ("out.txt", "unknown table format"),
        out="out.txt",
    ),
    Case("sample-output-is-directory", "sample m.flow -n 3 -o d.csv", ("d.csv", "is a directory"), {"d.csv": None}),
    Case("sample-output-under-a-file", "sample m.flow -n 3 -o good.csv/x.csv", ("'good.csv' is not a directory",)),
    Case("sample-output-under-a-file", "sample m.flow -n 3 -o good.csv/s.csv", ("good.csv/s.csv",)),
    Case("sample-output-unwritable", "sample m.flow -n 3 -o /proc/s.csv", ("/proc/s.csv", "cannot write")),
    # --- every checkpoint reader: missing, directory, foreign, damaged, hostile ---
    *[
        Case(
            f"{cmd.split()[0]}-checkpoint-{kind}",
            cmd.format(ckpt=name, out="{out}"),
            (name, what),
            files,
            out="new.csv",
        )
        for cmd in CHECKPOINT_COMMANDS
        for kind, name, files, what in [
            ("missing", "gone.flow", {}, "not found"),
            ("directory", "d.flow", {"d.flow": None}, "is a directory"),
            ("csv", "good.csv", {}, "not a flowcli checkpoint"),
            ("empty", "e.flow", {"e.flow": b""}, "not a flowcli checkpoint"),
            ("random-bytes", "r.flow", {"r.flow": np.random.default_rng(0).bytes(5000)}, "not a flowcli checkpoint"),
            ("pickle", "p.flow", {"p.flow": pickle.dumps({"weights": [1.0, 2.0]})}, "not a flowcli checkpoint"),
            ("truncated", "t.flow", {"t.flow": "TRUNCATED"}, "not a flowcli checkpoint"),
            ("bit-flip", "f.flow", {"f.flow": "FLIPPED"}, "checksum"),
        ]
    ],
    # --- logprob / encode / decode: the rows ---
    # A file lacking a column is scored (marginalised): not bad input. But its logprob is not what the
    # anomaly quantiles describe, nor is a conditional one (--target).
    Case(
        "logprob-flag-below-of-a-file-lacking-a-column",
        "logprob m.flow - -o {out} --flag-below 0.01",
        ("--flag-below", "'weight_kg'"),
        stdin=b"height_cm,w\n1,2\n",
        out="new.csv",
    ),
    Case(
        "logprob-no-model-column",
        "logprob m.flow - -o {out}",
        ("none of the model's columns",),
        stdin=b"w,v\n1,2\n",
        out="new.csv",
    ),
    Case(
        "logprob-text-in-a-later-chunk",
        "logprob m.flow - -o {out} --chunk-size 10",
        ("'weight_kg'", "row 51", "'abc'"),
        stdin=("height_cm,weight_kg\n" + "170,60\n" * 50 + "170,abc\n").encode(),
        out="new.csv",
    ),
    Case(
        "logprob-empty-cell-unseen-in-training",
        "logprob m.flow - -o {out}",
        ("'weight_kg'", "row 2", "missing value"),
        stdin=b"height_cm,weight_kg\n1,2\n3,\n",
        out="new.csv",
    ),
    Case(
        "logprob-inf",
        "logprob m.flow - -o {out}",
        ("'height_cm'", "row 2", "not a finite"),
        stdin=b"height_cm,weight_kg\n1,2\ninf,3\n",
        out="new.csv",
    ),
    Case("logprob-empty-stdin", "logprob m.flow - -o {out}", ("stdin", "empty"), stdin=b"", out="new.csv"),
    Case(
        "logprob-binary-stdin",
        "logprob m.flow - -o {out}",
        ("stdin", "not a text CSV"),
        stdin=bytes(range(256)) * 4,
        out="new.csv",
    ),
    Case(
        "logprob-duplicate-columns",
        "logprob m.flow - -o {out}",
        ("'height_cm' appears more than once",),
        stdin=b"height_cm,height_cm,weight_kg\n1,2,3\n",
        out="new.csv",
    ),
    Case(
        "logprob-wrong-output-extension",
        "logprob m.flow good.csv -o {out}",
        ("scores.json", "unknown table format"),
        out="scores.json",
    ),
    Case(
        "logprob-data-is-directory",
        "logprob m.flow d.csv -o {out}",
        ("d.csv", "is a directory"),
        {"d.csv": None},
        out="new.csv",
    ),
    # --- the conditional questions: sample --given, logprob --target, impute ---
    Case(
        "sample-given-without-equals",
        "sample m.flow -n 3 --given height_cm -o {out}",
        ("--given 'height_cm'", "COLUMN=VALUE"),
        out="new.csv",
    ),
    Case(
        "sample-given-without-value",
        "sample m.flow -n 3 --given height_cm= -o {out}",
        ("--given 'height_cm='", "no value"),
        out="new.csv",
    ),
    Case(
        "sample-given-missing-value",
        "sample m.flow -n 3 --given height_cm=NA -o {out}",
        ("height_cm=NA", "missing value"),
        out="new.csv",
    ),
    Case(
        "sample-given-twice",
        "sample m.flow -n 3 --given height_cm=170 --given height_cm=180 -o {out}",
        ("'height_cm'", "twice"),
        out="new.csv",
    ),
    Case("sample-given-unknown-column", "sample m.flow -n 3 --given colour=red -o {out}", ("'colour'",), out="new.csv"),
    Case(
        "sample-given-outside-support",
        "sample m.flow -n 3 --given height_cm=-5 -o {out}",
        ("'height_cm'",),
        out="new.csv",
    ),
    Case(
        "sample-given-text-for-a-number",
        "sample m.flow -n 3 --given height_cm=tall -o {out}",
        ("'height_cm'", "'tall'"),
        out="new.csv",
    ),
    Case(
        "sample-given-unseen-label",
        "sample shop.flow -n 3 --given group=zzz -o {out}",
        ("'group'", "'zzz'"),
        out="new.csv",
    ),
    Case(
        "sample-given-and-given-file",
        "sample m.flow --given height_cm=170 --given-file good.csv -o {out}",
        ("--given", "--given-file"),
        out="new.csv",
    ),
    Case(
        "sample-given-file-missing",
        "sample m.flow --given-file nowhere.csv -o {out}",
        ("nowhere.csv", "not found"),
        out="new.csv",
    ),
    Case(
        "sample-given-file-unknown-column",
        "sample m.flow --given-file given.csv -o {out}",
        ("given.csv", "'colour'"),
        {"given.csv": "colour\nred\n"},
        out="new.csv",
    ),
    Case(
        "sample-given-file-unseen-label-in-a-later-chunk",
        "sample shop.flow --given-file - --chunk-size 2 -o {out}",
        ("stdin", "'zzz'"),
        stdin=b"group\na\nb\na\nzzz\n",
        out="new.csv",
    ),
    Case(
        "sample-given-file-zero-rows-each",
        "sample m.flow --given-file good.csv -n 0 -o {out}",
        ("-n 0",),
        out="new.csv",
    ),
    Case(
        "logprob-target-unknown-column",
        "logprob m.flow good.csv --target colour -o {out}",
        ("'colour'",),
        out="new.csv",
    ),
    Case(
        "logprob-target-absent-from-the-file",
        "logprob m.flow - --target weight_kg -o {out}",
        ("'weight_kg'",),
        stdin=b"height_cm\n170\n",
        out="new.csv",
    ),
    Case(
        "logprob-target-empty-name",
        "logprob m.flow good.csv --target height_cm, -o {out}",
        ("--target", "empty"),
        out="new.csv",
    ),
    Case(
        "logprob-target-twice",
        "logprob m.flow good.csv --target height_cm --target height_cm -o {out}",
        ("'height_cm'", "twice"),
        out="new.csv",
    ),
    Case(
        "logprob-target-with-flag-below",
        "logprob m.flow good.csv --target height_cm --flag-below 0.01 -o {out}",
        ("--flag-below", "--target"),
        out="new.csv",
    ),
    Case(
        "logprob-target-with-percentile",
        "logprob m.flow good.csv --target height_cm --percentile -o {out}",
        ("--percentile", "--target"),
        out="new.csv",
    ),
    Case(
        "impute-text-in-a-number",
        "impute m.flow - -o {out}",
        ("'weight_kg'", "row 2", "'abc'"),
        stdin=b"height_cm,weight_kg\n170,\n170,abc\n",
        out="new.csv",
    ),
    Case(
        "impute-unseen-label-in-a-later-chunk",
        "impute shop.flow - --chunk-size 2 -o {out}",
        ("'group'", "'zzz'"),
        stdin=b"group,x\na,\nb,1\n,2\nzzz,\n",
        out="new.csv",
    ),
    Case("impute-zero-draws", "impute m.flow good.csv --draws 0 -o {out}", ("--draws",), code=2, out="new.csv"),
    Case(
        "impute-wrong-output-extension",
        "impute m.flow good.csv -o {out}",
        ("done.json", "unknown table format"),
        out="done.json",
    ),
    Case("impute-empty-stdin", "impute m.flow - -o {out}", ("stdin", "empty"), stdin=b"", out="new.csv"),
    Case(
        "encode-given",
        "encode m.flow good.csv --given height_cm=170 -o {out}",
        ("--given", "encode", "sample"),
        out="new.csv",
    ),
    Case(
        "decode-given",
        "decode m.flow latent.csv --given height_cm=170 -o {out}",
        ("--given", "decode", "sample"),
        out="new.csv",
    ),
    Case(
        "encode-missing-column",
        "encode m.flow - -o {out}",
        ("missing column 'height_cm'",),
        stdin=b"weight_kg\n1\n",
        out="new.csv",
    ),
    Case("decode-missing-latent-column", "decode m.flow good.csv -o {out}", ("missing column 'z0'",), out="new.csv"),
    Case(
        "decode-text-latent",
        "decode m.flow - -o {out}",
        ("'z1'", "row 1", "'x'"),
        stdin=b"z0,z1\n0.5,x\n",
        out="new.csv",
    ),
]


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banana_files: dict, shop_files: dict) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.csv").write_text(GOOD_ROWS)
    (tmp_path / "latent.csv").write_text("z0,z1\n0.1,0.2\n-1,1\n")
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SMALL))
    (tmp_path / "m.flow").write_bytes(banana_files["ckpt"].read_bytes())
    (tmp_path / "shop.flow").write_bytes(shop_files["ckpt"].read_bytes())  # with categories: unseen labels
    return tmp_path


def make_files(root: Path, files: dict[str, bytes | str | None], good_checkpoint: bytes) -> None:
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir()
        elif content == "READ_ONLY_DIR":
            path.mkdir()
            path.chmod(0o555)
        elif content == "TRUNCATED":
            path.write_bytes(good_checkpoint[: len(good_checkpoint) * 2 // 3])
        elif content == "FLIPPED":
            data = bytearray(good_checkpoint)
            data[-3] ^= 0x01  # a single bit, in the tensor data
            path.write_bytes(bytes(data))
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    if "locked.csv" in files:
        (root / "locked.csv").chmod(0)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if not (p.is_file() and p.stat().st_mode & 0o777 == 0)
    }


def params() -> list:
    out = []
    for case in CASES:
        variants = [False, True] if case.out else [False]
        for existing in variants:
            marks = [pytest.mark.skipif(IS_ROOT, reason=case.root_skip)] if case.root_skip else []
            out.append(pytest.param(case, existing, id=case.id + ("+existing-output" if existing else ""), marks=marks))
    return out


@pytest.mark.parametrize(("case", "existing_output"), params())
def test_bad_input(case: Case, existing_output: bool, workdir: Path) -> None:
    make_files(workdir, case.files, (workdir / "m.flow").read_bytes())
    if existing_output:
        (workdir / case.out).write_bytes(b"precious")
    before = snapshot(workdir)
    result = runner.invoke(app, [a.replace("{out}", case.out or "") for a in shlex.split(case.args)], input=case.stdin)

    assert result.exit_code == case.code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr
    for fragment in case.expect:
        assert fragment in errors[0], (fragment, errors[0])
    assert result.stdout == ""
    assert snapshot(workdir) == before  # nothing created, removed or changed (temporary files included)


def test_the_corpus_is_large_and_covers_every_subcommand() -> None:
    assert len(CASES) >= 60
    for command in ("fit", "sample", "logprob", "encode", "decode", "impute"):
        assert sum(shlex.split(c.args)[0] == command for c in CASES) >= 4, command


# --- extreme but finite values at scoring time ---------------------------------------------------------


def test_logprob_of_extreme_rows_is_minus_infinity_never_nan(banana_files: dict, banana_model) -> None:
    rows = pd.DataFrame(
        {
            "height_cm": [170.0, 1e300, -1e300, 170.0, 1.7e308, 1e30],
            "weight_kg": [60.0, 60.0, 60.0, 1e300, -1.7e308, 1e30],
        }
    )
    scores = banana_model.log_prob(rows)
    assert not np.isnan(scores).any()
    assert np.isfinite(scores[0]) and scores[0] > -20
    # The soft tails keep these rows representable: a finite log-density, far below any real row's.
    assert (scores[1:5] < -1e4).all()
    assert scores[5] < scores[0] - 100  # far away, and never above a typical row
    result = runner.invoke(app, ["logprob", str(banana_files["ckpt"]), "-"], input=rows.to_csv(index=False))
    assert result.exit_code == 0, result.stderr
    scored = pd.read_csv(pd.io.common.StringIO(result.stdout))["logprob"].iloc[1:5]
    assert (scored < -1e4).all()  # float32 scoring: finite or -inf, never NaN


def test_logprob_replaces_nan_from_the_network_by_minus_infinity(banana_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever overflows inside the flow (here forced), a score is never NaN."""
    flow = banana_model.flow
    original = flow.log_prob
    monkeypatch.setattr(flow, "log_prob", lambda x: original(x) + torch.where(x[:, 0] > 1e6, torch.nan, 0.0))
    scores = banana_model.log_prob(pd.DataFrame({"height_cm": [170.0, 1e7], "weight_kg": [60.0, 60.0]}))
    assert np.isfinite(scores[0]) and scores[1] == -np.inf
