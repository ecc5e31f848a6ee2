"""posttrain.run.progress: when lines are logged and what they say, on a fake clock (no wall-clock asserts)."""

from __future__ import annotations

from posttrain.run.progress import Progress, duration, progress_callback


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(total=100, **kw):
    clock, lines = Clock(), []
    p = Progress("generate", total, "samples", clock=clock, emit=lines.append, bar=False, heartbeat=False,
                 every_s=30, **kw)
    return p, clock, lines


def test_a_line_every_30_s_with_rate_tokens_and_eta():
    p, clock, lines = make()
    clock.t += 10
    p.update(10, tokens=500)
    assert lines == []  # under 30 s since the start: nothing yet
    clock.t += 20  # 30 s in: 20 done
    p.update(10, tokens=500)
    assert lines == ["generate: 20/100 samples (20%) in 30s, 0.67 samples/s, 33 tokens/s, ETA 2m00s"]
    clock.t += 29
    p.update(5)
    assert len(lines) == 1  # 29 s after the last line
    clock.t += 1
    p.tick()  # the heartbeat: no update for a while, the line still comes
    assert lines[-1] == "generate: 25/100 samples (25%) in 1m00s, 0.42 samples/s, 17 tokens/s, ETA 3m00s"
    clock.t += 30
    p.set(100, tokens=3000)  # 30 s after the last line: a line, and close has nothing new to say
    p.close()
    assert lines[-1] == "generate: 100/100 samples (100%) in 1m30s, 1.11 samples/s, 33 tokens/s"
    assert len(lines) == 3


def test_a_token_budget_bounds_the_eta_while_few_samples_are_done():
    """Sampled generation finishes most samples near the end: 16 of 800 done in 30 s predicts 25 minutes; 800
    samples of at most 64 tokens at 272 tokens/s take at most 2m38s more (SmolLM2's took 27 s)."""
    p, clock, lines = make(total=800, token_budget=800 * 64)
    clock.t += 30
    p.set(16, tokens=30 * 272)
    assert lines == ["generate: 16/800 samples (2%) in 30s, 0.53 samples/s, 272 tokens/s, ETA at most 2m38s"]
    clock.t += 30
    p.set(700, tokens=60 * 272)  # the samples' own rate is the shorter estimate now
    assert lines[-1] == "generate: 700/800 samples (88%) in 1m00s, 12 samples/s, 272 tokens/s, ETA 9s"
    p, clock, lines = make(total=800, token_budget=800 * 64)
    clock.t += 30
    p.tick()  # no tokens yet: nothing to bound it with
    assert lines == ["generate: 0/800 samples (0%) in 30s, 0.00 samples/s, ETA unknown"]


def test_heartbeat_without_any_update_says_eta_unknown():
    p, clock, lines = make()
    clock.t += 45
    p.tick()
    assert lines == ["generate: 0/100 samples (0%) in 45s, 0.00 samples/s, ETA unknown"]


def test_short_work_logs_nothing_long_work_logs_its_end():
    p, clock, lines = make(min_s=2.0)
    clock.t += 1.5
    p.set(100)
    p.close()
    assert lines == []
    p, clock, lines = make(min_s=2.0)
    clock.t += 3
    p.set(100)
    p.close()
    assert lines == ["generate: 100/100 samples (100%) in 3s, 33 samples/s"]


def test_resumed_work_rates_only_what_this_run_did():
    clock, lines = Clock(), []
    p = Progress("sft training", 200, "steps", initial=100, clock=clock, emit=lines.append, bar=False,
                 heartbeat=False, every_s=30)
    clock.t += 30
    p.set(130)
    assert lines == ["sft training: 130/200 steps (65%) in 30s, 1.00 steps/s, ETA 1m10s"]


def test_unknown_total_has_no_percentage_or_eta():
    clock, lines = Clock(), []
    p = Progress("score", None, "samples", clock=clock, emit=lines.append, bar=False, heartbeat=False, every_s=30)
    clock.t += 30
    p.update(600)
    assert lines == ["score: 600 samples in 30s, 20 samples/s"]


def test_duration():
    assert [duration(s) for s in (0, 42, 65, 3600 + 180)] == ["0s", "42s", "1m05s", "1h03m"]


def test_heartbeat_thread_stops_on_close():
    p = Progress("x", 1, bar=False, emit=lambda _: None)
    assert p._thread is not None and p._thread.is_alive()
    p.close()
    assert not p._thread.is_alive()


def test_training_callback_reports_steps(monkeypatch):
    import posttrain.run.progress as progress

    lines, clock = [], Clock()
    real = progress.Progress
    monkeypatch.setattr(progress, "Progress", lambda *a, **kw: real(
        *a, **kw, clock=clock, emit=lines.append, bar=False, heartbeat=False, every_s=30))
    from types import SimpleNamespace

    cb = progress_callback("dpo")
    state = SimpleNamespace(is_world_process_zero=True, max_steps=40, global_step=0, num_input_tokens_seen=0)
    cb.on_train_begin(None, state, None)
    for _ in range(40):
        clock.t += 1
        state.global_step += 1
        cb.on_step_end(None, state, None)
    clock.t += 1  # saving
    cb.on_train_end(None, state, None)
    assert lines == ["dpo training: 30/40 steps (75%) in 30s, 1.00 steps/s, ETA 10s",
                     "dpo training: 40/40 steps (100%) in 41s, 0.98 steps/s"]


class Conn:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_engine_reports_finished_samples_and_tokens_in_flight(monkeypatch):
    """vLLM's LLM.generate(use_tqdm=<callable>) in the engine process: what the parent is sent."""
    import time
    from types import SimpleNamespace

    from posttrain.models.engine_process import _Reporter

    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    running = {"a": SimpleNamespace(detokenizer=SimpleNamespace(num_output_tokens=lambda: 7)),
               "b": SimpleNamespace(detokenizer=None)}
    llm = SimpleNamespace(llm_engine=SimpleNamespace(output_processor=SimpleNamespace(request_states=running)))
    reporter = _Reporter(Conn(), llm)
    assert list(reporter.bar([1, 2, 3], desc="Rendering prompts")) == [1, 2, 3]  # vLLM's rendering loop
    assert reporter.message() is None  # nothing counts samples yet
    bar = reporter.bar(total=8, desc="Processed prompts", postfix="est. speed input: 0.00 toks/s, output: 0 toks/s")
    clock.t += 2
    assert bar.format_dict["elapsed"] == 2
    bar.postfix = "est. speed input: 30.00 toks/s, output: 40.00 toks/s"  # vLLM sets it, then updates
    bar.update(4)
    assert reporter.message() == ("progress", (4, 80 + 7))  # finished samples' tokens + those in flight
    running.clear()
    clock.t += 1
    bar.postfix = "est. speed input: 30.00 toks/s, output: 45.00 toks/s"
    bar.update(4)
    assert reporter.message() == ("progress", (8, 135))
    assert _Reporter(Conn(), None).bars == [] and _in_flight(None) == 0  # other vLLM internals: finished only


def _in_flight(llm):
    from posttrain.models.engine_process import _in_flight_tokens

    return _in_flight_tokens(llm)


def test_engine_generate_passes_progress_messages_and_returns_the_results():
    """Engine.generate reads the child's progress messages until its answer (a real pipe, no vLLM)."""
    import multiprocessing as mp

    from posttrain.models.engine import Engine

    engine = object.__new__(Engine)
    engine.model = "m"
    engine._conn, child = mp.Pipe()
    results = [{"num_prompt_tokens": 3, "completions": [{"text": "a", "num_tokens": 5, "logprob": -1.0,
                                                         "finish_reason": "stop"}] * 2}]
    child.send(("progress", (1, 5)))
    child.send(("progress", (2, 10)))
    child.send(("ok", results))
    assert engine.generate([{"prompt_token_ids": [1, 2, 3], "n": 2, "max_tokens": 8}]) == results
    assert child.recv()[0] == "generate"


def test_engine_exits_when_its_owner_is_gone(monkeypatch):
    """A broken pipe while reporting (the owner killed mid-generation) ends the engine process at once."""
    import os

    from posttrain.models.engine_process import _Reporter

    class Broken:
        def send(self, message):
            raise BrokenPipeError(32, "Broken pipe")

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    _Reporter(Broken(), None).send(("progress", (1, 2)))
    assert exits == [1]
    conn = Conn()
    _Reporter(conn, None).send(("progress", (1, 2)))
    assert conn.sent == [("progress", (1, 2))] and exits == [1]
