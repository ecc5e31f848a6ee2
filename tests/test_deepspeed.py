"""DeepSpeed on CPU: the SFT and DPO stages under `accelerate launch --config_file
recipes/accelerate/cpu_zero{2,3}.yaml` run on 2 gloo processes, each a DeepSpeed engine at the config's ZeRO
stage (not DDP, not one process), and save a trained plain model folder that holds every full weight."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from posttrain.recipe.config import RewardModelConfig
from posttrain.stages.reward_model import rm_scores
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="deepspeed is not installed (scripts/setup.sh installs the '.[deepspeed]' extra)"),
]


def _launch(config: str, stage: str, base: Path, out: Path, *options: str, kill_at: str | None = None) -> list[dict]:
    """tests/_dist_stage.py under `config` on 2 processes; what each rank's trainer ran under. With
    `kill_at` (a posttrain.run.faults point), every rank is SIGKILLed there and nothing is returned."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "recipes" / "accelerate" / config),
           "--main_process_port", str(random.randint(20000, 40000)),
           str(ROOT / "tests" / "_dist_stage.py"), stage, str(base), str(out), *options]
    # faulthandler: a rank that aborts (SIGABRT) prints where each of its threads was
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **({"POSTTRAIN_KILL_AT": kill_at} if kill_at else {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if kill_at:
        assert proc.returncode != 0 and not list(out.glob("rank*.json")), proc.stderr[-4000:]
        return []
    reported = sorted(p.name for p in out.glob("rank*.json"))
    assert proc.returncode == 0, f"ranks that reported: {reported}\n{proc.stderr[-4000:]}"
    assert reported == ["rank0.json", "rank1.json"]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def _assert_ran_sharded(seen: list[dict], zero_stage: int, optimizer: str) -> None:
    for rank, s in enumerate(seen):
        assert s["rank"] == s["process_index"] == rank
        assert s["world_size"] == s["num_processes"] == s["dist_world_size"] == 2
        assert s["dist_backend"] == "gloo" and s["device"].startswith("cpu")
        assert s["distributed_type"] == "DistributedType.DEEPSPEED" and s["engine"] == "DeepSpeedEngine"
        assert s["zero_stage"] == zero_stage and s["optimizer"] == optimizer
        assert s["info"]["steps"] == 2  # 8 rows / (2 ranks x 2 per batch), one epoch


def test_zero2_sft_on_two_cpu_processes(tmp_path, tiny_base):
    seen = _launch("cpu_zero2.yaml", "sft", tiny_base, tmp_path)
    _assert_ran_sharded(seen, 2, "DeepSpeedZeroOptimizer")
    # every parameter group's optimizer state and gradients are split over both ranks
    assert all(s["partition_count"] and set(s["partition_count"]) == {2} for s in seen)

    assert not (tmp_path / "sft" / "checkpoints").exists()
    before, after = _weights(tiny_base), _weights(tmp_path / "sft" / "model")
    assert before.keys() == after.keys()
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "ZeRO-2 training left the weights unchanged"


def test_zero3_lora_sft_merges_the_gathered_weights(tmp_path, tiny_base):
    """Under ZeRO-3 each rank holds half of every weight; the saved model must hold whole weights with the
    adapters merged: every linear layer moved, the norms and embeddings (no adapters) exactly as before."""
    seen = _launch("cpu_zero3.yaml", "sft", tiny_base, tmp_path, "lora")
    _assert_ran_sharded(seen, 3, "DeepSpeedZeroOptimizer_Stage3")
    assert all(s["partition_count"] == 2 for s in seen)

    before, after = _weights(tiny_base), _weights(tmp_path / "sft" / "model")
    assert before.keys() == after.keys() and all(after[k].shape == before[k].shape for k in before)
    linear = {k for k in before if k.endswith("proj.weight")}
    assert linear and all(not torch.equal(before[k], after[k]) for k in linear)
    assert all(torch.equal(before[k], after[k]) for k in before.keys() - linear)


def test_zero3_dpo_with_precomputed_reference_trains_like_zero2(tmp_path, tiny_base):
    """TRL's reference pass wraps the policy in a DeepSpeed inference engine; under ZeRO-3 its hooks broke the
    first training step ("pop from an empty deque") until the stage released them. Same pairs, same ranks,
    same seed: ZeRO-3 and ZeRO-2 take the same steps (sharding changes where the numbers live, not them)."""
    z2 = _launch("cpu_zero2.yaml", "dpo", tiny_base, tmp_path / "z2", "precompute")
    z3 = _launch("cpu_zero3.yaml", "dpo", tiny_base, tmp_path / "z3", "precompute")
    _assert_ran_sharded(z3, 3, "DeepSpeedZeroOptimizer_Stage3")
    assert [s["info"]["train_loss"] for s in z3] == pytest.approx([s["info"]["train_loss"] for s in z2], abs=1e-3)

    before = _weights(tiny_base)
    w2, w3 = (_weights(tmp_path / run / "dpo" / "model") for run in ("z2", "z3"))
    assert all(not torch.equal(before[k], w3[k]) for k in before)
    assert max((w2[k] - w3[k]).abs().max().item() for k in before) < 1e-4
    assert not (tmp_path / "z3" / "dpo" / "pairs_dataset").exists()


def test_zero3_sft_killed_mid_training_resumes_to_the_same_weights(tmp_path, tiny_base):
    """Both ranks die right after the step-1 checkpoint (each wrote its own shard of weights and optimizer
    state); the same command resumes from it and ends on the weights of a run that was never killed."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    _launch("cpu_zero3.yaml", "sft", tiny_base, killed, "checkpoints", kill_at="killed/sft/step1")
    shards = sorted(p.name for p in (killed / "sft" / "checkpoints" / "checkpoint-1" / "global_step1").iterdir())
    assert [s for s in shards if "optim_states" in s] == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
                                                          for r in (0, 1)]
    assert not (killed / "sft" / "model").exists()

    resumed = _launch("cpu_zero3.yaml", "sft", tiny_base, killed, "checkpoints")
    assert all(s["info"]["resumed"] and s["info"]["steps"] == 2 for s in resumed)
    _launch("cpu_zero3.yaml", "sft", tiny_base, whole, "checkpoints")
    got, want = _weights(killed / "sft" / "model"), _weights(whole / "sft" / "model")
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not (killed / "sft" / "checkpoints").exists()


def test_a_whole_round_runs_under_zero3(tmp_path, tiny_base):
    """`accelerate launch --config_file recipes/accelerate/cpu_zero3.yaml posttrain/round.py`: sharded generation,
    the reward model, SFT and DPO as ZeRO-3 engines on both ranks. After a ZeRO-3 trainer, transformers
    partitioned every model loaded in the process, so the main process alone loading the RM to score hung
    (a collective with one rank) until the stages unregistered the trainer's DeepSpeed config."""
    import yaml

    from tests.conftest import TEST_RECIPE

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**TEST_RECIPE, "base_model": str(tiny_base), "output_dir": str(tmp_path / "runs"),
                                      "reward_model": {"enabled": True, "weight": 0.1}}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "recipes" / "accelerate" / "cpu_zero3.yaml"),
           "--main_process_port", str(random.randint(20000, 40000)),
           str(ROOT / "posttrain" / "round.py"), "--recipe", str(recipe)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    round_1 = tmp_path / "runs" / "test" / "round_1"
    manifests = {s: json.loads((round_1 / s / "manifest.json").read_text())
                 for s in ("generate", "score", "reward_model", "select", "mix", "sft", "dpo", "eval")}
    assert all(m["num_processes"] == 2 for m in manifests.values())
    assert manifests["reward_model"]["results"]["scored"] == manifests["generate"]["results"]["samples"]
    # Each rank scored its shard of the prompts with the RM: merged by sample id, the scores are those one
    # process gives with the same model.
    scored = pq.read_table(round_1 / "reward_model" / "scored.parquet")
    prompts = pq.read_table(round_1.parent / "round_0" / "prompts" / "train.parquet")
    one = rm_scores(round_1 / "reward_model" / "model", scored, prompts, RewardModelConfig())
    assert one["prompt_id"].equals(scored["prompt_id"]) and one["sample_index"].equals(scored["sample_index"])
    got, want = scored["rm_score"].to_pylist(), one["rm_score"].to_pylist()
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert not (round_1 / "reward_model" / "rm_shards").exists()
    assert manifests["sft"]["results"]["steps"] > 0 and manifests["dpo"]["results"]["steps"] > 0
    before, after = _weights(tiny_base), _weights(round_1 / "dpo" / "model")
    assert all(after[k].shape == before[k].shape for k in before)  # whole weights, gathered from both ranks
