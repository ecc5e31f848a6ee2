"""Math prompt generators from reasoning-gym: GSM-symbolic word problems and basic arithmetic.

reasoning-gym makes item i of a dataset from Random(seed + i): seed s + 1 would be seed s shifted by one
item, so our seed reaches reasoning-gym spread by a hash (rg_seed). Even so two seeds or two indices
can give the same question; seeds cannot keep splits apart. A hash of the question text does: bucket =
sha256(normalised question) % 10 puts a question in "eval" (bucket 0: the gsm_symbolic eval benchmark,
eval/benchmarks/math.py, and never a training prompt), "heldout" (bucket 1) or "train" (buckets 2-9),
whatever seed or index produced it. Within a split each question appears once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

INSTRUCTION = 'Solve the problem step by step. Finish with "The answer is <number>."'
BUCKETS = {0: "eval", 1: "heldout"}  # of 10; every other bucket is "train"
SPLITS = ("train", "heldout")


def partition(question: str) -> str:
    """"train", "heldout" or "eval" for a question, by a hash of its text (case and spacing ignored)."""
    key = " ".join(question.lower().split())
    return BUCKETS.get(int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10, "train")


def rg_seed(dataset: str, seed: int) -> int:
    """reasoning-gym's seed for ours: far apart for adjacent seeds (see the module docstring)."""
    return int(hashlib.sha256(f"{dataset}/{seed}".encode()).hexdigest(), 16) % 2**31


def items(dataset: str, split: str, seed: int) -> Iterator[dict]:
    """reasoning-gym items of `dataset` at our `seed` whose question falls in `split`, in index order,
    each question once. Endless: the dataset is rebuilt twice as large when exhausted (item i depends
    only on the seed and i, so a larger dataset extends a smaller one)."""
    import reasoning_gym

    seen: set[str] = set()
    size, i = 1024, 0
    while True:
        data = reasoning_gym.create_dataset(dataset, seed=rg_seed(dataset, seed), size=size)
        for i in range(i, size):
            item = data[i]
            question = item["question"]
            if question not in seen and partition(question) == split:
                seen.add(question)
                yield item
        i, size = size, size * 2


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
