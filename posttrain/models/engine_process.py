"""What runs inside a vLLM engine's own process (posttrain/models/engine.py starts it): the environment it
needs apart from its owner's, dying with its owner, serving generate requests over a pipe, and reporting
progress back while it generates."""

from __future__ import annotations

import os
import re
import threading
import time

# Launcher variables that would make the child's vLLM believe it is part of the parent's process group.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")

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
        if kwargs.get("enforce_eager"):
            # vLLM still torch.compiles its sampled-token rank count (vllm/v1/sample/ops/logprobs.py) when eager:
            # 3-4 s at the first request that asks for logprobs, in every engine, for an exact integer count.
            torch._dynamo.config.disable = True
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
