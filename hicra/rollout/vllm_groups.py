"""Which vLLM engine a training rank belongs to, what the ranks of one engine share, and their request seeds.

vLLM's external launcher (`distributed_executor_backend="external_launcher"`) runs one engine worker in each training
process and lays tensor parallelism over consecutive ranks of the running process group, as TRL's colocate mode does:

    world W ranks, tensor_parallel_size T:  engine k = ranks [k*T, (k+1)*T),  W / T engines in data parallel

The T ranks of an engine must feed it the same requests (same prompts, same seeds, same order): each keeps its own
scheduler, and only identical schedules keep their tensor-parallel collectives in step. So every rank of an engine
gathers the others' prompts (`gather_in_group`), the engine samples them all, and each rank keeps its own rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hicra.config.placement import check_tensor_parallel
from hicra.errors import ConfigError

SEED_SPACE = 2**31 - 1  # request seeds stay below it, as vLLM's int32-seeded sampler paths want


@dataclass(frozen=True)
class EngineGroup:
    """This rank's place: `rank` of `world`, in an engine of `tp` ranks; `group` gathers within it (None if tp = 1)."""

    rank: int
    world: int
    tp: int
    group: object | None = None

    @property
    def engine_index(self) -> int:
        return self.rank // self.tp

    @property
    def engines(self) -> int:  # data-parallel engines
        return self.world // self.tp

    @property
    def member(self) -> int:  # this rank's place inside its engine
        return self.rank % self.tp


def engine_group(tp: int) -> EngineGroup:
    """This rank's engine group; creates the tensor-parallel subgroups (a collective: every rank calls it once)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    check_tensor_parallel(tp, world)
    if tp == 1:
        return EngineGroup(rank, world, tp)
    # gloo: what travels here are Python lists of token ids, CPU data; NCCL would copy each pickle to the GPU.
    group, _ = dist.new_subgroups_by_enumeration([list(range(k * tp, (k + 1) * tp)) for k in range(world // tp)],
                                                 backend="gloo")
    return EngineGroup(rank, world, tp, group)


def gather_in_group(obj, engine: EngineGroup) -> list:
    """[obj of member 0, obj of member 1, ...] of this rank's engine (every member calls it)."""
    if engine.group is None:
        return [obj]
    gathered = [None] * engine.tp
    dist.all_gather_object(gathered, obj, group=engine.group)
    return gathered


def request_seeds(draw: int, engine: EngineGroup, num_requests: int, group_size: int) -> list[int]:
    """Seeds of an engine's `num_requests` requests: first + i*G. vLLM seeds request i's child j with seed + j, so
    the B = num_requests * G child seeds are consecutive and distinct. Engine k draws its `first` inside its own
    slice [k*w, (k+1)*w) of the seed space (w = SEED_SPACE / engines), so no two data-parallel engines share a
    seed within a step however their ranks' streams drew. `draw`: any integer from the sampling stream (the same
    on every member of the engine)."""
    width = SEED_SPACE // engine.engines
    span = width - num_requests * group_size
    if span <= 0:
        raise ValueError(f"{num_requests} requests x {group_size} samples do not fit a seed slice of {width}")
    first = engine.engine_index * width + draw % span
    return [first + i * group_size for i in range(num_requests)]


# --- plumbing: the environment the external launcher reads -----------------------------------------------------

def set_launcher_env(engine: EngineGroup, device: torch.device) -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, which vLLM's external launcher reads, from the
    running process group where the launcher (Lightning's own, for rank 0) left them unset. The engine's worker
    uses GPU LOCAL_RANK: it must be the policy's."""
    env = os.environ
    env.setdefault("RANK", str(engine.rank))
    env.setdefault("WORLD_SIZE", str(engine.world))
    env.setdefault("LOCAL_RANK", str(device.index if device.type == "cuda" and device.index is not None
                                     else engine.rank))
    if "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        address = _store_address()
        if address is not None:
            env.setdefault("MASTER_ADDR", address[0])
            env.setdefault("MASTER_PORT", str(address[1]))
    expected = {"RANK": engine.rank, "WORLD_SIZE": engine.world}
    if device.type == "cuda" and device.index is not None:
        expected["LOCAL_RANK"] = device.index
    wrong = {k: env[k] for k, v in expected.items() if env[k] != str(v)}
    if wrong:
        name, value = next(iter(wrong.items()))
        raise ConfigError(f"{name}={value} in the environment but this rank is {expected[name]} of its process group "
                          f"(rank {engine.rank} of {engine.world} on {device}): vLLM's external launcher would place "
                          f"its engine by it; allowed: unset {name}, or {name}={expected[name]}")


def _store_address() -> tuple[str, int] | None:
    """(host, port) of the default process group's TCP store; None for another store (file://), where nothing is
    needed: vLLM reads MASTER_* only to initialise torch.distributed, which is initialised already."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    store = dist.distributed_c10d._get_default_store()
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    return (store.host, store.port) if isinstance(store, dist.TCPStore) else None
