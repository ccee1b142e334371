"""The package's mapping tables are the repository's ``mappings/``: iris_module/setup.py copies them in at build
time (no symlink), so an edited table must reach the package by a reinstall (``setup.sh``), or this fails."""

from __future__ import annotations

import os
from importlib import resources

from .samples import DATA

ROOT_TABLES = os.path.join(os.path.dirname(DATA), "..", "mappings")


def test_the_package_s_tables_are_those_of_mappings_byte_for_byte():
    root = {name: open(os.path.join(ROOT_TABLES, name), "rb").read()
            for name in os.listdir(ROOT_TABLES) if name.endswith(".json")}
    packaged = resources.files("iris_opencti_module").joinpath("mappings")
    assert not os.path.islink(str(packaged)), "the package's mappings must be a real copy, not a symlink"
    installed = {entry.name: entry.read_bytes() for entry in packaged.iterdir() if entry.name.endswith(".json")}
    assert sorted(installed) == sorted(root) and set(root) >= {"ioc_types.json", "tlp.json"}
    differ = [name for name in root if installed[name] != root[name]]
    assert not differ, f"{differ} differ from mappings/: reinstall the module (setup.sh, or pip install -e " \
                       "./iris_module)"
