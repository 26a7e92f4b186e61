"""pyproject.toml declares as lower bounds exactly the versions `make test-compat` installs (constraints/lowest.txt):
a bound lowered without testing it, or a tested version that is not the bound, fails here."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from support import PROJECT_ROOT


def _declared_lower_bounds() -> dict[str, Version]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [line for extra in project["optional-dependencies"].values() for line in extra]
    bounds = {}
    for line in lines:
        requirement = Requirement(line)
        lows = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
        if lows:
            bounds[canonicalize_name(requirement.name)] = max(lows)
    return bounds


def _pinned(path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_every_tested_lowest_version_is_the_declared_lower_bound():
    declared, lowest = _declared_lower_bounds(), _pinned(PROJECT_ROOT / "constraints" / "lowest.txt")
    for name in ("torch", "transformers", "pytorch-lightning", "hydra-core", "mlflow", "peft", "accelerate"):
        assert name in lowest, f"constraints/lowest.txt does not pin {name}"
    mismatched = {name: (str(declared.get(name)), str(version)) for name, version in lowest.items()
                  if declared.get(name) != version}
    assert not mismatched, f"pyproject lower bound vs constraints/lowest.txt: {mismatched}"


def test_the_tested_set_satisfies_what_pyproject_declares():
    tested = _pinned(PROJECT_ROOT / "constraints" / "tested.txt")
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        version = tested.get(canonicalize_name(requirement.name))
        assert version is not None, f"constraints/tested.txt lacks {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version} vs {line}"
