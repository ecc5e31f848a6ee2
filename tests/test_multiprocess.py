"""A round under `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): sharded generation,
scoring and eval merge into the single-process tables, training runs data-parallel, and a killed
2-rank run resumes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.conftest import ROOT, TEST_RECIPE, run_cli
from tests.test_round import survivors, weights
from tests.test_round_resume import started_from

pytestmark = pytest.mark.slow
# Round 0's eval is of the base; round 1's follows data-parallel training, which differs from one process's.
SHARDED = {("round_1", "generate"): "samples", ("round_1", "score"): "scored", ("round_1", "judge"): "judged",
           ("round_0", "eval"): "evals"}
MAIN_ONLY = {"select": ["sft", "pairs"], "mix": ["sft", "pairs"]}


def launch(recipe, env: dict | None = None, stage: str | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch posttrain/round.py --recipe recipe`, or with `stage` the one-stage command
    (`accelerate launch -m posttrain.cli <stage> --recipe recipe`: the round up to that stage)."""
    entry = [str(ROOT / "posttrain" / "round.py")] if stage is None else ["--module", "posttrain.cli", stage]
    return two_ranks([*entry, "--recipe", str(recipe)], env, timeout=900)


def two_ranks(entry: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`entry` (a script or `--module M` and its arguments) under `accelerate launch` on 2 gloo processes."""
    # --multi_gpu on a CPU machine gives 2 gloo processes; `--cpu --num_processes 2` would silently run 1.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(random.randint(20000, 40000)), *entry]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def recipe_at(tmp_path, tiny_base, name: str, **generate):
    """The test recipe, with the policy as LLM judge (a template short enough for the tiny base's context)."""
    templates = tmp_path / "judge_prompts"
    templates.mkdir(exist_ok=True)
    (templates / "complexity.txt").write_text('{prompt}\nJSON {"intentions": [...], "difficulty": 1-3}:')
    judge = {"model": "policy", "max_tokens": 24, "prompt_dir": str(templates), "judgments": ["complexity"]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TEST_RECIPE, "base_model": str(tiny_base), "output_dir": str(tmp_path / name),
                                    "generate": {**TEST_RECIPE["generate"], **generate},
                                    "mix": {**TEST_RECIPE["mix"], "judge": judge}}))
    return path, tmp_path / name / "test"


def manifest(run, stage: str) -> dict:
    return json.loads((run / "round_1" / stage / "manifest.json").read_text())


def test_two_ranks_merge_to_the_single_process_tables_and_resume(tmp_path, tiny_base, full_run):
    # The single-process reference: full_run (the same recipe but the judge, which no stage before it reads)
    # up to its generate and score, reused by fingerprint; one process judges and mixes.
    single_recipe, single = recipe_at(tmp_path, tiny_base, "single")
    started_from(full_run, single, "mix")
    proc = run_cli("mix", "--recipe", str(single_recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[round 1] score    complete, reused" in proc.stderr, proc.stderr[-3000:]
    two_recipe, two = recipe_at(tmp_path, tiny_base, "two")
    proc = launch(two_recipe)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("held-out accuracy per capability") == 1  # one table: the main rank's

    for (rnd, stage), table in SHARDED.items():
        got, want = (pq.read_table(run / rnd / stage / f"{table}.parquet") for run in (two, single))
        # Each prompt samples with its own seed on whichever rank owns it. logprob sums may differ in the
        # last float digits (batch composition changes the kernels' summation order); nothing else may.
        cols = [c for c in want.column_names if c != "logprob"]
        assert got.select(cols).equals(want.select(cols)), f"{stage} differs from the single-process run"
        if "logprob" in want.column_names:
            for a, b in zip(got["logprob"].to_pylist(), want["logprob"].to_pylist()):
                assert a == b if b is None else a == pytest.approx(b, rel=1e-5, abs=1e-4)  # None: a revision
        assert not (two / rnd / stage / "shards").exists()
    for stage, tables in MAIN_ONLY.items():
        for t in tables:
            got, want = (pq.read_table(run / "round_1" / stage / f"{t}.parquet") for run in (two, single))
            assert got.equals(want), f"{stage}/{t} differs from the single-process run"
    assert manifest(two, "judge")["num_processes"] == 2 and manifest(two, "judge")["results"]["judged"] > 0
    # data-parallel training: the same examples in half the optimizer steps of one process (batch 1)
    sft = manifest(two, "sft")
    assert sft["num_processes"] == 2
    assert sft["results"]["steps"] == -(-TEST_RECIPE["sft"]["num_epochs"] * sft["results"]["examples"] // 2)

    # A 2-rank run killed mid-SFT resumes from its checkpoint with 2 ranks. It starts from the 2-rank run's
    # round 0 (copied: reused by fingerprint), so the killed launch runs round 1 alone: sharded generation
    # and judging, then SFT until the kill.
    resumed_recipe, resumed = recipe_at(tmp_path, tiny_base, "resumed")
    shutil.copytree(two, resumed, symlinks=True)
    for done in (resumed / "round_1", resumed / "report"):
        shutil.rmtree(done)
    (resumed / "summary.json").unlink()
    mark = uuid.uuid4().hex
    killed = launch(resumed_recipe, env={"POSTTRAIN_KILL_AT": "round_1/sft/step2", "POSTTRAIN_TEST_RUN": mark})
    assert killed.returncode != 0
    assert not survivors(mark), "a rank or engine outlived the killed launch"
    assert list((resumed / "round_1" / "sft.tmp" / "checkpoints").glob("checkpoint-*")), killed.stderr[-3000:]
    proc = launch(resumed_recipe)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert manifest(resumed, "sft")["results"]["resumed"] is True
    assert manifest(resumed, "sft")["results"]["steps"] == manifest(two, "sft")["results"]["steps"]
    for (rnd, stage), table in SHARDED.items():
        got, want = (pq.read_table(run / rnd / stage / f"{table}.parquet") for run in (resumed, two))
        cols = [c for c in want.column_names if c != "logprob"]
        assert got.select(cols).equals(want.select(cols)), f"{rnd}/{stage} differs after resume"
    assert manifest(resumed, "generate")["num_processes"] == 2  # round 1 ran in the killed launch, sharded
    for stage in ("sft", "dpo"):  # the resumed training takes the uninterrupted 2-rank run's steps
        got, want = (weights(run / "round_1" / stage / "model") for run in (resumed, two))
        assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want), f"{stage} weights differ"

    # vLLM tensor parallel: the 2 ranks share one 2-way engine (run by rank 0 on both core sets; rank 1
    # handles no prompts), and the sampled tables are still the single-process ones. The round up to its
    # judge stage: the last that samples before the eval.
    tp_recipe, tp = recipe_at(tmp_path, tiny_base, "tp", tensor_parallel_size=2)
    proc = launch(tp_recipe, stage="judge")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (tp / "round_1" / "mix").exists()
    for (rnd, stage), table in SHARDED.items():
        got, want = (pq.read_table(run / rnd / stage / f"{table}.parquet") for run in (tp, single))
        cols = [c for c in want.column_names if c != "logprob"]
        assert got.select(cols).equals(want.select(cols)), f"{rnd}/{stage} differs with tensor parallel"
    shards = tp / "round_1" / "generate" / "manifest.json"
    assert json.loads(shards.read_text())["num_processes"] == 2


def test_a_signal_to_one_rank_checkpoints_every_rank_at_that_step(tmp_path, tiny_base):
    """SIGTERM to rank 1 alone after optimizer step 1 (its node preempted): both ranks save that step's checkpoint
    and stop, neither left waiting in a collective for the other; a relaunch resumes both from it."""
    out = tmp_path / "signal"
    entry = [str(ROOT / "tests" / "_dist_stage.py"), "sft", str(tiny_base), str(out)]  # 2 steps
    stopped = two_ranks(entry, {"POSTTRAIN_SIGNAL_AT": "signal/sft/step1@1"})
    assert stopped.returncode != 0
    assert "SIGTERM during sft: stopped after optimizer step 1" in stopped.stderr, stopped.stderr[-3000:]  # rank 1
    assert "A stop signal to another rank during sft: stopped after optimizer step 1" in stopped.stderr  # rank 0
    assert [p.name for p in (out / "sft" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    resumed = two_ranks(entry)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}.json").read_text())["info"]
        assert info["resumed"] is True and info["steps"] == 2


def test_fsdp_without_a_gpu_warns_that_it_trains_ddp(monkeypatch, caplog, tmp_path):
    import torch

    from posttrain.recipe.config import SFTConfig
    from posttrain.training.trainer import common_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level("WARNING", logger="posttrain.training.trainer"):
        assert common_args(tmp_path, SFTConfig(), 0)["use_cpu"] is True
    assert "FSDP needs GPUs" in caplog.text and "cpu_zero3.yaml" in caplog.text
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    caplog.clear()
    common_args(tmp_path, SFTConfig(), 0)
    assert "FSDP" not in caplog.text
