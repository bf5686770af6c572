"""Write constraints.txt: the exact version of every package specialize needs on this platform (its dependencies,
the test extra, and everything they need in turn), as installed in the running environment.

    .venv/bin/python scripts/write_constraints.py     # after installing a new or updated dependency

pyproject.toml declares compatible ranges, so that `pip install .` fits into a lab's environment; `make` installs
with `pip install -c constraints.txt -e '.[test]'`, so that `make demo` and `make test` get the versions tested
here. tests/test_packaging.py checks that the file is what this script writes.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
EXTRAS = ("test",)  # the optional dependencies that `make` installs
HEADER = """\
# Exact versions for `pip install -c constraints.txt -e '.[test]'` (what `make` runs): specialize's dependencies,
# its test extra, and what they need in turn, as tested on Linux x86_64 with Python 3.11. pyproject.toml declares
# the compatible ranges. Written by scripts/write_constraints.py; do not edit by hand.
"""


def declared_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The requirements pyproject.toml declares: the dependencies and those of the extras in EXTRAS."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = [
        *project["dependencies"],
        *(line for extra in EXTRAS for line in project["optional-dependencies"][extra]),
    ]
    return [Requirement(line) for line in declared]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether `requirement` of a package installed with `extras` holds on this platform."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""})


def installed_closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every package that `requirements` need, directly or in turn, on this platform: {canonical name: installed
    version}. Raises LookupError naming a needed package that is not installed."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(requirement, {""}) for requirement in requirements]
    while pending:
        requirement, parent_extras = pending.pop()
        name = canonicalize_name(requirement.name)
        if not applies(requirement, parent_extras) or (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{name} is needed but not installed; install the project first") from None
        pins[name] = distribution.version
        extras = set(requirement.extras)
        pending += [(Requirement(line), extras) for line in distribution.requires or []]
    return pins


def constraints_text(pins: dict[str, str]) -> str:
    """The constraints file: the header, then `name==version` lines in name order."""
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main() -> int:
    try:
        text = constraints_text(installed_closure(declared_requirements()))
    except LookupError as error:
        print(f"write_constraints: {error}", file=sys.stderr)
        return 2
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS} ({text.count('==')} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
