"""Build step: the licence at the repository root is copied beside pyproject.toml (ignored by git), so that
wheels and sdists built from a checkout carry it; an unpacked sdist already has it. Everything else is in
pyproject.toml."""

import filecmp
import shutil
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
LICENSE = HERE.parent / "LICENSE"

if (HERE.parent / "connector").resolve() == HERE and LICENSE.is_file():
    target = HERE / "LICENSE"
    if not target.is_file() or not filecmp.cmp(LICENSE, target, shallow=False):
        shutil.copyfile(LICENSE, target)
setup()
