"""The audit's escapes through the code verifier (reward/code.py): which fenced block of a completion it runs,
and whether a program can pass without passing its tests (forging the nonce, the tests' comparisons, a reply of
its own on the harness's pipe). Sandboxed runs go through both bwrap paths, warm and cold; the sandbox's own
escapes are in tests/test_sandbox_escapes.py."""

from __future__ import annotations

import pytest

from reward import code
from reward.sandbox import run_python
from reward.verdict import Verdict
from tests.test_sandbox import every_mode_allowed  # noqa: F401 (autouse: the modes are forced by name)
from tests.test_sandbox_escapes import ACTIVE, NONCE, PATHS, TESTS, TIMEOUT_S, bwrap_only, run
from tests.test_sandbox_escapes import sandbox_survives  # noqa: F401  (autouse: every test leaves nothing behind)


# ---- 1. which fenced block is the answer ----------------------------------------------------------------

SOLUTION = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("text,entry,expected", [
    # prose, a ```bash block, then the ```python one: the python block (the closing fence of bash is no
    # opening fence)
    (f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\nDone.", "add", SOLUTION),
    (f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\nDone.", None, SOLUTION),
    # a leading untagged usage example, then the solution (tagged or not)
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```", "add", SOLUTION),
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```\n{SOLUTION}```", None, SOLUTION),
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```", None, SOLUTION),
    # a python-tagged example before an untagged solution: the entry point decides
    (f"```python\nprint(add(1, 2))\n```\n```\n{SOLUTION}```", "add", SOLUTION),
    # solution then its tests: the one that defines something (entry point unknown)
    (f"```python\n{SOLUTION}```\n```python\nassert add(1, 2) == 3\n```", None, SOLUTION),
    # two solutions: the first
    (f"```python\n{SOLUTION}```\nor\n```python\ndef add(a, b):\n    return b + a\n```", "add", SOLUTION),
    # no fence: all of it; an unclosed fence: to the end; a fence closed on the code's last line
    (SOLUTION, "add", SOLUTION),
    (f"Here:\n```python\n{SOLUTION}", "add", SOLUTION + "\n"),
    ("```python\ndef add(a, b):\n    return a + b```", "add", SOLUTION),
    # an indented fence (in a list item), a tilde fence, a fence with an info string after the language
    ("1. Code:\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n", "add", SOLUTION),
    (f"~~~python\n{SOLUTION}~~~\n", "add", SOLUTION),
    (f"```python title=add.py\n{SOLUTION}```", "add", SOLUTION),
    (f"```Python3\n{SOLUTION}```", "add", SOLUTION),
    (f"Sure! Here it is: ```python\n{SOLUTION}```", "add", SOLUTION),
    # code is kept as written (trailing spaces in a string literal)
    ('```python\ns = """a  \nb"""\n```', None, 's = """a  \nb"""\n'),
])
def test_fences_pair_and_the_best_block_is_chosen(text, entry, expected):
    assert code.extract_code(text, entry) == expected


def test_only_other_languages_is_no_python():
    text = "```bash\necho hi\n```"
    assert code.extract_code(text, "add") == text
    assert code.score([text], tests=["assert add(1, 2) == 3"], entry_point=["add"]) == [Verdict(0.0, "syntax error")]


def test_fence_pairing_end_to_end():
    completions = [f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\n",
                   f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```"]
    verdicts = code.score(completions, tests=["assert add(1, 2) == 3"] * 2, entry_point=["add"] * 2)
    assert verdicts == [Verdict(1.0, "passed")] * 2


# ---- 2. passing without passing: the nonce, and the tests' comparisons ----------------------------------

HEX = "import re\nTOKENS = set()\ndef look(data):\n    if isinstance(data, bytes):\n" \
      "        data = data.decode('latin-1')\n    TOKENS.update(re.findall(r'[0-9a-f]{32}', str(data)))\n"
REPORT = "\nimport os, sys\nfor t in TOKENS:\n    print(t)\nsys.stdout.flush()\nos._exit(0)\n"

FORGERIES = {
    # the auditor's: the nonce from its own file
    "own file": HEX + "look(open(__file__).read())\n" + REPORT,
    "stdin": HEX + "import os, sys\nlook(sys.stdin.read())\nlook(os.read(0, 1 << 20))\n" + REPORT,
    "/proc fds": HEX + "import os\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
                       "    for sub in ('fd', 'fdinfo'):\n        try:\n"
                       "            names = os.listdir(f'/proc/{pid}/{sub}')\n        except OSError:\n"
                       "            continue\n        for fd in names:\n            try:\n"
                       "                f = os.open(f'/proc/{pid}/{sub}/{fd}', os.O_RDONLY | os.O_NONBLOCK)\n"
                       "            except OSError:\n                continue\n            try:\n"
                       "                look(os.read(f, 1 << 22))\n            except OSError:\n"
                       "                pass\n            os.close(f)\n"
                       + REPORT,
    "/proc mem, environ, cmdline": HEX + "import os, re\n"
                       "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                       "    for name in ('environ', 'cmdline'):\n        try:\n"
                       "            look(open(f'/proc/{pid}/{name}', 'rb').read())\n        except OSError:\n"
                       "            pass\n    try:\n        maps = open(f'/proc/{pid}/maps').read().splitlines()\n"
                       "        mem = open(f'/proc/{pid}/mem', 'rb')\n    except OSError:\n        continue\n"
                       "    for line in maps:\n        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
                       "        if 'rw' in line.split()[1] and hi - lo < 1 << 26:\n            try:\n"
                       "                mem.seek(lo)\n                look(mem.read(hi - lo))\n"
                       "            except (OSError, ValueError, OverflowError):\n                pass\n" + REPORT,
    "gc objects": HEX + "import gc\nfor obj in gc.get_objects():\n    try:\n"
                        "        if isinstance(obj, dict):\n            for v in list(obj.values()):\n"
                        "                if isinstance(v, (str, bytes)):\n                    look(v)\n"
                        "        elif isinstance(obj, (list, tuple)):\n            for v in obj:\n"
                        "                if isinstance(v, (str, bytes)):\n                    look(v)\n"
                        "    except Exception:\n        pass\n" + REPORT,
    "frames": HEX + "import sys\nf = sys._getframe()\nwhile f is not None:\n"
                    "    for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
                    "        if isinstance(v, (str, bytes)):\n            look(v)\n    f = f.f_back\n"
                    "for m in list(sys.modules.values()):\n    for v in list(getattr(m, '__dict__', {}).values()):\n"
                    "        if isinstance(v, (str, bytes)):\n            look(v)\n" + REPORT,
    "files": HEX + "import os\nfor top in ('/tmp', '/dev/shm', '/posttrain-sandbox', os.getcwd()):\n"
                   "    for d, _, names in os.walk(top):\n        for n in names:\n            try:\n"
                   "                look(open(os.path.join(d, n), 'rb').read(1 << 22))\n"
                   "            except OSError:\n                pass\n" + REPORT,
    "ptrace and process_vm_readv": HEX + "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                   "print('attach', libc.ptrace(16, os.getppid(), None, None), ctypes.get_errno())\n"
                   "buf = ctypes.create_string_buffer(16)\n"
                   "print('pidfd', libc.syscall(438, libc.syscall(434, os.getppid(), 0), 0, 0))\n" + REPORT,
    "exit 0 before the tests": "import os\nos._exit(0)\n",
    "kill the parent then exit 0": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos._exit(0)\n",
    # the tests' comparisons: objects that equal anything
    "always-equal object": "class E:\n    def __eq__(self, other):\n        return True\n"
                           "    __hash__ = object.__hash__\n    def __bool__(self):\n        return True\n"
                           "def add(a, b):\n    return E()\n",
    "always-equal int": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n",
    "always-equal str": "class S(str):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = str.__hash__\ndef add(a, b):\n    return S('')\n",
    "shadowed builtin": "def add(a, b):\n    return 0\ndef abs(x):\n    return 0\n",
    # a reply of its own on the harness's pipe: a pickle that would run code in the parent
    "malicious pickle": "import gc, os, pickle\n"
                        "codec = next(o for o in gc.get_objects() if type(o).__name__ == 'Codec')\n"
                        "class P:\n    def __reduce__(self):\n        return (print, ('PWNED',))\n"
                        "data = pickle.dumps(('globals', {'add': P()}, ['add'], {}))\n"
                        "os.write(codec.wfd, len(data).to_bytes(4, 'little') + data)\n"
                        "def add(a, b):\n    return 0\n",
}


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_program_cannot_pass_without_passing_the_tests(warm, name):
    tests = TESTS + ("assert abs(add(5, -9)) == 4\n" if name == "shadowed builtin" else "")
    program = code.build_program(FORGERIES[name], "add")
    result = run(program, warm, stdin=code.build_stdin(tests, NONCE))
    assert NONCE not in result.stdout + result.stderr and "PWNED" not in result.stdout, result
    assert code.verdict(result, FORGERIES[name], tests, NONCE, "add").reward == 0.0, result
    if name == "malicious pickle":  # the parent refused it
        assert "UnpicklingError: not plain data: builtins.print" in result.stderr, result


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_the_stdin_the_sandbox_init_still_holds_is_empty(warm):
    """Cold path: the shim (pid 1) keeps the stdin memfd open and is dumpable; the harness emptied it."""
    probe = "import os, stat\nfor fd in os.listdir('/proc/1/fd'):\n    try:\n" \
            "        if stat.S_ISREG(os.stat(f'/proc/1/fd/{fd}').st_mode):\n" \
            "            print(fd, len(open(f'/proc/1/fd/{fd}', 'rb').read()))\n    except OSError as e:\n" \
            "        print(fd, type(e).__name__)\ndef add(a, b):\n    return a + b\n"
    result = run(code.build_program(probe, "add"), warm, stdin=code.build_stdin(TESTS, NONCE))
    assert result.stdout.rstrip().endswith(NONCE), result  # it passed: the tests ran
    fds = dict(line.split(" ", 1) for line in result.stdout.split("\n\n")[0].splitlines() if " " in line)
    assert all(v in ("0", "PermissionError") for v in fds.values()), fds


@pytest.mark.parametrize("completion,tests,reward", [
    ("def add(a, b):\n    return a + b\n", TESTS, 1.0),
    ("def add(a, b):\n    return a - b\n", TESTS, 0.0),
    # objects of the solution: attributes and methods reach the tests as data
    ("class P:\n    def __init__(self, x):\n        self.x = x\n    def double(self):\n        return 2 * self.x\n"
     "def make(x):\n    return P(x)\n", "p = make(3)\nassert p.x == 3 and p.double() == 6\n", 1.0),
    # functions of the tests, called back from the solution
    ("def apply(f, xs):\n    return [f(x) for x in xs]\n", "assert apply(lambda v: v * 2, [1, 2]) == [2, 4]\n", 1.0),
    # in-place changes to arguments
    ("def sort_in_place(xs):\n    xs.sort()\n", "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]\n", 1.0),
    # exceptions the tests expect
    ("def check(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n",
     "try:\n    check(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\n"
     "else:\n    raise AssertionError\n", 1.0),
    # plain values of the solution's own types: namedtuple, numpy scalar and array, Counter
    ("import collections\nP = collections.namedtuple('P', 'x y')\ndef f():\n    return P(1, 2)\n",
     "assert f() == (1, 2)\n", 1.0),
    ("import numpy as np\ndef f():\n    return np.int64(3), np.array([1, 2])\n",
     "assert f() == (3, [1, 2])\n", 1.0),
    ("import collections\ndef f(s):\n    return collections.Counter(s)\n",
     "assert f('aab') == {'a': 2, 'b': 1}\n", 1.0),
    # a generator reaches the tests as its items (consumed in the child); an iterator class of the
    # solution's own stays opaque: the tests cannot iterate it
    ("def f():\n    yield 1\n", "assert list(f()) == [1]\n", 1.0),
    ("class It:\n    def __iter__(self):\n        return self\n    def __next__(self):\n        raise StopIteration\n"
     "def f():\n    return It()\n", "assert list(f()) == []\n", 0.0),
    # the candidate's helper, and its constant
    ("K = 3\ndef helper(x):\n    return x * K\ndef f(x):\n    return helper(x)\n",
     "assert f(2) == helper(2) == 2 * K\n", 1.0),
])
def test_what_the_tests_can_do_with_the_solution(completion, tests, reward):
    assert code.score([completion], tests=[tests], entry_point=[None])[0].reward == reward


def test_reasons_still_name_the_failure():
    cases = {
        "def add(a, b):\n    return a - b\n": "AssertionError: assert add(1, 2) == 3",
        "def add(a, b):\n    return a / 0\n": "ZeroDivisionError: division by zero",
        "def add(a, b):\n    assert a > 5\n    return a + b\n": "AssertionError: assert a > 5",
        "raise ValueError('at import')\n": "ValueError: at import",
        "def add(a, b):\n    return undefined\n": "NameError: name 'undefined' is not defined",
        "def add(a, b):\n    import os\n    os._exit(4)\n": "exit code 4",
        "def add(a, b):\n    import sys\n    sys.exit(0)\n": "exited before the tests finished",
        "def sub(a, b):\n    return a - b\n": "entry point add not defined",
    }
    verdicts = code.score(list(cases), tests=[TESTS] * len(cases), entry_point=["add"] * len(cases))
    assert [v.reason for v in verdicts] == list(cases.values())
    assert all(v.reward == 0.0 for v in verdicts)


MODES = ["rlimits-only"] + (["unshare-net"] if ACTIVE in ("bwrap", "unshare-net") else [])


@pytest.mark.parametrize("mode", MODES)
def test_the_harness_judges_alike_in_the_fallback_modes(mode):
    """The verifier's verdicts do not depend on the mode (only what an attacker can reach does)."""
    cases = {"def add(a, b):\n    return a + b\n": 1.0, "def add(a, b):\n    return a - b\n": 0.0,
             "import os\nos._exit(0)\n": 0.0, FORGERIES["always-equal object"]: 0.0}
    for source, reward in cases.items():
        result = run_python(code.build_program(source, "add"), TIMEOUT_S, stdin=code.build_stdin(TESTS, NONCE),
                            isolation=mode)
        assert code.verdict(result, source, TESTS, NONCE, "add").reward == reward, (mode, source, result)
