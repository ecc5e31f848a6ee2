"""LoRA for SFT and DPO: adapters train, merge into a plain model folder, and change the weights."""

from __future__ import annotations

import pytest
import torch

from posttrain.run import schema
from posttrain.recipe.config import DPOConfig, LoRAConfig, SFTConfig
from posttrain.recipe.load import load_recipe
from posttrain.tiny import world


def _weights(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()  # merged: same architecture, no lora_A/lora_B left
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_sft_and_dpo_with_lora_save_merged_plain_models(tmp_path, tiny_base):
    from posttrain.stages.dpo import dpo
    from posttrain.stages.sft import sft

    drawn = world.draw("math", "train", 8, 0)
    mix = schema.from_records([{"id": r["id"], "prompt_id": r["id"], "capability": "math", "round": 1, "reward": 1.0,
                                "messages": r["messages"] + [{"role": "assistant", "content": reply}]}
                               for r, reply in drawn], "sft")
    lora = LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    info = sft(tmp_path / "sft", tiny_base, mix, SFTConfig(learning_rate=1e-2, batch_size=4, lora=lora), seed=0)
    assert info["steps"] == 2
    model_dir = tmp_path / "sft" / "model"
    assert not (model_dir / "adapter_config.json").exists()
    changed = _changed(_weights(tiny_base), _weights(model_dir))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed

    pairs = schema.from_records([{"id": r["id"], "prompt_id": r["id"], "capability": "math", "round": 1,
                                  "prompt": r["messages"], "chosen": [{"role": "assistant", "content": reply}],
                                  "rejected": [{"role": "assistant", "content": "The answer is 99."}],
                                  "chosen_reward": 1.0, "rejected_reward": 0.0} for r, reply in drawn], "pairs")
    info = dpo(tmp_path / "dpo", model_dir, pairs, DPOConfig(learning_rate=1e-2, batch_size=4, lora=lora), seed=0)
    assert info["steps"] == 2
    assert _changed(_weights(model_dir), _weights(tmp_path / "dpo" / "model"))


def test_lora_recipe_validation():
    r = load_recipe("recipes/tiny.yaml", ["sft.lora.r=16", "dpo.lora.target_modules=[q_proj]"])
    assert r.sft.lora.r == 16 and r.dpo.lora.target_modules == ["q_proj"]
    from posttrain.recipe.config import RecipeError

    with pytest.raises(RecipeError, match="sft.lora.r"):
        load_recipe("recipes/tiny.yaml", ["sft.lora.r=-1"])
    with pytest.raises(RecipeError, match="dpo.lora.quantize_4bit"):
        load_recipe("recipes/tiny.yaml", ["dpo.lora.quantize_4bit=true"])


def test_a_4bit_base_is_merged_in_bfloat16_not_4bit(tiny_base):
    """QLoRA: the adapters are merged into the base reloaded in bfloat16. bitsandbytes needs a GPU, so the 4-bit
    base is stood in for by its flag (`is_loaded_in_4bit`, what transformers' bnb quantizer sets): the merge
    must then come from a fresh bf16 load of the base, with the adapters' update in it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from posttrain.training.trainer import merged

    def lora_model():
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                               LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        return model

    plain = merged(lora_model())  # a float base: merged in place, in float32
    assert next(plain.parameters()).dtype == torch.float32
    flagged = lora_model()
    flagged.get_base_model().is_loaded_in_4bit = True
    with torch.no_grad():  # the in-memory base is not what gets merged: a fresh bf16 load of tiny_base is
        for name, p in flagged.get_base_model().named_parameters():
            if "lora_" not in name:
                p.add_(1.0)
    out = merged(flagged)
    assert not getattr(out, "is_loaded_in_4bit", False)
    weights, want = dict(out.named_parameters()), dict(plain.named_parameters())
    assert {p.dtype for p in weights.values()} == {torch.bfloat16}
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_base).named_parameters())
    name = next(k for k in want if "q_proj" in k)
    assert not torch.equal(want[name], base[name])  # the adapters changed it
    assert torch.allclose(weights[name].float(), want[name], atol=2e-2, rtol=2e-2)  # bf16 of the same merge
