"""Eval metrics over scored rows: the unbiased pass@k estimator and accuracy per capability."""

from __future__ import annotations

from collections import defaultdict
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes:
    1 - C(n-c, k) / C(n, k) (Chen et al. 2021, the HumanEval paper's unbiased estimator)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def per_item(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """{prompt_id: (samples scored, samples passing)}; a None reward (verifier not applicable) is left out."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r["reward"] is not None:
            out[r["prompt_id"]][0] += 1
            out[r["prompt_id"]][1] += r["reward"] >= 1.0
    return {pid: (n, c) for pid, (n, c) in out.items()}


def pass_rates(rows: list[dict], ks: list[int]) -> dict[str, float]:
    """{"pass@k": mean over items} for each k; items with fewer than k scored samples are left out of that k."""
    items = per_item(rows)
    out = {}
    for k in ks:
        values = [pass_at_k(n, c, k) for n, c in items.values() if n >= k]
        out[f"pass@{k}"] = round(sum(values) / len(values), 4) if values else 0.0
    return out


def accuracy_by_capability(rows: list[dict]) -> dict[str, float]:
    """{capability: mean pass@1, "overall": mean over capabilities} (the tiny world's held-out table)."""
    by_cap: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_cap[r["capability"]].append(r)
    acc = {cap: pass_rates(group, [1])["pass@1"] for cap, group in sorted(by_cap.items())}
    acc["overall"] = round(sum(acc.values()) / len(acc), 4) if acc else 0.0
    return acc
