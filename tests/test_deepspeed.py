"""DeepSpeed ZeRO-2 on CPU: the SFT stage under `accelerate launch --config_file
recipes/accelerate/cpu_zero2.yaml` runs on 2 gloo processes, each a DeepSpeed engine at ZeRO stage 2
(not DDP, not one process), and saves a trained plain model folder."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="deepspeed is not installed (scripts/setup.sh installs the '.[deepspeed]' extra)"),
]


def test_zero2_sft_on_two_cpu_processes(tmp_path, tiny_base):
    from transformers import AutoModelForCausalLM

    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "recipes" / "accelerate" / "cpu_zero2.yaml"),
           "--main_process_port", str(random.randint(20000, 40000)),
           str(ROOT / "tests" / "_ds_sft_step.py"), str(tiny_base), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    assert sorted(p.name for p in tmp_path.glob("rank*.json")) == ["rank0.json", "rank1.json"]
    for rank in range(2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["rank"] == seen["process_index"] == rank
        assert seen["world_size"] == seen["num_processes"] == seen["dist_world_size"] == 2
        assert seen["dist_backend"] == "gloo" and seen["device"].startswith("cpu")
        assert seen["distributed_type"] == "DistributedType.DEEPSPEED" and seen["engine"] == "DeepSpeedEngine"
        assert seen["zero_stage"] == 2 and seen["optimizer"] == "DeepSpeedZeroOptimizer"
        # every parameter group's optimizer state and gradients are split over both ranks
        assert seen["partition_count"] and set(seen["partition_count"]) == {2}
        assert seen["info"]["steps"] == 2  # 8 conversations / (2 ranks x 2 per batch), one epoch

    model_dir = tmp_path / "sft" / "model"
    assert not (tmp_path / "sft" / "checkpoints").exists()
    before = AutoModelForCausalLM.from_pretrained(tiny_base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert before.keys() == after.keys()
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "ZeRO-2 training left the weights unchanged"
