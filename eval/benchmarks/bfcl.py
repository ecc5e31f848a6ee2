"""BFCL (Berkeley Function Calling Leaderboard, bfcl-eval package): single-turn, single-call categories.

`bfcl_simple` is simple_python (400 items: one function offered, one call expected); `bfcl_multiple` is
multiple (200 items: 2-4 functions offered, one call expected). Items are read from the data files the
package ships; its Python modules are not imported (their dependencies are not installed). The prompt is
the project's own tool prompt (`reward.tools.render_tools_prompt`, as for training), the answer a Llama 3.1
JSON tool call, and the verifier reward.tools with BFCL's possible answers as the expected call. It scores
as BFCL's AST checker does (exactly one call, the checker's types, acceptable values, "" = may be left out,
BFCL's string normalisation; the answer key, not an enum, says which values pass):
tests/test_bfcl_agreement.py runs bfcl-eval's own `ast_checker` beside it on every item here and on
mechanical perturbations of each, and the verdicts differ only on two answer-key bugs, where BFCL accepts a
value of the key's type that the schema refuses (simple_python_307, simple_python_149) and reward.tools
does not.
Parallel, parallel-multiple, live, irrelevance and multi-turn categories are out of scope: the verifier
checks one call against one expected call.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from eval.benchmarks import Benchmark
from reward.tools import render_tools_prompt


def data_dir() -> Path:
    """bfcl_eval's data folder, found without importing the package."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("bfcl-eval is not installed (pip install --no-deps bfcl-eval)")
    return Path(spec.origin).parent / "data"


def _json_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def items(category: str) -> list[tuple[dict, dict]]:
    """(question item, possible-answer item) pairs of a BFCL category, in file order."""
    questions = _json_lines(data_dir() / f"BFCL_v4_{category}.json")
    answers = {a["id"]: a for a in _json_lines(data_dir() / "possible_answer" / f"BFCL_v4_{category}.json")}
    return [(q, answers[q["id"]]) for q in questions]


def record(name: str, item: dict, answer: dict) -> dict:
    """One prompt record; refuses items outside the single-turn, single-call scope."""
    if len(item["question"]) != 1 or len(answer["ground_truth"]) != 1:
        raise ValueError(f"{item['id']}: not a single-turn, single-call item")
    [(function, possible)] = answer["ground_truth"][0].items()
    return {
        "id": f"{name}/{item['id']}",
        "capability": "tools",
        "messages": render_tools_prompt(item["function"], item["question"][0]),
        "tools": json.dumps(item["function"]),
        "expected_call": json.dumps({"name": function, "possible_arguments": possible}),
    }


def _loader(name: str, category: str):
    def load(limit: int | None, seed: int) -> list[dict]:
        """The first `limit` items in file order (the seed does not matter: the order is the benchmark's)."""
        pairs = items(category)[:limit]
        return [record(name, item, answer) for item, answer in pairs]
    return load


SIMPLE = Benchmark(name="bfcl_simple", capability="tools", verifier="tools",
                   load=_loader("bfcl_simple", "simple_python"))
MULTIPLE = Benchmark(name="bfcl_multiple", capability="tools", verifier="tools",
                     load=_loader("bfcl_multiple", "multiple"))
