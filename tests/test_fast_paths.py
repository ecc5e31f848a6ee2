"""The SFT and DPO fast paths train exactly what the plain TRL path trains (issue 7).

Each test builds the stage's own trainers (`sft_trainer`, `dpo_trainer`) twice on a tiny random Llama,
once plain and once with a fast switch on, and compares losses and gradients on the same examples in
float32 (bf16 is turned off, so the tolerances hold on a GPU too):

- packing, in both layouts (the stage's packed rows kept apart for sdpa, and TRL's one flattened row for
  flash attention): a packed batch gives the same loss and gradients as the padded batch of the same
  conversations, and every packed conversation's per-token log-probs equal those of the conversation
  run alone (a control without restarting position ids shows the check can fail);
- precomputed reference log-probs equal the on-the-fly reference pass, leave out the formatting tokens
  exactly like the policy's, and give the same DPO loss and gradients; they also work under two ranks;
- padding-free DPO rows and shared prompts: tests/test_dpo_packing.py;
- gradient checkpointing and torch.compile: one training step moves the weights the same way;
- length-grouped DPO batches see every pair once and pad less;
- use_liger_kernel fails clearly where liger-kernel is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import subprocess
import sys

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from posttrain.recipe.config import DPOConfig, RecipeError, SFTConfig

from posttrain.recipe.load import load_recipe
from posttrain.stages.dpo import PAIRS_ON_DISK, dpo, dpo_trainer, formatting_token_ids
from posttrain.stages.sft import PackedRowsCollator, sft, sft_trainer
from tests._fast_paths import ATOL, FP32, RTOL, loss_and_grads, move_policy, whole_dataset_batch
from tests.conftest import ROOT


def _packed_trainer(tmp_path, model_dir, mix, layout: str, **cfg):
    """The stage's packing trainer; layout "flat" swaps in TRL's own padding-free collator (one flattened
    row per batch: what flash attention gets), "rows" keeps the stage's `PackedRowsCollator` (sdpa)."""
    trainer = sft_trainer(tmp_path, model_dir, mix, SFTConfig(packing=True, **cfg), 0, **FP32)[0]
    assert isinstance(trainer.data_collator, PackedRowsCollator)  # the tiny model runs sdpa
    if layout == "flat":
        trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=trainer.data_collator.pad_token_id,
                                                                padding_free=True)
    return trainer


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_packed_batch_trains_like_the_padded_batch(tmp_path, model_dir, mix, layout):
    n = mix.num_rows
    padded = sft_trainer(tmp_path / "a", model_dir, mix, SFTConfig(batch_size=n, max_length=128), 0, **FP32)[0]
    packed = _packed_trainer(tmp_path / "b", model_dir, mix, layout, batch_size=n, max_length=128)
    rows = len(packed.train_dataset)
    assert 1 < rows < n  # several conversations share a row, and there are rows of different widths
    padded_batch, packed_batch = whole_dataset_batch(padded), whole_dataset_batch(packed)
    assert "attention_mask" not in packed_batch
    assert packed_batch["input_ids"].shape[0] == (rows if layout == "rows" else 1)
    real = packed_batch["input_ids"] != padded.processing_class.pad_token_id
    assert int(real.sum()) == int(padded_batch["attention_mask"].sum())  # every real token, once
    assert int((packed_batch["labels"] != -100).sum()) == int((padded_batch["labels"][:, 1:] != -100).sum())

    loss_padded, grads_padded = loss_and_grads(padded, padded_batch)
    loss_packed, grads_packed = loss_and_grads(packed, packed_batch)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grads_packed, grads_padded, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_packed_conversations_do_not_attend_to_each_other(tmp_path, model_dir, mix, layout):
    trainer = _packed_trainer(tmp_path, model_dir, mix, layout, max_length=128)
    model = trainer.model.eval()
    batch = whole_dataset_batch(trainer)

    def log_probs(**inputs):
        with torch.no_grad():
            return model(**inputs, fused_lm_head=True).log_probs  # [rows, T - 1]: log p(token t+1 | ..t)

    packed = log_probs(input_ids=batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"])
    width = batch["input_ids"].shape[1]
    one_sequence = log_probs(input_ids=batch["input_ids"], labels=batch["labels"],
                             position_ids=torch.arange(width, device=packed.device).expand_as(batch["input_ids"]))
    conversations = later_differ = 0
    for row, (ids, labels, pos) in enumerate(zip(batch["input_ids"], batch["labels"], batch["position_ids"])):
        starts = (pos == 0).nonzero().flatten().tolist() + [width]
        assert (labels[starts[:-1]] == -100).all()  # none is scored on its predecessor's last token
        for a, b in zip(starts[:-1], starts[1:]):
            if (labels[a:b] == -100).all():
                continue  # the padding at a row's end
            conversations += 1
            alone = log_probs(input_ids=ids[None, a:b], labels=labels[None, a:b])[0]
            torch.testing.assert_close(packed[row, a:b - 1], alone, rtol=RTOL, atol=1e-5)
            later_differ += a > 0 and not torch.allclose(one_sequence[row, a:b - 1], alone, rtol=RTOL, atol=1e-5)
    assert conversations == mix.num_rows
    assert later_differ  # without restarting position ids, later conversations would see earlier ones


def test_precomputed_reference_log_probs_equal_the_reference_pass(tmp_path, model_dir, pairs):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    cfg = DPOConfig(batch_size=pairs.num_rows, max_length=512)
    plain = dpo_trainer(tmp_path / "a", model_dir, pairs, cfg, 0, **FP32)[0]
    pre = dpo_trainer(tmp_path / "b", model_dir, pairs, dataclasses.replace(cfg, precompute_ref_log_probs=True), 0,
                      **FP32)[0]
    assert plain.ref_model is not None and pre.ref_model is None  # no reference copy kept
    examples = [pre.train_dataset[i] for i in range(pairs.num_rows)]
    cached = torch.tensor([e["ref_chosen_logps"] for e in examples] + [e["ref_rejected_logps"] for e in examples])

    # The reference pass that plain TRL runs in every step, on the same examples (the precomputing stage
    # sorts its pairs by length)
    def key(e):
        return tuple(e["prompt_ids"]), tuple(e["chosen_ids"]), tuple(e["rejected_ids"])

    index = {key(plain.train_dataset[i]): i for i in range(pairs.num_rows)}
    batch = plain._prepare_inputs(plain.data_collator([plain.train_dataset[index[key(e)]] for e in examples]))
    with torch.no_grad():
        on_the_fly = torch.cat(plain.compute_ref_log_probs(plain.ref_model, batch)).cpu()
    torch.testing.assert_close(cached, on_the_fly, rtol=RTOL, atol=1e-4)

    # By hand: the completion tokens' log-probs without the formatting tokens; with them, the sums differ
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    unmasked = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [{k: e[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for e in examples])
    ids, completion = unmasked["input_ids"], unmasked["completion_mask"]
    formatting = torch.isin(ids, torch.tensor(formatting_token_ids(tokenizer)))
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        logits = reference(input_ids=ids, attention_mask=unmasked["attention_mask"]).logits[:, :-1]
    token_logps = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    by_hand = (token_logps * (completion * ~formatting)[:, 1:]).sum(1)
    with_formatting = (token_logps * completion[:, 1:]).sum(1)
    torch.testing.assert_close(cached, by_hand, rtol=RTOL, atol=1e-4)
    assert (cached - with_formatting).abs().min() > 1e-2  # every completion ends on <|eot_id|>, left out

    # The DPO loss (sigmoid + NLL) and its gradients, once the policy has moved away from the reference
    for trainer in (plain, pre):
        move_policy(trainer)
    loss_plain, grads_plain = loss_and_grads(plain, batch)
    loss_pre, grads_pre = loss_and_grads(pre, whole_dataset_batch(pre))
    torch.testing.assert_close(loss_pre, loss_plain, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grads_pre, grads_plain, rtol=RTOL, atol=ATOL)


def test_the_reference_pass_logs_pairs_done_of_all(tmp_path, model_dir, pairs, monkeypatch):
    """TRL's own bar for the pass is a tqdm that a log file sees as one unfinished line; the stage logs it."""
    import posttrain.stages.dpo as dpo_stage

    lines, real = [], dpo_stage.Progress
    monkeypatch.setattr(dpo_stage, "Progress", lambda *a, **kw: real(*a, **kw, emit=lines.append, bar=False,
                                                                      heartbeat=False, min_s=0))
    cfg = DPOConfig(batch_size=1, max_length=512, precompute_ref_log_probs=True)  # reference batches of 4 pairs
    assert pairs.num_rows > 4
    dpo_trainer(tmp_path, model_dir, pairs, cfg, 0, **FP32)
    n = pairs.num_rows
    assert len(lines) == 1 and lines[0].startswith(f"dpo reference pass: {n}/{n} pairs (100%) in "), lines


def test_a_resumed_stage_reuses_its_reference_pass_until_pairs_or_model_change(tmp_path, model_dir, pairs,
                                                                               monkeypatch):
    """A DPO stage killed after its reference pass is built again on resume: the pass is not redone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.stages.dpo import StageDPOTrainer

    passes = []
    compute = StageDPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(StageDPOTrainer, "compute_ref_log_probs",
                        lambda self, *a: passes.append(1) or compute(self, *a))
    cfg = DPOConfig(batch_size=4, precompute_ref_log_probs=True)

    def cached(model, table):
        trainer = dpo_trainer(tmp_path / "stage", model, table, cfg, 0, **FP32)[0]
        return sorted((e["ref_chosen_logps"], e["ref_rejected_logps"]) for e in trainer.train_dataset)

    first = cached(model_dir, pairs)
    assert len(passes) == 1  # the 16 pairs in one batch of 4 x batch_size
    assert cached(model_dir, pairs) == first and len(passes) == 1  # reused: no new batch
    swapped = pairs.set_column(pairs.schema.get_field_index("chosen"), "chosen", pairs["rejected"])
    cached(model_dir, swapped)
    assert len(passes) == 2  # other pairs: a new pass
    moved = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        moved.model.norm.weight.mul_(1.5)
    moved.save_pretrained(tmp_path / "moved")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "moved")
    assert cached(tmp_path / "moved", pairs) != first and len(passes) == 3  # another reference model: too


def _one_step_update(tmp_path, stage_trainer, model_dir, table, cfg) -> tuple[torch.Tensor, object]:
    """(weights before - after) of one plain SGD step with learning rate 1 through `trainer.train()`: the
    clipped gradient, from the real training loop (gradient checkpointing and compilation start there)."""
    trainer = stage_trainer(tmp_path, model_dir, table, cfg, 0, max_steps=1, save_strategy="no", optim="sgd",
                            learning_rate=1.0, lr_scheduler_type="constant", **FP32)[0]
    before = torch.cat([p.detach().flatten().cpu() for p in trainer.model.parameters()])
    trainer.train()
    return before - torch.cat([p.detach().flatten().cpu() for p in trainer.model.parameters()]), trainer


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_gradient_checkpointing_takes_the_same_step(tmp_path, model_dir, mix, pairs, stage):
    stage_trainer, table, cls = (sft_trainer, mix, SFTConfig) if stage == "sft" else (dpo_trainer, pairs, DPOConfig)
    on, trainer = _one_step_update(tmp_path / "on", stage_trainer, model_dir, table,
                                   cls(batch_size=4, gradient_checkpointing=True))
    assert trainer.model.is_gradient_checkpointing
    off, trainer = _one_step_update(tmp_path / "off", stage_trainer, model_dir, table,
                                    cls(batch_size=4, gradient_checkpointing=False))
    assert not trainer.model.is_gradient_checkpointing
    torch.testing.assert_close(off, on, rtol=RTOL, atol=ATOL)


def test_torch_compile_takes_the_same_step(tmp_path, model_dir, mix):
    cfg = dict(batch_size=4, gradient_checkpointing=False)
    eager, _ = _one_step_update(tmp_path / "eager", sft_trainer, model_dir, mix, SFTConfig(**cfg))
    compiled, trainer = _one_step_update(tmp_path / "compiled", sft_trainer, model_dir, mix,
                                         SFTConfig(**cfg, torch_compile=True))
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    torch.testing.assert_close(compiled, eager, rtol=RTOL, atol=1e-5)


def test_length_grouped_dpo_batches_see_every_pair_once_and_pad_less(tmp_path, model_dir, pairs):
    def computed_positions(trainer) -> int:  # padded rows x width, over one epoch
        return sum(b["input_ids"].numel() for b in trainer.get_train_dataloader())

    plain = dpo_trainer(tmp_path / "a", model_dir, pairs, DPOConfig(batch_size=2), 0)[0]
    grouped = dpo_trainer(tmp_path / "b", model_dir, pairs, DPOConfig(batch_size=2, group_by_length=True), 0)[0]
    assert sorted(grouped._get_train_sampler()) == list(range(pairs.num_rows))
    assert computed_positions(grouped) < computed_positions(plain)


def test_a_section_can_name_the_attention_kernel(tmp_path, model_dir, mix, pairs):
    assert sft_trainer(tmp_path / "s", model_dir, mix, SFTConfig(), 0)[0].model.config._attn_implementation == "sdpa"
    for stage_trainer, table, cfg in ((sft_trainer, mix, SFTConfig(attn_implementation="eager")),
                                      (dpo_trainer, pairs, DPOConfig(attn_implementation="eager"))):
        trainer = stage_trainer(tmp_path / type(cfg).__name__, model_dir, table, cfg, 0)[0]
        assert trainer.model.config._attn_implementation == "eager"


def test_stages_train_end_to_end_on_the_fast_paths(tmp_path, model_dir, mix, pairs):
    info = sft(tmp_path / "sft", model_dir, mix, SFTConfig(batch_size=2, max_length=256, packing=True,
                                                           gradient_checkpointing=False), seed=0)
    assert info["steps"] >= 1 and (tmp_path / "sft" / "model" / "config.json").exists()
    info = dpo(tmp_path / "dpo", tmp_path / "sft" / "model", pairs,
               DPOConfig(batch_size=4, precompute_ref_log_probs=True, group_by_length=True,
                         gradient_checkpointing=False, padding_free=True, share_prefix=True), seed=0)
    assert info["steps"] == pairs.num_rows // 4
    assert (tmp_path / "dpo" / "model" / "config.json").exists() and not (tmp_path / "dpo" / PAIRS_ON_DISK).exists()


TWO_RANKS = """
import sys
from pathlib import Path

import pyarrow.parquet as pq

from posttrain.recipe.config import DPOConfig
from posttrain.run.dist import shutdown
from posttrain.stages.dpo import dpo

model_dir, pairs_file, out = map(Path, sys.argv[1:])
cfg = DPOConfig(batch_size=2, precompute_ref_log_probs=True, group_by_length=True, padding_free=True,
                share_prefix=True)
print(f"steps {dpo(out, model_dir, pq.read_table(pairs_file), cfg, seed=0)['steps']}", flush=True)
shutdown()  # as every posttrain command does (cli.main): a rank leaving with the process group alive can abort at exit
"""


def test_precomputed_reference_log_probs_under_two_ranks(tmp_path, model_dir, pairs):
    """TRL caches the reference log-probs of an in-memory dataset in each process's own temporary directory,
    so rank 1 fails to read what rank 0 wrote (FileNotFoundError); the stage's copy under its directory
    serves both. Two gloo processes on the CPU (no GPU is asked for, whatever the machine has)."""
    import pyarrow.parquet as pq

    pq.write_table(pairs, tmp_path / "pairs.parquet")
    (tmp_path / "two_ranks.py").write_text(TWO_RANKS)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(random.randint(20000, 40000)), str(tmp_path / "two_ranks.py"),
           str(model_dir), str(tmp_path / "pairs.parquet"), str(tmp_path / "dpo")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"steps {pairs.num_rows // 4}") == 2  # 2 pairs per rank and step
    assert (tmp_path / "dpo" / "model" / "config.json").exists() and not (tmp_path / "dpo" / PAIRS_ON_DISK).exists()


def test_liger_kernel_without_the_package_fails_clearly(monkeypatch, tmp_path):
    from posttrain.training.trainer import common_args

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else find_spec(name, *a))
    for stage in ("sft", "dpo"):
        with pytest.raises(RecipeError, match=f"{stage}.use_liger_kernel needs the liger-kernel package"):
            load_recipe("recipes/tiny.yaml", [f"{stage}.use_liger_kernel=true"])
    with pytest.raises(ImportError, match="use_liger_kernel needs the liger-kernel package"):
        common_args(tmp_path, SFTConfig(use_liger_kernel=True), 0)


def test_tracked_stages_report_to_tensorboard_and_keep_its_events(tmp_path, model_dir, mix):
    import json

    from posttrain.recipe.config import TrackingConfig
    from posttrain.recipe.config import tracking_args

    args = tracking_args(TrackingConfig(report_to=["tensorboard"]), "demo", "sft", 2)
    assert args == {"report_to": ["tensorboard"], "run_name": "demo/round_2/sft", "project": "demo"}
    assert tracking_args(TrackingConfig(), "demo", "sft", 2) == {}  # no tracker: TRL's arguments untouched
    assert tracking_args(TrackingConfig(report_to=["tensorboard"], project="p"), "demo", "reward_model") == {
        "report_to": ["tensorboard"], "run_name": "demo/reward_model", "project": "p"}  # `posttrain reward train`
    info = sft(tmp_path / "sft", model_dir, mix, SFTConfig(batch_size=4, gradient_checkpointing=False), seed=0,
               trainer_args=args)
    events = list((tmp_path / "sft" / "tensorboard").glob("*/events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0  # kept though the checkpoints folder is gone
    assert not (tmp_path / "sft" / "checkpoints").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events[0].parent)).Reload().Scalars("train/loss")
    history = json.loads((tmp_path / "sft" / "log_history.json").read_text())
    assert [e.step for e in logged] == [e["step"] for e in history if "loss" in e]  # the same points
    assert abs(info["final_loss"] - logged[-1].value) < 1e-3  # TensorBoard keeps float32
