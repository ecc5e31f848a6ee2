"""The eval harness without vLLM: pass@k by hand, and every set's path through a scripted engine.

A scripted engine returns chosen completions in request order, so each test knows the right score:
reference replies score 100%, wrong ones 0%, prompts too long for the context count as failures.
The shipped benchmarks (eval/benchmarks) go the same way, each item answered from its own fields.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from eval import metrics
from posttrain.models.chat_turns import Chat
from posttrain.stages import evaluate as harness
from posttrain.run import schema
from posttrain.recipe.config import EvalConfig, ScoreConfig
from posttrain.tiny import world


class ScriptedEngine:
    """Stands in for posttrain.models.engine.Engine: completion texts per request, in request order."""

    def __init__(self, texts_per_request: list[list[str]], max_model_len: int | None = None):
        self.texts, self.max_model_len, self.requests = texts_per_request, max_model_len, []

    def generate(self, requests: list[dict], progress=None) -> list[dict]:
        self.requests += requests
        out = []
        for r, texts in zip(requests, self.texts[: len(requests)], strict=True):
            out.append({"num_prompt_tokens": len(r["prompt_token_ids"]), "completions": [
                {"text": t, "num_tokens": 3, "logprob": -1.0, "finish_reason": "stop"} for t in texts[: r["n"]]]})
        self.texts = self.texts[len(requests):]
        return out


class CharTokenizer:
    """One token per character of the rendered prompt: enough for requests_for's length check."""

    def apply_chat_template(self, messages, **_):
        return {"input_ids": list(range(sum(len(m["content"]) for m in messages)))}


CHARS = Chat(CharTokenizer())  # stateless: shared


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_by_hand():
    # n=5 samples, c=2 correct: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert metrics.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert metrics.pass_at_k(5, 0, 3) == 0.0
    assert metrics.pass_at_k(5, 4, 2) == 1.0  # only one failure: any 2 samples include a pass
    with pytest.raises(ValueError):
        metrics.pass_at_k(3, 1, 4)


def test_pass_rates_skip_not_applicable_samples():
    rows = [{"prompt_id": "a", "reward": 1.0}, {"prompt_id": "a", "reward": 0.0},
            {"prompt_id": "b", "reward": 0.0}, {"prompt_id": "b", "reward": None},
            {"prompt_id": "c", "reward": None}]
    # a: n=2 c=1 -> pass@1 0.5, pass@2 1.0; b: n=1 c=0 -> pass@1 0 (too few samples for pass@2); c: no score
    assert metrics.pass_rates(rows, [1, 2]) == {"pass@1": 0.25, "pass@2": 1.0}


def test_accuracy_by_capability_is_a_mean_over_capabilities():
    rows = [{"prompt_id": f"m{i}", "capability": "math", "reward": float(i < 3)} for i in range(4)]
    rows += [{"prompt_id": "c0", "capability": "code", "reward": 0.0}]
    assert metrics.accuracy_by_capability(rows) == {"code": 0.0, "math": 0.75, "overall": 0.375}


# --------------------------------------------------------------------------- sets through a scripted engine


def tiny_heldout(n: int = 3):
    drawn = [pair for cap in world.FAMILIES for pair in world.draw(cap, "heldout", n, 0)]
    return schema.from_records([rec for rec, _ in drawn], "prompts"), [reply for _, reply in drawn]


def test_heldout_reference_replies_score_100_and_wrong_ones_0(tmp_path):
    prompts, replies = tiny_heldout()
    cfg, score = EvalConfig(max_tokens=8), ScoreConfig(num_workers=2)
    sets = harness.eval_sets(["heldout"], prompts, None, score)
    right = harness.evaluate(tmp_path, ScriptedEngine([[r] for r in replies]), CHARS, sets, cfg, score, 0)
    assert right["scores"]["heldout"]["accuracy"] == {"code": 1.0, "math": 1.0, "multilingual": 1.0, "tools": 1.0,
                                                      "overall": 1.0}
    assert json.loads((tmp_path / "eval.json").read_text()) == right["scores"]
    evals = schema.read(tmp_path / "evals.parquet", "evals")
    assert evals.num_rows == prompts.num_rows and set(evals["benchmark"].to_pylist()) == {"heldout"}
    wrong = harness.evaluate(tmp_path, ScriptedEngine([["no idea"]] * len(replies)), CHARS, sets, cfg,
                             score, 0)
    assert wrong["scores"]["heldout"]["pass@1"] == 0.0


def test_prompts_too_long_for_the_context_are_failures_not_skips(tmp_path):
    prompts, replies = tiny_heldout(2)
    lengths = [len(m[-1]["content"]) + (len(m[0]["content"]) if len(m) > 1 else 0)
               for m in prompts["messages"].to_pylist()]
    limit = sorted(lengths)[len(lengths) // 2] + 8  # about half the prompts fit with max_tokens=8
    fits = [n + 8 <= limit for n in lengths]
    cfg, score = EvalConfig(max_tokens=8), ScoreConfig(num_workers=2)
    engine = ScriptedEngine([[r] for r, ok in zip(replies, fits) if ok], max_model_len=limit)
    result = harness.evaluate(tmp_path, engine, CHARS, harness.eval_sets(["heldout"], prompts, None, score),
                              cfg, score, 0)["scores"]["heldout"]
    assert result["too_long"] == fits.count(False) > 0
    assert result["pass@1"] == pytest.approx(fits.count(True) / len(fits), abs=1e-4)
    reasons = schema.read(tmp_path / "evals.parquet", "evals")["reason"].to_pylist()
    assert reasons.count(harness.TOO_LONG) == fits.count(False)


def test_pass_at_k_from_several_samples(tmp_path):
    prompts, replies = tiny_heldout(1)
    cfg = EvalConfig(max_tokens=8, num_samples=4, temperature=1.0, pass_k=[1, 4])
    score = ScoreConfig(num_workers=2)
    # each item: 1 right of 4 -> pass@1 = 0.25, pass@4 = 1
    engine = ScriptedEngine([[r, "x", "y", "z"] for r in replies])
    result = harness.evaluate(tmp_path, engine, CHARS, harness.eval_sets(["heldout"], prompts, None, score),
                              cfg, score, 0)["scores"]["heldout"]
    assert (result["pass@1"], result["pass@4"]) == (0.25, 1.0)
    assert {r["n"] for r in engine.requests} == {4}


# --------------------------------------------------------------------------- shipped benchmarks, reference answers
#
# Each shipped benchmark's items go through the stage that writes them (harness.load_benchmarks), the harness's
# own sets (eval_sets) and evaluate (eval_rows + write_scores), answered by an engine that reads each request's
# prompt back from its token ids and replies with a completion built from that item's own fields. So a wrong
# verifier, metrics keyed to the wrong set or item, or a miscomputed pass@k / per-language metric shows up.

BENCHMARK_LIMIT = 3  # items per benchmark (mmath: per language)
# capability and verifier each benchmark must be scored with
BENCHMARK_SCORING = {"humaneval": ("code", "code"), "gsm_symbolic": ("math", "math"), "math500": ("math", "math"),
                     "mmath": ("multilingual", "math"), "bfcl_simple": ("tools", "tools"),
                     "bfcl_multiple": ("tools", "tools")}
WRONG_NUMBER = "-987654321"  # no item's answer
# "... the final answer is" in each MMATH language: enough prose for the language identifier, whatever the question
FINAL_ANSWER = {
    "ar": "بالتفكير خطوة بخطوة، نجد أن الإجابة النهائية هي",
    "en": "Reasoning step by step, we find that the final answer is",
    "es": "Razonando paso a paso, encontramos que la respuesta final es",
    "fr": "En raisonnant étape par étape, nous trouvons que la réponse finale est",
    "ja": "段階的に推論すると、最終的な答えは次のとおりです",
    "ko": "단계별로 추론하면 최종 답은 다음과 같습니다",
    "pt": "Raciocinando passo a passo, descobrimos que a resposta final é",
    "th": "เมื่อให้เหตุผลทีละขั้นตอน เราพบว่าคำตอบสุดท้ายคือ",
    "vi": "Lập luận từng bước, chúng ta thấy rằng câu trả lời cuối cùng là",
    "zh": "逐步推理，我们得出最终答案是",
}


def rendered(messages: list[dict]) -> str:
    return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


class CodePointTokenizer:
    """One token per code point of the rendered chat, so the engine can read the prompt back from a request."""

    def apply_chat_template(self, messages, **_):
        return {"input_ids": [ord(c) for c in rendered(messages)]}


class ReplyingEngine:
    """Stands in for posttrain.models.engine.Engine: finds each request's item by its prompt (decoded from the
    token ids, no assumption about request order) and returns replies[item id][:n], in request order."""

    max_model_len = 1_000_000

    def __init__(self, prompts, replies: dict[str, list[str]]):
        self.item_of = {rendered(m): pid for pid, m in zip(prompts["id"].to_pylist(), prompts["messages"].to_pylist())}
        assert len(self.item_of) == prompts.num_rows, "two items render the same prompt: requests would be ambiguous"
        self.replies, self.asked = replies, []

    def generate(self, requests: list[dict], progress=None) -> list[dict]:
        out = []
        for r in requests:
            pid = self.item_of["".join(map(chr, r["prompt_token_ids"]))]
            self.asked.append((pid, r["n"]))
            texts = self.replies[pid][: r["n"]]
            assert len(texts) == r["n"]
            out.append({"num_prompt_tokens": len(r["prompt_token_ids"]), "completions": [
                {"text": t, "num_tokens": 3, "logprob": -1.0, "finish_reason": "stop"} for t in texts]})
        return out


def bfcl_value(acceptable):
    """A value BFCL's possible answers accept: the first alternative that is not "" (= may be left out), with
    dict patterns ({key: [acceptable values]}) and lists built the same way; None when only "" is given."""
    for alt in acceptable if isinstance(acceptable, list) else [acceptable]:
        if alt == "":
            continue
        if isinstance(alt, dict):
            return {k: v for k, v in ((k, bfcl_value(a)) for k, a in alt.items()) if v is not None}
        if isinstance(alt, list):
            return [bfcl_value([x]) for x in alt]
        return alt
    return None


def reference_reply(name: str, item: dict) -> str:
    """A right answer to one benchmark item, from the item's own fields."""
    from eval.benchmarks.humaneval import canonical_completion, problems
    from reward.tools import call_text

    if name == "humaneval":
        [problem] = [p for p in problems() if item["id"] == f"humaneval/{p['task_id']}"]
        assert item["entry_point"] == problem["entry_point"]
        return canonical_completion(problem)
    if name in ("gsm_symbolic", "math500"):
        return f"The answer is {item['answer']}."
    if name == "mmath":  # the question restated and the answer, in the item's language
        return mmath_reply(item, item["answer"])
    expected = json.loads(item["expected_call"])
    arguments = {k: v for k, v in ((k, bfcl_value(a)) for k, a in expected["possible_arguments"].items())
                 if v is not None}
    return call_text(expected["name"], arguments)


def mmath_reply(item: dict, answer: str) -> str:
    from eval.benchmarks.math import MMATH_INSTRUCTIONS

    lang, content = item["language"], item["messages"][-1]["content"]
    question = content.removesuffix(MMATH_INSTRUCTIONS[lang].format(question=""))
    assert question != content
    return f"{question}\n\n{FINAL_ANSWER[lang]} \\boxed{{{answer}}}."


def wrong_reply(name: str, item: dict) -> str:
    """A wrong answer to one benchmark item, in the form the benchmark asks for (mmath: in the item's language)."""
    from reward.tools import call_text

    if name == "humaneval":
        return f"```python\ndef {item['entry_point']}(*args, **kwargs):\n    return None\n```"
    if name in ("gsm_symbolic", "math500"):
        assert item["answer"] != WRONG_NUMBER
        return f"The answer is {WRONG_NUMBER}."
    if name == "mmath":
        assert item["answer"] != WRONG_NUMBER
        return mmath_reply(item, WRONG_NUMBER)
    return call_text("not_an_offered_tool", {})


@pytest.fixture(scope="module")
def benchmarks_dir(tmp_path_factory):
    """The benchmarks stage, as a round runs it: every shipped benchmark at BENCHMARK_LIMIT items."""
    from eval.benchmarks import BENCHMARKS

    assert set(BENCHMARKS) == set(BENCHMARK_SCORING)
    out = tmp_path_factory.mktemp("benchmarks")
    counts = harness.load_benchmarks(out, list(BENCHMARKS), BENCHMARK_LIMIT, 0)
    assert {name: counts[name] for name in BENCHMARKS} == {
        name: BENCHMARK_LIMIT * (10 if name == "mmath" else 1) for name in BENCHMARKS}
    return out


def run_set(out, name, benchmarks_dir, replies_of, cfg):
    """One benchmark through eval_sets + evaluate, replies_of(index, item) answering each item; checks what
    every run must hold and returns (its eval.json scores, its evals rows, its items)."""
    score = ScoreConfig(num_workers=2)
    sets = harness.eval_sets([name], schema.PROMPTS.empty_table(), benchmarks_dir, score)
    prompts, verifiers = sets[name]
    assert verifiers == {BENCHMARK_SCORING[name][0]: BENCHMARK_SCORING[name][1]}
    items = prompts.to_pylist()
    assert {it["capability"] for it in items} == {BENCHMARK_SCORING[name][0]}
    engine = ReplyingEngine(prompts, {it["id"]: replies_of(i, it) for i, it in enumerate(items)})
    out.mkdir()
    result = harness.evaluate(out, engine, Chat(CodePointTokenizer()), sets, cfg, score, 0)
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk == result["scores"] and list(on_disk) == [name]
    assert sorted(engine.asked) == sorted((it["id"], cfg.num_samples) for it in items)  # each item asked once
    evals = schema.read(out / "evals.parquet", "evals").to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in evals] == [
        (it["id"], i) for it in items for i in range(cfg.num_samples)]
    for r in evals:  # each row is its own item's reply, in its sample slot
        assert r["benchmark"] == name and r["completion"] == engine.replies[r["prompt_id"]][r["sample_index"]]
    scores = on_disk[name]
    assert (scores["items"], scores["too_long"]) == (len(items), 0)
    return scores, evals, items


def mmath_languages(items):
    return sorted({it["language"] for it in items})


def accuracies(scores: dict) -> dict:
    """mmath's acc_<lang> metrics."""
    return {k: v for k, v in scores.items() if k.startswith("acc_")}


@pytest.mark.parametrize("name", list(BENCHMARK_SCORING))
def test_shipped_benchmark_reference_answers_score_100_and_wrong_ones_0(name, benchmarks_dir, tmp_path):
    one = EvalConfig(max_tokens=8)
    scores, evals, items = run_set(tmp_path / "right", name, benchmarks_dir,
                                   lambda _i, it: [reference_reply(name, it)], one)
    assert scores["pass@1"] == 1.0, [(r["prompt_id"], r["reason"]) for r in evals if r["reward"] != 1.0]
    assert {r["reason"] for r in evals} == {"passed" if name == "humaneval" else "correct"}
    if name == "mmath":
        assert mmath_languages(items) == sorted(FINAL_ANSWER)
        assert accuracies(scores) == {f"acc_{lang}": 1.0 for lang in FINAL_ANSWER}
        assert scores["language_match"] == 1.0

    scores, evals, _ = run_set(tmp_path / "wrong", name, benchmarks_dir, lambda _i, it: [wrong_reply(name, it)], one)
    assert scores["pass@1"] == 0.0 and {r["reward"] for r in evals} == {0.0}
    reason = {"code": "AssertionError: assert candidate(", "math": "wrong answer: got ",
              "tools": "unknown tool not_an_offered_tool"}[
        BENCHMARK_SCORING[name][1]]  # the benchmark's own verifier said so
    assert all(r["reason"].startswith(reason) for r in evals), {r["reason"] for r in evals}
    if name == "mmath":  # wrong, but in the item's language
        assert accuracies(scores) == {f"acc_{lang}": 0.0 for lang in FINAL_ANSWER}
        assert scores["language_match"] == 1.0


@pytest.mark.parametrize("name", list(BENCHMARK_SCORING))
def test_shipped_benchmark_pass_at_k_with_one_right_sample_of_two(name, benchmarks_dir, tmp_path):
    """Every item: one reference and one wrong sample (right one first on even items, second on odd ones)."""
    def replies(i, item):
        pair = [reference_reply(name, item), wrong_reply(name, item)]
        return pair if i % 2 == 0 else pair[::-1]

    cfg = EvalConfig(max_tokens=8, num_samples=2, temperature=1.0, pass_k=[1, 2])
    scores, evals, items = run_set(tmp_path / "mixed", name, benchmarks_dir, replies, cfg)
    assert (scores["pass@1"], scores["pass@2"]) == (0.5, 1.0)
    assert [r["reward"] for r in evals] == [float((i % 2 == 0) == (s == 0)) for i in range(len(items)) for s in (0, 1)]
    if name == "mmath":
        assert accuracies(scores) == {f"acc_{lang}": 0.5 for lang in FINAL_ANSWER}
        assert scores["language_match"] == 1.0


def test_mmath_accuracy_and_language_match_are_per_language(benchmarks_dir, tmp_path):
    """Alternate languages (sorted) get a wrong answer in their own language, the others the right answer in
    English: acc_<lang> follows the answers (the math verifier takes a right answer in any language), and
    language_match counts the first group and English itself, 6 of 10 languages."""
    langs = sorted(FINAL_ANSWER)
    in_own_language = set(langs[0::2])  # ar es ja pt vi
    prompts = harness.eval_sets(["mmath"], schema.PROMPTS.empty_table(), benchmarks_dir, ScoreConfig())["mmath"][0]
    by_id = {it["id"]: it for it in prompts.to_pylist()}

    def replies(_i, item):
        if item["language"] in in_own_language:
            return [wrong_reply("mmath", item)]
        english = by_id[item["id"].replace(f"mmath/{item['language']}/", "mmath/en/", 1)]
        assert english["answer"] == item["answer"]  # the same problem
        return [reference_reply("mmath", english)]

    scores, evals, items = run_set(tmp_path / "mixed", "mmath", benchmarks_dir, replies, EvalConfig(max_tokens=8))
    assert accuracies(scores) == {f"acc_{lang}": float(lang not in in_own_language) for lang in langs}
    assert scores["pass@1"] == 0.5
    assert scores["language_match"] == pytest.approx((len(in_own_language) + 1) / len(langs))


def test_all_shipped_benchmarks_in_one_eval_keep_their_own_scores(benchmarks_dir, tmp_path):
    """Every shipped benchmark in one evaluate call (as a recipe listing them all runs): references for every
    other set, wrong replies for the rest; each set's pass@1 and rows stay its own."""
    names = list(BENCHMARK_SCORING)
    score = ScoreConfig(num_workers=2)
    sets = harness.eval_sets(names, schema.PROMPTS.empty_table(), benchmarks_dir, score)
    assert list(sets) == names
    right = set(names[0::2])
    replies = {it["id"]: [(reference_reply if name in right else wrong_reply)(name, it)]
               for name, (prompts, _) in sets.items() for it in prompts.to_pylist()}
    all_prompts = pa.concat_tables([prompts for prompts, _ in sets.values()])
    result = harness.evaluate(tmp_path, ReplyingEngine(all_prompts, replies), Chat(CodePointTokenizer()), sets,
                              EvalConfig(max_tokens=8), score, 0)
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores == result["scores"] and list(scores) == names
    assert {name: s["pass@1"] for name, s in scores.items()} == {name: float(name in right) for name in names}
    assert {name: s["items"] for name, s in scores.items()} == {name: sets[name][0].num_rows for name in names}
    evals = schema.read(tmp_path / "evals.parquet", "evals").to_pylist()
    assert [(r["benchmark"], r["prompt_id"]) for r in evals] == [
        (name, pid) for name, (prompts, _) in sets.items() for pid in prompts["id"].to_pylist()]
    assert all(r["completion"] == replies[r["prompt_id"]][0] for r in evals)
    assert scores["mmath"]["language_match"] == 1.0 and scores["mmath"]["acc_en"] == float("mmath" in right)


def test_eval_grades_answers_even_when_training_checks_steps(tmp_path):
    # score.check_steps filters training samples; a held-out answer reached through a false step still counts
    prompts, _ = tiny_heldout()
    math = prompts.filter(pa.compute.equal(prompts["capability"], "math")).slice(0, 1)
    row = math.to_pylist()[0]
    reply = f"{row['answer']} + 0 = 999. The answer is {row['answer']}."
    score = ScoreConfig(check_steps=["math"])
    sets = harness.eval_sets(["heldout"], math, None, score)
    got = harness.evaluate(tmp_path, ScriptedEngine([[reply]]), CHARS, sets, EvalConfig(max_tokens=8),
                           score, 0)
    assert got["scores"]["heldout"]["accuracy"]["math"] == 1.0
