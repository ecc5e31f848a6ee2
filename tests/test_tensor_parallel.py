"""vLLM tensor parallel (`generate.tensor_parallel_size`): which ranks run an engine and on which devices,
and a 2-way tensor-parallel engine on this CPU sampling what a 1-way one samples."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from posttrain.run.dist import World, engine_world, shard


def test_engine_groups_span_consecutive_local_ranks_on_every_node():
    # 2 nodes x 4 processes, 2 devices per engine: ranks 0, 2, 4, 6 run engines 0..3
    got = {r: engine_world(World(rank=r, size=8, local_rank=r % 4, local_size=4), 2) for r in range(8)}
    assert {r: (w.rank, w.size) for r, w in got.items() if w} == {0: (0, 4), 2: (1, 4), 4: (2, 4), 6: (3, 4)}
    assert [r for r, w in got.items() if w is None] == [1, 3, 5, 7]
    assert engine_world(World(rank=3, size=4, local_rank=3, local_size=4), 1) == World(3, 4, 3, 4)
    with pytest.raises(ValueError, match="tensor_parallel_size=3 must divide the 4 processes"):
        engine_world(World(rank=0, size=4, local_rank=0, local_size=4), 3)
    # no launch: the one process runs one engine over T of the machine's devices, every prompt its own
    assert engine_world(World(rank=0, size=1, local_rank=0, local_size=1), 2) == World(0, 1, 0, 1)


def test_every_prompt_has_exactly_one_engine_and_idle_ranks_get_none():
    table = pa.table({"id": [f"p{i}" for i in range(50)]})
    ranks = [engine_world(World(rank=r, size=4, local_rank=r, local_size=4), 2) for r in range(4)]
    shards = [shard(table, w)["id"].to_pylist() for w in ranks]
    assert shards[1] == shards[3] == []
    assert sorted(shards[0] + shards[2]) == sorted(table["id"].to_pylist()) and shards[0] and shards[2]


def test_a_groups_engine_takes_the_groups_devices_and_core_sets(monkeypatch):
    from posttrain.models.engine_process import _child_env

    # _child_env writes the environment (it runs in the engine's own process): give it a copy, so nothing
    # it sets (an 8-core binding this machine lacks) leaks into later tests' engines.
    monkeypatch.setattr(os, "environ", {**os.environ, "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4",
                                        "CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    _child_env(1, tensor_parallel=2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "4,5|6,7"  # ranks 2 and 3's cores, one set per worker
    assert "LOCAL_RANK" not in os.environ  # the engine is not part of the launch's process group


@pytest.mark.slow
def test_two_way_tensor_parallel_engine_samples_like_one_way(tiny_base):
    from transformers import AutoTokenizer

    from posttrain.recipe.config import GenerateConfig
    from posttrain.models.engine import Engine
    from posttrain.tiny import world

    tok = AutoTokenizer.from_pretrained(tiny_base)
    prompts = [tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for r, _ in world.draw("math", "heldout", 4, 0)]
    requests = [{"prompt_token_ids": p, "n": 3, "temperature": 1.0, "top_p": 1.0, "max_tokens": 24, "seed": i}
                for i, p in enumerate(prompts)]
    texts = {}
    for tp in (1, 2):
        engine = Engine(tiny_base, GenerateConfig(dtype="float32", tensor_parallel_size=tp), 0, 256)
        try:
            texts[tp] = [[c["text"] for c in r["completions"]] for r in engine.generate(requests)]
        finally:
            engine.close()
    assert texts[2] == texts[1]
    assert len({t for r in texts[1] for t in r}) > 1  # really sampled


def test_a_rank_that_lends_its_device_starts_no_engine(monkeypatch):
    from posttrain.recipe.config import GenerateConfig
    from posttrain.models.engine import Engines, NoEngine

    for var, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(var, value)
    engines = Engines(GenerateConfig(tensor_parallel_size=2), 0, 256)
    engine = engines.get("/no/such/model")  # a real Engine would try (and fail) to load it
    assert engines.world is None and isinstance(engine, NoEngine)
    assert engine.generate([]) == []
    with pytest.raises(RuntimeError, match="runs no vLLM engine"):
        engine.generate([{"prompt_token_ids": [1]}])
