"""The rlimits-only sandbox's guard (reward/sandbox.py): the untrusted program's interpreter runs this file as
its `sitecustomize`, before the program. Self-contained (it is copied beside the program); imported under
any other name it does nothing.

The program's interpreter runs it as its sitecustomize (PYTHONPATH, then
removed), before the program, so sockets are blocked before the program runs. It adds an audit hook (PEP
578; no Python code can remove one, and a fork inherits it) that raises PermissionError, "sandbox
(rlimits-only isolation) blocks ...", on: sockets of any family but AF_UNIX (socketpair, so asyncio's loop
and multiprocessing still work), connect, bind, sendto/sendmsg to an address and DNS/host lookups; running
another program (subprocess, os.exec*, os.system, os.posix_spawn, pty, multiprocessing's spawn and
forkserver: _posixsubprocess.fork_exec, which has no audit event, is replaced and may not be imported
afresh) -- an exec'd program would run without the hook, as would a sub-interpreter (refused too); ctypes
beyond what reward.code's harness needs (dlopen of the main program, the symbols GUARDED_LIBC, no
from_address); and opening another process's /proc/<pid>/... (environ, mem, fd/), the path walked as the
kernel does, symlinks followed (but not the interpreter's own files, which every import opens).

What the guard does NOT stop -- audit hooks are no sandbox -- is a program that means to get around it:
native code (ctypes pointer arithmetic on the ctypes already loaded; crafted bytecode; interpreter bugs)
makes any syscall, opens relative to a directory descriptor (dir_fd) are not checked, and the whole host
filesystem is open with our rights (the interpreter's stdlib, this repository and the guard's own file are
writable to it, ~/.cache/huggingface/token readable). It costs ~2-4 ms a program, in rlimits-only alone
(no other mode has it).
"""

GUARDED_LIBC = ("prctl", "capget", "capset")  # what ctypes may still look up (reward.code's harness needs them)


def _guard() -> None:
    """The rlimits-only guard: the program's interpreter runs it as its sitecustomize (from GUARD_DIR, on
    PYTHONPATH), before the program. Shipped as source (_guard_source), so self-contained. It hides itself
    (PYTHONPATH and its sys.path entry go; the interpreter's own sitecustomize, which it shadows, still
    runs), then installs an audit hook -- which Python code cannot remove, and which a fork inherits --
    that raises PermissionError, naming what it blocks, on (module doc):
      network: a socket of any family but AF_UNIX (so socketpair, and asyncio's loop, still work), and
        connect, bind, sendto, sendmsg to an address, DNS and host lookups, sethostname;
      other programs: subprocess.Popen, os.exec*, os.posix_spawn*, os.spawn*, os.system, and
        _posixsubprocess.fork_exec (no audit event: replaced here, and a fresh import of it refused);
      sub-interpreters (a hook is per interpreter);
      ctypes: dlopen but of the main program (None), a symbol but GUARDED_LIBC, from_address;
      another process's /proc/<pid>/... (environ, mem, fd/, ...), by the path given, symlinks followed
        (but for paths in the interpreter's installation, which imports open).
    Fails closed: if it cannot install the hook, the program does not run (exit 125)."""
    import errno
    import os
    import sys

    af_unix = 1
    network = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
                         "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
                         "socket.sethostname"})
    programs = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                          "os.startfile"})
    libc = frozenset(GUARDED_LIBC)
    watched = network | programs | {"socket.__new__", "socket.sendmsg", "ctypes.dlopen", "ctypes.dlsym",
                                    "ctypes.dlsym/handle", "ctypes.cdata", "import", "open",
                                    "cpython.PyInterpreterState_New"}

    def refuse(what):
        raise PermissionError(errno.EPERM, f"sandbox (rlimits-only isolation) blocks {what}")

    def plain(x):  # an exact str of a str or bytes (never a subclass's methods), else None
        if isinstance(x, str):
            return str.__getitem__(x, slice(None))
        if isinstance(x, bytes):
            return os.fsdecode(bytes.__getitem__(x, slice(None)))
        return None

    # the interpreter's own files (every import opens one) are not walked: a program that can plant a
    # link there can as well rewrite them
    installed = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                     sys.base_exec_prefix) if p and os.path.abspath(p) != "/"})

    def other_process(path):
        """The /proc/<pid> of another process that opening `path` goes through, else None: walks it as the
        kernel does, following symlinks (and /proc's magic links, which it checks before following)."""
        if not path.startswith("/"):
            try:
                path = os.getcwd() + "/" + path
            except OSError:
                return None
        elif path.startswith(installed) and "/../" not in path and not path.endswith("/.."):
            return None
        parts, here, hops, me = path.split("/")[::-1], "", 0, str(os.getpid())
        while parts:
            name = parts.pop()
            if name in ("", "."):
                continue
            if name == "..":
                here = here.rpartition("/")[0]
                continue
            here += "/" + name
            if here.startswith("/proc/"):
                pid = here.split("/")[2]
                if pid.isdigit() and pid != me:
                    return here
            try:
                target = os.readlink(here)
            except OSError:  # not a link (or not there: then the open fails anyway)
                continue
            hops += 1
            if hops > 40:  # the kernel gives up too (ELOOP)
                return None
            here = "" if target.startswith("/") else here.rpartition("/")[0]
            parts += target.split("/")[::-1]
        return None

    def hook(event, args):
        if event not in watched:
            return
        if event in network:
            refuse(f"network access ({event})")
        if event in programs:
            refuse(f"running other programs ({event})")
        if event == "socket.__new__":
            if args[1] != af_unix:  # an exact int (the event's format is "Oiii")
                refuse(f"network access (socket.__new__, address family {args[1]})")
        elif event == "socket.sendmsg":
            if args[1] is not None:
                refuse("network access (socket.sendmsg to an address)")
        elif event == "ctypes.dlopen":
            if args[0] is not None:
                refuse(f"loading native libraries ({event} {plain(args[0])!r})")
        elif event in ("ctypes.dlsym", "ctypes.dlsym/handle"):
            if plain(args[1]) not in libc:
                refuse(f"native symbols but {sorted(libc)} ({event} {plain(args[1])!r})")
        elif event == "ctypes.cdata":
            refuse("memory access by address (ctypes.cdata: from_address)")
        elif event == "cpython.PyInterpreterState_New":  # its caller says only "interpreter creation failed"
            os.write(2, b"sandbox (rlimits-only isolation) blocks sub-interpreters, which would run without "
                        b"this hook\n")
            refuse(f"sub-interpreters ({event})")
        elif event == "import":
            if plain(args[0]) == "_posixsubprocess":
                refuse("running other programs (a fresh _posixsubprocess)")
        elif event == "open" and not isinstance(args[0], int):
            path = plain(args[0])
            found = other_process(plain(os.fspath(args[0])) if path is None else path)
            if found is not None:
                refuse(f"another process's /proc entries ({found})")

    try:
        here = os.path.dirname(os.path.abspath(__file__))
        os.environ.pop("PYTHONPATH", None)
        sys.path[:] = [p for p in sys.path if os.path.abspath(p) != here]
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec("sitecustomize", sys.path)  # the interpreter's own, if any
        if spec is not None and spec.loader is not None:
            import importlib.util

            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                sys.modules["sitecustomize"] = module
            except Exception as e:  # as site reports it
                sys.stderr.write(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                                 f"{type(e).__name__}: {e}\n")
        import _posixsubprocess

        def fork_exec(*args, **kwargs):
            refuse("running other programs (_posixsubprocess.fork_exec)")

        _posixsubprocess.fork_exec = fork_exec
        sys.addaudithook(hook)
    except BaseException as e:
        os.write(2, f"sandbox: the rlimits-only guard failed, so the program does not run: {e!r}\n".encode())
        os._exit(125)


if __name__ == "sitecustomize":
    _guard()
    del _guard
