#!/usr/bin/env bash
# IRIS 2.4 images run Python 3.9, IRIS 2.5 images 3.12: build the module's wheel and prove it installs and
# imports there, including the IRIS interface class (against the test stub of IRIS's app package), and that
# `iris-opencti export` works. Usage: scripts/check-wheel.sh 3.9 [3.12 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip wheel -q --no-deps ./iris_module -w "$tmp/wheel"
for want in "$@"; do
  full=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)
  if [ -z "$full" ] && ! command -v "python$want" >/dev/null; then
    echo "wheel: Python $want not found" >&2; exit 1
  fi
  venv="$tmp/venv$want"
  env ${full:+PYENV_VERSION=$full} "python$want" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$tmp"/wheel/*.whl iris-interface==1.2.0 celery
  PYTHONPATH=tests/module/iris_stub "$venv/bin/python" - <<'PY'
import importlib, sys
import iris_opencti_module as pkg
from iris_opencti_module.convert import Converter
assert Converter().mappings.ioc_types["md5"]["stix_type"] == "file"  # the tables are inside the wheel
name = getattr(pkg, "__iris_module_interface")
iface = getattr(importlib.import_module("iris_opencti_module." + name), name)
assert iface._module_name == "IrisOpenCTI" and iface._interface_version == "1.2.0"
print("wheel: Python %s: iris-opencti-module %s installs and imports, interface %s"
      % (sys.version.split()[0], pkg.__version__, iface.__name__))
PY
  "$venv/bin/iris-opencti" export examples/case-export-2.4.20.json -o "$tmp/b.json" >/dev/null
done
echo "wheel: ok for Python $*"
