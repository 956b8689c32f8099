"""The documentation tells the truth.

- Every `Example:` of `flowcli COMMAND --help` runs, as printed, on the files shipped in the repository:
  in a scratch directory holding copies of data-samples/ and configs/, in a real shell, chained (the
  checkpoint that the `fit` example writes is the one the other examples read).
- The README's shell commands name real commands, options, shipped files and presets (checked, not
  run: most of them are about the reader's own tables).
- The README's tables of layer and base types match the registries, and its preset list the packaged presets.
- The README's Python example runs as written.
- Every packaged preset loads.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer.main
from helpers import ROOT
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.config import load_config

runner = CliRunner()
CLI: Any = typer.main.get_command(app)  # the app's command group: .commands, each with .params
# In the order the app declares them, `fit` first: it writes the checkpoint the other examples use.
COMMANDS = sorted(CLI.commands, key=lambda name: name != "fit")
README = (ROOT / "README.md").read_text(encoding="utf-8")
PRESETS = sorted(
    p.name.removesuffix(".yaml") for p in (resources.files("flowcli") / "presets").iterdir() if p.name.endswith(".yaml")
)


def help_example(command: str) -> str:
    """The example in `flowcli COMMAND --help`, unwrapped: its paragraph joined into one line."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.stderr
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", result.stdout)]
    examples = [p.removeprefix("Example: ") for p in paragraphs if p.startswith("Example: ")]
    assert len(examples) == 1, (command, examples)
    return examples[0]


def split_commands(line: str) -> list[list[str]]:
    """A shell line as its simple commands (split at pipes, `&&`, `;` and redirections), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirected = False
    for token in lexer:
        if set(token) <= set("|&;<>()"):
            commands.append([])
            redirected = token.endswith((">", "<"))
        elif redirected:  # the file of a redirection, not a command
            redirected = False
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def flowcli_calls(line: str) -> list[list[str]]:
    """The arguments after `flowcli` (or `python -m flowcli`) of each flowcli call in a shell line."""
    return [c[c.index("flowcli") + 1 :] for c in split_commands(line) if "flowcli" in c]


def options_of(command: str) -> set[str]:
    params = CLI.commands[command].params
    return {"-h", "--help"} | {opt for p in params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def check_call(args: list[str], where: str) -> None:
    """A flowcli call names a real command with real options; shipped files and presets it names exist."""
    assert args and args[0] in CLI.commands, f"{where}: {args[:1]} is not a flowcli command"
    known = options_of(args[0])
    for i, arg in enumerate(args[1:], 1):
        if re.fullmatch(r"--?[A-Za-z][\w-]*", arg):
            assert arg in known, f"{where}: flowcli {args[0]} has no option {arg}"
        if arg.startswith(("data-samples/", "configs/")):
            assert (ROOT / arg).exists(), f"{where}: {arg} is not in the repository"
        if args[i - 1] in ("-c", "--config") and "/" not in arg and not arg.endswith(".yaml"):
            assert arg in PRESETS, f"{where}: -c {arg} is not a packaged preset"


# ---------------------------------------------------------------------------------------------------
# The --help examples, run for real


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory with copies of the shipped files (the examples' outputs land here, not in the repo)."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "data-samples", root / "data-samples")
    shutil.copytree(ROOT / "configs", root / "configs")  # follows the presets link: copies the files
    return root


def run_example(command: str, workdir: Path) -> None:
    """Run `command`'s help example as printed, in bash, and check that it succeeded cleanly."""
    example = help_example(command)
    calls = flowcli_calls(example)
    assert calls and any(call[0] == command for call in calls), f"the example of {command} does not run it"
    for call in calls:
        check_call(call, f"flowcli {command} --help")
    for tool in {c[0] for c in split_commands(example)} - {"flowcli"}:
        if shutil.which(tool) is None:
            pytest.skip(f"the example of {command} uses {tool}, which is not installed")
    # `flowcli` is this interpreter's flowcli, whatever PATH holds; pipefail: a failing flowcli in a pipe fails.
    script = f'set -eo pipefail\nflowcli() {{ {shlex.quote(sys.executable)} -m flowcli "$@"; }}\n{example}\n'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, (example, done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    for call in calls:  # every output the example names was written
        for flag, value in zip(call, call[1:], strict=False):
            if flag in ("-o", "--output"):
                assert (workdir / value).exists(), (example, value)


@pytest.fixture(scope="module")
def fitted(workdir: Path) -> str:
    """Runs the `fit` example; returns the checkpoint it wrote."""
    example = help_example("fit")
    (call,) = [c for c in flowcli_calls(example) if c[0] == "fit"]
    checkpoint = call[call.index("-o") + 1]
    run_example("fit", workdir)
    return checkpoint


@pytest.mark.parametrize("command", COMMANDS)
def test_help_example_runs_on_shipped_files(command: str, workdir: Path, fitted: str) -> None:
    if command != "fit":
        assert fitted in shlex.split(help_example(command)), f"the example of {command} does not use {fitted}"
        run_example(command, workdir)


# ---------------------------------------------------------------------------------------------------
# The README


FLOWCLI_CALL = re.compile(r"(^|[|&;]\s*|-m )flowcli ")


def readme_shell_lines() -> list[str]:
    """Lines calling flowcli in the README's shell code blocks (not python/yaml), `\\` continuations joined."""
    lines: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S):
        if lang in ("", "bash", "sh", "shell", "console"):
            lines += [line for line in body.replace("\\\n", " ").splitlines() if FLOWCLI_CALL.search(line)]
    return lines


def test_readme_commands_name_real_commands_options_files_and_presets() -> None:
    calls = [(call, line) for line in readme_shell_lines() for call in flowcli_calls(line)]
    assert len(calls) >= 10  # the parser found the README's commands
    for call, line in calls:
        check_call(call, f"README: {line.strip()}")
    # Inline command lines (the Commands table and the text): command and options only; `[` `]` `|` are syntax.
    inline = re.findall(r"`(flowcli [^`]+)`", README)
    assert len(inline) >= 10
    for span in inline:
        command = span.split()[1]
        assert command in CLI.commands, f"README: `{span}`: {command} is not a flowcli command"
        head = re.split(r" \| ", span)[0]  # up to a real pipe (the table's `\|` separates alternatives)
        for option in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head):
            assert option in options_of(command), f"README: `{span}`: flowcli {command} has no option {option}"


def readme_table_names(header: str) -> set[str]:
    """The backticked names in the first column of the README table whose header row starts with ``header``."""
    match = re.search(rf"^\| {re.escape(header)} \|.*\n\|[-| :]+\|\n((?:\|.*\n)+)", README, flags=re.M)
    assert match, f"README has no table headed {header!r}"
    return {m for row in match.group(1).splitlines() for m in re.findall(r"^\| `(\w+)` \|", row)}


def registered(registry: object) -> set[str]:
    """The names in a registry: a Registry's ``names()`` when it has one, else the keys of a plain dict."""
    names = getattr(registry, "names", None)
    return set(names() if callable(names) else registry)


def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python block, executed as written, in a scratch directory with the shipped data."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 1, "one Python example in the README"
    shutil.copytree(ROOT / "data-samples", tmp_path / "data-samples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md (Python API)", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "penguins.flow").exists()
    drawn = namespace["model"].sample(5, given={"species": "Gentoo"}, seed=0)
    assert (drawn["species"] == "Gentoo").all()


def test_readme_layer_table_matches_the_layer_registry() -> None:
    from flowcli import layers

    assert readme_table_names("layer `type`") == registered(layers.LAYERS)


def test_readme_base_table_matches_the_base_registry() -> None:
    from flowcli import bases

    assert readme_table_names("base `type`") == registered(bases.BASES)


def test_readme_lists_every_packaged_preset() -> None:
    paragraph = README[README.index("\nPresets (") :].split("\n\n")[0]
    assert set(PRESETS) <= set(re.findall(r"`(\w+)`", paragraph)), paragraph


# ---------------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("preset", PRESETS)
def test_packaged_preset_loads(preset: str) -> None:
    with resources.as_file(resources.files("flowcli") / "presets" / f"{preset}.yaml") as path:
        config = load_config(path)
    assert config.layers


def test_configs_presets_is_the_packaged_presets() -> None:
    assert (ROOT / "configs" / "presets").resolve() == (ROOT / "flowcli" / "presets").resolve()
    assert len(PRESETS) >= 10
