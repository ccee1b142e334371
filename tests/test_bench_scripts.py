"""The benchmark scripts still import after a change of layout (they run by hand, not in CI, so a stale
import would only show on the day someone measures)."""

import importlib
import pkgutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(m.name for m in pkgutil.iter_modules([str(BENCH)]))


def test_there_are_benchmarks():
    assert {"big_case", "convert", "e2e", "hook", "import"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_benchmark_imports(name):
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None)), f"bench/{name}.py has no main()"
