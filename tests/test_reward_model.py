"""Trained reward model: ranking expansion, preference pairs from verifier outcomes, Bradley-Terry
training (full and LoRA) on a tiny random model, and batched scoring equal to one-at-a-time scoring."""

from __future__ import annotations

import json

import dataclasses
import math

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from posttrain.run import schema
from posttrain.recipe.config import LoRAConfig, RecipeError, RewardModelConfig
from posttrain.recipe.load import load_recipe
from posttrain.tiny.base import train_tokenizer
from posttrain.stages.reward_model import read_preference_file
from posttrain.training.reward_model import train_reward_model
from reward.model import (accuracy_by_capability, expand_ranking, pairwise_accuracy, preference_pairs,
                          score_with_reward_model, split_held_out)

# --------------------------------------------------------------------------- expand_ranking


def test_two_responses_give_one_pair():
    assert expand_ranking(["chosen", "rejected"]) == [(0, 1)]


def test_three_responses_give_every_ordered_pair():
    # edited > chosen > rejected: edited beats both, chosen beats rejected
    assert expand_ranking(["edited", "chosen", "rejected"]) == [(0, 1), (0, 2), (1, 2)]


def test_identical_responses_give_no_pair_and_one_response_is_an_error():
    assert expand_ranking(["same", "same", "worse"]) == [(0, 2), (1, 2)]
    with pytest.raises(ValueError):
        expand_ranking(["only"])


# --------------------------------------------------------------------------- preference files and accumulation


def test_preference_file_rankings_expand_into_every_pair(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Say hi.", "ranking": ["Hello!", "hi", "go away"]},
        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5", "edited": "It is 4."},
        {"prompt": "Same?", "chosen": "yes", "rejected": "no"},
    ]) + "\n")
    pairs = read_preference_file(path)
    assert [p["prompt_id"] for p in pairs] == ["prefs.jsonl:1/0>1", "prefs.jsonl:1/0>2", "prefs.jsonl:1/1>2",
                                               "prefs.jsonl:2/0>1", "prefs.jsonl:2/0>2", "prefs.jsonl:2/1>2",
                                               "prefs.jsonl:3/0>1"]
    assert pairs[3]["chosen"] == [{"role": "assistant", "content": "It is 4."}]  # edited beats chosen
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert {p["capability"] for p in pairs} == {"preference_files"}  # the RM's accuracy is also given per source


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "x", "chosen": "a"}', "needs 'ranking'"),
    ('{"prompt": "", "chosen": "a", "rejected": "b"}', "'prompt' must be"),
    ('{"prompt": "x", "ranking": ["only"]}', "at least 2"),
    ('{"prompt": "x", "ranking": [1, 2]}', "at least 2 response texts"),
    ('[1, 2]', "JSON object"),
    ('{"prompt": "x", oops}', "malformed JSON"),
])
def test_bad_preference_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(schema.SchemaError, match=f"prefs.jsonl:2: .*{message}"):
        read_preference_file(path)


def test_rm_data_accumulates_files_and_every_round(tmp_path):
    from posttrain.stages.reward_model import preference_data

    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "x", "chosen": "a", "rejected": "b"}\n')
    round1 = _scored([("p1", 0, "2", 1.0), ("p1", 1, "3", 0.0)])
    round2 = _scored([("p2", 0, "4", 1.0), ("p2", 1, "5", 0.0), ("p1", 0, "2", 1.0), ("p1", 1, "9", 0.0)])
    pairs = preference_data([round1, round2], PROMPTS, [str(path)], 1.0)
    assert [p["prompt_id"] for p in pairs] == ["prefs.jsonl:1/0>1", "p1/round1", "p1/round2", "p2/round2"]




def _msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS = schema.from_records([
    {"id": "p1", "capability": "math", "messages": _msgs("1+1?"), "answer": "2"},
    {"id": "p2", "capability": "math", "messages": _msgs("2+2?"), "answer": "4"},
    {"id": "p3", "capability": "math", "messages": _msgs("3+3?"), "answer": "6"},
], "prompts")


def _scored(rows: list[tuple[str, int, str, float | None]]) -> pa.Table:
    return schema.from_records([
        {"prompt_id": pid, "sample_index": i, "completion": text, "num_prompt_tokens": 3, "num_completion_tokens": 2,
         "capability": "math", "verifier": "math", "reward": reward, "reason": ""}
        for pid, i, text, reward in rows], "scored")


def test_preference_pairs_pass_vs_fail_per_prompt_in_sample_order():
    scored = _scored([  # rows deliberately out of order
        ("p2", 3, "4 (late pass)", 1.0),
        ("p3", 0, "6", 1.0), ("p3", 1, "6.", 1.0),  # all pass: no pair
        ("p1", 2, "3", 0.0),
        ("p2", 1, "5", 0.0),
        ("p1", 1, "2", 1.0),
        ("p2", 0, "no idea", None),  # not applicable: never chosen nor rejected
        ("p1", 0, "11", 0.0),
        ("p2", 2, "4", 1.0),
    ])
    pairs = preference_pairs(scored, PROMPTS, pass_threshold=1.0)
    assert pairs == [
        {"prompt_id": "p1", "capability": "math", "prompt": _msgs("1+1?"),
         "chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": "11"}]},
        {"prompt_id": "p2", "capability": "math", "prompt": _msgs("2+2?"),
         "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
    ]
    # same answer whatever the row order
    assert preference_pairs(scored.take(list(range(scored.num_rows))[::-1]), PROMPTS, 1.0) == pairs


def test_preference_pairs_none_when_all_pass_or_all_fail_and_unknown_ids_fail():
    assert preference_pairs(_scored([("p1", 0, "2", 1.0), ("p1", 1, "2!", 1.0)]), PROMPTS, 1.0) == []
    assert preference_pairs(_scored([("p1", 0, "3", 0.0), ("p1", 1, "4", 0.5)]), PROMPTS, 1.0) == []
    assert len(preference_pairs(_scored([("p1", 0, "3", 0.0), ("p1", 1, "4", 0.5)]), PROMPTS, 0.5)) == 1
    with pytest.raises(KeyError, match="unknown prompt id"):
        preference_pairs(_scored([("zz", 0, "3", 0.0)]), PROMPTS, 1.0)


# --------------------------------------------------------------------------- training and scoring

GOOD, BAD = "yes good", "no bad"
SUBJECTS = ["apples", "trains", "rivers", "clouds", "numbers", "lamps", "birds", "stones"]


def _prompt(i: int) -> list[dict]:
    return _msgs(f"Is item {i} about {SUBJECTS[i % len(SUBJECTS)]} fine?")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random-init 2-layer LlamaForCausalLM (hidden 64) with the project's tokenizer, saved as a base."""
    texts = [f"{_prompt(i)[0]['content']} {GOOD} {BAD} the a of answer is" for i in range(64)]
    tokenizer = train_tokenizer(texts * 5, vocab_size=320)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True))
    path = tmp_path_factory.mktemp("rm") / "base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _pairs(ids: range) -> list[dict]:
    return [{"prompt_id": f"q{i}", "prompt": _prompt(i), "chosen": [{"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": BAD}]} for i in ids]


CFG = RewardModelConfig(enabled=True, learning_rate=3e-3, num_epochs=4, batch_size=16, max_length=64,
                        checkpoint_every_steps=1000)


@pytest.fixture(scope="module")
def trained_rm(tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm_out")
    info = train_reward_model(out, str(tiny_lm), _pairs(range(64)), CFG, seed=0)
    return out / "model", info


def test_reward_model_learns_a_trivial_preference(trained_rm):
    model_dir, info = trained_rm
    assert info["pairs"] == info["pairs_used"] == 64 and info["steps"] == 16
    assert not (model_dir.parent / "checkpoints").exists()
    held_out = _pairs(range(100, 140))  # prompts never seen in training
    prompts = [p["prompt"] for p in held_out]
    chosen = score_with_reward_model(str(model_dir), prompts, [GOOD] * len(prompts), progress=False)
    rejected = score_with_reward_model(str(model_dir), prompts, [BAD] * len(prompts), progress=False)
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(prompts)
    assert accuracy >= 0.9, (accuracy, chosen[:3], rejected[:3])


def test_saved_model_is_a_sequence_classifier_with_the_tokenizers_pad_token(trained_rm):
    model_dir, _ = trained_rm
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None


def test_batched_scoring_equals_one_at_a_time_in_input_order(trained_rm):
    model_dir, _ = trained_rm
    prompts = [_prompt(i) for i in range(11)]
    completions = [" ".join([GOOD] * (1 + (7 * i) % 9)) + ("" if i % 2 else " " + BAD) for i in range(11)]
    batched = score_with_reward_model(str(model_dir), prompts, completions, batch_size=4, progress=False)
    single = score_with_reward_model(str(model_dir), prompts, completions, batch_size=1, progress=False)
    # an independent reference: the plain loop, tokenized by the chat template itself
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    reference, lengths = [], set()
    with torch.inference_mode():
        for p, c in zip(prompts, completions):
            ids = tokenizer.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=True,
                                                return_dict=True)["input_ids"]
            lengths.add(len(ids))
            reference.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    assert len(lengths) > 3  # lengths differ, so batches are padded and sorting reorders them
    assert len(set(round(x, 3) for x in reference)) > 3  # the scores tell the inputs apart
    for got in (batched, single):
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(got, reference)), (got, reference)
    assert score_with_reward_model(str(model_dir), [], [], progress=False) == []


def test_truncation_keeps_the_end_of_the_reply(trained_rm):
    model_dir, _ = trained_rm
    prompts, completions = [_prompt(1)] * 2, [GOOD, BAD]
    full = score_with_reward_model(str(model_dir), prompts, completions, progress=False)
    short = score_with_reward_model(str(model_dir), prompts, completions, max_length=12, progress=False)
    assert all(map(math.isfinite, short)) and short != full
    assert short[0] > short[1]  # the reply's end survives, and with it the preference


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("proj.weight")}


@pytest.mark.parametrize("target_modules", ["all-linear", ["q_proj"]])
def test_lora_trains_and_saves_a_merged_model(tiny_lm, tmp_path, target_modules):
    """reward_model.lora (the LoRAConfig of sft.lora / dpo.lora): adapters on target_modules, the new score
    head trained in full beside them, merged into a plain sequence classifier."""
    cfg = dataclasses.replace(CFG, lora=LoRAConfig(r=4, alpha=8, target_modules=target_modules), num_epochs=1)
    info = train_reward_model(tmp_path, str(tiny_lm), _pairs(range(32)), cfg, seed=0)
    assert info["steps"] == 2 and math.isfinite(info["train_loss"])
    model_dir = tmp_path / "model"
    assert not (model_dir / "adapter_config.json").exists()  # merged: a plain model folder
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert model.config.num_labels == 1
    assert not any("lora" in n or "modules_to_save" in n for n, _ in model.named_parameters())
    # the score head was trained (modules_to_save), not left at its random init
    torch.manual_seed(0)
    init = AutoModelForSequenceClassification.from_pretrained(str(tiny_lm), num_labels=1)
    assert not torch.equal(model.score.weight, init.score.weight)
    # the adapters changed exactly the target modules' weights (merged in)
    before, after = _linear_weights(init), _linear_weights(model)
    changed = {n.split(".")[-2] for n in before if not torch.equal(before[n], after[n])}
    assert changed == ({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
                       if target_modules == "all-linear" else {"q_proj"})
    scores = score_with_reward_model(str(model_dir), [_prompt(1)] * 2, [GOOD, BAD], progress=False)
    assert all(map(math.isfinite, scores))


def test_no_pairs_saves_a_model_that_scores_zero(tiny_lm, tmp_path):
    info = train_reward_model(tmp_path, str(tiny_lm), [], CFG, seed=0)
    assert info == {"pairs": 0, "pairs_used": 0, "steps": 0}
    assert score_with_reward_model(str(tmp_path / "model"), [_prompt(1)] * 2, [GOOD, BAD], progress=False) == [0.0, 0.0]
    assert pairwise_accuracy(tmp_path / "model", _pairs(range(4))) == 0.5  # all ties: chance, not 0 or 1


# --------------------------------------------------------------------------- held-out accuracy


def test_held_out_split_keeps_a_prompts_pairs_together_and_is_stable():
    pairs = [{"prompt_id": f"q{i}/round{r}"} for i in range(400) for r in (1, 2)]
    pairs += [{"prompt_id": f"prefs.jsonl:{line}/{i}>{j}"}
              for line in range(1, 101) for i, j in ((0, 1), (0, 2), (1, 2))]
    train, held = split_held_out(pairs, 0.2, seed=0)
    assert len(train) + len(held) == len(pairs) and 0.1 < len(held) / len(pairs) < 0.3
    side = {}
    for p, is_held in [(p, False) for p in train] + [(p, True) for p in held]:
        prompt = p["prompt_id"].rsplit("/", 1)[0]  # one prompt's rounds, or one ranking's pairs
        assert side.setdefault(prompt, is_held) == is_held, prompt
    assert split_held_out(pairs, 0.2, seed=0) == (train, held)
    assert split_held_out(list(reversed(pairs)), 0.2, seed=0)[1] == list(reversed(held))  # by id, not position
    assert split_held_out(pairs, 0.2, seed=1)[1] != held
    assert split_held_out(pairs, 0.0, seed=0) == (pairs, [])
    assert split_held_out(pairs[:1], 0.999999, seed=0) == (pairs[:1], [])  # nothing left to train on: hold none


def test_trained_reward_model_reports_its_held_out_accuracy(tiny_lm, trained_rm, tmp_path):
    from posttrain.stages.reward_model import train_rm

    assert pairwise_accuracy(trained_rm[0], _pairs(range(100, 140))) >= 0.9
    info = train_rm(tmp_path, str(tiny_lm), _pairs(range(64)), dataclasses.replace(CFG, eval_fraction=0.25), seed=0)
    held = split_held_out(_pairs(range(64)), 0.25, seed=0)[1]
    assert info["eval_pairs"] == len(held) > 0 and info["pairs"] == 64 - len(held)
    assert info["eval_accuracy"] >= 0.9
    assert info["eval_by_capability"] == {"preference_files": {"pairs": len(held), "accuracy": info["eval_accuracy"]}}


def test_held_out_accuracy_splits_by_capability():
    pairs = [{"capability": "math"}, {"capability": "code"}, {"capability": "math"}, {}, {"capability": "math"}]
    wins = [1.0, 0.0, 0.5, 1.0, 0.0]
    assert accuracy_by_capability(pairs, wins) == {  # by name; a pair without one counts with the files'
        "code": {"pairs": 1, "accuracy": 0.0}, "math": {"pairs": 3, "accuracy": 0.5},
        "preference_files": {"pairs": 1, "accuracy": 1.0}}
    with pytest.raises(ValueError):
        accuracy_by_capability(pairs, wins[:-1])  # one outcome per pair, or an error


# --------------------------------------------------------------------------- config


def test_reward_model_section_defaults_and_validation():
    from tests.test_config import TINY, error

    assert not RewardModelConfig().enabled and RewardModelConfig().weight == 0.0  # off unless a recipe asks
    r = load_recipe(TINY)  # the tiny recipe trains a small one, which only orders passing samples
    assert (r.reward_model.enabled, r.reward_model.weight, r.reward_model.learning_rate) == (True, 0.0, 1e-3)
    r = load_recipe(TINY, ["reward_model.enabled=true", "reward_model.lora.r=8", "reward_model.weight=0.5",
                           "reward_model.lora.target_modules=[q_proj, v_proj]"])
    assert (r.reward_model.lora, r.reward_model.weight) == (LoRAConfig(r=8, target_modules=["q_proj", "v_proj"]), 0.5)
    r = load_recipe(TINY, ["reward_model.variants=[{lora: {r: 4}}, {lora: {r: 8, alpha: 32}}]"])
    assert [v["lora"] for v in r.reward_model.variants] == [{"r": 4}, {"r": 8, "alpha": 32}]
    for override, key in [("reward_model.learning_rate=0", "reward_model.learning_rate"),
                          ("reward_model.batch_size=0", "reward_model.batch_size"),
                          ("reward_model.lora.r=-1", "reward_model.lora.r"),
                          ("reward_model.lora.alpha=0", "reward_model.lora.alpha"),
                          ("reward_model.lora.dropout=1.0", "reward_model.lora.dropout"),
                          ("reward_model.lora.quantize_4bit=true", "reward_model.lora.quantize_4bit"),
                          ("reward_model.lora.rank=4", "reward_model.lora.rank"),
                          ("reward_model.variants=[{lora: {r: 4}}, {lora: {r: -1}}]", "reward_model.lora.r"),
                          # the old flat keys are gone: the usual unknown-key error names them
                          ("reward_model.lora_r=8", "unknown key reward_model.lora_r"),
                          ("reward_model.lora_alpha=8", "unknown key reward_model.lora_alpha"),
                          ("reward_model.lora_dropout=0.1", "unknown key reward_model.lora_dropout"),
                          ("reward_model.eval_fraction=1", "reward_model.eval_fraction"),
                          ("reward_model.nope=1", "reward_model.nope")]:
        assert key in error(TINY, [override]), override
    assert "reward_model.weight" in error(TINY, ["reward_model.enabled=false", "reward_model.weight=0.5"])
    # per capability: those left out weigh 0
    r = load_recipe(TINY, ["reward_model.weight={code: 0.1, tools: 1}"])
    assert r.reward_model.weights() == {"math": 0.0, "code": 0.1, "tools": 1.0, "multilingual": 0.0}
    assert load_recipe(TINY, ["reward_model.weight=0.2"]).reward_model.weights() == dict.fromkeys(
        ("math", "code", "tools", "multilingual"), 0.2)
    for override, message in [("reward_model.weight={coding: 0.1}", "reward_model.weight.coding is not a capability"),
                              ("reward_model.weight={code: -0.1}", "reward_model.weight.code must be >= 0"),
                              ("reward_model.weight={code: high}", "reward_model.weight")]:
        assert message in error(TINY, [override]), override
    assert "reward_model.weight.code has no effect" in error(
        TINY, ["reward_model.enabled=false", "reward_model.weight={code: 0.5}"])
    with pytest.raises(RecipeError, match="reward_model.score_batch_size must be int"):
        load_recipe(TINY, ["reward_model.score_batch_size=1.5"])
