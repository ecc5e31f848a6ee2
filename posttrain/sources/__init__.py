"""Prompt generators: training (and held-out) prompts the project makes itself, per capability, offline.

A generator is a function `draw(split: str, n: int, seed: int) -> list[dict]`:
- `split` is "train" or "heldout"; the two never share an item (and never share an id);
- it returns `n` prompt records: the fields of `posttrain.run.schema.PROMPTS` — `id` (unique, stable at a
  seed, prefixed with the generator's name, e.g. "gsm_symbolic/train/000017"), `capability`,
  `messages` (a list of {"role", "content"}), and the metadata its verifier needs (schema.VERIFIER_FIELDS);
- the same (split, n, seed) gives the same records; a larger n extends a smaller one's list.
Recipes name generators by key: `prompts.sources: [{kind: generator, name: gsm_symbolic, ...}]`.
Eval benchmarks are never generators (see eval/benchmarks): training prompts must not come from eval sets.
"""

from __future__ import annotations

import importlib
from typing import Callable

# name -> "module:function"; imported only when a recipe uses it (reasoning-gym is slow to import).
GENERATORS: dict[str, str] = {
    "gsm_symbolic": "posttrain.sources.math:draw_gsm_symbolic",  # reasoning-gym's GSM-symbolic word problems
    "arithmetic": "posttrain.sources.math:draw_arithmetic",  # reasoning-gym's basic_arithmetic
    "code": "posttrain.sources.code:draw",  # small Python functions with unit tests
    "tools": "posttrain.sources.tools:draw",  # one JSON tool call chosen from a JSON-schema tool list
    "multilingual_math": "posttrain.sources.multilingual:draw",  # word problems to answer in a named language
}


def get(name: str) -> Callable[[str, int, int], list[dict]]:
    if name not in GENERATORS:
        raise KeyError(f"unknown prompt generator {name!r} (known: {sorted(GENERATORS)})")
    module, attr = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), attr)
