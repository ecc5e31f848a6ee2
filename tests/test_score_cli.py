"""`posttrain score`: any samples file is scored by the recipe's verifiers, and by a trained reward model
when one is given or the recipe's run has one; bad input writes nothing."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH = {"id": "m1", "capability": "math", "messages": [{"role": "user", "content": "2 + 3?"}], "answer": "5"}
CODE = {"id": "c1", "capability": "code", "messages": [{"role": "user", "content": "f(x) = x + 1"}],
        "tests": "assert f(1) == 2", "entry_point": "f"}


ROWS = [{**MATH, "completion": "The answer is 5."}, {**CODE, "completion": "def f(x):\n    return x + 1"},
        {**MATH, "completion": "The answer is 6."}, {**CODE, "completion": "def f(x):\n    return x"}]


def score(tmp_path, lines: list[str], *extra: str):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.parquet"
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "score", "--recipe", "recipes/tiny.yaml",
                           "--input", str(path), "--output", str(out), f"output_dir={tmp_path / 'runs'}", *extra],
                          cwd=ROOT, capture_output=True,
                          text=True)
    return proc, out


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """A randomly initialised one-label Llama sequence classifier (hidden 32) with the project's chat
    tokenizer, saved as a reward model is: its scores mean nothing, but they are real forward passes."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from posttrain.tiny.base import train_tokenizer

    tokenizer = train_tokenizer([json.dumps(r) for r in ROWS] * 20, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, num_labels=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    path = tmp_path_factory.mktemp("rm") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_scores_every_sample_by_prompt_id(tmp_path):
    proc, out = score(tmp_path, [json.dumps(r) for r in ROWS], "reward_model.enabled=false")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out).to_pylist()
    got = {(r["prompt_id"], r["sample_index"]): (r["reward"], r["capability"]) for r in table}
    assert got == {("m1", 0): (1.0, "math"), ("m1", 1): (0.0, "math"),
                   ("c1", 0): (1.0, "code"), ("c1", 1): (0.0, "code")}
    # no reward model: verifiers only, rm_score null
    assert "reward model: none (reward_model.enabled is false)" in proc.stdout
    assert [r["rm_score"] for r in table] == [None] * 4


def test_reward_model_flag_fills_rm_score_with_the_batched_scorer(tmp_path, tiny_rm):
    from reward.model import score_with_reward_model

    proc, out = score(tmp_path, [json.dumps(r) for r in ROWS], "--reward-model", str(tiny_rm))
    assert proc.returncode == 0, proc.stderr
    assert f"reward model: {tiny_rm} (--reward-model)" in proc.stdout
    table = pq.read_table(out).to_pylist()
    assert [r["reward"] for r in table] == [1.0, 1.0, 0.0, 0.0]  # the verifiers still score
    rm = [r["rm_score"] for r in table]
    assert all(x is not None and math.isfinite(x) for x in rm) and len(set(rm)) > 1, rm
    # in the samples' order, equal to the batched scorer's own (the same code, not a second loop)
    direct = score_with_reward_model(tiny_rm, [r["messages"] for r in ROWS], [r["completion"] for r in ROWS],
                                     progress=False)
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(rm, direct)), (rm, direct)


def test_default_is_the_newest_reward_model_of_the_recipes_run(tmp_path, tiny_rm):
    runs = tmp_path / "runs"
    on = ["reward_model.enabled=true", f"output_dir={runs}"]
    proc, out = score(tmp_path, [json.dumps(r) for r in ROWS], *on)  # enabled, nothing trained yet
    assert proc.returncode == 0, proc.stderr
    assert f"reward model: none (no trained reward model in {runs / 'tiny'})" in proc.stdout
    assert {r["rm_score"] for r in pq.read_table(out).to_pylist()} == {None}
    # a completed round's RM stage, and an older `posttrain reward train` output; an unfinished stage is ignored
    round1 = runs / "tiny" / "round_1" / "reward_model"
    for model in (runs / "tiny" / "reward_model" / "model", round1 / "model", runs / "tiny" / "round_2" /
                  "reward_model" / "model"):
        shutil.copytree(tiny_rm, model)
    (round1 / "manifest.json").write_text("{}")
    os.utime(runs / "tiny" / "reward_model" / "model" / "config.json", (1, 1))
    proc, out = score(tmp_path, [json.dumps(r) for r in ROWS], *on)
    assert proc.returncode == 0, proc.stderr
    assert f"reward model: {round1 / 'model'} (newest in {runs / 'tiny'})" in proc.stdout
    assert all(math.isfinite(r["rm_score"]) for r in pq.read_table(out).to_pylist())
    # 'none' turns the default off
    proc, out = score(tmp_path, [json.dumps(r) for r in ROWS], *on, "--reward-model", "none")
    assert proc.returncode == 0 and {r["rm_score"] for r in pq.read_table(out).to_pylist()} == {None}


def test_bad_reward_model_path_names_the_flag_and_writes_nothing(tmp_path, tiny_rm):
    lines = [json.dumps(r) for r in ROWS]
    policy = tmp_path / "policy"  # a causal LM: it would load with a random score head and rank nothing
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    for path, message in [(tmp_path / "nope", "not a model folder (no config.json)"),
                          (tiny_rm.parent, f"(did you mean {tiny_rm}?)"),  # the stage folder, not its model
                          (policy, "not a reward model (LlamaForCausalLM with 2 label(s)")]:
        proc, out = score(tmp_path, lines, "--reward-model", str(path))
        assert proc.returncode == 2, proc.stderr
        assert f"--reward-model {path}: " in proc.stderr and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()


def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path):
    proc, out = score(tmp_path, [json.dumps({**MATH, "completion": "5"}), "{not json"])
    assert proc.returncode == 2
    assert "samples.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


def test_missing_completion_or_verifier_field_is_an_error(tmp_path):
    proc, _ = score(tmp_path, [json.dumps(MATH)])
    assert proc.returncode == 2 and "samples.jsonl:1" in proc.stderr and "completion" in proc.stderr
    no_tests = {k: v for k, v in CODE.items() if k != "tests"}
    proc, _ = score(tmp_path, [json.dumps({**no_tests, "completion": "x"})])
    assert proc.returncode == 2 and "needs 'tests'" in proc.stderr
