"""The DPO stage's loss is Llama 3's: sigmoid DPO plus `dpo.nll_weight` x the chosen replies' NLL.

Derived by hand from the policy's and the reference model's logits, on one fixed batch of the stage's own
trainer (`posttrain.stages.dpo.dpo_trainer`, its collator and config), with the policy moved away from the reference
so that neither term is a constant. For B pairs (x, chosen c, rejected r), where the sums run over the reply
tokens the stage's collator leaves in the loss (`completion_mask`: the reply less its formatting tokens):

    logp(y)  = sum_t log pi(y_t | x, y_<t)              ref(y): the same under the reference model
    dpo      = 1/B sum_b -log sigmoid(beta * ((logp(c_b) - ref(c_b)) - (logp(r_b) - ref(r_b))))
    nll      = -(sum_b sum_t log pi(c_b,t | x_b, c_b,<t)) / (number of chosen loss tokens in the batch)
    loss     = dpo + nll_weight * nll

The NLL is TRL's "sft" term: a mean over the batch's chosen tokens, not per pair. With `"sft"` left out of the
stage's `loss_type` the loss is `dpo` alone and this test fails by `nll_weight * nll` (1.2 at the defaults: the
NLL of a random model is ~6.0).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from posttrain.recipe.config import DPOConfig
from posttrain.stages.dpo import dpo_trainer
from tests._fast_paths import FP32, RTOL, move_policy, whole_dataset_batch


def token_logps(model, batch) -> torch.Tensor:
    """[2B, T-1]: log-prob of each next token under `model` (plain forward: logits, not TRL's fused head)."""
    ids = batch["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]


def by_hand(policy, reference, batch, beta: float, nll_weight: float) -> tuple[float, float, float]:
    """(loss, dpo, nll) as the module docstring writes them; `batch` rows are [chosen..., rejected...]."""
    mask = batch["completion_mask"][:, 1:].float()  # the token at t+1 is predicted at t
    pi, ref = token_logps(policy, batch) * mask, token_logps(reference, batch) * mask
    logp, ref_logp = pi.sum(1), ref.sum(1)
    b = len(logp) // 2
    margin = (logp[:b] - ref_logp[:b]) - (logp[b:] - ref_logp[b:])
    dpo = -F.logsigmoid(beta * margin).mean()
    nll = -pi[:b].sum() / mask[:b].sum()
    return (dpo + nll_weight * nll).item(), dpo.item(), nll.item()


@pytest.mark.parametrize("cfg", [
    DPOConfig(max_length=512),  # the recipe default: beta 0.1, nll_weight 0.2
    DPOConfig(max_length=512, beta=0.3, nll_weight=0.5),
    DPOConfig(max_length=512, precompute_ref_log_probs=True, padding_free=True),  # the fast paths' own loss code
], ids=["default", "beta0.3-nll0.5", "precomputed-padding-free"])
def test_dpo_stage_loss_is_sigmoid_dpo_plus_weighted_chosen_nll(tmp_path, model_dir, pairs, cfg):
    cfg = dataclasses.replace(cfg, batch_size=pairs.num_rows)
    trainer = dpo_trainer(tmp_path, model_dir, pairs, cfg, 0, **FP32)[0]
    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # the SFT model the stage starts from
    move_policy(trainer)
    trainer.model.eval()
    batch = whole_dataset_batch(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    expected, dpo, nll = by_hand(trainer.model, reference, batch, cfg.beta, cfg.nll_weight)
    # neither term is trivial: the policy moved (dpo is not log 2) and the NLL term is far above the tolerance
    assert abs(dpo - torch.log(torch.tensor(2.0)).item()) > 1e-3
    assert cfg.nll_weight * nll > 0.5
    assert loss == pytest.approx(expected, rel=RTOL, abs=1e-5)
    assert loss != pytest.approx(dpo, rel=RTOL, abs=1e-5)  # what the stage would train on without the NLL term
