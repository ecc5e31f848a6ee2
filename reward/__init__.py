"""Verifiers for the scoring stage: one plain function per capability, TRL reward-function style.

Each verifier is `score(completions: list[str], **columns) -> list[Verdict]`, with every column a list
as long as `completions`; unknown columns (and the stage's `timeout_s` / `num_workers`) are accepted and
ignored where they do not apply. Reward 1.0 = pass, 0.0 = fail, None = not applicable (metadata missing).
"""

from __future__ import annotations

from typing import Callable

from reward import code, math, multilingual, number_words, tools
from reward.verdict import Verdict

VERIFIERS: dict[str, Callable[..., list[Verdict]]] = {
    "math": math.score,
    "code": code.score,
    "tools": tools.score,
    "multilingual": multilingual.score,  # language gate (py3langid) + math answer
    "number_words": number_words.score,  # the tiny world's one-word number replies
}

__all__ = ["VERIFIERS", "Verdict"]
