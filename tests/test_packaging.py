"""specialize as a package: pyproject.toml declares compatible ranges and constraints.txt pins exactly what is
installed here (what `make` installs with); `python -m specialize` runs the CLI; the LICENSE and CITATION.cff exist
and the citation holds the software and the paper it reproduces."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml
from helpers_train import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def constraints_script():
    """scripts/write_constraints.py as a module."""
    spec = importlib.util.spec_from_file_location("write_constraints", ROOT / "scripts" / "write_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version}; every line is `name==version`."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            [specifier] = requirement.specifier
            assert specifier.operator == "==" and not requirement.marker, line
            pinned[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pinned


def test_dependencies_are_ranges_that_the_constraints_pin_to_what_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]:
        operators = {specifier.operator for specifier in Requirement(line).specifier}
        assert operators == {">=", "<"}, f"{line}: declare a range (>=tested,<next major), not a pin"
    pinned = pins()
    for requirement in constraints_script().declared_requirements(ROOT / "pyproject.toml"):  # those make installs
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in constraints.txt; run scripts/write_constraints.py"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"
    assert (pinned["torch"], pinned["torchvision"]) == (Version("2.14.1"), Version("0.29.1"))
    for name, version in pinned.items():  # what this environment runs, the suite included
        assert Version(metadata.version(name)) == version, (
            f"{name}: installed {metadata.version(name)}, pinned {version}"
        )
    assert project["requires-python"] == ">=3.11"


def test_the_constraints_are_what_write_constraints_writes_from_this_environment():
    script = constraints_script()
    expected = script.constraints_text(script.installed_closure(script.declared_requirements()))
    assert (ROOT / "constraints.txt").read_text() == expected, "run scripts/write_constraints.py"
    install = [line for line in (ROOT / "Makefile").read_text().splitlines() if "-e '.[test]'" in line]
    assert install and all("-c constraints.txt" in line for line in install)  # make installs the tested versions


def test_python_dash_m_specialize_runs_the_cli():
    help_text = subprocess.run(
        [sys.executable, "-m", "specialize", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert help_text.startswith("usage: specialize ") and "lesion" in help_text
    wrong = subprocess.run([sys.executable, "-m", "specialize", "lesoin"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr


def test_license_is_mit_as_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["license"], project["license-files"]) == ("MIT", ["LICENSE"])


def authors_are_valid(authors: list) -> bool:
    """CFF persons (family-names, given-names) or entities (name), at least one."""
    return bool(authors) and all(
        isinstance(author, dict) and ({"family-names", "given-names"} <= author.keys() or "name" in author)
        for author in authors
    )


def test_citation_cff_cites_the_software_and_the_paper_it_reproduces():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= citation.keys()
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert authors_are_valid(citation["authors"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (citation["version"], citation["license"]) == (project["version"], project["license"])
    [paper] = citation["references"]
    assert {"type", "title", "authors"} <= paper.keys() and authors_are_valid(paper["authors"])
    assert [author["family-names"] for author in paper["authors"]] == ["Dobs", "Martinez", "Kell", "Kanwisher"]
    assert (paper["type"], paper["journal"], paper["volume"], paper["issue"], paper["start"], paper["year"]) == (
        "article",
        "Science Advances",
        8,
        11,
        "eabl8913",
        2022,
    )
    readme = (ROOT / "README.md").read_text()
    assert paper["doi"] == "10.1126/sciadv.abl8913" and paper["doi"] in readme and paper["title"] in readme
