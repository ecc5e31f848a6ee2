"""Verifier edge cases an audit found (false positives and negatives), with expectations worked out by
hand: math's final-answer extraction (the last marker wins; an "answer is" phrase that is not math is no
marker), tools' optional arguments at their default, and the multilingual gate without an answer and
with a script in the language tag."""

from __future__ import annotations

import json

import pytest

from posttrain.run import schema
from posttrain.recipe.config import ScoreConfig, SelectConfig
from posttrain.stages.scoring import score_samples
from posttrain.stages.selection import select
from reward import VERIFIERS, Verdict, math, tools
from reward.multilingual import language_script

# --------------------------------------------------------------------------- math: the final answer


def check(completion: str, answer: str) -> Verdict:
    return VERIFIERS["math"]([completion], answer=[answer])[0]


@pytest.mark.parametrize("completion,extracted", [
    # the audit's cases: a later "answer is" phrase that is not math must not hide the box
    ("\\boxed{15}. We can check the answer is right since 3*5=15", "15"),
    ("\\boxed{42}. I am confident the answer is correct", "42"),
    # ... and a later box beats an earlier statement
    ("The answer is 7. Hmm, recomputing gives \\boxed{9}", "9"),
    ("The answer is 7 and recomputing gives \\boxed{9}", "9"),  # the box inside the phrase
    # neighbours: the last marker, whichever kind
    ("\\boxed{9}. On reflection the answer is 7.", "7"),
    ("The answer is \\boxed{5}.", "5"),
    ("\\boxed{\\frac{3}{4}}, and the answer is indeed correct.", "\\frac{3}{4}"),
    ("\\boxed{8}。我检查过，答案是正确的。", "8"),  # the same in Chinese
    # a phrase is a marker when what follows is math, after a filler word
    ("The answer is therefore 12. Check: 2 + 10 = 12 and 12 - 2 = 10.", "12"),
    ("The answer is approximately 3.14 meters.", "3.14"),
    ("The answer is $\\frac{3}{4}$ of the cake.", "\\frac{3}{4}"),
    ("The answer is \\frac{3}{4} of the cake.", "\\frac{3}{4}"),  # leading LaTeX, then words
    ("The answer is 12 \\text{ cm}.", "12"),
    ("The answer is 12 (twelve).", "12"),
    ("The answer is x = 5 apples.", "x = 5"),
    # a phrase that is not math is no marker; with no marker at all it is the answer as written (wrong,
    # never a number elsewhere in the reply: "not 5, it is 6" words its answer, noise looks the same)
    ("The answer is not 5, it is 6", "not 5, it is 6"),
    ("The answer is a prime number, namely 7", "a prime number, namely 7"),
    ("9 - 3 = 4. The answer is   ra(x):\n    return x - 5\n```", "ra(x):"),  # the tiny demo's noise
    ("The answer is four.", "four"),
    # an empty box (the prompt's "\boxed{}" echoed) and an unclosed one (a truncated reply) are no markers
    ("I will put the result in \\boxed{}. 3 + 4 = 7", "7"),
    ("So \\boxed{7}. Wait, let me redo it: \\boxed{1", "7"),
])
def test_the_final_marker_is_the_answer(completion, extracted):
    assert math.extract_answer(completion) == extracted


def test_a_later_box_overrides_an_earlier_statement_both_ways():
    text = "The answer is 7. Hmm, recomputing gives \\boxed{9}"
    assert check(text, "7") == Verdict(0.0, "wrong answer: got 9, expected 7")  # was a false positive
    assert check(text, "9") == Verdict(1.0, "correct")


def test_a_non_math_phrase_after_the_box_no_longer_hides_it():
    assert check("\\boxed{15}. We can check the answer is right since 3*5=15", "15") == Verdict(1.0, "correct")
    assert check("\\boxed{42}. I am confident the answer is correct", "42") == Verdict(1.0, "correct")
    assert check("\\boxed{41}. I am confident the answer is correct", "42") == \
        Verdict(0.0, "wrong answer: got 41, expected 42")


def test_existing_statement_rules_still_hold():
    assert check("The answer is 3. Oops, 7 - 3 = 4.", "4") == Verdict(0.0, "wrong answer: got 3, expected 4")
    assert check("The answer is four.", "4") == Verdict(0.0, "wrong answer: got four, expected 4")
    assert check("The answer is 4 apples, not 5.", "4") == Verdict(1.0, "correct")
    assert check("Nothing to see here.", "4") == Verdict(0.0, "no answer found")


# --------------------------------------------------------------------------- tools: optional arguments


def offered(u: dict, required: tuple = ("a",)) -> str:
    return json.dumps([{"name": "f", "parameters": {"type": "object", "required": list(required), "properties": {
        "a": {"type": "integer"}, "u": u}}}])


def call_verdict(arguments: dict, expected: dict, tools_json: str) -> Verdict:
    completion = tools.call_text("f", arguments)
    return VERIFIERS["tools"]([completion], tools=[tools_json],
                              expected_call=[json.dumps({"name": "f", "arguments": expected})])[0]


WITH_DEFAULT = offered({"type": "string", "default": "c"})
NO_DEFAULT = offered({"type": "string"})


@pytest.mark.parametrize("arguments,expected,tools_json,verdict", [
    # the audit's case: u optional, expected at its default -> leaving it out is the same call
    ({"a": 3}, {"a": 3, "u": "c"}, WITH_DEFAULT, (1.0, "correct")),
    ({"a": 3, "u": "c"}, {"u": "c", "a": 3}, WITH_DEFAULT, (1.0, "correct")),  # key order
    ({"a": 3.0, "u": "c"}, {"a": 3, "u": "c"}, WITH_DEFAULT, (0.0, "schema: 3.0 is not of type 'integer'")),
    ({"a": 3, "u": "d"}, {"a": 3, "u": "c"}, WITH_DEFAULT, (0.0, 'wrong arguments: u = "d", expected "c"')),
    # expected away from the default: the question asked for it, so it must be given
    ({"a": 3}, {"a": 3, "u": "d"}, WITH_DEFAULT, (0.0, "wrong arguments: missing u")),
    # no declared default: leaving it out leaves the value to the tool, not the expected one (decision)
    ({"a": 3}, {"a": 3, "u": "c"}, NO_DEFAULT, (0.0, "wrong arguments: missing u")),
    # expected null: an unset optional argument
    ({"a": 3}, {"a": 3, "u": None}, NO_DEFAULT, (1.0, "correct")),
    # type-aware against the default: 2 == 2.0
    ({"a": 3}, {"a": 3, "u": 2}, offered({"type": "number", "default": 2.0}), (1.0, "correct")),
    ({"a": 3}, {"a": 3, "u": "2"}, offered({"default": 2.0}), (0.0, "wrong arguments: missing u")),
    # a required argument is never optional, whatever its default
    ({"a": 3}, {"a": 3, "u": "c"}, offered({"type": "string", "default": "c"}, ("a", "u")),
     (0.0, "schema: 'u' is a required property")),
    # an argument the expected call leaves out may still be given when optional
    ({"a": 3, "u": "c"}, {"a": 3}, NO_DEFAULT, (1.0, "correct")),
])
def test_exact_form_optional_arguments(arguments, expected, tools_json, verdict):
    assert call_verdict(arguments, expected, tools_json) == Verdict(*verdict)


def test_bfcl_form_keeps_bfcls_rule_for_a_default():
    """In BFCL's possible answers, "" (not the schema default) says an argument may be left out."""
    bfcl_tools = json.dumps([{"name": "f", "parameters": {"type": "dict", "required": ["a"], "properties": {
        "a": {"type": "integer"}, "u": {"type": "string", "default": "c"}}}}])
    strict = json.dumps({"name": "f", "possible_arguments": {"a": [3], "u": ["c"]}})
    lenient = json.dumps({"name": "f", "possible_arguments": {"a": [3], "u": ["c", ""]}})
    got = VERIFIERS["tools"]([tools.call_text("f", {"a": 3})] * 2, tools=[bfcl_tools] * 2,
                             expected_call=[strict, lenient])
    assert got == [Verdict(0.0, "wrong arguments: missing u"), Verdict(1.0, "correct")]


# --------------------------------------------------------------------------- multilingual: the gate


FRENCH = "Elle a 5 pommes et en achète 3 : 5 + 3 = 8. La réponse est 8."
ENGLISH = "She has 5 apples and buys 3 more: 5 + 3 = 8. The answer is 8."
HANT = "小明有5個蘋果，又買了3個，所以他們現在一共有8個。答案是8。"
HANS = "小明有5个苹果，又买了3个，所以他们现在一共有8个。答案是8。"
SR_LATN = "Marko ima 5 jabuka i kupuje još 3, pa sada ima ukupno 8 jabuka."
SR_CYRL = "Марко има 5 јабука и купује још 3, па сада има укупно 8 јабука."


def gate(completion: str, language: str | None, answer: str | None = None) -> Verdict:
    return VERIFIERS["multilingual"]([completion], language=[language], answer=[answer])[0]


def test_without_an_answer_the_language_still_gates():
    assert gate(ENGLISH, "fr") == Verdict(0.0, "wrong language: got en, expected fr")  # was "not applicable"
    assert gate(FRENCH, "fr") == Verdict(1.0, "correct language (no answer to check)")
    assert gate("8", "fr") == Verdict(0.0, "language undetermined")
    assert gate(FRENCH, None) == Verdict(None, "not applicable: missing language")
    assert gate(FRENCH, "xx").reward is None  # a language the identifier does not know


def test_with_an_answer_nothing_changes():
    assert gate(FRENCH, "fr", "8") == Verdict(1.0, "correct")
    assert gate(FRENCH, "fr", "9") == Verdict(0.0, "wrong answer: got 8, expected 9")
    assert gate(ENGLISH, "fr", "8") == Verdict(0.0, "wrong language: got en, expected fr")


@pytest.mark.parametrize("tag,script", [("zh-Hant", "Hant"), ("zh_hans", "Hans"), ("sr-Latn", "Latn"),
                                        ("sr_Cyrl_RS", "Cyrl"), ("zh-TW", "Hant"), ("zh-HK", "Hant"),
                                        ("zh-CN", "Hans"), ("zh-Hans-TW", "Hans"), ("zh", None), ("fr-CA", None),
                                        ("en-US", None), ("pt_BR", None)])
def test_language_script(tag, script):
    assert language_script(tag) == script


@pytest.mark.parametrize("completion,language,verdict", [
    (HANT, "zh-Hant", (1.0, "correct")),
    (HANS, "zh-Hant", (0.0, "wrong script: got Hans, expected Hant")),  # was a pass: zh-Hant read as zh
    (HANS, "zh-Hans", (1.0, "correct")),
    (HANT, "zh-Hans", (0.0, "wrong script: got Hant, expected Hans")),
    (HANS, "zh-TW", (0.0, "wrong script: got Hans, expected Hant")),  # the region implies the script
    (HANT, "zh", (1.0, "correct")), (HANS, "zh", (1.0, "correct")),  # no script asked for: either
    (SR_LATN + " Odgovor: 8.", "sr-Latn", (1.0, "correct")),
    (SR_CYRL + " Одговор: 8.", "sr-Cyrl", (1.0, "correct")),
    (SR_CYRL + " Одговор: 8.", "sr-Latn", (0.0, "wrong script: got Cyrl, expected Latn")),
    (SR_LATN + " Odgovor: 8.", "sr-Cyrl", (0.0, "wrong script: got Latn, expected Cyrl")),
    (FRENCH, "fr-Latn", (1.0, "correct")),
])
def test_the_script_in_the_tag_is_checked(completion, language, verdict):
    assert gate(completion, language, "8") == Verdict(*verdict)


def test_script_checks_without_an_answer_and_mixed_scripts():
    assert gate(HANS, "zh-Hant") == Verdict(0.0, "wrong script: got Hans, expected Hant")
    assert gate(HANT, "zh-Hant") == Verdict(1.0, "correct language (no answer to check)")
    # Cyrillic 30 letters, Latin 24: 56% < 80%; 36 of 45 (80%) is just enough
    mixed = "Марко има пет јабука и купује још три, five plus three equals eight."
    assert gate(mixed, "sr-Cyrl") == Verdict(0.0, "wrong script: only 56% of letters in Cyrl")
    mostly = "Марко има пет јабука и купује још три јабуке, plus three."
    assert gate(mostly, "sr-Cyrl") == Verdict(1.0, "correct language (no answer to check)")
    # Han text with no character that differs between the two scripts tells nothing: either tag passes
    shared = "我和朋友在家看月亮。答案是5。"
    assert gate(shared, "zh-Hant", "5") == gate(shared, "zh-Hans", "5") == Verdict(1.0, "correct")
    assert gate(FRENCH, "fr-Qaaa") == Verdict(None, "not applicable: unknown script Qaaa in fr-Qaaa")


def test_hans_and_hant_are_told_apart_by_the_full_character_sets():
    # 医/醫 and 药/藥 are the only characters here written differently in the two scripts, and neither is
    # among the ~110 common pairs the check used before (it passed both texts under either tag)
    simplified, traditional = "我在医院看病，医生很好，药也很好。", "我在醫院看病，醫生很好，藥也很好。"
    assert gate(simplified, "zh-Hans") == gate(traditional, "zh-Hant") == Verdict(
        1.0, "correct language (no answer to check)")
    assert gate(simplified, "zh-Hant") == Verdict(0.0, "wrong script: got Hans, expected Hant")
    assert gate(traditional, "zh-Hans") == Verdict(0.0, "wrong script: got Hant, expected Hans")
    # 后 and 里 are traditional characters too (后 "empress", 里 "village"): they do not count against zh-Hant
    assert gate("我後來在鄰里的醫院工作，皇后也來過。", "zh-Hant").reward == 1.0


def test_the_round_ranks_only_replies_that_pass_the_gate():
    """An answerless French prompt: the English reply now fails (it was 'not applicable', left out of the
    gate) so a reward model that prefers it cannot make it the SFT example."""
    prompts = schema.from_records([{"id": "p", "capability": "multilingual", "language": "fr",
                                    "messages": [{"role": "user", "content": "Raconte une histoire."}]}], "prompts")
    samples = schema.from_records([{"prompt_id": "p", "sample_index": i, "completion": text, "num_prompt_tokens": 3,
                                    "num_completion_tokens": 9} for i, text in enumerate([FRENCH, ENGLISH])],
                                  "samples")
    scored = score_samples(samples, prompts, ScoreConfig()).to_pylist()
    assert [(r["reward"], r["reason"]) for r in scored] == [
        (1.0, "correct language (no answer to check)"), (0.0, "wrong language: got en, expected fr")]
    for r, rm in zip(scored, [0.0, 5.0]):  # the RM prefers the English reply: 0.0 + 0.3 x 5 > 1.0
        r["rm_score"] = rm
    sft, pairs = select(scored, {"p": prompts.to_pylist()[0]}, SelectConfig(), seed=0, round_=1,
                       rm_weights={"multilingual": 0.3})
    assert [x["messages"][-1]["content"] for x in sft] == [FRENCH]
    # Passing replies rank first whatever the RM says: the French one is chosen, the English one rejected.
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [(FRENCH, ENGLISH)]


@pytest.mark.parametrize("text, expected", [
    ("0 + 9. The answer is \x1ara(x):\n    return x - ute(x):\n    return x - .", "9"),  # seen in the tiny demo
    ("7 + 0 = 7. The answer is  wrace\"}}", "7"),
    ("5 + 9 = 14. The answer is python\ndef f(x):\n    return x", "14"),
])
def test_noise_after_the_answer_phrase_does_not_pass_on_an_earlier_number(text, expected):
    """No box, and "The answer is" followed by no math: the reply gave no answer; the number it wrote
    before the phrase is not one (reading it let the tiny demo's SFT learn to trail off into noise)."""
    assert math.score([text], answer=[expected])[0].reward == 0.0


def test_a_closing_fence_with_text_glued_after_it_still_closes_the_block():
    from reward.code import extract_code

    # tiny demo output
    text = "```python\ndef tepe(x):\n    return x - 2\n```\u00e9ouatrelf\n\n5. The answer is 6.\n\n."
    assert extract_code(text, "tepe") == "def tepe(x):\n    return x - 2\n"
