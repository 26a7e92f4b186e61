"""`build`: Hydra's `instantiate` with a user's bad value reported as one line.

Kept apart from hicra.training.run so that hicra-eval can use it without importing Lightning (seconds of start-up).
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hicra.errors import ConfigError


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, with a user's bad value reported as a one-line ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err
        while cause.__cause__ is not None and not isinstance(cause, ConfigError):  # a ConfigError is the story,
            cause = cause.__cause__                                                # not the OSError it wraps
        if isinstance(cause, (ConfigError, ValueError, TypeError, OmegaConfBaseException)):
            raise ConfigError(str(cause).splitlines()[0]) from err
        raise


# --- configs read from a store or a run folder ----------------------------------------------------------------------

# Hydra's instantiate keys besides `_target_`. hicra's own task configs use none of them, and each changes what a
# call does: `_args_` passes positional arguments (os.system's command), `_partial_` returns a callable instead of
# the object, `_recursive_`/`_convert_` change how nested nodes are built.
_CALL_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")


def refuse_interpolations(node, origin: str, where: str) -> None:
    """A one-line ConfigError naming `origin` and the key when a value of `node` is an interpolation: reading it would
    run a resolver (`oc.env` reads the environment, `oc.create` builds a node after any check of it). hicra writes
    the configs it stores resolved, so its own never hold one."""
    for path, value in _nodes(_plain(node), where):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{origin}: {path}={value[:80]!r} is an interpolation; a config read from a store or "
                              "a run folder is taken as written (hicra writes it resolved)")


def refuse_foreign_targets(node, allowed: frozenset[str], origin: str, where: str) -> None:
    """A one-line ConfigError naming `origin` and the target unless every `_target_` anywhere in `node` (nested
    dicts and lists included) is one of `allowed`, no other Hydra call key is set and no value is an interpolation.
    Reads the node unresolved, so nothing in it runs: the check before `instantiate` on a config someone else wrote."""
    refuse_interpolations(node, origin, where)
    for path, value in _nodes(_plain(node), where):
        if not isinstance(value, dict):
            continue
        target = value.get("_target_")
        if "_target_" in value and not (isinstance(target, str) and target in allowed):
            raise ConfigError(f"{origin}: {path}._target_={str(target)[:80]!r} is not one of hicra's own classes; "
                              f"a config read from a store or a run folder may only build: {', '.join(sorted(allowed))}")
        for key in _CALL_KEYS:
            if key in value:
                raise ConfigError(f"{origin}: {path}.{key} is set; a config read from a store or a run folder may "
                                  "only name one of hicra's own classes by _target_, with keyword arguments")


def build_stored(node: DictConfig, allowed: frozenset[str], origin: str, where: str):
    """`build` for a config read from a store or a run folder: `refuse_foreign_targets` first, then `build`."""
    refuse_foreign_targets(node, allowed, origin, where)
    return build(node)


def _plain(node):
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node


def _nodes(value, path: str):
    """(path, value) for `value` and everything nested in it, depth first."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, f"{path}[{index}]")
