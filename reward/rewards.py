"""The verifiers as TRL reward functions, ready for `GRPOTrainer(reward_funcs=[math_reward, code_reward])`.

TRL calls `f(prompts=..., completions=..., **dataset_columns)` and wants one float per completion, or None where
the function does not apply (TRL reads it as NaN and leaves it out of the mean); it logs each function under its
`__name__`. The verifiers take that call as is but return Verdict(reward, reason) pairs (posttrain keeps the
reason in its tables) and are all named `score`: these are the same verifiers, rewards only, each named for
what it scores. Code runs in the sandbox at the process's minimum isolation: bubblewrap unless the program
names a weaker mode (`reward.sandbox.require("unshare-net")`), and it fails closed.
"""

from __future__ import annotations

from collections.abc import Callable

import reward.code
import reward.math
import reward.multilingual
import reward.number_words
import reward.tools
from reward.verdict import Verdict

Reward = Callable[..., list[float | None]]


def trl_reward(verifier: Callable[..., list[Verdict]], name: str) -> Reward:
    """`verifier`'s rewards alone, as a function named `name` (TRL names functions by __name__)."""
    def rewards(completions: list, **columns) -> list[float | None]:
        return [verdict.reward for verdict in verifier(completions, **columns)]

    rewards.__name__ = rewards.__qualname__ = name
    rewards.__doc__ = f"{name}(completions, **columns): {verifier.__module__}.score's rewards (None: not applicable)."
    return rewards


math_reward = trl_reward(reward.math.score, "math_reward")  # columns: answer
code_reward = trl_reward(reward.code.score, "code_reward")  # columns: tests, entry_point (sandboxed)
tools_reward = trl_reward(reward.tools.score, "tools_reward")  # columns: tools, expected_call
multilingual_reward = trl_reward(reward.multilingual.score, "multilingual_reward")  # columns: language, answer
number_words_reward = trl_reward(reward.number_words.score, "number_words_reward")  # columns: language, answer
