"""Verifiers for the scoring stage: one plain function per capability, taking TRL's reward-function call.

Each verifier is `score(completions: list[str], **columns) -> list[Verdict]`, with every column a list
as long as `completions`; unknown columns (and the stage's `timeout_s` / `num_workers`) are accepted and
ignored where they do not apply. Reward 1.0 = pass, 0.0 = fail, None = not applicable (metadata missing).
A recipe names a built-in verifier (VERIFIERS) or one of the user's by import reference (reward/custom.py).
As TRL reward functions (rewards only, each named for its capability): `math_reward`, `code_reward`, ...
(reward/rewards.py), e.g. `GRPOTrainer(reward_funcs=[math_reward, code_reward])`.
"""

from __future__ import annotations

from typing import Callable

from reward import code, custom, math, multilingual, number_words, tools
from reward.rewards import (code_reward, math_reward, multilingual_reward, number_words_reward, tools_reward,
                            trl_reward)
from reward.verdict import Verdict

VERIFIERS: dict[str, Callable[..., list[Verdict]]] = {
    "math": math.score,
    "code": code.score,
    "tools": tools.score,
    "multilingual": multilingual.score,  # language gate (py3langid) + math answer
    "number_words": number_words.score,  # the tiny world's one-word number replies
}



def verifier(name: str) -> Callable[..., list[Verdict]]:
    """The verifier `name` names: a built-in one, or the user's "package.module:function"."""
    return custom.scorer(name) if custom.is_reference(name) else VERIFIERS[name]


def unknown_verifier(name: str) -> str | None:
    """Why `name` names no verifier (for the error that names the recipe key or file), or None."""
    if custom.is_reference(name):
        try:
            custom.load(name)
        except custom.VerifierError as e:
            return str(e)
        return None
    if name not in VERIFIERS:
        return (f"unknown verifier {name!r} (known: {sorted(VERIFIERS)}, or a function of yours as "
                f"'package.module:function')")
    return None


__all__ = ["VERIFIERS", "Verdict", "code_reward", "math_reward", "multilingual_reward", "number_words_reward",
           "tools_reward", "trl_reward", "unknown_verifier", "verifier"]
