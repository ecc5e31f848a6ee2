"""The capability recipes' machinery with real vLLM and TRL on the test's tiny base: every eval
benchmark through `posttrain eval`, and one round of general.yaml (all four generators, mix targets)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from eval.benchmarks import BENCHMARKS
from posttrain.stages.evaluate import TOO_LONG
from tests.conftest import ROOT, TEST_RECIPE, run_cli

pytestmark = pytest.mark.slow


def test_posttrain_eval_runs_every_benchmark(tmp_path, tiny_base):
    recipe = {**TEST_RECIPE, "base_model": str(tiny_base), "output_dir": str(tmp_path / "runs"),
              "eval": {"benchmarks": ["heldout", *sorted(BENCHMARKS)], "limit": 2, "max_tokens": 16}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run_cli("eval", "--recipe", str(path), "--model", str(tiny_base), "--out", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    scores = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(scores) == {"heldout", *BENCHMARKS}
    evals = pq.read_table(tmp_path / "ev" / "evals.parquet").to_pylist()
    for name, result in scores.items():
        want = {"heldout": 4 * 6, "mmath": 2 * 10}.get(name, 2)  # mmath: limit per language
        assert result["items"] == want, (name, result)
        rows = [e for e in evals if e["benchmark"] == name]  # greedy: one row per item
        assert sorted({e["prompt_id"] for e in rows}) == sorted(e["prompt_id"] for e in rows) and len(rows) == want
        scored = [e for e in rows if e["reward"] is not None]
        assert result["pass@1"] == round(sum(e["reward"] >= 1.0 for e in scored) / max(1, len(scored)), 4), name
        assert result["too_long"] == sum(e["reason"] == TOO_LONG for e in rows), name
    assert ({f"acc_{lang}" for lang in ("en", "zh", "ar")} <= set(scores["mmath"])
            and "language_match" in scores["mmath"])
    assert not (tmp_path / "ev.tmp").exists()


def test_general_recipe_round_on_the_tiny_base(tmp_path, tiny_base):
    recipe = yaml.safe_load((ROOT / "recipes" / "general.yaml").read_text())
    recipe.update(base_model=str(tiny_base), output_dir=str(tmp_path / "runs"), rounds=1)
    del recipe["base"]  # the test's base is already built
    for src in recipe["prompts"]["sources"]:  # CI-sized
        src.update(num_train=8, num_heldout=4)
    # The test base saw system messages only above tool lists: a steering prompt makes it answer every family
    # with a tool call, and the round would keep no sample at all (nothing to mix, tag or judge).
    recipe["generate"].update(num_samples=4, max_tokens=32, system_prompts={})
    recipe["eval"].update(limit=2, max_tokens=16)
    recipe["sft"].update(num_epochs=1, batch_size=8)
    # The LLM judge tags the mix with the round's policy, on the engine that generated its samples. The
    # shipped templates do not fit the tiny base's 256-token context, so short ones stand in here.
    prompts = tmp_path / "judge_prompts"
    prompts.mkdir()
    (prompts / "complexity.txt").write_text('{prompt}\nJSON {"intentions": [...], "difficulty": 1-3}:')
    (prompts / "quality.txt").write_text('{prompt}\n{reply}\nJSON {"score": 1-3}:')
    recipe["mix"]["judge"] = {"model": "policy", "max_tokens": 24, "prompt_dir": str(prompts),
                              "judgments": ["complexity", "quality"]}
    path = tmp_path / "general.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run_cli("round", "--recipe", str(path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "runs" / "general"
    prompts = json.loads((run / "round_0" / "prompts" / "manifest.json").read_text())["results"]
    assert prompts == {"train": 0, "train_round_1": 4 * 8 + 4 * 8, "heldout": 4 * 4 + 4 * 4}  # per_round sources
    scores = json.loads((run / "round_1" / "eval" / "eval.json").read_text())
    assert set(scores) == {"heldout", "gsm_symbolic", "math500", "humaneval", "bfcl_simple", "bfcl_multiple", "mmath"}
    mix = json.loads((run / "round_1" / "mix" / "manifest.json").read_text())["results"]
    assert set(mix["by_capability"]) <= {"math", "code", "tools", "multilingual"} and mix["input"] > 0
    assert (run / "report" / "mix.png").exists() and (run / "report" / "tags.png").exists()
    assert mix["composition"]["after"]["topic"]  # tagged: topic counts of the final mix
    # The tiny base is no judge: whatever it answers is either a checked value or counted as unknown.
    tags = pq.read_table(run / "round_1" / "mix" / "tags.parquet").to_pylist()
    # The judge stage judged every SFT example of the round (before dedup), the mix reported its counts.
    judge = json.loads((run / "round_1" / "judge" / "manifest.json").read_text())["results"]
    asked = mix["input"]
    assert judge["judged"] == asked and judge["counts"] == mix["judge"]
    assert pq.read_table(run / "round_1" / "judge" / "judged.parquet").column("id").to_pylist() == \
        pq.read_table(run / "round_1" / "select" / "sft.parquet").column("id").to_pylist()
    assert set(mix["judge"]) == {"complexity", "quality"}
    for c in mix["judge"].values():
        assert c["asked"] == asked and 0 <= c["unknown"] <= c["retried"] + c["too_long"] <= asked
        assert c["too_long"] < asked  # the engine was asked
    for t in tags:
        assert t["topic_similarity"] is not None  # the topic stayed with the embedding classifier
        assert (t["difficulty"] is None) == ("complexity" in t["judge_unknown"])
        assert (t["judge_quality"] is None) == ("quality" in t["judge_unknown"])
    report = (run / "report" / "report.md").read_text()
    assert f"judge complexity: {asked} asked" in report
