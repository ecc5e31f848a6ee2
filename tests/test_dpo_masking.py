"""Llama 3's DPO fix: header and termination tokens carry no loss in chosen or rejected."""

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer

from posttrain.dpo import FormattingTokenMaskCollator, formatting_token_ids
from posttrain.tiny.base import EOT, train_tokenizer

PAIRS = [
    {"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
     "chosen": [{"role": "assistant", "content": "2 + 3 = 5. The answer is 5."}],
     "rejected": [{"role": "assistant", "content": "The answer is 6."}]},
    {"prompt": [{"role": "user", "content": "Say four in French."}],
     "chosen": [{"role": "assistant", "content": "quatre"}],
     "rejected": [{"role": "assistant", "content": "vier"}]},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{p['prompt'][0]['content']} {p['chosen'][0]['content']} {p['rejected'][0]['content']}" for p in PAIRS]
    return train_tokenizer(texts * 20, vocab_size=300)


def trainer_for(tokenizer, tmp_path, mask: bool):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                         pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(tmp_path / "model")  # TRL builds the reference model from the policy's path
    args = DPOConfig(output_dir=str(tmp_path / "out"), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2],
                     report_to="none", per_device_train_batch_size=2, max_length=128, bf16=False)
    collator = FormattingTokenMaskCollator(pad_token_id=tokenizer.pad_token_id, max_length=128,
                                           masked_token_ids=formatting_token_ids(tokenizer)) if mask else None
    return DPOTrainer(model=str(tmp_path / "model"), args=args, data_collator=collator, processing_class=tokenizer,
                      train_dataset=Dataset.from_list(PAIRS))


def test_collator_drops_exactly_the_formatting_tokens_from_the_completion(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, mask=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    plain = trainer_for(tokenizer, tmp_path, mask=False)
    plain_batch = plain.data_collator([plain.train_dataset[i] for i in range(2)])
    formatting = torch.isin(batch["input_ids"], torch.tensor(formatting_token_ids(tokenizer)))
    eot = tokenizer.convert_tokens_to_ids(EOT)
    # TRL alone trains on the termination token of every chosen and rejected completion...
    assert (plain_batch["completion_mask"].bool() & (batch["input_ids"] == eot)).sum() == 4
    # ...with the fix, no formatting token is in the loss, and every other completion token still is.
    assert not (batch["completion_mask"].bool() & formatting).any()
    assert torch.equal(batch["completion_mask"].bool(), plain_batch["completion_mask"].bool() & ~formatting)


def test_no_gradient_flows_from_formatting_positions(tokenizer, tmp_path):
    """d loss / d h_t is zero at every position t that predicts a formatting token, non-zero without the fix.

    h_t is the final-norm output: it feeds only the prediction of token t+1 (TRL's fused head never
    materialises logits, so the hook sits one layer earlier).
    """
    grads = {}
    for mask in (True, False):
        trainer = trainer_for(tokenizer, tmp_path, mask)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        captured = {}

        def keep(module, inputs, output):
            output.retain_grad()
            captured["hidden"] = output

        handle = trainer.model.model.norm.register_forward_hook(keep)
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        handle.remove()
        predicts_eot = batch["input_ids"][:, 1:] == tokenizer.convert_tokens_to_ids(EOT)  # h_t predicts token t+1
        grads[mask] = captured["hidden"].grad[:, :-1][predicts_eot].abs().sum().item()
    assert grads[True] == 0.0
    assert grads[False] > 0.0


def test_pairs_that_do_not_fit_max_length_are_counted(caplog):
    """TRL drops a pair whose prompt fills max_length and cuts one whose longer reply overflows it: the
    stage counts both (results and a warning), since a cut pair compares two replies' starts."""
    from posttrain.config import DPOConfig as StageDPOConfig
    from posttrain.dpo import too_long

    kept = Dataset.from_dict({"prompt_ids": [[1] * 4, [1] * 4, [1] * 9],
                              "chosen_ids": [[2] * 4, [2] * 8, [2]], "rejected_ids": [[3] * 2, [3], [3] * 2]})
    with caplog.at_level("WARNING", logger="posttrain"):
        assert too_long(4, kept, StageDPOConfig(max_length=10)) == {"pairs_dropped_too_long": 1, "pairs_truncated": 2}
    assert "1 dropped" in caplog.text and "2 truncated" in caplog.text
    caplog.clear()
    assert too_long(3, kept, StageDPOConfig(max_length=12)) == {"pairs_dropped_too_long": 0, "pairs_truncated": 0}
    assert not caplog.text
