"""Request building for the generate stage: steering system prompts, the temperature schedule, and
prompts too long for the context (dropped and counted)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from posttrain.models.chat_turns import Chat
from posttrain.run import schema
from posttrain.recipe.config import GenerateConfig
from posttrain.stages.generate import prompt_temperature, requests_for, with_system_prompt


class CharTokenizer:
    def apply_chat_template(self, messages, **_):
        text = "".join(f"[{m['role']}]{m['content']}" for m in messages)
        return {"input_ids": [ord(c) for c in text]}


CHARS = Chat(CharTokenizer())  # stateless: shared


def prompts(*texts: str, capability: str = "math"):
    return schema.from_records([{"id": f"p{i}", "capability": capability, "answer": "1",
                                 "messages": [{"role": "user", "content": t}]} for i, t in enumerate(texts)], "prompts")


def test_steering_prompt_goes_first_and_keeps_an_existing_system_message():
    user = {"role": "user", "content": "q"}
    assert with_system_prompt([user], "Be brief.") == [{"role": "system", "content": "Be brief."}, user]
    tools = {"role": "system", "content": "Tools: f(x)"}
    assert with_system_prompt([tools, user], "Be brief.") == [
        {"role": "system", "content": "Be brief.\n\nTools: f(x)"}, user]
    assert with_system_prompt([user], None) == [user]


def test_requests_render_the_steering_prompt_only_for_its_capability():
    reqs, _ = requests_for(prompts("2+2?"), CHARS, n=2, temperature=1.0, top_p=1.0, max_tokens=4, seed=0,
                           max_model_len=None, system_prompts={"math": "STEER", "code": "OTHER"})
    text = "".join(map(chr, reqs["p0"]["prompt_token_ids"]))
    assert text == "[system]STEER[user]2+2?"


def test_prompts_too_long_are_dropped_and_named():
    reqs, too_long = requests_for(prompts("short", "x" * 100), CHARS, n=1, temperature=1.0, top_p=1.0,
                                  max_tokens=10, seed=0, max_model_len=50)
    assert list(reqs) == ["p0"] and too_long == ["p1"]


def test_temperature_schedule_draws_per_prompt_early_and_is_fixed_in_the_last_round():
    cfg = GenerateConfig(temperature=0.6, temperature_range=[0.2, 1.0])
    early = [prompt_temperature(cfg, 7, f"p{i}", last_round=False) for i in range(200)]
    assert all(0.2 <= t <= 1.0 for t in early) and len(set(early)) > 50  # drawn, not constant
    assert min(early) < 0.35 and max(early) > 0.85  # spans the range
    assert early == [prompt_temperature(cfg, 7, f"p{i}", last_round=False) for i in range(200)]  # seeded by id
    assert {prompt_temperature(cfg, 7, f"p{i}", last_round=True) for i in range(20)} == {0.6}
    assert prompt_temperature(GenerateConfig(temperature=0.9), 7, "p0", last_round=False) == 0.9


def test_too_long_prompts_stop_the_round_when_the_recipe_says_so(tmp_path):
    from posttrain.stages.generate import PromptTooLong, generate

    class NoEngine:
        max_model_len = 50

        def generate(self, requests, progress=None):
            return [{"num_prompt_tokens": 1, "completions": [{"text": "1", "num_tokens": 1, "logprob": -1.0,
                                                              "finish_reason": "stop"}] * r["n"]} for r in requests]

    table = prompts("short", "x" * 100)
    with pytest.raises(PromptTooLong, match="generate.too_long"):
        generate(tmp_path, NoEngine(), table, CHARS, GenerateConfig(max_tokens=10, too_long="error"), 0)
    result = generate(tmp_path, NoEngine(), table, CHARS, GenerateConfig(max_tokens=10, num_samples=2), 0)
    assert (result["samples"], result["too_long"]) == (2, 1)


def test_generation_runs_in_chunks_kept_on_disk_and_a_rerun_asks_only_for_the_missing_ones(tmp_path):
    from posttrain.stages.generate import in_chunks

    calls = []

    class Echo:  # answers each request with its seed as text
        def generate(self, requests, progress=None):
            calls.append([r["seed"] for r in requests])
            return [{"num_prompt_tokens": 1, "completions": [{"text": str(r["seed"]), "num_tokens": 1,
                                                              "logprob": -0.5, "finish_reason": "stop"}] * r["n"]}
                    for r in requests]

    requests = [{"prompt_token_ids": [i], "n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 4, "seed": i}
                for i in range(7)]
    first = in_chunks(Echo(), requests, 6, tmp_path)  # 6 samples: 3 prompts a call
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert [r["completions"][0]["text"] for r in first] == [str(i) for i in range(7)]  # request order
    assert len(list(tmp_path.glob("*.json"))) == 3
    calls.clear()
    assert in_chunks(Echo(), requests, 6, tmp_path) == first and calls == []  # all kept: no engine call
    next(iter(tmp_path.glob("*.json"))).unlink()  # one chunk never written (killed in it)
    assert in_chunks(Echo(), requests, 6, tmp_path) == first and len(calls) == 1
    calls.clear()
    assert in_chunks(Echo(), [dict(r, temperature=0.5) for r in requests], 6, tmp_path) != [] and len(calls) == 3


def test_kept_chunks_count_as_done_but_not_in_the_rate():
    from posttrain.models.engine import generation_progress

    todo, kept = [{"n": 2, "max_tokens": 4}] * 3, [{"n": 2, "max_tokens": 4}] * 5
    with generation_progress(todo, kept) as p:
        assert (p.total, p.done, p.initial, p.token_budget) == (16, 10, 10, 3 * 2 * 4)


def test_too_long_error_stops_the_round_before_any_engine_starts(recipe_file):
    """`generate.too_long: error` with prompts that cannot fit: the round stops after the prompts stage, before
    benchmarks, round 0's eval or any vLLM engine, naming the key; no stage is left half-written."""
    from tests.conftest import run_cli

    proc = run_cli("round", "--recipe", str(recipe_file), "generate.too_long=error", "generate.max_tokens=250")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "generate.too_long" in proc.stderr and "Traceback" not in proc.stderr
    run = recipe_file.parent / "runs" / "test"
    assert sorted(p.name for p in (run / "round_0").iterdir()) == ["base", "prompts"]  # both complete
    assert not (run / "round_1").exists() and not list(run.rglob("*.tmp"))
    # no engine started: engines start inside the generate and eval stages, of which no folder exists, and an
    # engine logs when it is ready (how long the command took is not asserted: speed lives in bench/)
    assert "vLLM engine" not in proc.stderr


def test_an_engine_that_cannot_load_its_model_raises_and_leaves_no_process(tmp_path):
    """vLLM's own error reaches the caller, and the spawned engine process is ended, its pipe closed."""
    from posttrain.models.engine import Engine

    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(RuntimeError, match="not-a-model"):
        Engine(tmp_path / "not-a-model", GenerateConfig(dtype="float32"), 0, 256)
    assert mp.active_children() == []


def test_engines_fork_from_one_server_sample_like_spawned_ones_and_follow_the_environment(tiny_base, monkeypatch):
    """Forked engines sample what a spawned one does; a changed environment never reaches a fork of a server
    started under the old one (spawned while a fork is alive, a restarted server once none is)."""
    from posttrain.models.engine import Engine

    cfg = GenerateConfig(dtype="float32")
    request = [{"prompt_token_ids": [1, 5, 9, 12, 40], "n": 3, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16,
                "seed": 7}]

    def sample(engine: Engine) -> list[str]:
        return [c["text"] for c in engine.generate(request)[0]["completions"]]

    first = Engine(tiny_base, cfg, 0, 256)
    texts = sample(first)
    assert first.start_method == "forkserver" and len(set(texts)) > 1
    with Engine(tiny_base, cfg, 0, 256) as second:  # a second engine beside the first: same server
        assert second.start_method == "forkserver" and sample(second) == texts
    monkeypatch.setenv("POSTTRAIN_TEST_ENGINE_ENV", "changed")
    with Engine(tiny_base, cfg, 0, 256) as spawned:  # `first` still holds the old server
        assert spawned.start_method == "spawn" and sample(spawned) == texts
    first.close()
    with Engine(tiny_base, cfg, 0, 256) as restarted:  # idle now: restarted under the new environment
        assert restarted.start_method == "forkserver" and sample(restarted) == texts


def test_machines_with_a_cuda_device_spawn_their_engines_and_a_bad_start_method_is_named(monkeypatch):
    import torch

    from posttrain.models.engine import _FORK_SERVER

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _FORK_SERVER.start_method() == "spawn"  # forked engines are unchecked on GPUs: opt-in only
    monkeypatch.setenv("POSTTRAIN_ENGINE_START", "fork")
    with pytest.raises(ValueError, match="POSTTRAIN_ENGINE_START='fork'"):
        _FORK_SERVER.start_method()
