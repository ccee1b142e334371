"""Build step: the package's copy of the mapping tables (and the licence) comes from the repository root.

``mappings/`` at the repository root is the one source, the tables users read and override; the package needs
them as package data (``iris_opencti_module/mappings/*.json``), which a symlink cannot provide (it breaks on
Windows checkouts and in sdists). So every setuptools run from a checkout (``pip install``, ``pip install -e``,
``pip wheel``, ``python -m build``) first copies them into ``src/iris_opencti_module/mappings/`` (ignored by
git), and the sdist carries that copy, so a wheel built from the sdist has them too. Everything else is in
pyproject.toml. tests/module/test_packaging.py fails if the copy and ``mappings/`` ever differ.
"""

import filecmp
import shutil
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLES = HERE / "src" / "iris_opencti_module" / "mappings"


def in_checkout() -> bool:
    """Built from the repository (not from an unpacked sdist, whose parent directory is anything)."""
    return (ROOT / "mappings").is_dir() and (ROOT / "iris_module").resolve() == HERE and (ROOT / "LICENSE").is_file()


def copy_if_changed(source: Path, target: Path) -> None:
    if not target.is_file() or not filecmp.cmp(source, target, shallow=False):
        shutil.copyfile(source, target)


def sync_from_root() -> None:
    TABLES.mkdir(exist_ok=True)
    wanted = {p.name: p for p in (ROOT / "mappings").glob("*.json")}
    for stale in TABLES.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, source in wanted.items():
        copy_if_changed(source, TABLES / name)
    copy_if_changed(ROOT / "LICENSE", HERE / "LICENSE")


if in_checkout():
    sync_from_root()
setup()
