"""Padding-free DPO forwards (posttrain/training/dpo_packing.py, issue 7): packed rows and shared prompts score,
lose and step exactly like TRL's padded batch.

- how rows are planned: first-fit, the shared-prefix mask drawn by hand, the FLOP estimate that decides
  whether a batch shares its prompts;
- every token's log-prob of a packed batch (rows kept apart, one row, prompts shared) equals the padded
  forward's, and so do the DPO loss and gradients, with the reference precomputed or run in the step, also
  with LoRA (whose reference is the policy with its adapters off);
- a recipe asking for shared prompts without padding-free rows or with a kernel that takes no dense mask
  fails by key.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from posttrain.recipe.config import DPOConfig, RecipeError

from posttrain.recipe.load import load_recipe
from posttrain.stages.dpo import dpo_trainer
from posttrain.training.dpo_packing import (PackedForward, attention_rows, first_fit_rows, flop_weights, forward_cost,
                                   plan_rows, shared_prefixes, unit_lengths)
from tests._fast_paths import ATOL, FP32, RTOL, loss_and_grads, move_policy, whole_dataset_batch


def test_first_fit_rows_place_every_sequence_once_within_the_width():
    lengths = [7, 3, 9, 2, 5, 9, 1, 4]
    rows = first_fit_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 5  # 50 tokens in rows of 10: 9+1, 9, 7+3, 5+4, 2
    # flash attention finds packed sequences in one row only; a wrapped model (DDP, DeepSpeed) is looked into
    wrapped = types.SimpleNamespace(module=types.SimpleNamespace(
        config=types.SimpleNamespace(_attn_implementation="flash_attention_2")))
    assert PackedForward(wrapped).one_row


def test_a_rejected_suffix_sees_its_shared_prefix_and_nothing_else_of_its_chosen():
    """Pairs (seq 0, seq 2) sharing 3 tokens and (1, 3) sharing 1, in rows of 8: the hand-drawn masks."""
    rows, width = plan_rows([5, 4, 6, 4], 8, prefixes=[3, 1])
    assert [[(seg.seq, seg.start, seg.length, seg.offset) for seg in row] for row in rows] == [
        [(0, 0, 5, 0), (2, 3, 3, 5)], [(1, 0, 4, 0), (3, 1, 3, 4)]]
    mask = attention_rows(rows, width)[:, 0].int().tolist()
    assert mask[0] == [[1, 0, 0, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0, 0, 0],
                       [1, 1, 1, 0, 0, 0, 0, 0],
                       [1, 1, 1, 1, 0, 0, 0, 0],
                       [1, 1, 1, 1, 1, 0, 0, 0],
                       [1, 1, 1, 0, 0, 1, 0, 0],  # suffix: the 3 shared tokens, then itself
                       [1, 1, 1, 0, 0, 1, 1, 0],
                       [1, 1, 1, 0, 0, 1, 1, 1]]
    assert mask[1][4:] == [[1, 0, 0, 0, 1, 0, 0, 0],
                           [1, 0, 0, 0, 1, 1, 0, 0],
                           [1, 0, 0, 0, 1, 1, 1, 0],
                           [0, 0, 0, 0, 0, 0, 0, 1]]  # the row's unused tail: itself only
    # a pair that would not fit a row shared runs as two sequences
    rows, _ = plan_rows([5, 4, 7, 4], 8, prefixes=[1, 1])
    assert sorted((seg.seq, seg.start) for row in rows for seg in row) == [(0, 0), (1, 0), (2, 0), (3, 1)]


def test_a_batch_shares_prefixes_only_where_the_flop_estimate_says_cheaper():
    """Rows widen to hold a pair: worth it for a long prompt, not for a 2-token one (Llama-3.2-1B's shape)."""
    config = types.SimpleNamespace(hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
                                   num_key_value_heads=8, head_dim=64)
    weights = flop_weights(types.SimpleNamespace(module=types.SimpleNamespace(config=config)))
    assert weights == (2.0 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192), 4.0 * 2048)

    def cheaper_shared(lengths, prefixes):
        width = max(lengths)
        shared = plan_rows(lengths, max(width, *unit_lengths(lengths, prefixes)), prefixes)
        return forward_cost(*shared, *weights) < forward_cost(*plan_rows(lengths, width), *weights)

    assert cheaper_shared([1800, 1900, 1850, 1950], [1500, 1600])  # long prompts, short replies
    assert not cheaper_shared([1800, 1900, 1850, 1950], [2, 2])  # rows twice as wide for nothing
    assert flop_weights(types.SimpleNamespace(config=None)) == (1.0, 0.0)  # unknown model: tokens count


def test_a_shared_prefix_needs_padding_free_rows_and_a_dense_mask(tmp_path, model_dir, pairs):
    with pytest.raises(RecipeError, match="dpo.share_prefix needs dpo.padding_free"):
        load_recipe("recipes/tiny.yaml", ["dpo.share_prefix=true"])
    with pytest.raises(RecipeError, match="dpo.share_prefix needs attention that takes a dense mask"):
        load_recipe("recipes/tiny.yaml", ["dpo.share_prefix=true", "dpo.padding_free=true",
                                          "dpo.attn_implementation=flex_attention"])
    # eager attention adds the mask to its scores: there the mask is 0 / -inf, and the log-probs still match
    trainer = dpo_trainer(tmp_path, model_dir, pairs, DPOConfig(attn_implementation="eager"), 0, **FP32)[0]
    batch = whole_dataset_batch(trainer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = trainer.model.eval()
    with torch.no_grad():
        alone, shared = (f(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                           fused_lm_head=True, use_cache=False)
                         for f in (model, PackedForward(model, share_prefix=True)))
    torch.testing.assert_close(shared.log_probs, alone.log_probs, rtol=RTOL, atol=1e-5)
    with pytest.raises(ValueError, match="a shared prefix needs"):
        PackedForward(model, one_row=True, share_prefix=True)


@pytest.mark.parametrize("share_prefix", [False, True])
@pytest.mark.parametrize("precompute", [True, False])
def test_padding_free_dpo_scores_like_the_padded_batch_and_takes_the_same_step(tmp_path, model_dir, pairs,
                                                                                precompute, share_prefix, monkeypatch):
    cfg = DPOConfig(batch_size=pairs.num_rows, max_length=512, precompute_ref_log_probs=precompute)
    padded = dpo_trainer(tmp_path / "a", model_dir, pairs, cfg, 0, **FP32)[0]
    packed = dpo_trainer(tmp_path / "b", model_dir, pairs,
                         dataclasses.replace(cfg, padding_free=True, share_prefix=share_prefix), 0, **FP32)[0]
    batch = whole_dataset_batch(padded)
    lengths = batch["attention_mask"].sum(1).tolist()
    rows = first_fit_rows(lengths, batch["input_ids"].shape[1])
    assert len(rows) < len(lengths)  # the short ones share rows (lengths 37 to 62 here: 26 rows for 32)

    # Every token's log-prob (prompts too) equals the padded forward's: no sequence sees another
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = padded.model.eval()
    if share_prefix:  # each pair's prompt runs once: the rejected suffixes are far shorter than their sequences
        prefixes = shared_prefixes(batch["input_ids"], batch["attention_mask"], labels)
        assert min(prefixes) >= 10
        width = batch["input_ids"].shape[1]
        shared = plan_rows(lengths, max(width, *unit_lengths(lengths, prefixes)), prefixes)
        assert sum(seg.length for row in shared[0] for seg in row) == sum(lengths) - sum(prefixes)
        # and the forward takes that layout: cheaper by its estimate than one sequence per unit
        weights = flop_weights(model)
        assert forward_cost(*shared, *weights) < forward_cost(*plan_rows(lengths, width), *weights)
    with torch.no_grad():
        alone = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                      fused_lm_head=True, use_cache=False)
        together = PackedForward(model, share_prefix=share_prefix)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True,
            use_cache=False)
        # flash attention's layout (every sequence in one row), here under sdpa
        one_row = PackedForward(model, one_row=True)(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"], labels=labels,
                                                     fused_lm_head=True, use_cache=False)
    assert not PackedForward(model).one_row  # the tiny model runs sdpa: rows kept apart
    torch.testing.assert_close(together.log_probs, alone.log_probs, rtol=RTOL, atol=1e-5)
    torch.testing.assert_close(one_row.log_probs, alone.log_probs, rtol=RTOL, atol=1e-5)
    assert (alone.log_probs != 0).sum() == sum(n - 1 for n in lengths)

    # The precomputed reference log-probs, then the loss (sigmoid + NLL) and its gradients once the policy moved
    def cached(trainer):
        return sorted((e["ref_chosen_logps"], e["ref_rejected_logps"]) for e in trainer.train_dataset)

    if precompute:
        torch.testing.assert_close(torch.tensor(cached(packed)), torch.tensor(cached(padded)), rtol=RTOL, atol=1e-4)
    packed_calls = []
    call = PackedForward.__call__
    monkeypatch.setattr(PackedForward, "__call__", lambda self, **kw: packed_calls.append(1) or call(self, **kw))
    for trainer in (padded, packed):
        move_policy(trainer)
    loss_padded, grads_padded = loss_and_grads(padded, batch)
    loss_packed, grads_packed = loss_and_grads(packed, whole_dataset_batch(packed))
    assert len(packed_calls) == (1 if precompute else 2)  # the policy, and the reference model in the step
    assert packed.ref_model is None if precompute else not isinstance(packed.ref_model, PackedForward)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grads_packed, grads_padded, rtol=RTOL, atol=ATOL)


def test_padding_free_lora_dpo_packs_the_adapters_off_reference_too(tmp_path, model_dir, pairs, monkeypatch):
    """With LoRA and no precomputed pass, TRL's reference is the policy with its adapters off, called as
    `self.model`; the stage hands TRL a packed reference instead, and the step stays the padded one's."""
    from posttrain.recipe.config import LoRAConfig

    cfg = DPOConfig(batch_size=pairs.num_rows, max_length=512, lora=LoRAConfig(r=4))
    padded = dpo_trainer(tmp_path / "a", model_dir, pairs, cfg, 0, **FP32)[0]
    packed = dpo_trainer(tmp_path / "b", model_dir, pairs,
                         dataclasses.replace(cfg, padding_free=True, share_prefix=True), 0, **FP32)[0]
    calls = []
    call = PackedForward.__call__
    monkeypatch.setattr(PackedForward, "__call__", lambda self, **kw: calls.append(1) or call(self, **kw))

    def lora_loss_and_grads(trainer):
        with torch.no_grad():  # the adapters leave zero-initialised; move them so the reference differs
            g = torch.Generator().manual_seed(1)
            for name, p in trainer.model.named_parameters():
                if "lora_" in name:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, whole_dataset_batch(trainer))
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad])

    loss_padded, grads_padded = lora_loss_and_grads(padded)
    assert calls == []
    loss_packed, grads_packed = lora_loss_and_grads(packed)
    assert len(calls) == 2 and packed.ref_model is None  # the policy and its adapters-off reference
    torch.testing.assert_close(loss_packed, loss_padded, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grads_packed, grads_padded, rtol=RTOL, atol=ATOL)
