"""Verifiers of the user's own, named in a recipe by import reference: `score.verifiers: {math: "my_rewards:score"}`.

The function has TRL's reward-function shape, `f(completions: list[str], **columns) -> list`, and is called
once per batch of samples with every prompt column as a list as long as `completions` (answer, tests,
entry_point, preamble, tools, expected_call, language, and `prompts`: each prompt's messages) plus `timeout_s`
and `num_workers`; it takes the ones it uses and must accept the others (`**kwargs`). Each element of its result
is the reward (a number), None (not applicable: left to a reward model), or a (reward, reason) pair.

It runs in this process with our rights: model code it wants to run goes through reward.sandbox.run_python,
as reward/code.py does. Its module file's content is part of the fingerprint of the stages that score
(posttrain/run/fingerprint.py), so editing the function reruns them; files it imports are not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import math
from collections.abc import Callable
from numbers import Real

from reward.verdict import Verdict


class VerifierError(ValueError):
    """A verifier reference that does not load, or a verifier whose result is not a list of rewards."""


def is_reference(name: str) -> bool:
    """Whether `name` is an import reference ("package.module:function") rather than a built-in verifier."""
    return ":" in name


@functools.lru_cache(maxsize=None)
def load(ref: str) -> Callable:
    """The function `ref` ("package.module:function", the function may be dotted: "mod:Class.method") names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise VerifierError(f"{ref!r} is not an import reference 'package.module:function'")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any error it raises on import is theirs to see
        raise VerifierError(f"{ref!r}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise VerifierError(f"{ref!r}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise VerifierError(f"{ref!r}: {attr} is a {type(obj).__name__}, not a function")
    return obj


def scorer(ref: str) -> Callable[..., list[Verdict]]:
    """The verifier `ref` names, returning Verdicts like the built-in ones."""
    fn = load(ref)

    def score(completions: list[str], **columns) -> list[Verdict]:
        out = fn(completions, **columns)
        if not isinstance(out, (list, tuple)) or len(out) != len(completions):
            got = f"{len(out)} results" if isinstance(out, (list, tuple)) else f"a {type(out).__name__}"
            raise VerifierError(f"verifier {ref} returned {got} for {len(completions)} completions")
        return [_verdict(ref, x) for x in out]

    return score


def _verdict(ref: str, x) -> Verdict:
    reward, reason = x if isinstance(x, (tuple, list)) and len(x) == 2 else (x, None)
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, Real)):
        raise VerifierError(f"verifier {ref} returned {x!r}: a reward is a number, None, or (reward, reason)")
    if reward is None:
        return Verdict(None, str(reason or f"not applicable ({ref})"))
    value = float(reward)
    return Verdict(value, str(reason or (f"{ref}: {value:g}" if math.isfinite(value) else f"{ref}: {value}")))


def source_digest(ref: str) -> str:
    """sha256 of the file that defines `ref`'s module (what a stage's fingerprint records)."""
    module = importlib.import_module(ref.partition(":")[0])
    path = inspect.getsourcefile(module)
    if path is None:  # a built-in or compiled module: its name is all there is
        return f"module:{module.__name__}"
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
