"""Stage variants averaged into one model (Llama 3 §4.1.5): real SFT and RM training on the tiny base,
the average equal to the mean of separately trained variants, resume after a kill between variants,
and recipe errors that name the variant."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.run import schema
from posttrain.recipe.config import RecipeError, RewardModelConfig, SFTConfig
from posttrain.recipe.load import load_recipe
from posttrain.tiny import world
from posttrain.training.variants import train_variants, variant


def math_mix(n: int = 8):
    drawn = world.draw("math", "train", n, 0)
    return schema.from_records([{"id": r["id"], "prompt_id": r["id"], "capability": "math", "round": 1,
                                 "reward": 1.0, "messages": r["messages"] + [{"role": "assistant", "content": reply}]}
                                for r, reply in drawn], "sft")


def mean(a: dict, b: dict, wa: float = 0.5) -> dict:
    return {k: wa * a[k].float() + (1 - wa) * b[k].float() for k in a}


class Killed(Exception):
    pass


def test_sft_variants_average_to_the_mean_of_each_trained_alone_and_resume(tmp_path, tiny_base):
    from posttrain.stages.sft import sft

    mix = math_mix()
    cfg = SFTConfig(learning_rate=1e-2, batch_size=4, variants=[{"learning_rate": 3e-2}, {"seed": 7}],
                    variant_weights=[1, 3])
    calls = []

    def train(out, c, s, kill_after=None):
        calls.append((c.learning_rate, s))
        result = sft(out, tiny_base, mix, c, s)
        if len(calls) == kill_after:
            raise Killed
        return result

    def saved(i: int) -> int:  # when variant i's weights were written
        return (tmp_path / "stage" / "variants" / str(i) / "model" / "model.safetensors").stat().st_mtime_ns

    # Killed right after the first variant saved its model (before anything else could mark it)...
    with pytest.raises(Killed):
        train_variants(tmp_path / "stage", cfg, 0, lambda o, c, s: train(o, c, s, kill_after=1))
    first = saved(0)
    # ...the rerun takes its saved results without training it again, trains the second, and is killed too...
    with pytest.raises(Killed):
        train_variants(tmp_path / "stage", cfg, 0, lambda o, c, s: train(o, c, s, kill_after=3))
    assert saved(0) == first
    calls.clear()
    info = train_variants(tmp_path / "stage", cfg, 0, train)  # ...and the last run only averages
    assert calls == [(3e-2, 0), (1e-2, 7)]  # asked for both: each answered from its saved results
    assert [v["seed"] for v in info["variants"]] == [0, 7] and info["weights"] == [0.25, 0.75]
    assert info["steps"] == sum(v["steps"] for v in info["variants"]) == 4
    assert not (tmp_path / "stage" / "variants" / "0" / "model").exists()  # only the average is kept
    calls.clear()
    assert train_variants(tmp_path / "stage", cfg, 0, train) == info and calls == []  # averaged before: done

    # The same variants trained one by one, then averaged by hand
    a = _trained(sft, tmp_path / "a", tiny_base, mix, SFTConfig(learning_rate=3e-2, batch_size=4), 0)
    b = _trained(sft, tmp_path / "b", tiny_base, mix, SFTConfig(learning_rate=1e-2, batch_size=4), 7)
    got = load_file(tmp_path / "stage" / "model" / "model.safetensors")
    want = mean(a, b, 0.25)
    assert a.keys() == got.keys()
    for k in got:
        torch.testing.assert_close(got[k].float(), want[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the variants really differ
    assert json.loads((tmp_path / "stage" / "model" / "averaged_from.json").read_text())["weights"] == [0.25, 0.75]


def _trained(sft, out, base, mix, cfg, seed) -> dict:
    sft(out, base, mix, cfg, seed)
    return load_file(out / "model" / "model.safetensors")


def test_reward_model_variants_share_the_head_init_and_average_as_classifiers(tmp_path, tiny_base, monkeypatch):
    """Through the production path (stages.reward_model.train_rm): every variant draws its score head from the recipe
    seed (init_seed), and the stage's head is the weighted mean of the variants' trained heads."""
    from transformers import LlamaForSequenceClassification

    from posttrain.stages import reward_model as rm_stage
    from posttrain.stages.reward_model import train_rm
    from reward.model import score_with_reward_model

    real, calls, heads = rm_stage.train_reward_model, [], []

    def spy(out, base, pairs, cfg, seed, init_seed=None, trainer_args=None, template_kwargs=None):
        calls.append((cfg.learning_rate, seed, init_seed))
        result = real(out, base, pairs, cfg, seed, init_seed=init_seed, trainer_args=trainer_args,
                      template_kwargs=template_kwargs)
        # captured now: train_variants deletes the variant models once they are averaged
        heads.append(load_file(out / "model" / "model.safetensors")["score.weight"].clone())
        return result

    monkeypatch.setattr(rm_stage, "train_reward_model", spy)  # the name train_rm calls
    mix = math_mix(6)
    pairs = [{"prompt_id": f"{r['id']}/round1", "prompt": r["messages"][:-1], "chosen": [r["messages"][-1]],
              "rejected": [{"role": "assistant", "content": "The answer is 99."}]} for r in mix.to_pylist()]
    cfg = RewardModelConfig(enabled=True, batch_size=2, eval_fraction=0.0,
                            variants=[{"seed": 1}, {"learning_rate": 1e-3}], variant_weights=[1, 3])
    info = train_rm(tmp_path / "rm", str(tiny_base), pairs, cfg, 5)
    # variant 0 reorders its data with seed 1, variant 1 with the recipe's 5; both heads start from seed 5
    assert calls == [(1e-4, 1, 5), (1e-3, 5, 5)]
    assert [v["seed"] for v in info["variants"]] == [1, 5] and all(v["steps"] == 3 for v in info["variants"])
    assert info["weights"] == [0.25, 0.75]
    assert not torch.equal(heads[0], heads[1])  # trained apart, so the average is not trivially either
    averaged = load_file(tmp_path / "rm" / "model" / "model.safetensors")["score.weight"]
    torch.testing.assert_close(averaged.float(), 0.25 * heads[0].float() + 0.75 * heads[1].float(),
                               rtol=1e-5, atol=1e-6)
    model = LlamaForSequenceClassification.from_pretrained(tmp_path / "rm" / "model")
    assert model.config.num_labels == 1
    scores = score_with_reward_model(tmp_path / "rm" / "model", [p["prompt"] for p in pairs],
                                     [p["chosen"][0]["content"] for p in pairs])
    assert len(scores) == len(pairs) and all(isinstance(s, float) for s in scores)


def test_variant_overrides_keep_unnamed_nested_keys():
    from posttrain.recipe.config import LoRAConfig

    cfg = SFTConfig(lora=LoRAConfig(r=8, alpha=32), variants=[{"lora": {"r": 4}}, {"seed": 2}])
    v, seed = variant(cfg, {"lora": {"r": 4}}, 0)
    assert (v.lora.r, v.lora.alpha, seed, v.variants) == (4, 32, 0, [])


@pytest.mark.parametrize("overrides, message", [
    (["sft.variants=[{learning_rate: 2e-5}]"], r"sft\.variants needs at least 2"),
    (["sft.variants=[{lr: 2e-5}, {seed: 1}]"], r"sft\.variants\[0\]: lr: cannot vary"),
    (["sft.variants=[{start_from: previous}, {seed: 1}]"], r"sft\.variants\[0\]: start_from: cannot vary"),
    (["dpo.variants=[{seed: 1}, {beta: fast}]"], r"dpo\.variants\[1\]: beta must be float"),
    (["dpo.variants=[{seed: 1}, {beta: -1.0}]"], r"dpo\.variants\[1\]: dpo\.beta"),
    (["sft.variants=[{seed: 3}, {seed: 3}]"], r"sft\.variants\[1\] trains the same model"),
    (["sft.variants=[{seed: 1}, {seed: 2}]", "sft.variant_weights=[1]"], r"sft\.variant_weights needs one weight"),
    (["reward_model.variant_weights=[1, 1]"], r"reward_model\.variant_weights needs reward_model\.variants"),
])
def test_bad_variants_name_the_variant(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("recipes/tiny.yaml", overrides)
