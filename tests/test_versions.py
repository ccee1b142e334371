"""One version: each package's ``__version__`` (read by setuptools' dynamic version), the connectors' always the
module's, as installed; the CHANGELOG keeps an Unreleased section."""

from __future__ import annotations

import os
import re
from importlib import metadata

import tomllib

import iris_opencti_connector
import iris_opencti_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_connectors_version_is_the_module_s_and_is_what_is_installed():
    version = iris_opencti_module.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert iris_opencti_connector.__version__ == version
    assert metadata.version("iris-opencti-module") == metadata.version("iris-opencti-connector") == version


def test_no_pyproject_writes_a_version_of_its_own():
    for part, package in (("iris_module", "iris_opencti_module"), ("connector", "iris_opencti_connector")):
        with open(os.path.join(ROOT, part, "pyproject.toml"), "rb") as handle:
            project = tomllib.load(handle)
        assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
        assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": package + ".__version__"}
        assert project["project"]["license"] == "Apache-2.0"


def test_the_changelog_has_an_unreleased_section_and_no_release_above_the_version():
    text = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    assert "## [Unreleased]" in text
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, flags=re.M)
    as_tuple = tuple(int(n) for n in iris_opencti_module.__version__.split("."))
    assert all(tuple(int(n) for n in r.split(".")) <= as_tuple for r in released)
