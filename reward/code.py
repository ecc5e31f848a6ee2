"""Code verifier: run the completion's code and its unit tests in the sandbox; pass iff they all pass.

Which code: the completion's fenced blocks, paired as opening and closing fences (extract_code), the best
candidate among the python-tagged and untagged ones (else the whole text).

How it is judged (the guarantee): the candidate code never runs in the process that runs the tests. The
sandboxed program is HARNESS, trusted code that carries the candidate code as a string; the tests and a
per-program nonce reach it on stdin (a memfd), never in the program's text. The harness

  1. makes itself non-dumpable, then forks the child that will run the candidate code, BEFORE reading the
     tests or the nonce, so the child's memory never holds them (it is a copy of a parent without them);
  2. the child closes its stdin and drops every capability (bounding set included, and no_new_privs), then
     waits; the parent reads stdin to its end, truncates the memfd to nothing and closes it, then lets the
     child run the candidate code. From then on the tests and the nonce exist only in the parent's memory:
     the stdin memfd still open in the sandbox's init is empty, and the parent, non-dumpable, cannot be
     ptraced or have its memory or descriptors read (/proc/<pid>/mem, fd/, environ; process_vm_readv)
     by a process without CAP_SYS_PTRACE -- the child has none;
  3. the parent runs the tests itself. The candidate's functions are proxies there: each call pickles the
     arguments to the child, which runs the real function and answers with the result. The parent reads
     answers with a restricted unpickler: plain data only (numbers, strings, bytes, lists, tuples, dicts,
     sets, and a few stdlib value types; a dict view or a builtin iterator -- generator, map, filter, zip --
     is consumed in the child, up to 100,000 items, and rebuilt from its items, so `list(gen(3))` and
     `sorted(d.keys())` work); anything else the child returns stays in the child as an opaque
     handle (no ==, no truth value, no iteration: only attribute access and calls, which go back to the
     child). So every value a test compares or checks was rebuilt by the parent from plain data: a
     candidate cannot make an assert pass with a crafted __eq__ or __bool__, nor read expected values;
  4. when the tests end without an exception, the parent kills the child and prints the nonce, and exits 0.
     If the child dies first, the parent exits as it did (code or signal), without the nonce.

A pass needs exit 0 AND the nonce at the end of stdout, and only the parent's success path can print it,
so code that exits early (sys.exit(0), os._exit(0)), kills its parent, forges the sandbox's report, reads
its own file, /proc/self/fd, gc.get_objects(), frames, or the harness's text cannot pass. This holds in
the bwrap mode (the sandbox's processes are ours alone, the filesystem read-only but for its tmpfs). In
unshare-net and rlimits-only the host filesystem is shared and writable with our rights (the candidate
could rewrite the interpreter's stdlib or this file), and in rlimits-only it can read our host process's
memory, which holds the nonce: there the nonce stops accidents, not attackers (those modes log a warning).

What a proxied call cannot do (a test relying on it fails, it never passes wrongly): see what the
candidate prints (its stdout is not the parent's), pass objects of classes the tests define (functions
and lambdas are fine: they run in the parent as callbacks), compare the candidate's own objects
(e.g. a returned instance of its class: use its attributes, which are fetched as data).
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import marshal
import re
import secrets
import warnings
from pathlib import Path

import reward.sandbox as sandbox
from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

TIMEOUT_S = 5.0
SOLUTION, TESTS = "solution.py", "tests.py"  # the file names tracebacks show
# an opening fence: ``` or ~~~ (3 or more) and an info string whose first word is the language; or
# (lenient) ``` and a language word ending a line of prose
FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^`]*$")
FENCE_AFTER_PROSE = re.compile(r"^[^`]*\S[ \t]*(?P<fence>`{3,})(?P<lang>[\w+#.-]*)[ \t]*$")
PYTHON_TAGS = {"python", "python3", "py", "py3"}
FRAME = re.compile(rf'File "({re.escape(SOLUTION)}|{re.escape(TESTS)})", line (\d+)')
EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|[A-Z]\w*)(?::\s?(.*))?$")
ENTRY_MISSING = "sandbox: entry point not defined"


def score(completions: list, tests: list | None = None, entry_point: list | None = None,
          preamble: list | None = None, timeout_s: float | None = None, num_workers: int | None = None,
          **_) -> list[Verdict]:
    """completions[i] run against tests[i] (assert lines) -> one Verdict each. entry_point[i] may be
    None (no check); tests[i] None -> not applicable. preamble[i] (optional): trusted code of the prompt's
    (helpers its function may call), run before the reply's code, so a reply may call them without
    copying them, and before the tests, so the tests call the prompt's helpers, never the reply's
    redefinitions. Programs run concurrently, num_workers at a time."""
    n = len(completions)
    verdicts: list[Verdict | None] = [None] * n
    # K samples of one prompt are often the same code: each distinct (code, tests, entry point) runs once.
    jobs: dict[tuple[str, str, str | None], list[int]] = {}
    rows = zip(completions, column(tests, n, "tests"), column(entry_point, n, "entry_point"),
               column(preamble, n, "preamble"))
    for i, (c, t, e, p) in enumerate(rows):
        code = _after(p, extract_code(as_text(c), e))
        verdicts[i] = missing(tests=t) or _syntax(code)
        if verdicts[i] is None:
            jobs.setdefault((code, _after(p, t), e), []).append(i)
    nonces = [secrets.token_hex(16) for _ in jobs]
    programs = [build_program(code, e) for code, _, e in jobs]
    stdins = [build_stdin(t, nonce) for (_, t, _), nonce in zip(jobs, nonces)]
    results = sandbox.run_many(programs, timeout_s or TIMEOUT_S, num_workers, stdins=stdins)
    for ((code, t, entry), rows_of_job), nonce, result in zip(jobs.items(), nonces, results):
        v = verdict(result, code, t, nonce, entry)
        for i in rows_of_job:
            verdicts[i] = v
    return verdicts


def _after(preamble: str | None, code: str) -> str:
    return f"{preamble.rstrip()}\n\n\n{code}" if preamble else code


# ---- which code ---------------------------------------------------------------------------------------

def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, fences paired in order as CommonMark pairs them: a fence
    line opens a block, the next line that starts with the same fence (at least as long) closes it, so
    a closing fence is never taken for an opening one. Leniencies for model output: a closing fence may
    have text glued after it ("```Done", never Python inside the block); an opening fence may
    end a line of prose ("Here it is: ```python"), a block may close at the end of its last code line
    ("return x```"), and an unclosed block runs to the end. The body loses the opening fence's
    indentation (a block inside a list item)."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i]) or FENCE_AFTER_PROSE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("lang").lower()
        indent = len(lines[i]) - len(lines[i].lstrip()) if m.re is FENCE_OPEN else 0
        body, i = [], i + 1
        while i < len(lines):
            line, bare = lines[i], lines[i].strip()
            i += 1
            if bare.startswith(fence):  # a closing fence, even with text glued after it ("```Done")
                break
            if fence[0] == "`" and line.rstrip().endswith("```"):
                body.append(line.rstrip()[:-3])
                break
            body.append(line)
        body = [ln[min(indent, len(ln) - len(ln.lstrip(" \t"))):] for ln in body]
        blocks.append((lang, "\n".join(body) + "\n"))
    return blocks


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The candidate code of a completion: among its python-tagged and untagged fenced blocks (other
    languages never: a ```bash block is not the answer), the first of the best by, in order,
    (1) defines `entry_point` at module level (what the tests call: a usage example or a test block
        beside the solution does not define it),
    (2) compiles (a `>>> f(1)` transcript does not),
    (3) is tagged python (an untagged block is more often output or a transcript),
    (4) defines some function or class (the solution rather than an example that calls it).
    Ties go to the earliest block: models answer first, then illustrate. No fenced block -> the whole
    text (a bare answer); fenced blocks but none of python or untagged -> the whole text too (it then
    fails to compile: there was no Python answer)."""
    candidates = [(lang in PYTHON_TAGS, body) for lang, body in fenced_blocks(text) if lang in PYTHON_TAGS or not lang]
    if not candidates:
        return text
    best, best_key = None, None
    for tagged, body in candidates:
        tree = _parse(body)
        names = _defined_names(tree) if tree is not None else set()
        key = (bool(entry_point) and entry_point in names, tree is not None, tagged,
               any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                   for node in (tree.body if tree is not None else ())))
        if best_key is None or key > best_key:
            best, best_key = body, key
    return best


def _parse(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return None


def _defined_names(tree: ast.Module) -> set[str]:
    """Names bound at module level (also inside top-level if/try/with/for blocks): defs, classes,
    assignments, imports."""
    names: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack.extend(getattr(node, field, ()))
    return names


def _syntax(code: str) -> Verdict | None:
    """Verdict for code that does not compile (checked here: compiling does not run anything)."""
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for a bad escape: the model's, not our log's
            warnings.simplefilter("ignore")
            compile(code, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return Verdict(FAIL, "syntax error")
    return None


# ---- the program --------------------------------------------------------------------------------------

def build_program(code: str, entry_point: str | None) -> str:
    """The sandboxed program: the harness, carrying the candidate code (nothing secret is in it). A warm
    sandbox has the harness imported already (sandbox.preload, below: loading it took ~1.2 ms of each
    program's ~8); elsewhere the program loads it from its compiled copy (marshal, base64; compiling
    the source took ~3 ms more). The sandbox runs our own interpreter (sys.executable): same marshal."""
    return (f"import sys\nharness = sys.modules.get({HARNESS_MODULE!r})\n"
            f"if getattr(harness, 'VERSION', None) != {HARNESS_VERSION!r}:\n"
            f"    import binascii, marshal, types\n    harness = types.ModuleType({HARNESS_MODULE!r})\n"
            f"    exec(marshal.loads(binascii.a2b_base64({_compiled_harness()!r})), harness.__dict__)\n"
            f"harness.main({code!r}, {entry_point!r})\n")


@functools.lru_cache(maxsize=1)
def _compiled_harness() -> str:
    code = compile(_harness_source(), "harness", "exec", dont_inherit=True)
    return base64.b64encode(marshal.dumps(code)).decode()


def _harness_source() -> str:
    return f"{HARNESS}\nVERSION = {HARNESS_VERSION!r}\n"


def build_stdin(tests: str, nonce: str) -> bytes:
    """What the harness reads on stdin: the nonce's line, then the tests."""
    return f"{nonce}\n{tests}".encode("utf-8", "surrogatepass")


def verdict(result: sandbox.SandboxResult, code: str, tests: str, nonce: str, entry_point: str | None) -> Verdict:
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
    return Verdict(FAIL, _exception(result.stderr, {SOLUTION: code, TESTS: tests}) or f"exit code {result.returncode}")


def _exception(stderr: str, sources: dict[str, str]) -> str | None:
    """The traceback's exception as "Type: message"; a bare AssertionError names its assert line."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines or (m := EXCEPTION.match(lines[-1])) is None or not FRAME.search(stderr):
        return None
    kind, message = m.group(1), (m.group(2) or "").strip()
    if kind.endswith("SyntaxError") or kind in ("IndentationError", "TabError"):
        return "syntax error"
    if kind == "AssertionError" and not message:
        name, line_no = FRAME.findall(stderr)[-1]  # our own copy of the line: stderr could be forged
        source = sources[name].splitlines()
        message = source[int(line_no) - 1].strip() if 0 < int(line_no) <= len(source) else ""
    return f"{kind}: {message}" if message else kind


# ---- the harness (runs in the sandbox; stdlib only) ---------------------------------------------------
# Parent P runs the tests; child C runs the candidate code. Messages on two pipes, each a 4-byte length
# and a pickle. P -> C: ("go",), ("call", handle, args, kwargs), ("getattr", handle, name), and
# ("cb_ok", value) / ("cb_err", type name, message) answering a callback. C -> P: ("globals", {name:
# value}, [callable names], {name: module name}) once the candidate code has run; per request ("ok",
# value, args, kwargs)
# (args only when the call may have mutated them) or ("err", type name, message, traceback text); and
# ("cb", id, args, kwargs) to call back a function of the tests. In a pickle, an object that is not plain
# data is __harness__.ref(handle, type name) (an object left in C) or __harness__.cb(id) (a function of
# P's, which C calls back). P unpickles with RestrictedUnpickler: only the PLAIN_TYPES and ref.

HARNESS = Path(__file__).with_name("_harness.py").read_text(encoding="utf-8")  # runs in the sandbox

HARNESS_MODULE = "posttrain_code_harness"
HARNESS_VERSION = hashlib.sha256(HARNESS.encode()).hexdigest()[:16]
sandbox.preload(HARNESS_MODULE, _harness_source())
