"""Math prompt generators from reasoning-gym: GSM-symbolic word problems and basic arithmetic.

Train and held-out prompts come from their own hash buckets of reasoning-gym's items, apart from the
gsm_symbolic eval benchmark's (eval/benchmarks/splits.py says how).
"""

from __future__ import annotations

from eval.benchmarks.splits import INSTRUCTION as INSTRUCTION  # the split is the benchmark's: it lives with it
from eval.benchmarks.splits import SPLITS, items


def record(name: str, split: str, index: int, item: dict) -> dict:
    """A reasoning-gym item as a prompt record (capability math, answer = the item's answer)."""
    return {
        "id": f"{name}/{split}/{index:06d}",
        "capability": "math",
        "messages": [{"role": "user", "content": f"{item['question']}\n{INSTRUCTION}"}],
        "answer": str(item["answer"]),
    }


def draw_items(dataset: str, name: str, split: str, n: int, seed: int) -> list[dict]:
    """The first n records of a split; refuses "eval" (benchmarks only) and unknown splits."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    stream = items(dataset, split, seed)
    return [record(name, split, i, next(stream)) for i in range(n)]


def draw_gsm_symbolic(split: str, n: int, seed: int) -> list[dict]:
    """GSM-symbolic word problems (~100 GSM8K templates with fresh names and numbers), integer answers."""
    return draw_items("gsm_symbolic", "gsm_symbolic", split, n, seed)


def draw_arithmetic(split: str, n: int, seed: int) -> list[dict]:
    """Expressions of 2-6 terms with + - * / and parentheses ("Calculate 5 - 3 - 6."), integer answers."""
    return draw_items("basic_arithmetic", "arithmetic", split, n, seed)
