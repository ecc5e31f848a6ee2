"""vLLM in a child process that we own, so generation never shares a process with training.

Why a child: in-process vLLM initialises torch.distributed and rebinds torch's threads, which then
collide with accelerate/TRL in the same process; and when the child exits, all of its memory (KV cache
included) is returned before training starts. One engine serves every request for one model: a round's
eval and the next round's generation use the same policy, so they share an engine (see `Engines`).

Why a fork server: importing vLLM takes ~11 s on 2 cores, and a spawned child paid it (and more) at every
engine start (~25 s for the tiny base). multiprocessing's fork server imports vLLM once per process and
forks each engine from it (~3 s; bench/generation.py measures both). The server holds imported modules
only (~0.7 GB of host memory; importing vLLM initialises no CUDA context, so no device memory either).
Machines with a CUDA device spawn their engines unless POSTTRAIN_ENGINE_START=forkserver: there the
import is a small part of an engine's start, and forked engines are not yet checked on a GPU (a server
that initialised CUDA is caught at the first fork, but e.g. torch's cached device count would not be).
A changed environment also spawns (see `_ForkServer.start_method`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import threading
import time
from pathlib import Path

from posttrain.recipe.config import GenerateConfig
from posttrain.run.dist import engine_world, world
from posttrain.run.progress import Progress

log = logging.getLogger("posttrain")

# Launcher variables that would make the child's vLLM believe it is part of the parent's process group.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
# What the fork server imports once; posttrain.models.engine itself, so a fork finds `_serve` already loaded.
_PRELOAD = ["vllm.entrypoints.llm", "posttrain.models.engine"]
# Set by importing vLLM (vllm/env_override.py): in the server already, and in this process once anything
# here imports vLLM (TRL does, when training). Not a change the server missed.
_SET_BY_VLLM = ("PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_COMPILE_THREADS", "LD_LIBRARY_PATH")


class _ForkServer:
    """When engines fork from the fork server, and when they are spawned instead."""

    def __init__(self):
        self.lock = threading.Lock()
        self.env: dict | None = None  # the environment the server started with (its modules read some at import)
        self.live = 0  # engines forked from it and not closed yet
        self.broken = False  # a fork found CUDA initialised in the server: every later engine is spawned

    def start_method(self) -> str:
        """"forkserver" on a machine without CUDA devices (or when POSTTRAIN_ENGINE_START=forkserver),
        "spawn" otherwise, when forking proved unsafe, or when the environment changed under a server that
        still has engines alive."""
        from multiprocessing import forkserver

        import torch

        wanted = os.environ.get("POSTTRAIN_ENGINE_START") or ("spawn" if torch.cuda.is_available() else "forkserver")
        if wanted not in ("spawn", "forkserver"):
            raise ValueError(f"POSTTRAIN_ENGINE_START={wanted!r}: expected 'spawn' or 'forkserver'")
        with self.lock:
            if self.broken or wanted != "forkserver":
                return "spawn"
            env = {k: v for k, v in os.environ.items() if k not in _SET_BY_VLLM}
            if self.env is not None and env != self.env:
                # The server's modules read some variables (e.g. HF_HOME) when they were imported: a server
                # started under the old environment must not fork this engine. Restart it when it is idle.
                changed = sorted(k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k))
                log.debug("vLLM fork server: environment changed since it started (%s)", ", ".join(changed))
                stop = getattr(forkserver._forkserver, "_stop", None)  # CPython 3.8+
                if self.live or stop is None:
                    return "spawn"
                stop()
                self.env = None
            if self.env is None:
                mp.set_forkserver_preload(_PRELOAD)
                self.env = env
            self.live += 1
            return "forkserver"

    def closed(self) -> None:
        with self.lock:
            self.live -= 1


_FORK_SERVER = _ForkServer()


class Engine:
    """A vLLM `LLM` for one model in a spawned child. `generate` takes and returns plain dicts.

    request: {"prompt_token_ids": list[int], "n", "temperature", "top_p", "max_tokens", "seed"}
    result:  {"num_prompt_tokens": int, "completions": [{"text", "num_tokens", "logprob", "finish_reason"}]}
    """

    def __init__(self, model: str | Path, cfg: GenerateConfig, seed: int, max_model_len: int):
        self.model = str(model)
        start = time.time()
        self.start_method = _FORK_SERVER.start_method()
        self._counted = self.start_method == "forkserver"  # among the server's live engines
        try:
            self._start(cfg, seed, max_model_len)
        except _BadFork:
            log.warning("vLLM engine: the fork server has CUDA initialised; spawning engines from now on")
            _FORK_SERVER.broken = True
            self.start_method = "spawn"
            self._start(cfg, seed, max_model_len)
        except BaseException:
            self._release()
            raise
        log.info("vLLM engine for %s ready in %.1f s (%s)", self.model, time.time() - start, self.start_method)

    def _start(self, cfg: GenerateConfig, seed: int, max_model_len: int) -> None:
        ctx = mp.get_context(self.start_method)
        self._conn, child = ctx.Pipe()
        kwargs = dict(model=self.model, seed=seed, dtype=cfg.dtype, max_model_len=max_model_len,
                      enforce_eager=cfg.enforce_eager, gpu_memory_utilization=cfg.gpu_memory_utilization,
                      # A chunked prefill rewinds the per-request seeded generator, which CPU generators cannot do.
                      enable_chunked_prefill=False, tensor_parallel_size=cfg.tensor_parallel_size,
                      # tensor-parallel workers: processes of this child, which die with it
                      **({"distributed_executor_backend": "mp"} if cfg.tensor_parallel_size > 1 else {}))
        # A forked child starts with the server's environment: it takes ours (the spawned one has it already).
        self._proc = ctx.Process(target=_serve, args=(child, kwargs, cfg.kv_cache_gib, cfg.tensor_parallel_size,
                                                       os.getpid(), dict(os.environ)),
                                 # A daemonic process may not start the tensor-parallel workers; without it,
                                 # PR_SET_PDEATHSIG (_die_with_parent) still ends the child with its parent.
                                 daemon=cfg.tensor_parallel_size == 1)
        self._proc.start()
        child.close()
        # The context length vLLM settled on (the recipe's, or the model's own when the recipe gives none).
        try:
            self.max_model_len: int = self._recv()["max_model_len"]
        except BaseException:  # a model vLLM cannot load: end the child and close our end before raising
            self.close()
            raise

    def generate(self, requests: list[dict], desc: str = "vLLM") -> list[dict]:
        """The completions of `requests`, in order. The child reports how many samples are done and vLLM's
        output tokens/s as it goes (`_PipeBar`); that is logged here (posttrain.run.progress), as `desc`."""
        self._conn.send(("generate", requests))
        with Progress(desc, sum(r["n"] for r in requests), "samples") as progress:
            results = self._recv(progress)
            progress.set(progress.total, sum(c["num_tokens"] for r in results for c in r["completions"]))
        return results

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close", None))
                self._proc.join(timeout=30)
            except (BrokenPipeError, OSError):
                pass
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            _FORK_SERVER.closed()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, progress=None):
        """The child's answer; its ("progress", (samples done, output tokens)) messages before it go to `progress`."""
        try:
            status, payload = self._conn.recv()
            while status == "progress":
                if progress is not None:
                    progress.set(*payload)
                status, payload = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"vLLM engine process for {self.model} died (exit code {self._proc.exitcode})") from None
        if status == "bad_fork":
            self.close()
            raise _BadFork()
        if status == "error":
            raise RuntimeError(f"vLLM engine for {self.model} failed:\n{payload}")
        return payload


class _BadFork(Exception):
    """The forked engine found CUDA initialised in the fork server, where CUDA cannot be used again."""


class NoEngine:
    """What `Engines.get` gives a rank that lends its device to its group's tensor-parallel engine: that
    rank's shard of the prompts is empty (`Engines.world` is None), so nothing is ever asked of it."""

    model, max_model_len = None, None

    def generate(self, requests: list[dict]) -> list[dict]:
        if requests:
            raise RuntimeError("this rank runs no vLLM engine (generate.tensor_parallel_size): it has no prompts")
        return []


class Engines:
    """Keeps at most one engine alive, for the most recently requested model.

    world: this rank's place among the launch's engines (posttrain.run.dist.engine_world), which is how
    generation and eval shard their prompts; None on a rank whose device serves a neighbour's engine."""

    def __init__(self, cfg: GenerateConfig, seed: int, max_model_len: int):
        self.cfg, self.seed, self.max_model_len = cfg, seed, max_model_len
        self.world = engine_world(world(), cfg.tensor_parallel_size)
        self._engine: Engine | None = None

    def get(self, model: str | Path) -> Engine | NoEngine:
        if self.world is None:
            return NoEngine()
        if self._engine is None or self._engine.model != str(model):
            self.close()
            self._engine = Engine(model, self.cfg, self.seed, self.max_model_len)
        return self._engine

    def close(self) -> None:
        """Frees the engine's memory, e.g. before training."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _child_env(kv_cache_gib: int, tensor_parallel: int = 1) -> None:
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    for var in _DIST_VARS:
        os.environ.pop(var, None)
    # The engine core runs in this (already separate) process: no second spawn, ~6x faster start on CPU.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    # One engine per rank of a launch (per group of `tensor_parallel` ranks, run by the group's first):
    # it takes the group's GPUs, or the group's slice of the CPU cores.
    group = range(local_rank, local_rank + tensor_parallel)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if local_size > 1 and len(visible) >= local_size:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible[i] for i in group)
    elif local_size > 1 and not visible:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, group))  # no list given: device i is rank i's
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:  # every core we may run on (our slice, in a launch)
        cores = sorted(os.sched_getaffinity(0))
        per = max(1, len(cores) // local_size)
        mine = cores[local_rank * per:(local_rank + tensor_parallel) * per] or cores
        # vLLM on CPU binds each tensor-parallel worker to one '|'-separated core list
        step = max(1, len(mine) // tensor_parallel)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            ",".join(map(str, mine[i * step:(i + 1) * step] or mine)) for i in range(tensor_parallel))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _die_with_parent(owner_pid: int) -> None:
    """An engine whose owner was killed must not live on holding cores and memory (Linux only).

    The child's parent is the owner (spawned) or the fork server. The fork server exits when the owner does
    only once no forked engine holds its alive pipe (each does), so a forked engine learns of its owner's death
    from its own pipe: EOF when idle, a failed progress report while generating (`_Reporter.send`)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:  # the owner died before the lines above took effect
        os._exit(1)


def _serve(conn, kwargs: dict, kv_cache_gib: int, tensor_parallel: int, owner_pid: int, env: dict) -> None:
    import traceback

    _die_with_parent(owner_pid)
    try:
        os.environ.clear()
        os.environ.update(env)
        _child_env(kv_cache_gib, tensor_parallel)
        import torch

        if getattr(torch.cuda, "_is_in_bad_fork", lambda: False)():  # CUDA was initialised in the fork server
            conn.send(("bad_fork", None))
            return
        from vllm import LLM, SamplingParams

        llm = LLM(**kwargs)
        conn.send(("ok", {"max_model_len": llm.llm_engine.model_config.max_model_len}))
    except BaseException:  # noqa: BLE001 - report any start failure to the parent, then exit
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:
            return
        if op == "close":
            if tensor_parallel == 1:  # nothing to shut down but this process: skip vLLM's ~3 s of teardown
                import sys
                from multiprocessing import util

                util._run_finalizers()  # what a normal exit would: e.g. unlink its semaphores (no "leaked" warning)
                sys.stdout.flush()
                sys.stderr.flush()
                conn.close()
                os._exit(0)
            return
        try:
            conn.send(("ok", _generate(llm, SamplingParams, payload, conn)))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


def _generate(llm, SamplingParams, requests: list[dict], conn=None) -> list[dict]:
    prompts, params = [], []
    for r in requests:
        prompts.append({"prompt_token_ids": r["prompt_token_ids"]})
        params.append(SamplingParams(n=r["n"], temperature=r["temperature"], top_p=r["top_p"],
                                     max_tokens=r["max_tokens"], seed=r["seed"], logprobs=0))
    if conn is None:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    else:
        with _Reporter(conn, llm) as reporter:
            outputs = llm.generate(prompts, params, use_tqdm=reporter.bar)
    return [{
        "num_prompt_tokens": len(o.prompt_token_ids),
        "completions": [{"text": c.text, "num_tokens": len(c.token_ids), "logprob": c.cumulative_logprob,
                         "finish_reason": c.finish_reason} for c in sorted(o.outputs, key=lambda c: c.index)],
    } for o in outputs]


class _PipeBar:
    """What vLLM's `LLM.generate(use_tqdm=...)` gets in the engine process instead of a tqdm bar: it counts
    the finished samples and their output tokens (from the output tokens/s that vLLM writes into the bar's
    postfix, times the elapsed time it reads from the bar), and `_Reporter` sends them to the parent. vLLM
    also wraps its prompt rendering in one (an iterable, desc "Rendering prompts"): that one only iterates."""

    _SPEED = re.compile(r"output: ([0-9.]+) toks/s")

    def __init__(self, iterable=None, total=None, desc: str = "", postfix: str = "", **_):
        self.iterable, self.total, self.desc, self.postfix = iterable, total, desc, postfix
        self.n, self.tokens, self.start = 0, 0, time.monotonic()

    def __iter__(self):
        return iter(self.iterable)

    @property
    def format_dict(self) -> dict:  # vLLM divides its token counts by the elapsed time it reads here
        return {"elapsed": max(time.monotonic() - self.start, 1e-9)}

    def update(self, n: int = 1) -> None:
        self.n += n
        if speed := self._SPEED.search(self.postfix or ""):
            self.tokens = round(float(speed[1]) * (time.monotonic() - self.start))

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Reporter:
    """While `LLM.generate` runs in the engine process: once a second, ("progress", (samples done, output
    tokens)) to the parent, whose posttrain.run.progress logs it (the child's stderr is the parent's, but it cannot
    tell a terminal from a log, and a bar per call would be noise). Tokens include those of samples still being
    generated, read from vLLM's request states: vLLM's own count waits for a prompt's K samples to finish, and
    with every sample of a batch in flight it says ~0 tokens/s for most of the run."""

    def __init__(self, conn, llm):
        self.conn, self.llm, self.bars = conn, llm, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-progress", daemon=True)

    def bar(self, *args, **kwargs) -> _PipeBar:
        self.bars.append(b := _PipeBar(*args, **kwargs))
        return b

    def message(self) -> tuple | None:
        counting = [b for b in self.bars if b.iterable is None]
        if not counting:
            return None
        return "progress", (counting[-1].n, counting[-1].tokens + _in_flight_tokens(self.llm))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if (message := self.message()) is not None:
                self.send(message)

    def send(self, message: tuple) -> None:
        """Sends `message`; when the owner is gone (killed mid-generation: a broken pipe), ends this process
        now. Otherwise the engine would finish the whole batch for nobody: the owner's death reaches an idle
        engine as EOF on its pipe, and PR_SET_PDEATHSIG watches the fork server, which a forked engine keeps
        alive itself (it holds the server's alive pipe, as multiprocessing gives every forked child)."""
        try:
            self.conn.send(message)
        except OSError:
            os._exit(1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()  # before the caller sends its answer on the same pipe


def _in_flight_tokens(llm) -> int:
    """Output tokens so far of the sequences vLLM is still generating (its internals: 0 where they differ)."""
    try:
        states = list(llm.llm_engine.output_processor.request_states.values())
        return sum(s.detokenizer.num_output_tokens() for s in states if s.detokenizer is not None)
    except Exception:  # noqa: BLE001 - an estimate only; another vLLM version may keep them elsewhere
        return 0
