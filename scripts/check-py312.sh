#!/usr/bin/env bash
# IRIS 2.5 images run Python 3.12: build the module's wheel and prove it installs and imports there,
# including the IRIS interface class (against the test stub of IRIS's app package).
set -euo pipefail
cd "$(dirname "$0")/.."
full=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -1 || true)
if [ -z "$full" ] && ! command -v python3.12 >/dev/null; then
  echo "py312: Python 3.12 not found; skipped" >&2; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip wheel -q --no-deps ./iris_module -w "$tmp/wheel"
env ${full:+PYENV_VERSION=$full} python3.12 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$tmp"/wheel/*.whl iris-interface==1.2.0 celery
PYTHONPATH=tests/module/iris_stub "$tmp/venv/bin/python" - <<'PY'
import importlib, sys
import iris_opencti_module as pkg
print("py312: python", sys.version.split()[0], "module", pkg.__version__)
from iris_opencti_module.convert import Converter
assert Converter().mappings.ioc_types["md5"]["stix_type"] == "file"
try:
    iface = importlib.import_module("iris_opencti_module." + getattr(pkg, "__iris_module_interface"))
    print("py312: interface", getattr(iface, getattr(pkg, "__iris_module_interface")).__name__)
except ModuleNotFoundError as exc:
    if exc.name and exc.name.startswith("iris_opencti_module"):
        raise
    print("py312: interface import needs", exc.name)
PY
"$tmp/venv/bin/iris-opencti" export examples/case-export-2.4.20.json -o "$tmp/b.json" >/dev/null
echo "py312: wheel installs, imports and converts"
