"""``iris-opencti export`` as an operator runs it: real files in, a bundle and a summary out."""

import json
import os
import subprocess
import sys

from iris_opencti_module.core.mapping_tables import Mappings

from .samples import DATA, every_type_case
from .stixcheck import assert_valid_bundle

EXAMPLE = os.path.join(os.path.dirname(DATA), "..", "examples", "case-export-2.4.20.json")


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "iris_opencti_module", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_export_writes_bundle_and_summary(tmp_path):
    out = tmp_path / "bundle.json"
    proc = run("export", EXAMPLE, "-o", str(out), "--iris-url", "https://iris.example")
    assert proc.returncode == 0, proc.stderr
    bundle = json.loads(out.read_text())
    assert_valid_bundle(bundle)
    assert "case #10: 15 IOCs, 3 assets ->" in proc.stdout
    assert "case-incident 1" in proc.stdout and "1 IOCs skipped" in proc.stdout
    assert "skipped IOC 31 (sha1 '2fd4e1c67a2d28fced849ee1bb76e7391b93eb12'): TLP:RED" in proc.stderr
    incident = [o for o in bundle["objects"] if o["type"] == "case-incident"][0]
    assert incident["external_references"][0]["url"] == "https://iris.example/case?cid=10"


def test_export_accepts_bare_data_and_stdin_and_strict(tmp_path):
    export = json.loads(open(EXAMPLE).read())["data"]
    proc = run("export", "-", stdin=json.dumps(export))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["type"] == "bundle"
    assert "case #10" in proc.stderr
    strict = run("export", EXAMPLE, "-o", str(tmp_path / "b.json"), "--strict")
    assert strict.returncode == 1 and "--strict" in strict.stderr
    loose = run("export", EXAMPLE, "-o", str(tmp_path / "b.json"), "--max-tlp", "red", "--strict")
    assert loose.returncode == 0, loose.stderr


def test_every_type_case_reports_each_skip(tmp_path):
    case = tmp_path / "case.json"
    case.write_text(json.dumps(every_type_case()))
    proc = run("export", str(case), "-o", str(tmp_path / "b.json"))
    assert proc.returncode == 0
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped IOC")]
    unsupported = [n for n, e in Mappings().ioc_types.items() if e["kind"] == "unsupported"]
    assert len(skipped) == len(unsupported) > 10
    assert all("unsupported type: " in line for line in skipped)


def test_bad_input_gets_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    for args, message in [
        ((str(bad),), "not valid JSON"),
        ((str(tmp_path / "missing.json"),), "cannot read"),
    ]:
        proc = run("export", *args)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    notexport = tmp_path / "list.json"
    notexport.write_text("[1, 2]")
    proc = run("export", str(notexport))
    assert proc.returncode == 2 and "not an IRIS case export" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("export", EXAMPLE, "--default-tlp", "purple")
    assert proc.returncode == 2 and "--default-tlp (env IRIS_DEFAULT_TLP): 'purple' is not a TLP" in proc.stderr
