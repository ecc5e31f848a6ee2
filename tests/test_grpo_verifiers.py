"""reward/'s verifiers as TRL reward functions (issue #28): GRPOTrainer(reward_funcs=...) trains a step on
reward's math and code verifiers (the code one through the sandbox) on a tiny random Llama, without the rest of
posttrain, and the rewards it gets are the verifiers' real verdicts in TRL's conversational shape.

TRL calls each reward function as `f(prompts=..., completions=..., completion_ids=..., trainer_state=...,
log_extra=..., log_metric=..., **dataset_columns)` with conversational completions ([{"role": "assistant",
"content": ...}]) for a conversational dataset, wants one float or None (not applicable: NaN, ignored) per
completion, and logs `rewards/<function __name__>/mean`. The verifiers take that call as is but return
Verdict(reward, reason) pairs and are all named `score`; reward/rewards.py gives each as a TRL reward function
(`reward.math_reward`, `reward.code_reward`, ...), which a TRL user hands over as they are.
"""

from __future__ import annotations

import builtins
import math as pymath
import os
import shutil
import socket

import pytest
import torch
from datasets import Dataset

from reward import code, code_reward, math, math_reward, sandbox

WITHOUT_BWRAP = os.environ.get("POSTTRAIN_WITHOUT_BWRAP") == "1" and not shutil.which("bwrap")

MATH_ROW = {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4", "tests": None,
            "entry_point": None}
CODE_ROW = {"prompt": [{"role": "user", "content": "Write a Python function f(x) that returns x + 1."}],
            "answer": None, "tests": "assert f(1) == 2\nassert f(-1) == 0", "entry_point": "f"}


@pytest.fixture(autouse=True, scope="module")
def isolation():
    """The sandbox's process-wide minimum (default bwrap): a machine set up without bubblewrap
    (POSTTRAIN_WITHOUT_BWRAP=1) lowers it by name, as a TRL user there must (sandbox.require); the strongest mode
    the machine gives is still used."""
    before = sandbox.required()
    if WITHOUT_BWRAP:
        sandbox.require("rlimits-only", check=False)
    yield sandbox.detect_isolation()
    sandbox.require(before, check=False)


def recording(reward_func, calls: list):
    """`reward_func` under its own name, recording each call's completions, columns and rewards (tests only)."""
    def reward(completions, **columns):
        rewards = reward_func(completions, **columns)
        calls.append((completions, columns, rewards))
        return rewards

    reward.__name__ = reward_func.__name__
    return reward


def one_grpo_step(model_dir, output_dir, reward_funcs):
    """GRPOTrainer on the tiny random Llama: one step, 2 prompts x 2 generations of 16 tokens, on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=16, max_steps=1, learning_rate=1e-3, logging_steps=1,
                      save_strategy="no", report_to="none", use_cpu=True, bf16=False, use_vllm=False, seed=0,
                      dataloader_num_workers=0, disable_tqdm=True)
    torch.manual_seed(0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                          processing_class=AutoTokenizer.from_pretrained(model_dir),
                          reward_funcs=reward_funcs, args=args,
                          train_dataset=Dataset.from_list([MATH_ROW, CODE_ROW]))
    trainer.train()
    return trainer


def reply(text: str) -> list[dict]:
    """A completion as TRL passes it for a conversational dataset."""
    return [{"role": "assistant", "content": text}]


def test_grpo_trains_a_step_on_the_verifiers(model_dir, tmp_path):
    calls = {"math": [], "code": []}
    funcs = [recording(math_reward, calls["math"]), recording(code_reward, calls["code"])]
    trainer = one_grpo_step(model_dir, tmp_path / "out", funcs)

    assert trainer.state.global_step == 1
    assert trainer.reward_func_names == ["math_reward", "code_reward"]
    logged = next(entry for entry in trainer.state.log_history if "rewards/math_reward/mean" in entry)
    for name in ("math_reward", "code_reward"):
        assert 0.0 <= logged[f"rewards/{name}/mean"] <= 1.0, logged  # a real mean: its own rows are scored

    # Each verifier got the step's 4 completions in TRL's conversational shape with the dataset's columns, and
    # scored exactly the rows it applies to (both prompts were in the step: 2 prompts x 2 generations).
    for kind, column in (("math", "answer"), ("code", "tests")):
        [(completions, columns, rewards)] = calls[kind]
        assert len(completions) == len(rewards) == 4
        assert all(isinstance(c, list) and c[-1]["role"] == "assistant" for c in completions)
        assert {"prompts", "completion_ids", "trainer_state", "answer", "tests", "entry_point"} <= set(columns)
        for value, r in zip(columns[column], rewards):
            assert (r is None) if value is None else (r in (0.0, 1.0)), (kind, value, r)
        assert sum(r is not None for r in rewards) == 2


def test_rewards_are_the_verdicts_in_trls_shape():
    """The rewards TRL gets are real: right 1.0, wrong 0.0, another capability's row None (TRL's NaN, ignored)."""
    columns = {k: [row[k] for row in (MATH_ROW, MATH_ROW, CODE_ROW)] for k in ("answer", "tests", "entry_point")}
    trl_kwargs = {"prompts": [MATH_ROW["prompt"], MATH_ROW["prompt"], CODE_ROW["prompt"]],
                  "completion_ids": [[1], [2], [3]], "trainer_state": None, "log_extra": None, "log_metric": None}
    math_replies = [reply("2 + 2 = 4. The answer is \\boxed{4}."), reply("The answer is 5."),
                    reply("```python\ndef f(x):\n    return x + 1\n```")]
    assert math_reward(math_replies, **columns, **trl_kwargs) == [1.0, 0.0, None]

    right, wrong = "```python\ndef f(x):\n    return x + 1\n```", "```python\ndef f(x):\n    return x - 1\n```"
    columns = {k: [row[k] for row in (CODE_ROW, CODE_ROW, MATH_ROW)] for k in ("answer", "tests", "entry_point")}
    assert code_reward([reply(right), reply(wrong), reply("The answer is 4.")], **columns, **trl_kwargs) == \
        [1.0, 0.0, None]


def test_code_rewards_run_in_the_sandbox(isolation, host_dir):
    """Code TRL hands the code verifier runs in the sandbox: code that would pass on the host by opening a
    socket to a host server, or (bwrap) by reading a host file, fails there."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    secret = host_dir / "secret.txt"
    secret.write_text("hunter2")
    escapes = {
        "socket": (f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
                   f"    return 'connected'\n", "assert f() == 'connected'"),
        "host file": (f"def f():\n    return open({str(secret)!r}).read()\n", "assert f() == 'hunter2'"),
    }
    if isolation != "bwrap":  # unshare-net and rlimits-only share the host filesystem (sandbox.LOST)
        del escapes["host file"]
    try:
        for name, (solution, tests) in escapes.items():
            namespace: dict = {}
            exec(solution, namespace)  # the control: on the host, it passes
            exec(tests, namespace)
            [verdict] = code.score([reply(f"```python\n{solution}```")], tests=[tests], entry_point=["f"])
            # refused by the sandbox (ConnectionRefusedError, FileNotFoundError, the guard's PermissionError, ...),
            # not failed for some other reason
            assert verdict.reward == 0.0 and issubclass(getattr(builtins, verdict.reason.split(":")[0]), OSError), \
                (name, isolation, verdict)
    finally:
        server.close()


def test_the_reward_functions_are_the_verifiers_and_train_as_they_are(model_dir, tmp_path):
    """reward.math_reward and reward.code_reward handed to GRPOTrainer unwrapped: distinct names, finite
    rewards, and the same numbers as the verifiers' verdicts."""
    trainer = one_grpo_step(model_dir, tmp_path / "out", [math_reward, code_reward])
    assert trainer.state.global_step == 1
    assert trainer.reward_func_names == ["math_reward", "code_reward"]
    logged = next(entry for entry in trainer.state.log_history if "rewards/math_reward/mean" in entry)
    assert not pymath.isnan(logged["rewards/math_reward/mean"]) and not pymath.isnan(logged["rewards/code_reward/mean"])
    replies = [reply("The answer is 4."), reply("The answer is 5.")]
    assert math_reward(replies, answer=["4", "4"]) == [v.reward for v in math.score(replies, answer=["4", "4"])]
