"""Progress of long work (generation, scoring, eval, training): done/total, a rate, tokens/s and an ETA.

On a terminal it is a tqdm bar. Otherwise (a log file, CI) there is no bar, but the log gets a line at
least every `every_s` seconds while the work runs, and one when it ends (work shorter than `min_s` logs
nothing):

    12:00:31 INFO generate: 512/1,200 samples (43%) in 1m30s, 5.7 samples/s, 341 tokens/s, ETA 2m01s

A heartbeat thread writes the periodic line, so a caller that blocks (one long batch, a child process
that has not answered yet) is not silent. Only the main process of a launch draws a bar.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from posttrain.run.dist import world

log = logging.getLogger("posttrain")

EVERY_S = 20.0  # a log line at least this often (plus the heartbeat's 1 s) when there is no bar


def duration(seconds: float) -> str:
    """1m05s, 2h03m, 42s."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """`with Progress("generate", total=1200, unit="samples") as p: ... p.update(n, tokens=t)`.

    total: units of work (None: unknown, no percentage or ETA). tokens: generated tokens so far, which
    the line reports as tokens/s. token_budget: the most tokens the work can generate (samples x max_tokens);
    with it, the ETA is at most what the budget left takes at the current tokens/s (sampled generation finishes
    its samples all at once near the end, so samples/s alone predicts minutes for seconds). clock and emit are
    there for tests (a fake clock, a list's append);
    bar None: a tqdm bar when stderr is a terminal on the main process; heartbeat: the thread that logs
    while no update comes."""

    def __init__(self, desc: str, total: int | None, unit: str = "items", *, every_s: float = EVERY_S,
                 min_s: float = 2.0, initial: int = 0, token_budget: int | None = None,
                 clock: Callable[[], float] = time.monotonic, emit: Callable[[str], None] | None = None,
                 bar: bool | None = None, heartbeat: bool = True):
        self.desc, self.total, self.unit, self.token_budget = desc, total, unit, token_budget
        self.every_s, self.min_s, self.clock = every_s, min_s, clock
        self.emit = emit or log.info
        self.done = self.initial = initial  # `initial`: done before this run (a resumed training), not in the rate
        self.tokens: int | None = None
        self.start = self.last_line = clock()
        self.lines = 0
        self._logged_done: int | None = None  # `done` at the last line
        self._lock = threading.Lock()
        self._bar = None
        if bar is None:
            bar = _terminal()
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=f" {unit}", dynamic_ncols=True,
                             file=sys.stderr)
        self._stop = threading.Event()
        self._thread = None
        if heartbeat and self._bar is None:
            self._thread = threading.Thread(target=self._beat, name=f"progress:{desc}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ updates
    def update(self, n: int = 1, tokens: int | None = None) -> None:
        """`n` more units done; `tokens` more generated tokens."""
        self.set(self.done + n, None if tokens is None else (self.tokens or 0) + tokens)

    def set(self, done: int, tokens: int | None = None) -> None:
        """Absolute counts: `done` units, `tokens` generated tokens in all (None: unchanged)."""
        with self._lock:
            step, self.done = done - self.done, done
            if tokens is not None:
                self.tokens = tokens
            if self._bar is not None:
                if self.tokens is not None:
                    self._bar.set_postfix_str(f"{self._token_rate():,.0f} tokens/s", refresh=False)
                self._bar.update(step)
            else:
                self._maybe_line()

    def tick(self) -> None:
        """The heartbeat: a line when none was logged for `every_s`."""
        with self._lock:
            if self._bar is None:
                self._maybe_line()

    def close(self) -> None:
        """Stops the heartbeat; logs the final line unless the work took under `min_s` (and logged nothing) or
        the last line already said it all."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elapsed = self.clock() - self.start
            if (self._logged_done != self.done) and (self.lines or elapsed >= self.min_s):
                self.emit(self.line(final=True))
                self.lines += 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the line
    def line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.start
        done = f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
        parts = [f"{self.desc}: {done} {self.unit}"
                 + (f" ({100 * self.done / self.total:.0f}%)" if self.total else "")
                 + f" in {duration(elapsed)}"]
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:,.2f} {self.unit}/s" if rate < 10 else f"{rate:,.0f} {self.unit}/s")
        if self.tokens is not None:
            parts.append(f"{self._token_rate():,.0f} tokens/s")
        if not final and self.total is not None and self.done < self.total:
            parts.append(self._eta(rate))
        return ", ".join(parts)

    def _eta(self, rate: float) -> str:
        by_units = (self.total - self.done) / rate if rate > 0 else None
        token_rate = self._token_rate()
        if self.token_budget and token_rate > 0:  # every sample stops by its max_tokens: an upper bound
            by_tokens = max(0, self.token_budget - self.tokens) / token_rate
            if by_units is None or by_tokens < by_units:
                return f"ETA at most {duration(by_tokens)}"
        return f"ETA {duration(by_units)}" if by_units is not None else "ETA unknown"

    def _token_rate(self) -> float:
        elapsed = self.clock() - self.start
        return (self.tokens or 0) / elapsed if elapsed > 0 else 0.0

    def _maybe_line(self) -> None:
        now = self.clock()
        if now - self.last_line >= self.every_s:
            self.emit(self.line())
            self.last_line, self._logged_done = now, self.done
            self.lines += 1

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()


def _terminal() -> bool:
    try:
        return sys.stderr.isatty() and world().is_main
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def progress_callback(desc: str):
    """A transformers TrainerCallback that reports a training's optimizer steps (and input tokens, where the
    trainer counts them) as a `Progress`: the trainers here run with disable_tqdm, so without a terminal this
    is what says how far training is. `desc` names it in the log ("sft", "dpo", "reward_model")."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress = Progress(f"{desc} training", state.max_steps or None, "steps",
                                         initial=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                seen = getattr(state, "num_input_tokens_seen", 0) or None
                self.progress.set(state.global_step, seen)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()
                self.progress = None

    return _Callback()
