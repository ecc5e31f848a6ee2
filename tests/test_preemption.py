"""posttrain.run.preemption: a stop signal during training is recorded, not acted on, until the step ends; a
second acts as usual; the handlers before it come back. (The stages' use of it: tests/test_round_resume.py.)"""

from __future__ import annotations

import os
import signal

import pytest

from posttrain.run.preemption import SIGNALS, Preempted, SignalFlag


@pytest.fixture(autouse=True)
def plain_handlers():
    """The handlers a plain Python process starts with (a pytest-xdist worker ignores SIGINT), restored after."""
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def test_the_first_signal_is_recorded_and_the_old_handlers_come_back():
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with SignalFlag() as flag:
        assert flag.signum is None
        os.kill(os.getpid(), signal.SIGTERM)  # would end this test process if it were not caught
        assert flag.signum == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_a_second_ctrl_c_stops_at_once():
    with pytest.raises(KeyboardInterrupt), SignalFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as nohup or a background job leaves a signal
    try:
        with SignalFlag() as flag:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert flag.signum is None
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_preempted_says_what_to_do_and_exits_as_the_shell_would():
    e = Preempted(signal.SIGTERM, "sft", 3, "runs/x/round_1/sft.tmp/checkpoints")
    assert e.exit_code == 143
    assert str(e) == ("SIGTERM during sft: stopped after optimizer step 3 with a checkpoint in "
                      "runs/x/round_1/sft.tmp/checkpoints; run the same command again to resume from it")
    other = Preempted(None, "dpo", 7, "c")
    assert other.exit_code == 143 and str(other).startswith("A stop signal to another rank during dpo: stopped after")
