"""What decides when a stage reruns, what the summary counts, and how storage errors surface: the loop's
bookkeeping, without models (except the prompts stage, which runs on the session's tiny base)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from posttrain.reporting import report
from posttrain.recipe.config import DPOConfig, GenerateConfig, RewardModelConfig, SFTConfig
from posttrain.recipe.load import load_recipe
from posttrain.stages.prompts import load_prompts
from posttrain.pipeline import run_rounds
from posttrain.run.fingerprint import HOW_NOT_WHAT, outputs
from posttrain.run.rundir import MANIFEST, RunDir, RunDirError, StageReached, write_json
from posttrain.stages.selection import rank
from tests.conftest import TEST_RECIPE


def test_fingerprinted_sections_leave_out_how_a_stage_runs():
    gen = outputs(GenerateConfig(kv_cache_gib=4, gpu_memory_utilization=0.9, temperature=0.7))
    assert gen["temperature"] == 0.7 and not HOW_NOT_WHAT & set(gen)
    assert outputs(GenerateConfig(kv_cache_gib=4)) == outputs(GenerateConfig(kv_cache_gib=1))
    assert outputs(GenerateConfig(dtype="float32")) != outputs(GenerateConfig())  # dtype changes samples
    rm = outputs(RewardModelConfig(weight=0.5), "weight")  # the weight only ranks, in select
    # Training switches that take the same steps: turning one on (after running out of memory, say) resumes
    # the stage from its checkpoints. Those that change what a batch holds are part of the stage's identity.
    assert outputs(SFTConfig(gradient_checkpointing=False, use_liger_kernel=True)) == outputs(SFTConfig())
    assert outputs(DPOConfig(padding_free=True, torch_compile=True)) == outputs(DPOConfig())
    assert outputs(SFTConfig(packing=True)) != outputs(SFTConfig())
    assert outputs(DPOConfig(precompute_ref_log_probs=True)) != outputs(DPOConfig())  # sorted pairs: other batches
    assert outputs(DPOConfig(group_by_length=True)) != outputs(DPOConfig())
    assert "weight" not in rm and rm == outputs(RewardModelConfig(weight=0.0), "weight")


@pytest.fixture
def no_build_recipe(tmp_path, tiny_base) -> Path:
    """The test recipe on the session's base with no `base` section: a seed change builds nothing."""
    data = {k: v for k, v in TEST_RECIPE.items() if k != "base"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**data, "base_model": str(tiny_base), "output_dir": str(tmp_path / "runs")}))
    return path


def prompts_stage(recipe_path: Path, seed: int) -> dict:
    with pytest.raises(StageReached) as reached:
        run_rounds(load_recipe(recipe_path, [f"seed={seed}"]), stop_after=(0, "prompts"))
    return reached.value.output.manifest


def test_the_prompts_stage_reruns_when_the_seed_changes(no_build_recipe):
    first = prompts_stage(no_build_recipe, 0)
    other = prompts_stage(no_build_recipe, 1)  # the seed draws the tiny world's prompts and split
    assert other["fingerprint"] != first["fingerprint"] and other["output_id"] != first["output_id"]
    assert prompts_stage(no_build_recipe, 1)["output_id"] == other["output_id"]  # same seed: reused


def test_a_prompt_id_in_two_sources_names_both(tmp_path):
    from posttrain.recipe.config import PromptsConfig, PromptSource

    rec = {"id": "dup", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}
    files = []
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text(json.dumps(rec) + "\n")
        files.append(PromptSource(kind="file", path=str(tmp_path / name), split="heldout" if files else "train"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"'dup' comes from both prompts.sources\[0\] \(file .*a.jsonl, train\) "
                                         r"and prompts.sources\[1\] \(file .*b.jsonl, heldout\)"):
        load_prompts(out, PromptsConfig(sources=files), 0)
    assert not list(out.iterdir())  # nothing written


# --------------------------------------------------------------------------- the summary


def _stage(run: RunDir, name: str, config: dict, inputs: list, results: dict | None = None):
    return run.stage(1, name, config, inputs, lambda out: results or {})


def test_a_reward_model_left_by_an_earlier_run_is_not_summarized(tmp_path):
    run = RunDir(tmp_path / "run")
    score = _stage(run, "score", {}, [], {"pass_rate": 0.5})
    rm = _stage(run, "reward_model", {}, [score], {"pairs": 7, "eval_pairs": 2, "eval_accuracy": 0.5})
    _stage(run, "select", {"rm_weight": 0.1}, [rm])
    assert report.summarize(run, 1)["rounds"][1]["reward_model"]["pairs"] == 7
    _stage(run, "select", {"rm_weight": 0.0}, [score])  # the RM switched off: select reads the score stage
    assert (run.stage_dir(1, "reward_model") / MANIFEST).exists()  # the old folder is still there
    assert report.summarize(run, 1)["rounds"][1]["reward_model"] is None
    assert "reward_model" not in report.summarize(run, 1)["rounds"][1]["wall_s"]


# --------------------------------------------------------------------------- storage errors


def test_a_failed_final_rename_keeps_the_previous_output(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    old = run.stage(1, "mix", {"v": 1}, [], lambda out: (out / "data.txt").write_text("old") and {})
    real = os.replace

    def replace(src, dst):
        if str(src).endswith("mix.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RunDirError, match="cannot put stage mix of round 1 in place: No space left"):
        run.stage(1, "mix", {"v": 2}, [], lambda out: (out / "data.txt").write_text("new") and {})
    monkeypatch.setattr(os, "replace", real)
    # The old output is still findable: moved aside, then the next run puts the new one in and drops it.
    kept = run.stage_dir(1, "mix").with_name("mix.old")
    assert (kept / "data.txt").read_text() == "old" or (run.stage_dir(1, "mix") / "data.txt").read_text() == "old"
    new = run.stage(1, "mix", {"v": 2}, [], lambda out: (out / "data.txt").write_text("new") and {})
    assert (new.path / "data.txt").read_text() == "new" and new.output_id != old.output_id
    assert not kept.exists()


def test_a_json_write_that_fails_leaves_no_part_file(tmp_path, monkeypatch):
    """The disk fills mid-write: half the text is on disk (in the temp file) when the error comes. The temp file
    goes and the previous file is untouched. (A write that failed before creating anything would leave nothing
    behind whatever `write_json` did.)"""
    write_json(tmp_path / "summary.json", {"a": 0})
    real, written = Path.write_text, []

    def half_then_full(self, data, *args, **kwargs):
        real(self, data[:len(data) // 2], *args, **kwargs)
        written.append(self.name)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError):
        write_json(tmp_path / "summary.json", {"a": 1})
    assert written == ["summary.json.part"]  # the half-written temp file existed
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 0}


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RunDirError, match=r"run: cannot create the run directory: Read-only file system"):
        RunDir(tmp_path / "run")


# --------------------------------------------------------------------------- selection


def sample(i: int, reward: float, rm: float) -> dict:
    return {"prompt_id": "p", "sample_index": i, "reward": reward, "rm_score": rm, "completion": f"c{i}"}


def test_a_passing_sample_outranks_a_failing_one_whatever_the_reward_model_says():
    samples = [sample(0, 1.0, -3.0), sample(1, 0.0, 9.0), sample(2, 1.0, 2.0), sample(3, 0.0, -1.0)]
    # reward + 0.5 x rm: 1 - 1.5 = -0.5, 0 + 4.5 = 4.5, 1 + 1 = 2, 0 - 0.5 = -0.5
    assert [s["sample_index"] for s in rank(samples, 0, 0.5)][:2] == [1, 2]  # no gate: the score alone
    assert [s["sample_index"] for s in rank(samples, 0, 0.5, pass_threshold=1.0)] == [2, 0, 1, 3]
