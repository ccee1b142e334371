#!/usr/bin/env bash
# IRIS 2.4 images run Python 3.9, IRIS 2.5 images 3.12: build the module's wheel and prove it installs and
# imports there, including the IRIS interface class (against the test stub of IRIS's app package), and that
# `iris-opencti export` works. Before that, prove the mapping tables (copied from mappings/ by
# iris_module/setup.py) and the licence are in every distribution, each built from the files a clean clone has
# (tracked or new, nothing git ignores): the wheel `pip install ./iris_module` builds, the sdist, and the wheel
# built from that sdist (where mappings/ is out of reach). Usage: scripts/check-wheel.sh 3.9 [3.12 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/clone"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"  # a deleted file not yet committed is not in a clone either
done | tar --null -T - -cf - | tar -xf - -C "$tmp/clone"
[ ! -e "$tmp/clone/iris_module/src/iris_opencti_module/mappings" ] || { echo "wheel: the clone has package mappings" >&2; exit 1; }
.venv/bin/python -m pip wheel -q --no-deps "$tmp/clone/iris_module" -w "$tmp/wheel"
.venv/bin/python -m build --sdist "$tmp/clone/iris_module" -o "$tmp/sdist" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; exit 1; }
.venv/bin/python -m pip wheel -q --no-deps "$tmp"/sdist/*.tar.gz -w "$tmp/wheel-from-sdist"
.venv/bin/python - "$tmp"/wheel/*.whl "$tmp"/sdist/*.tar.gz "$tmp"/wheel-from-sdist/*.whl <<'PY'
import pathlib, sys, tarfile, zipfile
root = {p.name: p.read_bytes() for p in pathlib.Path("mappings").glob("*.json")}
assert root, "no tables in mappings/"
licence = pathlib.Path("LICENSE").read_bytes()
for dist in sys.argv[1:]:
    if dist.endswith(".whl"):
        archive = zipfile.ZipFile(dist)
        files = {n: archive.read(n) for n in archive.namelist()}
    else:
        archive = tarfile.open(dist)
        files = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    tables = {n.rsplit("/", 1)[1]: data for n, data in files.items()
              if n.startswith(("iris_opencti_module/mappings/", "src/iris_opencti_module/mappings/"))}
    assert tables == root, "%s: mapping tables %s, not those of mappings/ %s" % (dist, sorted(tables), sorted(root))
    assert any(n.endswith("LICENSE") and data == licence for n, data in files.items()), "%s: no LICENSE" % dist
    print("wheel: %s holds mappings/ (%d tables) and LICENSE" % (pathlib.Path(dist).name, len(tables)))
PY
for want in "$@"; do
  full=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)
  if [ -z "$full" ] && ! command -v "python$want" >/dev/null; then
    echo "wheel: Python $want not found" >&2; exit 1
  fi
  venv="$tmp/venv$want"
  env ${full:+PYENV_VERSION=$full} "python$want" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$tmp"/wheel-from-sdist/*.whl iris-interface==1.2.0 celery
  PYTHONPATH=tests/module/iris_stub "$venv/bin/python" - <<'PY'
import importlib, sys
import iris_opencti_module as pkg
from iris_opencti_module.core.convert import Converter
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
