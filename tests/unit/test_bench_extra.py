"""`crm-bulk bench` without the `bench` extra: one line naming the extra and a non-zero exit, no traceback;
and the rest of the package imports without the extra's locust and matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import crm_bulk
from crm_bulk.bench import BENCH_MODULES
from crm_bulk.bench import runner as bench_runner
from crm_bulk.cli import EXIT_CONFIG, main


def _no_bench_run(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the bench started although its extra is missing")


@pytest.mark.parametrize("module", BENCH_MODULES)
def test_bench_without_its_extra_names_the_extra(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is the import system's own mark for a module that cannot be imported.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(bench_runner, "run_bench", _no_bench_run)
    result = CliRunner().invoke(main, ["bench", "--entities", "1000"])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"crm-bulk: error: crm-bulk bench: needs the bench extra (missing {module}): "
        "pip install 'crm-bulk[bench]'"
    ]


def _module_level_imports(tree: ast.Module) -> Iterator[str]:
    """Top-level module names imported when the module loads (function bodies are left out)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.If | ast.Try | ast.With):
            pending.extend(n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))


def test_no_module_of_the_package_imports_locust_or_matplotlib_when_loaded() -> None:
    # The locustfile is locust's input, loaded only by locust itself.
    package = Path(crm_bulk.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "locustfile.py"
        and {"locust", "matplotlib"} & set(_module_level_imports(ast.parse(path.read_text())))
    ]
    assert offenders == []


def test_the_cli_and_the_bench_modules_import_without_locust_or_matplotlib() -> None:
    # A fresh interpreter, so modules this session imported already do not hide an import-time dependency.
    code = """
import importlib, pkgutil, sys
sys.modules.update(locust=None, matplotlib=None)
import crm_bulk.bench, crm_bulk.cli
for info in pkgutil.iter_modules(crm_bulk.bench.__path__, "crm_bulk.bench."):
    if info.name != "crm_bulk.bench.locustfile":
        importlib.import_module(info.name)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
