"""What both sandbox paths build a sandbox from: the limits, the environment, the bwrap root, the result.

reward/sandbox.py (the cold path, and the module doc that says what all of this is for) and reward/_warm.py
(the warm path) both use these pieces. They live here, below both, so that the import points one way
(sandbox -> _warm -> _box, sandbox -> _box) instead of _warm reaching back into sandbox. reward.sandbox
re-exports every name, and callers read them there; the code here reads its own, so rebinding one on
reward.sandbox (a test's monkeypatch) changes nothing: patch it here.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from typing import NamedTuple

import reward._procs as _procs

MEMORY_BYTES = 1 << 30  # RLIMIT_AS, per process
FILE_BYTES = 10 * 1024 * 1024  # RLIMIT_FSIZE
MAX_FILES = 64  # RLIMIT_NOFILE
# RLIMIT_NPROC, and the watchdogs' cap where there is a private /proc (the shim or zygote counts as one,
# and reward.code's harness runs a program as two): with MEMORY_BYTES, at most ~8 GiB of address space per
# program (it was 32 processes, ~32 GiB). A program's multiprocessing.Pool() of os.cpu_count() workers
# then hits the cap on a machine of more than ~4 cores (it did past ~29).
MAX_PROCS = 8
TMP_BYTES = 64 << 20  # bwrap: size of the sandbox's /tmp tmpfs (the program's directory and TMPDIR)
DEV_BYTES = 8 << 20  # bwrap: size of its /dev tmpfs (/dev/shm is a directory in it)
PREFIX = "posttrain-sandbox-"  # in every sandbox path (and so in the program's command line)
ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONSAFEPATH": "1"}
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shim.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # never bound into a bwrap sandbox
INNER_LIB = "/posttrain-sandbox"  # bwrap: where SHIM and ZYGOTE are bound (read-only), without the repo
HOST_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # bound read-only if present
HOST_ETC = ("/etc/ld.so.cache", "/etc/localtime")  # the dynamic linker's cache; time.localtime's zone
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # bwrap --dev's nodes (no pts, no console)


class SandboxResult(NamedTuple):
    """How one program ended. status: "ok" (exit 0), "exit" (non-zero exit), "signal" (killed by a
    signal; returncode = -signal), "timeout", "process-limit", or "error" (the sandbox failed)."""

    returncode: int | None
    status: str
    stdout: str
    stderr: str
    isolation: str


def _limits(mode: str, timeout_s: float) -> str:
    """The shim's LIMITS argument (also the zygote's, per program)."""
    cpu = int(timeout_s) + 1
    # a fresh user namespace counts its processes from zero; without one the count is our uid's total
    nproc = MAX_PROCS if mode != "rlimits-only" else _procs.user_processes() + MAX_PROCS
    # MSGQUEUE 0: no POSIX message queue (it would outlive the program, and nothing can list it unmounted)
    return ",".join(f"{k}:{s}:{h}" for k, s, h in [
        ("CPU", cpu, cpu + 1), ("AS", MEMORY_BYTES, MEMORY_BYTES), ("FSIZE", FILE_BYTES, FILE_BYTES),
        ("NOFILE", MAX_FILES, MAX_FILES), ("NPROC", nproc, nproc), ("CORE", 0, 0), ("MSGQUEUE", 0, 0)])


def _covered(path: str, tops) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


@functools.lru_cache(maxsize=None)
def _host_binds() -> tuple[str, ...]:
    """bwrap arguments that bind, read-only, what a sandboxed interpreter needs of the host (module doc)."""
    args: list[str] = []
    bound: list[str] = []
    for top in HOST_DIRS:
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
            bound.append(top)
    for path in HOST_ETC:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    # the interpreter's installation and virtualenv; a path through a link resolves on both sides alike
    pythons = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
               os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    for prefix in sorted({os.path.abspath(p) for p in pythons}, key=len):
        if _covered(prefix, bound) or not os.path.isdir(prefix):
            continue
        if _covered(REPO, [prefix]):  # a prefix that holds the repository: only its Python parts
            parts = [os.path.join(prefix, n) for n in ("bin", "lib", "lib64", "pyvenv.cfg")]
            paths = [p for p in parts if os.path.exists(p) and not _covered(REPO, [p])]
        else:
            paths = [prefix]
        for path in paths:
            args += ["--ro-bind", path, path]
            bound.append(path)
    return tuple(args)


@functools.lru_cache(maxsize=None)
def _no_nested_userns() -> tuple[str, ...]:
    """--disable-userns (bwrap >= 0.8): a program cannot create a user namespace of its own, in which it would
    hold every capability (mount, chroot, ...) over its own namespaces; the read-only binds would stay locked,
    but there is no need to offer that surface."""
    bwrap = shutil.which("bwrap")
    usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout if bwrap else ""
    return ("--unshare-user", "--disable-userns") if "--disable-userns" in usage else ()


def _bwrap(env: dict, binds: list[str], chdir: str, scripts: tuple[str, ...]) -> list[str]:
    """bwrap's argv up to the command: the root of the module doc, then `binds`, then the root tmpfs
    remounted read-only. `scripts` (SHIM, ZYGOTE) are bound read-only under INNER_LIB.
    --cap-drop ALL: run by root, bwrap would otherwise leave every capability in the sandbox's user
    namespace, enough to remount read-write (and write the host's files as root). --size caps the tmpfs
    that follows it (bwrap >= 0.5)."""
    setenv = [a for k, v in env.items() for a in ("--setenv", k, v)]
    dev = ["--size", str(DEV_BYTES), "--tmpfs", "/dev"]
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            dev += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    dev += ["--symlink", "/proc/self/fd", "/dev/fd", "--dir", "/dev/shm"]
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        dev += ["--symlink", f"/proc/self/fd/{fd}", f"/dev/{name}"]
    lib = [a for path in scripts for a in ("--ro-bind", path, f"{INNER_LIB}/{os.path.basename(path)}")]
    # The private /tmp is mounted before the host binds: a checkout or virtualenv under /tmp (or /dev) is then
    # bound on top of it, where a tmpfs mounted afterwards would hide the interpreter (bwrap: execvp ... No such
    # file or directory).
    return [shutil.which("bwrap"), "--unshare-all", *_no_nested_userns(), "--as-pid-1", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--clearenv", *setenv, "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
            "--proc", "/proc", *dev, *_host_binds(), *lib, *binds, "--remount-ro", "/", "--chdir", chdir]


def _memfd(name: str, data: bytes) -> int:
    """A memfd holding `data`, at offset 0 (close-on-exec: pass it on explicitly)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
