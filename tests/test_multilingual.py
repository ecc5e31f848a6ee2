"""The multilingual gate (language identification + math answer), the multilingual_math generator and
MMATH's metrics."""

from __future__ import annotations

import pytest

from eval.benchmarks.math import MMATH_LANGUAGES, mmath_items, mmath_metrics
from posttrain.run import schema
from posttrain import sources
from posttrain.sources import multilingual as source
from reward import VERIFIERS, Verdict, multilingual
from reward.multilingual import detect_language

FR_PROMPT = "Marie a 5 pommes. Elle en achète 3 de plus. Combien de pommes Marie a-t-elle maintenant ?"


def gate(completion: str, language: str = "fr", answer: str = "8") -> Verdict:
    return VERIFIERS["multilingual"]([completion], language=[language], answer=[answer])[0]


# --------------------------------------------------------------------------- detect_language


@pytest.mark.parametrize("text,lang", [
    ("Marie a 5 pommes et en achète 3 de plus, donc 5 + 3 = 8. La réponse est 8.", "fr"),
    ("Lucía tiene 5 manzanas y compra 3 más: 5 + 3 = 8. La respuesta es 8.", "es"),
    ("Anna hat 5 Äpfel und kauft 3 weitere dazu: 5 + 3 = 8. Die Antwort ist 8.", "de"),
    ("Emma has 5 apples and buys 3 more: 5 + 3 = 8. The answer is 8.", "en"),
    ("У Анны было 5 яблок, она купила ещё 3: 5 + 3 = 8. Ответ: 8.", "ru"),
    ("小明有5个苹果，又买了3个，5 + 3 = 8。答案是8。", "zh"),
    ("さくらさんはりんごを5個持っていて、さらに3個買いました。答えは8です。", "ja"),
    ("La réponse est $\\frac{16}{2}$ : on calcule $5 + 3$ pommes.", "fr"),  # LaTeX is not prose
])
def test_detects_the_language_of_prose(text, lang):
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", ["8", "  42. ", "$5 + 3 = 8$", "\\boxed{8}", "```python\nprint(5 + 3)\n```",
                                  "x = 8", "答案是8", ""])
def test_too_little_prose_is_undetermined(text):
    assert detect_language(text) is None


def test_dense_scripts_weigh_more_per_letter():
    assert multilingual.letter_weight("答案是八") == 12 and multilingual.letter_weight("answer") == 6
    assert multilingual.prose("See `x = 1` and $y^2$ \\cdot 3, then ```code```") == "See and then"


# --------------------------------------------------------------------------- the gate


def test_french_answer_to_a_french_prompt_passes():
    assert gate("Elle a 5 pommes et en achète 3 : 5 + 3 = 8. La réponse est 8.") == Verdict(1.0, "correct")


def test_the_same_number_in_english_fails_for_french():
    assert gate("She has 5 apples and buys 3 more: 5 + 3 = 8. The answer is 8.") == \
        Verdict(0.0, "wrong language: got en, expected fr")


def test_a_bare_number_carries_no_language_and_fails():
    assert gate("8") == Verdict(0.0, "language undetermined")


def test_right_language_wrong_answer_gives_the_math_reason():
    assert gate("Elle a 5 pommes et en achète 3 : 5 + 3 = 9. La réponse est 9.") == \
        Verdict(0.0, "wrong answer: got 9, expected 8")
    assert gate("Elle a des pommes, elle en achète encore quelques-unes.") == Verdict(0.0, "no answer found")


@pytest.mark.parametrize("language", ["FR", "fr-CA", "fr_FR"])
def test_language_codes_are_normalised(language):
    assert gate("Elle a 5 pommes et en achète 3 : 5 + 3 = 8. La réponse est 8.", language).reward == 1.0


def test_unknown_language_and_missing_metadata_are_not_applicable():
    assert gate("La réponse est 8.", "xx").reward is None
    assert gate("La réponse est 8.", None) == Verdict(None, "not applicable: missing language")
    # No answer (a free-text prompt): the language alone is the gate
    assert gate("La réponse est huit, comme vous le savez.", "fr", None) == \
        Verdict(1.0, "correct language (no answer to check)")
    assert gate("The answer is eight, as you already know.", "fr", None).reward == 0.0


def test_a_language_outside_the_default_set_can_be_expected():
    text = "Ana ina tufaha tano na ananunua matatu zaidi. Jibu ni 8."
    assert "sw" not in multilingual.LANGUAGES
    # among the default set alone this Swahili reads as Indonesian: the gate must add the expected language
    assert detect_language(text) == "id"
    assert gate(text, "sw") == Verdict(1.0, "correct")
    assert gate(text, "sw", "9") == Verdict(0.0, "wrong answer: got 8, expected 9")


def test_number_words_keeps_the_tiny_worlds_word_check():
    assert VERIFIERS["number_words"](["quatre"], language=["fr"], answer=["quatre"]) == [Verdict(1.0, "correct")]


# --------------------------------------------------------------------------- multilingual_math generator


def test_generator_is_deterministic_and_extends():
    draw = sources.get("multilingual_math")
    assert draw("train", 40, 3) == draw("train", 40, 3)
    assert draw("train", 80, 3)[:40] == draw("train", 40, 3)
    assert draw("train", 40, 3) != draw("train", 40, 4)


def test_generator_splits_are_disjoint_and_valid():
    train = source.draw("train", 600, 0) + source.draw("train", 600, 1)
    heldout = source.draw("heldout", 150, 0) + source.draw("heldout", 150, 1)
    assert not {r["messages"][0]["content"] for r in train} & {r["messages"][0]["content"] for r in heldout}
    for records in (source.draw("train", 600, 0), source.draw("heldout", 150, 0)):
        table = schema.from_records([schema.check_prompt_record(r, "multilingual_math") for r in records], "prompts")
        assert table.num_rows == len(records)
    assert heldout[0]["id"] == "multilingual_math/heldout/000000"
    assert {r["language"] for r in train} == set(source.LANGUAGES) >= {"en", "fr", "es", "de", "ru", "zh", "ja"}
    assert {r["capability"] for r in train} == {"multilingual"}
    with pytest.raises(ValueError):
        source.draw("eval", 1, 0)


def test_prompts_are_written_in_their_language():
    for r in source.draw("train", 200, 0):
        assert detect_language(r["messages"][0]["content"]) == r["language"], r


@pytest.mark.parametrize("n,form", [(1, "яблоко"), (2, "яблока"), (4, "яблока"), (5, "яблок"), (11, "яблок"),
                                    (12, "яблок"), (21, "яблоко"), (22, "яблока"), (25, "яблок"), (111, "яблок")])
def test_russian_numeral_agreement(n, form):
    assert source.ru_form(n, ("яблоко", "яблока", "яблок")) == form


def test_reference_answers_pass_and_wrong_ones_fail_through_the_gate():
    """A reply in the prompt's language stating the reference passes; +1 fails; English fails (but en)."""
    replies = {"en": "We add or multiply the numbers given. The answer is {}.",
               "fr": "On additionne ou on multiplie les nombres donnés. La réponse est {}.",
               "es": "Sumamos o multiplicamos los números dados. La respuesta es {}.",
               "de": "Wir addieren oder multiplizieren die gegebenen Zahlen. Die Antwort ist {}.",
               "ru": "Складываем или умножаем данные числа. Ответ: {}.",
               "zh": "我们把题目中的数字相加或相乘。答案是{}。",
               "ja": "問題の数を足したり掛けたりします。答えは{}です。"}
    records = source.draw("train", 140, 2)
    langs, answers = [r["language"] for r in records], [r["answer"] for r in records]
    score = VERIFIERS["multilingual"]
    right = score([replies[r["language"]].format(r["answer"]) for r in records], language=langs, answer=answers)
    assert {v.reason for v in right} == {"correct"}
    off_by_one = [replies[r["language"]].format(int(r["answer"]) + 1) for r in records]
    wrong = score(off_by_one, language=langs, answer=answers)
    assert {v.reward for v in wrong} == {0.0}
    english = score([replies["en"].format(r["answer"]) for r in records], language=langs, answer=answers)
    assert all((v.reward == 1.0) == (lang == "en") for v, lang in zip(english, langs))


# --------------------------------------------------------------------------- MMATH metrics


def row(lang: str, completion: str, reward: float | None) -> dict:
    return {"id": f"mmath/{lang}/0", "language": lang, "completion": completion, "reward": reward}


def test_mmath_metrics_on_hand_made_rows():
    rows = [row("fr", "On calcule la somme des termes. La réponse est \\boxed{2}.", 1.0),
            row("fr", "We compute the sum of the terms. The answer is \\boxed{2}.", 1.0),  # right, wrong language
            row("fr", "\\boxed{3}", 0.0),  # undetermined: counted as no match
            row("zh", "我们计算这些项的和。答案是 \\boxed{2}。", 1.0),
            row("zh", "我们计算这些项的和。答案是 \\boxed{5}。", None)]  # None counts as 0
    assert mmath_metrics(rows) == {"acc_fr": pytest.approx(2 / 3), "acc_zh": 0.5, "language_match": 0.6}


def test_mmath_questions_read_as_their_language():
    """The detector on MMATH's own questions (LaTeX stripped): the gate is only as good as this."""
    for lang in MMATH_LANGUAGES:
        items = mmath_items(lang)
        hits = sum(detect_language(x["question"]) == lang for x in items)
        assert hits / len(items) > 0.95, lang
