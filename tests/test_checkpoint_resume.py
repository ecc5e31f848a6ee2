"""Resuming a killed training stage: from its newest complete checkpoint, in the same data order.

- `resume_checkpoint` skips (and, on the main process, deletes) checkpoint folders a kill left half
  written: no `trainer_state.json`, or a truncated one;
- length-grouped DPO batches come in an order set by the seed and the epoch alone;
- a 2-epoch length-grouped DPO stage resumed mid-epoch-2, with an incomplete newer checkpoint beside its
  last complete one, trains on the pairs and reaches the weights of an uninterrupted run; under two
  processes too (the resumed epoch's order there comes from the stage's epoch callback).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from posttrain.recipe.config import DPOConfig
from posttrain.stages.dpo import EpochSeededLengthGroupedSampler, _SamplerEpoch, dpo_trainer
from posttrain.training.trainer import LogLastStep, resume_checkpoint, run_loss, train_and_save
from tests._fast_paths import FP32
from tests.conftest import ROOT


def _checkpoint(root: Path, step: int, state: str | None) -> Path:
    """A fake `checkpoint-<step>` with a weights file and `state` as its trainer_state.json (None: none)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


COMPLETE = json.dumps({"global_step": 2, "log_history": []})


def test_resume_checkpoint_takes_the_newest_complete_one_and_deletes_newer_incomplete_ones(tmp_path):
    root = tmp_path / "checkpoints"
    complete = _checkpoint(root, 2, COMPLETE)
    truncated = _checkpoint(root, 4, COMPLETE[:10])
    missing = _checkpoint(root, 10, None)  # 10 > 4: by step number, not by name
    (root / "runs").mkdir()  # TensorBoard's folder, not a checkpoint
    (root / "checkpoint-12").write_text("not a folder")
    assert resume_checkpoint(root) == str(complete)
    assert not truncated.exists() and not missing.exists()
    assert (root / "runs").is_dir() and (root / "checkpoint-12").is_file() and (complete / "model.safetensors").exists()


def test_other_ranks_choose_the_same_checkpoint_and_delete_nothing(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    complete = _checkpoint(root, 2, COMPLETE)
    newer = [_checkpoint(root, 4, None), _checkpoint(root, 6, "\xff not json")]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resume_checkpoint(root) == str(complete)
    assert all(p.exists() for p in newer)
    monkeypatch.setenv("RANK", "0")  # the main process deletes them; the choice is the same either way
    assert resume_checkpoint(root) == str(complete) and not any(p.exists() for p in newer)


def test_without_a_complete_checkpoint_training_starts_over(tmp_path):
    assert resume_checkpoint(tmp_path / "never_written") is None
    root = tmp_path / "checkpoints"
    only = _checkpoint(root, 2, "")
    assert resume_checkpoint(root) is None and not only.exists()


def _order(epoch: int, seed: int = 0, lengths: list[int] | None = None) -> list[int]:
    lengths = lengths or [random.Random(1).randrange(5, 200) for _ in range(64)]
    sampler = EpochSeededLengthGroupedSampler(4, lengths=lengths, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_run_loss_weighs_each_logged_window_by_its_steps():
    history = [{"step": 2, "loss": 1.0}, {"step": 3, "epoch": 1.0}, {"step": 6, "loss": 0.5}, {"step": 8, "loss": 0.2}]
    assert run_loss(history, fallback=9.0) == pytest.approx((2 * 1.0 + 4 * 0.5 + 2 * 0.2) / 8)
    assert run_loss([{"step": 3, "epoch": 1.0}], fallback=9.0) == 9.0


def test_length_grouped_order_is_a_function_of_seed_and_epoch():
    torch.manual_seed(123)  # the global RNG plays no part
    first = [_order(e) for e in range(3)]
    torch.manual_seed(456)
    assert [_order(e) for e in range(3)] == first
    assert all(sorted(order) == list(range(64)) for order in first)  # every pair once per epoch
    assert len({tuple(order) for order in first}) == 3  # each epoch its own order
    assert _order(0, seed=7) != first[0]


def test_epoch_callback_sets_the_sampler_epoch_from_the_resumed_state():
    sampler = EpochSeededLengthGroupedSampler(4, lengths=list(range(16)), seed=0)
    callback = _SamplerEpoch(sampler)
    for state_epoch, epoch in ((None, 0), (0.0, 0), (1.0, 1), (1.5, 1), (2.75, 2)):
        callback.on_epoch_begin(None, SimpleNamespace(epoch=state_epoch), None)
        assert sampler.epoch == epoch


def _recording(trainer) -> list[list]:
    """The pairs of every batch `trainer` trains on, in order (skipped batches are never collated)."""
    seen, collate = [], trainer.data_collator

    def record(examples):
        seen.append([list(e["prompt_ids"]) + list(e["chosen_ids"]) for e in examples])
        return collate(examples)

    trainer.data_collator = record
    return seen


def _killed_copy(saved: Path, out: Path) -> None:
    """`out/checkpoints` as a run killed while writing checkpoint-8 leaves it: checkpoint-6 whole (save_total_limit
    deletes it only after checkpoint-8's trainer_state.json), checkpoint-8 without that file."""
    shutil.copytree(saved / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    shutil.copytree(saved / "checkpoint-8", out / "checkpoints" / "checkpoint-8")
    (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").unlink()


# 2 epochs of 16 pairs in batches of 4 (per process, or over two): 4 steps an epoch, a checkpoint every 2
TWO_EPOCHS = dict(batch_size=4, num_epochs=2, checkpoint_every_steps=2, group_by_length=True,
                  gradient_checkpointing=False)


def test_a_stage_resumes_from_its_last_complete_checkpoint_in_the_same_order(tmp_path, model_dir, pairs):
    """A run killed while writing checkpoint-8 resumes from checkpoint-6 (mid-epoch-2) and trains the
    batches an uninterrupted run does to the same weights."""
    cfg = DPOConfig(**TWO_EPOCHS)
    full, _ = dpo_trainer(tmp_path / "full", model_dir, pairs, cfg, 0, save_total_limit=None, **FP32)
    full.add_callback(LogLastStep())  # as train_and_save does: checkpoints log their step
    full_batches = _recording(full)
    full_result = full.train()
    assert full_result.global_step == 8 and len(full_batches) == 8

    out = tmp_path / "resumed"
    _killed_copy(tmp_path / "full" / "checkpoints", out)
    trainer, tokenizer = dpo_trainer(out, model_dir, pairs, cfg, 0, **FP32)
    batches, resumed_from = _recording(trainer), []
    train = trainer.train
    trainer.train = lambda resume_from_checkpoint=None: resumed_from.append(resume_from_checkpoint) or train(
        resume_from_checkpoint=resume_from_checkpoint)
    info = train_and_save(trainer, tokenizer, out)

    assert resumed_from == [str(out / "checkpoints" / "checkpoint-6")]
    assert info["steps"] == 8 and info["resumed"] is True
    # every checkpoint logged its step, so the resumed history holds the loss of steps 1-6 too (this tiny
    # run's loss barely moves: run_loss's own test is the one that tells a whole run's mean from 7-8's)
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 4, 6, 8]
    assert info["train_loss"] == pytest.approx(full_result.training_loss, abs=2e-4)
    assert batches == full_batches[6:]  # the rest of epoch 2, in the uninterrupted run's order
    assert full_batches[4:] != full_batches[:4]  # epoch 2 has an order of its own
    from transformers import AutoModelForCausalLM

    got = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    for name, want in full.model.state_dict().items():
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6, msg=name)


TWO_RANKS = """
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from posttrain.recipe.config import DPOConfig
from posttrain.run.dist import barrier, shutdown, world
from posttrain.stages.dpo import dpo_trainer
from posttrain.training.trainer import train_and_save
from tests.test_checkpoint_resume import TWO_EPOCHS, _killed_copy, _recording

model_dir, pairs_file, tmp = map(Path, sys.argv[1:])
pairs, cfg = pq.read_table(pairs_file), DPOConfig(**{**TWO_EPOCHS, "batch_size": 2})
full = dpo_trainer(tmp / "full", model_dir, pairs, cfg, 0, save_total_limit=None, bf16=False)[0]
full_batches = _recording(full)
full.train()
if world().is_main:
    _killed_copy(tmp / "full" / "checkpoints", tmp / "resumed")
barrier()
trainer, tokenizer = dpo_trainer(tmp / "resumed", model_dir, pairs, cfg, 0, bf16=False)
batches = _recording(trainer)
info = train_and_save(trainer, tokenizer, tmp / "resumed")
(tmp / f"rank{world().rank}.json").write_text(json.dumps({**info, "full": full_batches, "batches": batches}))
shutdown()
"""


def test_two_ranks_resume_in_the_same_order(tmp_path, model_dir, pairs):
    """Under two processes accelerate's `set_epoch` does not reach the sampler of the resumed epoch
    (skipped, sharded, batched); the stage's epoch callback does. Two gloo processes on the CPU."""
    import pyarrow.parquet as pq

    pq.write_table(pairs, tmp_path / "pairs.parquet")
    (tmp_path / "two_ranks.py").write_text(TWO_RANKS)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(random.randint(20000, 40000)), str(tmp_path / "two_ranks.py"),
           str(model_dir), str(tmp_path / "pairs.parquet"), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["steps"] == 8 and got["resumed"] is True
        assert len(got["full"]) == 8 and got["full"][4:] != got["full"][:4]
        assert got["batches"] == got["full"][6:], f"rank {rank}: other pairs after the resume"
