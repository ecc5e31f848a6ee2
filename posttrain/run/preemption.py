"""Stopping a training cleanly: a signal asks for a checkpoint, not a lost stretch of steps.

A scheduler preempting a job sends SIGTERM (Kubernetes, `scancel`; `accelerate launch` and `torchrun` pass theirs
on to the ranks) or a warning signal ahead of the kill (Slurm's `--signal=USR1@120`, where it reaches the ranks
themselves); a user presses Ctrl-C (SIGINT). During training, the first of these ends the current optimizer step,
writes a checkpoint and stops the run with `Preempted`, whose message says to run the same command again: the
stage resumes from that checkpoint. Without it a preempted run loses every step since the last
`checkpoint_every_steps`. A second signal acts as if none were caught (SIGTERM ends the process, Ctrl-C raises
KeyboardInterrupt). Outside training the signals act as usual: the run resumes at the stage it was in (generation
keeps its finished chunks).

Under a multi-process launch every rank learns of a signal any rank got (one all-reduce per step), so all save
the same step and none waits for the others in a collective.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("posttrain")

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """A training stopped by a signal after checkpointing; `exit_code` is the shell's for that signal (signum
    None: the signal came to another rank; SIGTERM's status)."""

    def __init__(self, signum: int | None, stage: str, step: int, checkpoints: str):
        self.signum, self.exit_code = signum, 128 + (signum or signal.SIGTERM)
        what = signal.Signals(signum).name if signum else "A stop signal to another rank"
        super().__init__(f"{what} during {stage}: stopped after optimizer step {step} with a checkpoint in "
                         f"{checkpoints}; run the same command again to resume from it")


class SignalFlag:
    """`with SignalFlag() as flag:` records the first of SIGNALS received in `flag.signum` (None: none) instead of
    acting on it (one the process ignores, e.g. SIGINT in a background job, stays ignored); on exit, the handlers
    before it are back. Python runs signal handlers in the main thread only, so elsewhere (a training driven from
    another thread) it records nothing and changes nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalFlag:
        if threading.current_thread() is threading.main_thread():  # a signal the process ignores stays ignored
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS
                              if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second: as if not caught
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        log.warning("%s received: checkpointing after this optimizer step, then stopping (again to stop now)",
                    signal.Signals(signum).name)
