"""Processes of one launch (`accelerate launch --num_processes N`): who am I, wait for the others,
and which prompts are mine.

Generation, scoring and eval are sharded by prompt id (a stable hash, so a prompt belongs to the same
rank whatever else is in the table); shards are merged on the main process in the prompt table's
order, so the merged table equals a single-process run's. Training runs on every rank under DDP /
DeepSpeed / FSDP; everything else runs once, on the main process.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from posttrain.run import schema

log = logging.getLogger("posttrain")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the launch, from the launcher's environment (1 process when unset)."""
    env = os.environ
    return World(rank=int(env.get("RANK", 0)), size=int(env.get("WORLD_SIZE", 1)),
                 local_rank=int(env.get("LOCAL_RANK", 0)), local_size=int(env.get("LOCAL_WORLD_SIZE", 1)))


# How long a collective may wait (seconds). The other ranks wait in a barrier while the main process
# alone selects, mixes, scores with the reward model or uploads to the Hub, which can take hours on a
# real run; torch's default (10 min NCCL, 30 min gloo) would have its watchdog kill the launch.
BARRIER_TIMEOUT_S = 6 * 3600


def barrier() -> None:
    """Waits for every process of the launch (a no-op for one process). Starts the process group on
    first use: gloo on CPU, NCCL on GPUs (accelerate's choice), with a collective timeout of
    $POSTTRAIN_BARRIER_TIMEOUT_S (default BARRIER_TIMEOUT_S); the trainers later reuse it."""
    if world().size == 1:
        return
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    timeout = timedelta(seconds=float(os.environ.get("POSTTRAIN_BARRIER_TIMEOUT_S", BARRIER_TIMEOUT_S)))
    PartialState(cpu=not torch.cuda.is_available(), timeout=timeout).wait_for_everyone()


def shutdown(wait: bool = True) -> None:
    """Ends the launch's process group (a no-op for one process or when none was started). A rank that
    exits with the group alive can abort in its communication threads' teardown ("terminate called
    without an active exception"), failing a launch whose work was all written. `wait`: first wait for
    every rank (a clean end); False on a failing rank, whose peers may never reach that barrier."""
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    # Objects the trainers leave in reference cycles (a DeepSpeed engine's pending collective handles, their
    # tensors) go now, while the interpreter is whole: freed during its finalization, a tensor held by a
    # communication thread's work item aborts the process (pytorch/pytorch#179291 describes the mechanism).
    gc.collect()
    if wait:
        dist.barrier()
        dist.destroy_process_group()
        return
    try:  # a failing rank: its own error is the one to report, not a teardown error of a broken group
        dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001
        log.warning("ending the process group after a failure: %s", e)


def owner(prompt_id: str, size: int) -> int:
    """The rank that handles a prompt: a stable hash of its id."""
    return int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:4], "little") % size


def engine_world(w: World, tensor_parallel: int) -> World | None:
    """The launch as vLLM engines of `tensor_parallel` devices each see it: on every node, each group of that
    many consecutive local ranks shares one engine, run by its first rank over the group's shard of the
    prompts. -> this rank's place among the engines (rank = group, size = number of groups), or None for
    a rank that lends its device to its group's engine and handles no prompts. One process (no launch) runs
    one engine over as many of the machine's devices as it needs."""
    if tensor_parallel == 1 or w.size == 1:
        return w
    if w.local_size % tensor_parallel:
        raise ValueError(f"generate.tensor_parallel_size={tensor_parallel} must divide the {w.local_size} "
                         f"processes per node of this launch (each engine takes that many of them)")
    if w.local_rank % tensor_parallel:
        return None
    per_node = w.local_size // tensor_parallel
    node = w.rank // w.local_size
    return World(rank=node * per_node + w.local_rank // tensor_parallel, size=w.size // tensor_parallel,
                 local_rank=w.local_rank // tensor_parallel, local_size=per_node)


def shard(table: pa.Table, w: World | None, id_column: str = "id") -> pa.Table:
    """The rows of `table` this rank handles (all of them for one process; none for w = None, a rank
    without an engine of its own, see `engine_world`)."""
    if w is None:
        return table.slice(0, 0)
    if w.size == 1:
        return table
    mine = [owner(pid, w.size) == w.rank for pid in table.column(id_column).to_pylist()]
    return table.filter(pa.array(mine, pa.bool_()))


def in_prompt_order(table: pa.Table, prompt_ids: list[str], id_column: str = "prompt_id",
                    then: str | None = "sample_index") -> pa.Table:
    """`table` sorted as a single process writes it: by the prompt table's order, then by `then`."""
    position = pc.index_in(table.column(id_column), value_set=pa.array(prompt_ids, pa.string()))
    table = table.append_column("__position", position)
    keys = [("__position", "ascending")] + ([(then, "ascending")] if then else [])
    return table.sort_by(keys).drop_columns(["__position"])


def read_shards(shard_dirs: list, name: str) -> pa.Table:
    """Every rank's `<name>.parquet` of a sharded stage, concatenated (validated against its schema)."""
    return pa.concat_tables([schema.read(d / f"{name}.parquet", name) for d in shard_dirs])
