"""posttrain.run.dist's merge helpers as plain functions (no processes): the single-process row order and the
reading of every rank's shard. tests/test_multiprocess.py runs them under real launches."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.run import schema
from posttrain.run.dist import in_prompt_order, read_shards
from posttrain.run.schema import SchemaError
from posttrain.stages.scoring import merge_scored

PROMPT_IDS = ["p2", "p1", "p3"]  # the prompt table's order: not sorted, so sorting by id would show


def samples(rows: list[tuple[str, int]]) -> pa.Table:
    return schema.from_records([{"prompt_id": p, "sample_index": i, "completion": f"{p}-{i}", "num_prompt_tokens": 1,
                                 "num_completion_tokens": 1} for p, i in rows], "samples")


def keys(table: pa.Table) -> list[tuple[str, int]]:
    return list(zip(table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist()))


def test_in_prompt_order_sorts_by_the_prompt_tables_order_then_sample_index():
    shuffled = samples([("p1", 1), ("p3", 0), ("p2", 1), ("p1", 0), ("p2", 0)])
    assert keys(in_prompt_order(shuffled, PROMPT_IDS)) == [("p2", 0), ("p2", 1), ("p1", 0), ("p1", 1), ("p3", 0)]
    assert in_prompt_order(shuffled, PROMPT_IDS).column_names == shuffled.column_names  # no helper column left


def test_in_prompt_order_without_a_second_key_keeps_each_prompts_rows_as_they_were():
    table = pa.table({"id": ["p1/b", "p3/a", "p2/z", "p1/a", "p2/y"], "prompt": ["p1", "p3", "p2", "p1", "p2"]})
    got = in_prompt_order(table, PROMPT_IDS, id_column="prompt", then=None)
    assert got.column("id").to_pylist() == ["p2/z", "p2/y", "p1/b", "p1/a", "p3/a"]  # a stable sort


def shards(tmp_path, *tables: pa.Table, name: str = "samples") -> list:
    dirs = []
    for rank, t in enumerate(tables):
        d = tmp_path / "shards" / f"rank{rank}"
        d.mkdir(parents=True)
        schema.write(t, name, d / f"{name}.parquet")
        dirs.append(d)
    return dirs


def test_read_shards_concatenates_the_ranks_in_rank_order(tmp_path):
    dirs = shards(tmp_path, samples([("p1", 0), ("p3", 0)]), samples([("p2", 0)]), samples([]))
    assert keys(read_shards(dirs, "samples")) == [("p1", 0), ("p3", 0), ("p2", 0)]


def test_read_shards_validates_each_shard_and_names_the_bad_one(tmp_path):
    dirs = shards(tmp_path, samples([("p1", 0)]), samples([("p2", 0)]))
    pq.write_table(samples([("p2", 0)]).drop_columns(["completion"]), dirs[1] / "samples.parquet")
    missing = r"rank1/samples\.parquet: samples table is missing column\(s\) \['completion'\]"
    with pytest.raises(SchemaError, match=missing):
        read_shards(dirs, "samples")
    (dirs[1] / "samples.parquet").unlink()  # a rank that never wrote its shard
    with pytest.raises(SchemaError, match=r"rank1/samples\.parquet: cannot read as Parquet"):
        read_shards(dirs, "samples")


def test_merge_scored_gives_the_single_process_table_and_pass_rate(tmp_path):
    def scored(rows):
        return schema.from_records([{"prompt_id": p, "sample_index": i, "completion": "", "num_prompt_tokens": 1,
                                     "num_completion_tokens": 1, "capability": "math", "verifier": "math",
                                     "reward": r} for p, i, r in rows], "scored")

    # rank 0 scored p1 and p3, rank 1 p2; 3 of the 4 scored samples pass
    dirs = shards(tmp_path, scored([("p3", 0, 1.0), ("p1", 1, 1.0), ("p1", 0, 0.0)]), scored([("p2", 0, 1.0)]),
                  name="scored")
    prompts = pa.table({"id": PROMPT_IDS})
    assert merge_scored(tmp_path, dirs, [{}, {}], prompts) == {"scored": 4, "pass_rate": 0.75, "pass_threshold": 1.0}
    assert keys(pq.read_table(tmp_path / "scored.parquet")) == [("p2", 0), ("p1", 0), ("p1", 1), ("p3", 0)]


def _command_in_a_process_group(fail: bool):
    """A `posttrain` command that starts a (one-rank, gloo) process group, as the trainers do, then ends."""
    import argparse

    import torch.distributed as dist

    def command(args):
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        if fail:
            raise RuntimeError("the stage failed")
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=command)
    return parser


@pytest.mark.parametrize("fail", [False, True])
def test_every_command_ends_its_process_group_and_a_failing_one_waits_for_no_peer(monkeypatch, fail):
    import torch.distributed as dist

    from posttrain import cli

    barriers = []
    monkeypatch.setattr(cli, "build_parser", lambda: _command_in_a_process_group(fail))
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: barriers.append(1))
    if fail:
        with pytest.raises(RuntimeError, match="the stage failed"):
            cli.main([])
    else:
        assert cli.main([]) == 0
    assert not dist.is_initialized()  # no rank leaves with its group alive (it can abort at exit)
    assert barriers == ([] if fail else [1])  # a failing rank's peers may never reach a barrier: it does not wait


def test_a_failing_commands_error_is_not_replaced_by_a_teardown_error(monkeypatch):
    import torch.distributed as dist

    from posttrain import cli

    real_destroy = dist.destroy_process_group
    monkeypatch.setattr(cli, "build_parser", lambda: _command_in_a_process_group(fail=True))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: (_ for _ in ()).throw(RuntimeError("broken group")))
    try:
        with pytest.raises(RuntimeError, match="the stage failed"):
            cli.main([])
    finally:
        real_destroy()
