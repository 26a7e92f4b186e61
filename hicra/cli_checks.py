"""Checks on the command line that must fail in one line, before Hydra composes anything.

Hydra reports an unknown option as a multi-line block; users get `unknown algorithm 'foo'; allowed: ...` instead.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from hicra.errors import ConfigError


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_choices(args: list[str], conf_dir: Path) -> None:
    """Every `group=option` (sweeps included) names a file conf/<group>/<option>.yaml."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise ConfigError(f"cannot parse the overrides {candidates}: {first}") from err
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or not (conf_dir / group).is_dir():
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        allowed = group_options(conf_dir, group)
        for value in values:
            if value is None or str(value) == "null":
                continue
            if str(value) not in allowed:
                raise ConfigError(f"unknown {group} '{value}'; allowed: {', '.join(allowed)}")
