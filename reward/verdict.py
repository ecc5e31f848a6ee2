"""The verdict every verifier returns, and the column plumbing they share (TRL reward-function style)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Verdict(NamedTuple):
    """One completion's score: reward 1.0 (pass) / 0.0 (fail), or None when the verifier does not apply."""

    reward: float | None
    reason: str


PASS, FAIL = 1.0, 0.0


def column(values: list | None, n: int, name: str) -> list:
    """A metadata column as a list of n values; an absent column reads as n Nones (not applicable)."""
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def missing(**fields: Any) -> Verdict | None:
    """Verdict(None, "not applicable: missing <field>") for the first None field, else None."""
    for name, value in fields.items():
        if value is None:
            return Verdict(None, f"not applicable: missing {name}")
    return None


def as_text(completion: Any) -> str:
    """A completion as text: plain strings pass through; a conversational completion (TRL's list of
    {"role", "content"} messages) reads as its last message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return "" if completion is None else str(completion)
