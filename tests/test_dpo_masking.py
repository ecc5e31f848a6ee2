"""Llama 3's DPO fix, through the stage's own trainer (`posttrain.stages.dpo.dpo_trainer`): header and termination
tokens carry no loss in chosen or rejected.

Which tokens the stage's collator leaves in `completion_mask`, per chat-template family, is checked in
tests/test_chat_templates.py. Here: what that mask does to the loss the stage trains on. The tiny template
writes `<|eot_id|>` after each reply, inside TRL's completion (the header before the reply is part of the
prompt), so the positions that predict it are the formatting positions in the loss. A logit moved there leaves
the stage's loss unchanged to the bit and gets no gradient; moved at a reply token, it changes the loss; and
with `dpo.mask_formatting_tokens: false` (TRL alone) it changes the loss at `<|eot_id|>` too.
"""

import pytest
import torch
from datasets import Dataset

from posttrain.recipe.config import DPOConfig
from posttrain.stages.dpo import dpo_trainer
from posttrain.tiny.base import EOT
from tests._fast_paths import FP32, move_policy, whole_dataset_batch


def loss_with_moved_logits(trainer, batch, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, d loss / d h) with the final-norm output h_t moved by a fixed random vector where `at` [2B, T] is
    true. h_t feeds only the prediction of token t+1, so this moves the logits there alone (TRL's fused head
    never materialises logits, so the change goes in one layer earlier)."""
    g = torch.Generator().manual_seed(2)
    captured = {}

    def move(module, inputs, output):
        shift = torch.randn(output.shape[-1], generator=g).to(output)
        output = output + at[..., None].to(output) * shift
        output.retain_grad()
        captured["hidden"] = output
        return output

    handle = trainer.model.model.norm.register_forward_hook(move)
    try:
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
    finally:
        handle.remove()
    return loss.detach(), captured["hidden"].grad


@pytest.mark.parametrize("mask", [True, False], ids=["stage", "without-mask"])
def test_a_formatting_tokens_logit_changes_neither_the_loss_nor_its_gradient(tmp_path, model_dir, pairs, mask):
    cfg = DPOConfig(max_length=512, batch_size=pairs.num_rows, mask_formatting_tokens=mask)
    trainer, tokenizer = dpo_trainer(tmp_path, model_dir, pairs, cfg, 0, **FP32)
    move_policy(trainer)  # the policy away from the reference: the sigmoid term is not at its flat start
    trainer.model.train()
    batch = whole_dataset_batch(trainer)
    ids, nowhere = batch["input_ids"], torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    predicts = torch.zeros_like(nowhere)
    predicts[:, :-1] = ids[:, 1:] == tokenizer.convert_tokens_to_ids(EOT)  # h_t predicts token t+1
    in_reply = torch.zeros_like(nowhere)
    in_reply[:, :-1] = batch["completion_mask"][:, 1:].bool() & ~predicts[:, :-1]
    assert predicts.sum() >= 2 * len(ids) and in_reply.any()  # every row: the prompt's and the reply's <|eot_id|>

    loss, _ = loss_with_moved_logits(trainer, batch, nowhere)
    at_eot, grad = loss_with_moved_logits(trainer, batch, predicts)
    at_reply, _ = loss_with_moved_logits(trainer, batch, in_reply)
    assert at_reply != loss  # the check can see a moved logit
    if mask:
        assert torch.equal(at_eot, loss)
        assert grad[predicts].abs().sum() == 0
    else:  # TRL alone trains on the reply's <|eot_id|> in chosen and rejected
        assert at_eot != loss
        assert grad[predicts].abs().sum() > 0


def test_pairs_that_do_not_fit_max_length_are_counted(caplog):
    """TRL drops a pair whose prompt fills max_length and cuts one whose longer reply overflows it: the
    stage counts both (results and a warning), since a cut pair compares two replies' starts."""
    from posttrain.recipe.config import DPOConfig as StageDPOConfig
    from posttrain.stages.dpo import too_long

    kept = Dataset.from_dict({"prompt_ids": [[1] * 4, [1] * 4, [1] * 9],
                              "chosen_ids": [[2] * 4, [2] * 8, [2]], "rejected_ids": [[3] * 2, [3], [3] * 2]})
    with caplog.at_level("WARNING", logger="posttrain"):
        assert too_long(4, kept, StageDPOConfig(max_length=10)) == {"pairs_dropped_too_long": 1, "pairs_truncated": 2}
    assert "1 dropped" in caplog.text and "2 truncated" in caplog.text
    caplog.clear()
    assert too_long(3, kept, StageDPOConfig(max_length=12)) == {"pairs_dropped_too_long": 0, "pairs_truncated": 0}
    assert not caplog.text
