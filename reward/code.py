"""Code verifier: run the completion's code and its unit tests in the sandbox; pass iff they all pass.

Program = the first ```python (or ```) fenced block of the completion (else the whole text), an entry
point check, the test asserts, and a final line printing a per-program nonce. Passing needs exit code 0
AND the nonce on stdout, so code that calls sys.exit(0) / os._exit(0) before the tests cannot pass.
(A program that reads its own source can still find the nonce: this stops accidents, not attackers.)
"""

from __future__ import annotations

import re
import secrets
import warnings

from reward import sandbox
from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

TIMEOUT_S = 5.0
FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
FRAME = re.compile(r'File "[^"]*/main\.py", line (\d+)')
EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|[A-Z]\w*)(?::\s?(.*))?$")
ENTRY_MISSING = "sandbox: entry point not defined"


def score(completions: list, tests: list | None = None, entry_point: list | None = None,
          timeout_s: float | None = None, num_workers: int | None = None, **_) -> list[Verdict]:
    """completions[i] run against tests[i] (assert lines) -> one Verdict each. entry_point[i] may be
    None (no check); tests[i] None -> not applicable. Programs run concurrently, num_workers at a time."""
    n = len(completions)
    verdicts: list[Verdict | None] = [None] * n
    # K samples of one prompt are often the same code: each distinct (code, tests, entry point) runs once.
    jobs: dict[tuple[str, str, str | None], list[int]] = {}
    rows = zip(completions, column(tests, n, "tests"), column(entry_point, n, "entry_point"))
    for i, (c, t, e) in enumerate(rows):
        code = extract_code(as_text(c))
        verdicts[i] = missing(tests=t) or _syntax(code)
        if verdicts[i] is None:
            jobs.setdefault((code, t, e), []).append(i)
    nonces = [secrets.token_hex(8) for _ in jobs]
    programs = [build_program(code, t, e, nonce) for (code, t, e), nonce in zip(jobs, nonces)]
    results = sandbox.run_many(programs, timeout_s or TIMEOUT_S, num_workers)
    for ((_, _, entry), rows_of_job), program, nonce, result in zip(jobs.items(), programs, nonces, results):
        v = verdict(result, program, nonce, entry)
        for i in rows_of_job:
            verdicts[i] = v
    return verdicts


def extract_code(text: str) -> str:
    """The first ```python / ``` fenced block (an unclosed fence runs to the end), else the whole text."""
    m = FENCE.search(text)
    return m.group(2) if m else text


def _syntax(code: str) -> Verdict | None:
    """Verdict for code that does not compile (checked here: compiling does not run anything)."""
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for a bad escape: the model's, not our log's
            warnings.simplefilter("ignore")
            compile(code, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return Verdict(FAIL, "syntax error")
    return None


def build_program(code: str, tests: str, entry_point: str | None, nonce: str) -> str:
    lines = [code, ""]
    if entry_point:
        lines.append(f"if not callable(globals().get({entry_point!r})): raise SystemExit({ENTRY_MISSING!r})")
    return "\n".join([*lines, tests, f"print({nonce!r})", ""])


def verdict(result: sandbox.SandboxResult, program: str, nonce: str, entry_point: str | None) -> Verdict:
    """A sandbox result -> Verdict, with the first failure as the reason."""
    if result.status == "ok":
        if result.stdout.rstrip().endswith(nonce):
            return Verdict(PASS, "passed")
        return Verdict(FAIL, "exited before the tests finished")
    if result.status == "timeout":
        return Verdict(FAIL, "timeout")
    if result.status == "signal":
        return Verdict(FAIL, f"killed (signal {-result.returncode})")
    if result.status == "process-limit":
        return Verdict(FAIL, "killed (process limit)")
    if result.status == "error":
        # the sandbox could not run it: our failure, not the model's
        return Verdict(None, f"not applicable: {result.stderr.strip()[-200:]}")
    if result.stderr.rstrip().endswith(ENTRY_MISSING):
        return Verdict(FAIL, f"entry point {entry_point} not defined")
    return Verdict(FAIL, _exception(result.stderr, program) or f"exit code {result.returncode}")


def _exception(stderr: str, program: str) -> str | None:
    """The traceback's exception as "Type: message"; a bare AssertionError names its assert line."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines or (m := EXCEPTION.match(lines[-1])) is None or not FRAME.search(stderr):
        return None
    kind, message = m.group(1), (m.group(2) or "").strip()
    if kind.endswith("SyntaxError") or kind in ("IndentationError", "TabError"):
        return "syntax error"
    if kind == "AssertionError" and not message:
        line_no = int(FRAME.findall(stderr)[-1])  # our own copy of the line: stderr could be forged
        source = program.splitlines()
        message = source[line_no - 1].strip() if 0 < line_no <= len(source) else ""
    return f"{kind}: {message}" if message else kind
