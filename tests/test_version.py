"""The version is written once, in flowcli/__init__.py; the installed package's metadata reads it from there."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version

import pytest
from helpers import ROOT

import flowcli


def test_installed_metadata_reports_the_package_version() -> None:
    # A mismatch after a version change means the environment is stale: `pip install -e .` again.
    assert version("flowcli") == flowcli.__version__


def test_the_version_is_a_literal_that_pyproject_reads_statically() -> None:
    """setuptools reads ``flowcli.__version__`` without importing flowcli (and torch) only if it is a literal."""
    tree = ast.parse((ROOT / "flowcli" / "__init__.py").read_text(encoding="utf-8"))
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
    ]
    assert len(values) == 1 and ast.literal_eval(values[0]) == flowcli.__version__
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "flowcli.__version__"}


def test_importing_flowcli_for_its_version_does_not_import_torch() -> None:
    code = "import sys, flowcli; print(flowcli.__version__); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == [flowcli.__version__, "False"]
