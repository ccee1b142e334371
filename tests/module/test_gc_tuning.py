"""Our own processes tune Python's garbage collector for big cases; IRIS's processes keep theirs (core/gc_tuning.py)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = ("import gc, json, sys; {setup}; "
         "print(json.dumps([gc.get_threshold()[2], gc.get_freeze_count()]))")


def _probe(setup: str):
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tuning_freezes_start_up_and_makes_full_collections_rarer_once():
    default_full = _probe("pass")[0]
    full, frozen = _probe("from iris_opencti_module.core.gc_tuning import FULL_AFTER, tune_for_bulk; "
                          "tune_for_bulk(); tune_for_bulk()")
    assert full == max(default_full, 100) > default_full and frozen > 0


def test_the_command_line_tunes_its_own_process():
    full, frozen = _probe("from iris_opencti_module.tools.cli import main; "
                          "main(['export', 'examples/case-export-2.4.20.json', '-o', '/dev/null'])")
    assert full == 100 and frozen > 0


def test_loading_the_module_into_iris_leaves_irises_collector_alone():
    default = _probe("pass")
    assert _probe("import iris_opencti_module.hooks.handler, iris_opencti_module.transport.case_sync") == default
