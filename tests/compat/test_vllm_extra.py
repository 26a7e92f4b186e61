"""The `vllm` extra is a promise that hicra and that vLLM fit one environment: every requirement vLLM puts on a
package hicra also declares (constraints/vllm.txt, read from the registry's metadata) must leave a version that
satisfies both."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from support import PROJECT_ROOT

# Releases each range is checked against: the ones vLLM's pins allow and hicra's tests ran (make test-compat: 5.17).
CANDIDATES = {"torch": ["2.13.0", "2.14.0"], "transformers": ["5.17.0", "5.20.0", "5.25.0"]}


def _requirements(lines) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _vllm_pins() -> dict[str, Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in (PROJECT_ROOT / "constraints" / "vllm.txt").read_text().splitlines()]
    return _requirements(line for line in lines if line)


def test_the_extra_pins_the_vllm_whose_requirements_are_recorded():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    extra = _requirements(project["optional-dependencies"]["vllm"])
    assert str(extra["vllm"].specifier) == str(_vllm_pins()["vllm"].specifier)


def test_every_vllm_requirement_leaves_a_version_hicra_accepts():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    ours = _requirements(project["dependencies"])
    for name, theirs in _vllm_pins().items():
        if name == "vllm":
            continue
        both = [v for v in CANDIDATES[name] if theirs.specifier.contains(Version(v)) and ours[name].specifier.contains(
            Version(v))]
        assert both, f"vllm needs {theirs}, hicra declares {ours[name]}: no common release among {CANDIDATES[name]}"
