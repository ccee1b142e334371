"""The architecture's import rules (pyproject.toml's ``[tool.importlinter]``), checked by running import-linter.

CI runs ``lint-imports`` on the tree; these tests prove the rules bite: a connector that imports the module's
IRIS side, or a ``core`` module that imports a broker library, fails the lint, and every part of the module
other than ``core`` is named by the connectors' contract (so a new sub-package cannot slip past it).
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import iris_opencti_module

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.9/3.10 run only the module's suite
    tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(tomllib is None or not LINT.exists(), reason="import-linter runs on .venv (3.11)")


def _contracts() -> list:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["importlinter"]["contracts"]


def _lint(tree: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on a copy of both packages under ``tree``, with the repository's contracts."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "module"), str(tree / "connector")]), COLUMNS="400")
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "iris_module" / "src" / "iris_opencti_module", tmp_path / "module" / "iris_opencti_module",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "connector" / "src" / "iris_opencti_connector",
                    tmp_path / "connector" / "iris_opencti_connector", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_tree_keeps_its_contracts(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_contracts())} kept, 0 broken" in result.stdout


def test_a_connector_importing_the_iris_side_fails_the_lint(tree: Path) -> None:
    target = tree / "connector" / "iris_opencti_connector" / "enrichment" / "writeback.py"
    target.write_text(target.read_text(encoding="utf-8") + "\nfrom iris_opencti_module.transport import publisher\n",
                      encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0
    assert "iris_opencti_connector.enrichment.writeback -> iris_opencti_module.transport.publisher" in result.stdout


def test_core_importing_a_broker_library_fails_the_lint(tree: Path) -> None:
    target = tree / "module" / "iris_opencti_module" / "core" / "envelope.py"
    target.write_text(target.read_text(encoding="utf-8") + "\nimport pika\n", encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0
    assert "iris_opencti_module.core.envelope -> pika" in result.stdout


def test_the_connectors_contract_names_every_part_of_the_module_but_core() -> None:
    forbidden = next(c for c in _contracts() if c["source_modules"] == ["iris_opencti_connector"])["forbidden_modules"]
    parts = {f"iris_opencti_module.{m.name}" for m in pkgutil.iter_modules(iris_opencti_module.__path__)
             if not m.name.startswith("_")}
    assert parts - {"iris_opencti_module.core"} == set(forbidden)
