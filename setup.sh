#!/usr/bin/env bash
# Installs everything on a fresh machine, then runs the main job: converting the sample IRIS case export
# shipped under examples/ into a STIX 2.1 bundle (no IRIS or OpenCTI needed).
#   .venv    Python 3.11: the module, the connectors, the test tools
#   .venv39  Python 3.9 (IRIS 2.4's): the module alone, to prove it runs there, with eventlet 0.30.2 as IRIS
#            2.4.20 pins it (its web app is gunicorn's eventlet worker; eventlet 0.30.2 itself requires
#            dnspython <2, which pip resolves to 1.16.0, as in IRIS's image)
#   .venv312 Python 3.12 (IRIS 2.5's): the module, for the test of IRIS 2.5's threaded web worker
set -euo pipefail
cd "$(dirname "$0")"

py() {  # py VERSION -> a python of that minor version (pyenv shims need the version named)
  local want=$1
  if command -v pyenv >/dev/null 2>&1; then
    local full
    full=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)
    if [ -n "$full" ]; then echo "env PYENV_VERSION=$full python$want"; return; fi
  fi
  command -v "python$want" >/dev/null 2>&1 && echo "python$want"
}

PY311=$(py 3.11 || true); PY311=${PY311:-python3}
[ -x .venv/bin/python ] || $PY311 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ./iris_module -e ./connector -r requirements-dev.txt

PY39=$(py 3.9 || true)
if [ -n "$PY39" ]; then
  [ -x .venv39/bin/python ] || $PY39 -m venv .venv39
  .venv39/bin/python -m pip install -q --upgrade pip
  .venv39/bin/python -m pip install -q -e ./iris_module pytest hypothesis stix2-validator iris-interface==1.2.0 celery \
    eventlet==0.30.2 "dnspython>=1.15,<2"
else
  echo "setup: Python 3.9 not found; the module's 3.9 check will not run here" >&2
fi

PY312=$(py 3.12 || true)
if [ -n "$PY312" ]; then
  [ -x .venv312/bin/python ] || $PY312 -m venv .venv312
  .venv312/bin/python -m pip install -q --upgrade pip
  .venv312/bin/python -m pip install -q -e ./iris_module iris-interface==1.2.0 celery
else
  echo "setup: Python 3.12 not found; the test of IRIS 2.5's web worker will fail here" >&2
fi

mkdir -p var
.venv/bin/iris-opencti export examples/case-export-2.4.20.json -o var/case-export-2.4.20.bundle.json
echo "setup: done; bundle written to var/case-export-2.4.20.bundle.json"
