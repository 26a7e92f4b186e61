"""`--help` of the Hydra CLIs (hicra-train, hicra-eval) without Hydra's start-up cost.

Hydra's own app help lists the config groups through a fresh deep copy of its whole config repository per group and
per option list (~270 copies for conf/): 1.5 s, about as long as importing torch. The same text comes from the
composition the CLIs check anyway and one walk of conf/. Whatever this does not reproduce exactly (other flags,
sweeps, hydra.* overrides, an extra search path, a help template using $FLAGS_HELP or $HYDRA_CONFIG_GROUPS) is left
to Hydra: `app_help` returns None and the CLI hands the command line to Hydra as before.
"""

from __future__ import annotations

import copy
import string
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, flag_override

HELP_FLAGS = ("--help", "-h")


def wants_help(args: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in args)


def app_groups(conf_dir: Path) -> str:
    """Hydra's $APP_CONFIG_GROUPS: `group: option, option` per folder holding *.yaml (nested ones as `a/b`),
    hydra's own groups left out."""
    groups = {}
    for folder in conf_dir.rglob("*"):
        group = folder.relative_to(conf_dir)
        if not folder.is_dir() or group.parts[0] == "hydra" or "__pycache__" in group.parts:
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())
        if options:
            groups[group.as_posix()] = options
    return "".join(f"{g}: {', '.join(groups[g])}\n" for g in sorted(groups))


def app_help(cfg: DictConfig, args: list[str], conf_dir: Path) -> str | None:
    """The text Hydra prints for `args` (which hold --help), from `cfg`: the composition of `args` with its hydra
    node and the CLI's job name (`check_composes(..., job_name=...)`). None where only Hydra can render it."""
    rest = [a for a in args if a not in HELP_FLAGS]
    if any(a.startswith("-") or "=" not in a and not a.startswith("~") for a in rest):
        return None  # --resolve, -m, --config-dir, ...: Hydra's business
    overrides = OverridesParser.create().parse_overrides(rest)
    if any(o.is_sweep_override() or o.key_or_group.startswith("hydra") for o in overrides):
        return None  # a sweep (checks compose its first value) or a hydra.* override (checks leave it out)
    if cfg.hydra.get("searchpath"):
        return None  # groups beyond conf/
    job = copy.deepcopy(cfg)
    with flag_override(job, ["struct", "readonly"], [False, False]):
        del job["hydra"]
    try:
        return string.Template(cfg.hydra.help.template).substitute(
            APP_CONFIG_GROUPS=app_groups(conf_dir), CONFIG=OmegaConf.to_yaml(job, resolve=False))
    except (KeyError, ValueError):
        return None
