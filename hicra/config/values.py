"""A composed config checked against its schema (hicra.config.schema) before anything is instantiated: every key is
one the config may hold, every value one its key allows, every `_target_` node's keys arguments of its target.

Each problem is one ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hicra.config.rules import Rule
from hicra.errors import ConfigError

MISSING = "???"


def check_config(cfg: DictConfig, schema: Mapping[str, Rule]) -> None:
    """Keys, then values (no imports: answered in milliseconds), then the `_target_`s' arguments (imports them)."""
    check_keys(cfg, schema)
    check_values(cfg, schema)
    check_target_arguments(cfg)


def _plain(cfg: DictConfig) -> dict:
    """The config as plain dicts, interpolations unresolved and `???` kept (nothing here needs Hydra's resolvers)."""
    tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    tree.pop("hydra", None)  # Hydra's own node: Hydra checks it
    return tree


def check_keys(cfg: DictConfig, schema: Mapping[str, Rule]) -> None:
    """A node without a `_target_` holds only keys of the schema (a typo'd `+key=value` is refused)."""
    nodes = {key.rsplit(".", n)[0] for key in schema for n in range(1, key.count(".") + 1)}
    _check_closed_node(_plain(cfg), "", set(schema) | nodes, nodes)


def _check_closed_node(tree: dict, prefix: str, known: set[str], nodes: set[str]) -> None:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path not in known:
            siblings = sorted({k[len(prefix):].split(".")[0] for k in known if k.startswith(prefix)})
            close = difflib.get_close_matches(str(key), siblings, n=1)
            allowed = f"did you mean {prefix}{close[0]}?" if close else \
                f"allowed keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(siblings)}"
            raise ConfigError(f"{path}={value!r} is not a setting of this config; {allowed}")
        if isinstance(value, dict) and "_target_" not in value and path in nodes:
            _check_closed_node(value, f"{path}.", known, nodes)


def check_values(cfg: DictConfig, schema: Mapping[str, Rule]) -> None:
    """Every key of the schema that the config holds has a value its rule accepts."""
    for key, rule in schema.items():
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if not isinstance(parent, DictConfig) or leaf not in parent:
                continue
            if OmegaConf.is_missing(parent, leaf):
                raise ConfigError(f"{key} is not set ({MISSING} in its config file); allowed: {rule.allowed}")
            value = parent[leaf]
        except OmegaConfBaseException as err:  # an interpolation that cannot be resolved
            raise ConfigError(f"{key}: {str(err).strip().splitlines()[0]}") from None
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule(value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {rule.allowed}")


def check_target_arguments(cfg: DictConfig) -> None:
    """Every key of a `_target_` node is an argument of its target (`experiment=smoke task=local_file` would pass
    the smoke run's task.train_size to LocalFileTask, which has no such argument). Imports the targets."""
    _check_target_nodes(_plain(cfg), "")


def _check_target_nodes(tree: dict, prefix: str) -> None:
    for key, value in tree.items():
        if not isinstance(value, dict):
            continue
        path = f"{prefix}{key}"
        if "_target_" in value:
            _check_arguments(path, value)
        _check_target_nodes(value, f"{path}.")


def _check_arguments(path: str, node: dict) -> None:
    from hydra.utils import get_object

    target = node["_target_"]
    try:
        accepted = accepted_arguments(get_object(target))
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError, ...: the target cannot be found
        raise ConfigError(f"{path}._target_={target} cannot be imported: {str(err).splitlines()[0]}") from None
    if accepted is None:
        return
    for key, value in node.items():
        if not key.startswith("_") and key not in accepted:
            raise ConfigError(f"{path}.{key}={value!r} is not an argument of {target}; "
                              f"allowed: {', '.join(sorted(accepted))}")


def accepted_arguments(target) -> set[str] | None:
    """The keyword arguments `target` takes; None when it takes any (named arguments plus **kwargs pass the rest
    on, e.g. reasoning-gym's difficulty knobs). A class whose __init__ is only (*args, **kwargs) is read through
    the first base class that names its arguments."""
    callables = [target, *(base.__init__ for base in target.__mro__[1:] if base is not object)] \
        if isinstance(target, type) else [target]
    for fn in callables:
        params = list(inspect.signature(fn).parameters.values())
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return named
        if named:
            return None
    return None
