"""Model cards (posttrain/publish/cards.py): the numbers they show, their Hub metadata, what stays out of it.

Cards are built without network or token. The run summary and recipes come from tests/test_hub.py, whose
autouse no_real_hub fixture applies here too, so a Hub call that slipped into card building would fail instead
of going out. The dataset card, which needs a round's parquet files, is checked there, in the push that uploads it
(test_pushed_cards_are_the_built_cards).
"""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from posttrain.publish import cards
from tests.test_hub import SUMMARY, no_real_hub, recipe_dict  # noqa: F401 - no_real_hub is autouse


def test_model_card_has_the_numbers_and_round_trips():
    recipe = recipe_dict(repo_id="me/tiny-model", push="every_round", license="apache-2.0")
    card = cards.model_card(recipe, SUMMARY, 2, "meta-llama/Llama-3.1-8B")
    text = str(card)
    for number in ("12.3%", "45.6%", "6.2%", "11.1%", "22.2%", "5.0%"):  # eval table: rounds 0..2
        assert number in text, number
    assert "| math | 30 | 25 | 27 |" in text and "| code | 11 | 4 | 8 |" in text  # mix by capability
    for line in ("SFT examples in: 41", "exact duplicates removed: 7", "near duplicates removed (MinHash): 3",
                 "eval set): 2", "DPO pairs removed as contaminated: 1"):
        assert line in text, line
    assert "K = 8 samples per prompt" in text and "rounds: 2 (this is round 2)" in text
    assert "learning_rate: 0.0002" in text and "nll_weight: 0.2" in text  # SFT / DPO hyperparameters
    assert 'revision="round-2"' in text
    back = ModelCard(text)
    assert back.data.to_dict() == card.data.to_dict()
    meta = back.data.to_dict()
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "meta-llama/Llama-3.1-8B"
    assert meta["tags"] == ["posttrain", "llama-3-style", "dpo", "sft", "rejection-sampling"]
    assert meta["library_name"] == "transformers" and meta["datasets"] == ["me/tiny-model-data"]
    results = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in back.data.eval_results}
    assert results[("heldout", "code", "accuracy")] == 0.456
    assert results[("humaneval", None, "pass@4")] == pytest.approx(0.1625)
    round1 = cards.model_card(recipe, SUMMARY, 1, "meta-llama/Llama-3.1-8B")
    assert "12.3%" not in str(round1) and "11.1%" in str(round1)  # a round's card stops at that round


def test_model_card_leaves_a_local_base_out_of_the_metadata(tmp_path):
    card = cards.model_card(recipe_dict(repo_id="me/m", push="final"), SUMMARY, 2, str(tmp_path))
    assert "base_model" not in card.data.to_dict() and str(tmp_path) in card.text
    assert "base_model" not in cards.model_card(recipe_dict(), SUMMARY, 2, ".cache/tiny-base").data.to_dict()


def test_model_card_names_averaged_variants():
    recipe = recipe_dict(repo_id="me/m", push="final")
    assert "parameter average" not in cards.model_card(recipe, SUMMARY, 2, "base").text
    recipe["sft"]["variants"] = [{}, {"learning_rate": 2e-5}]
    text = cards.model_card(recipe, SUMMARY, 2, "base").text
    assert '- sft: parameter average of 2 variants (Llama 3 §4.1.5): [{}, {"learning_rate": 2e-05}]' in text


def test_model_card_gives_the_reward_models_held_out_accuracy():
    import copy

    recipe = recipe_dict(repo_id="me/m", push="final")
    recipe["reward_model"] = {**recipe.get("reward_model", {}), "enabled": True, "weight": 0.5}
    summary = copy.deepcopy(SUMMARY)
    assert "- reward model: trained each round, weight 0.5\n" in cards.model_card(recipe, summary, 2, "base").text
    summary["rounds"][2]["reward_model"] = {"pairs": 477, "eval_pairs": 56, "eval_accuracy": 0.5536,
                                            "eval_by_capability": {"code": {"pairs": 56, "accuracy": 0.5536}}}
    text = cards.model_card(recipe, summary, 2, "base").text
    assert "weight 0.5; ranks 55.4% of 56 held-out pairs right (50% = chance) (code 55% of 56)\n" in text
    assert "held-out pairs" not in cards.model_card(recipe, summary, 1, "base").text  # round 1 held none out
    recipe["reward_model"]["weight"] = {"math": 0.0, "code": 0.1}
    assert ("- reward model: trained each round, weight code 0.1, math 0 (other capabilities 0)\n"
            in cards.model_card(recipe, summary, 1, "base").text)


def test_model_card_counts_the_prompts_execution_feedback_rescued():
    import copy

    recipe = recipe_dict(repo_id="me/m", push="final")
    assert "execution feedback" not in cards.model_card(recipe, SUMMARY, 2, "base").text  # off by default
    recipe["revise"] = {"enabled": True, "capabilities": ["code"], "samples": 2}
    summary = copy.deepcopy(SUMMARY)
    summary["rounds"][1]["revise"] = {"failed_prompts": 40, "revisions": 80, "rescued_prompts": 6}
    summary["rounds"][2]["revise"] = {"failed_prompts": 30, "revisions": 60, "rescued_prompts": 9}
    text = cards.model_card(recipe, summary, 2, "base").text
    assert "- execution feedback (Llama 3 §4.3.1): ['code'] prompts with no passing sample get the verifier's " \
           "reason and 2 more tries; 15 of 70 such prompts rescued so far" in text
    assert "6 of 40 such prompts" in cards.model_card(recipe, summary, 1, "base").text  # up to the card's round


def test_model_index_has_pass_at_k_and_mmaths_accuracy_per_language():
    import copy

    summary = copy.deepcopy(SUMMARY)
    summary["rounds"][2]["eval"]["heldout"]["pass@4"] = 0.5
    summary["rounds"][2]["eval"]["mmath"] = {"items": 8, "pass@1": 0.25, "pass@4": 0.5, "too_long": 1,
                                             "acc_en": 0.5, "acc_fr": 0.125, "language_match": 0.875}
    card = cards.model_card(recipe_dict(repo_id="me/m", push="final"), summary, 2, "base")
    results = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value
               for r in ModelCard(str(card)).data.eval_results}
    assert results == {
        ("heldout", "math", "accuracy"): 0.123, ("heldout", "code", "accuracy"): 0.456,
        ("heldout", "overall", "accuracy"): 0.2895, ("heldout", None, "pass@4"): 0.5,  # pass@1 is the accuracy
        ("humaneval", None, "pass@1"): 0.0625, ("humaneval", None, "pass@4"): pytest.approx(0.1625),
        ("mmath", None, "pass@1"): 0.25, ("mmath", None, "pass@4"): 0.5, ("mmath", "en", "accuracy"): 0.5,
        ("mmath", "fr", "accuracy"): 0.125, ("mmath", None, "language_match"): 0.875}
    names = {r.metric_name for r in card.data.eval_results if r.dataset_type == "mmath"}
    assert names == {"pass@1", "pass@4", "accuracy (en)", "accuracy (fr)", "language_match"}
