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
import threading
import time
from collections.abc import Callable
from pathlib import Path

from posttrain.recipe.config import GenerateConfig
from posttrain.run.dist import engine_world, world
from posttrain.models.engine_process import _serve
from posttrain.run.progress import Progress

log = logging.getLogger("posttrain")

# What the fork server imports once; the engine process's module too, so a fork finds `_serve` already loaded.
_PRELOAD = ["vllm.entrypoints.llm", "posttrain.models.engine", "posttrain.models.engine_process"]
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

    def generate(self, requests: list[dict], desc: str = "vLLM", progress: Progress | None = None) -> list[dict]:
        """The completions of `requests`, in order. The child reports how many samples are done and vLLM's
        output tokens/s as it goes (`_PipeBar`); that is logged here (posttrain.run.progress), as `desc`, or
        added to `progress`: a caller's over several calls."""
        if progress is None:
            with generation_progress(requests, desc=desc) as own:
                return self.generate(requests, progress=own)
        self._conn.send(("generate", requests))
        done, tokens = progress.done, progress.tokens or 0
        results = self._recv(lambda d, t: progress.set(done + d, tokens + t))
        progress.set(done + sum(r["n"] for r in requests),
                     tokens + sum(c["num_tokens"] for r in results for c in r["completions"]))
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

    def _recv(self, progress: Callable[[int, int], None] | None = None):
        """The child's answer; its ("progress", (samples done, output tokens)) messages before it go to `progress`."""
        try:
            status, payload = self._conn.recv()
            while status == "progress":
                if progress is not None:
                    progress(*payload)
                status, payload = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"vLLM engine process for {self.model} died (exit code {self._proc.exitcode})") from None
        if status == "bad_fork":
            self.close()
            raise _BadFork()
        if status == "error":
            raise RuntimeError(f"vLLM engine for {self.model} failed:\n{payload}")
        return payload


def generation_progress(requests: list[dict], kept: list[dict] = (), desc: str = "vLLM") -> Progress:
    """A Progress of the samples `requests` ask for, its ETA bounded by their token budget; `kept`: requests
    already answered (by a killed run), counted as done but not in the rate."""
    return Progress(desc, sum(r["n"] for r in [*requests, *kept]), "samples", initial=sum(r["n"] for r in kept),
                    token_budget=sum(r["n"] * r["max_tokens"] for r in requests))


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
