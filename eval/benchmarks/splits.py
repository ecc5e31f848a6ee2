"""Which reasoning-gym items are the eval benchmark and which may train: one split shared by
eval/benchmarks/math.py (the "eval" bucket) and posttrain/sources/math.py (train and held-out prompts).

reasoning-gym makes item i of a dataset from Random(seed + i): seed s + 1 would be seed s shifted by one
item, so our seed reaches reasoning-gym spread by a hash (rg_seed). Even so two seeds or two indices
can give the same question; seeds cannot keep splits apart. A hash of the item's split key does: bucket =
sha256(key) % 10 (% 5 for templates) puts an item in "eval" (bucket 0: the gsm_symbolic eval benchmark,
eval/benchmarks/math.py, and never a training prompt), "heldout" (bucket 1) or "train" (the other buckets),
whatever seed or index produced it. The key is the normalised question, except for gsm_symbolic, whose key is
the item's template (one of ~100 GSM8K problems with fresh names and numbers): two items of one template share
most of their words, so a split by question would train on the eval's templates, and decontamination would
rightly remove those training prompts. Within a split each question appears once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from reward.steps import wrong_step

INSTRUCTION = 'Solve the problem step by step. Finish with "The answer is <number>."'
BUCKETS = {0: "eval", 1: "heldout"}  # of 10; every other bucket is "train"
SPLITS = ("train", "heldout")
TEMPLATED = ("gsm_symbolic",)  # split by template, not by question
TEMPLATE_BUCKETS = 5  # of ~85 templates in use, ~1/5 each in eval and held out: a benchmark of many problems


def partition(key: str, buckets: int = 10) -> str:
    """"train", "heldout" or "eval" for a split key, by a hash of its text (case and spacing ignored) into
    `buckets` buckets (two of them are not "train")."""
    key = " ".join(key.lower().split())
    return BUCKETS.get(int(hashlib.sha256(key.encode()).hexdigest(), 16) % buckets, "train")


def split_key(dataset: str, data, i: int) -> tuple[str, int]:
    """Item i's split key and its number of buckets: its template for gsm_symbolic (TEMPLATE_BUCKETS), else
    its question (10); see the module docstring."""
    if dataset in TEMPLATED:
        return f"gsm_symbolic template {data.task_indices[i]}", TEMPLATE_BUCKETS
    return data[i]["question"], 10


def rg_seed(dataset: str, seed: int) -> int:
    """reasoning-gym's seed for ours: far apart for adjacent seeds (see the module docstring)."""
    return int(hashlib.sha256(f"{dataset}/{seed}".encode()).hexdigest(), 16) % 2**31


def items(dataset: str, split: str, seed: int) -> Iterator[dict]:
    """reasoning-gym items of `dataset` at our `seed` whose split key falls in `split`, in index order,
    each question once, with their `split_key`. Endless: the dataset is rebuilt twice as large when
    exhausted (item i depends only on the seed and i, so a larger dataset extends a smaller one).

    An item whose reference solution (gsm_symbolic's `answer_cot`) states a false equation is left out:
    reasoning-gym cuts float results to integers, so "£39.24 - £30.24 = £8" leaves it the answer 8 for 9
    (6 of 2,000 items at one seed); a model that answers 9 is right, and must not be graded wrong."""
    import reasoning_gym

    seen: set[str] = set()
    size, i = 1024, 0
    while True:
        data = reasoning_gym.create_dataset(dataset, seed=rg_seed(dataset, seed), size=size)
        for i in range(i, size):
            item = data[i]
            question = item["question"]
            key, buckets = split_key(dataset, data, i)
            if question in seen or partition(key, buckets) != split:
                continue
            if wrong_step(item["metadata"].get("answer_cot") or ""):
                continue  # its reference solution states a false equation, so its answer is wrong (see above)
            seen.add(question)
            yield {**item, "split_key": key}
        i, size = size, size * 2
