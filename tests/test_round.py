"""One real round (vLLM + TRL on a tiny model) through the CLI, plus crash-and-resume."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from posttrain.run import schema
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
STAGE_TABLES = {"generate": ["samples"], "score": ["scored"], "select": ["sft", "pairs"], "mix": ["sft", "pairs"],
                "eval": ["evals"]}


def survivors(mark: str, wait_s: float = 10.0) -> list[int]:
    """Processes still carrying POSTTRAIN_TEST_RUN=mark in their environment, after up to wait_s."""
    needle = f"POSTTRAIN_TEST_RUN={mark}".encode()
    deadline = time.time() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(int(pid))
            except OSError:
                pass
        if not found or time.time() > deadline:
            return found
        time.sleep(0.2)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def manifest(run: Path, stage: str, round_: int = 1) -> dict:
    return json.loads((run / f"round_{round_}" / stage / "manifest.json").read_text())


def copied_run(recipe_file: Path, dest: Path) -> Path:
    """A copy of `recipe_file`'s run directory as dest/runs, and of the recipe, pointed at it, as dest/recipe.yaml."""
    import yaml

    recipe = yaml.safe_load(recipe_file.read_text())
    shutil.copytree(recipe["output_dir"], dest / "runs", symlinks=True)
    (dest / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "output_dir": str(dest / "runs")}))
    return dest / "recipe.yaml"


def test_round_writes_every_stage_with_schema_and_counts(full_run, tiny_base):
    train = schema.read(full_run / "round_0" / "prompts" / "train.parquet", "prompts")
    heldout = schema.read(full_run / "round_0" / "prompts" / "heldout.parquet", "prompts")
    assert (train.num_rows, heldout.num_rows) == (4 * 12, 4 * 6)
    assert not set(train["id"].to_pylist()) & set(heldout["id"].to_pylist())
    for stage, tables in STAGE_TABLES.items():
        for t in tables:
            schema.read(full_run / "round_1" / stage / f"{t}.parquet", "evals" if t == "evals" else t)
    samples = pq.read_table(full_run / "round_1" / "generate" / "samples.parquet")
    assert samples.num_rows == 4 * 12 * 4  # K=4 per prompt
    scored = pq.read_table(full_run / "round_1" / "score" / "scored.parquet").to_pylist()
    assert len(scored) == samples.num_rows
    passing = {r["prompt_id"] for r in scored
               if r["reward"] is not None and r["reward"] >= 1.0 and r["finish_reason"] != "length"}
    sft = pq.read_table(full_run / "round_1" / "select" / "sft.parquet")
    assert set(sft["prompt_id"].to_pylist()) == passing  # one SFT example per prompt with a whole passing sample
    assert 0 < sft.num_rows < train.num_rows, "the tiny base should pass some prompts and fail others"
    pairs = pq.read_table(full_run / "round_1" / "select" / "pairs.parquet")
    assert pairs.num_rows > 0
    mixed = manifest(full_run, "mix")["results"]
    assert mixed["input"] == sft.num_rows
    assert mixed["sft"] == sft.num_rows - mixed["exact_dups"] - mixed["near_dups"] - mixed["contaminated"]
    assert mixed["contaminated"] == 0  # held-out prompts come from a disjoint half of each family
    guarded = pq.read_table(full_run / "round_0" / "benchmarks" / "all.parquet", columns=["id"])["id"].to_pylist()
    from eval.benchmarks import BENCHMARKS  # every shipped benchmark guards the mix, in full, though none is run here
    assert {i.split("/")[0] for i in guarded} >= {"humaneval", "gsm_symbolic", "math500", "mmath"}
    assert len(guarded) > 5000 and len(BENCHMARKS) == 6
    base, sft_w, dpo_w = (weights(p) for p in (tiny_base, full_run / "round_1" / "sft" / "model",
                                                full_run / "round_1" / "dpo" / "model"))
    assert not all(torch.equal(base[k], sft_w[k]) for k in base)  # SFT trained
    assert not all(torch.equal(sft_w[k], dpo_w[k]) for k in sft_w)  # and DPO trained on top
    evals = pq.read_table(full_run / "round_1" / "eval" / "evals.parquet")
    assert evals.num_rows == heldout.num_rows
    scores = json.loads((full_run / "round_1" / "eval" / "eval.json").read_text())
    assert set(scores) == {"heldout"}
    assert set(scores["heldout"]["accuracy"]) == {"math", "code", "tools", "multilingual", "overall"}
    summary = json.loads((full_run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


def test_round_writes_a_report_with_plots(full_run):
    page = (full_run / "report" / "report.md").read_text()
    for png in ("eval.png", "rewards.png", "selection.png", "mix.png", "training.png", "wall_time.png"):
        assert f"]({png})" in page
        data = (full_run / "report" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, png  # a real, non-empty image
    assert "heldout/overall" in page
    rows = [line.split(" | ") for line in page.splitlines()
            if line.startswith("| 1 | ") and not line.startswith("| 1 | heldout")]  # not the churn table's
    assert [r[1] for r in rows] == ["sft", "dpo"]  # the training table: round 1's trained stages
    dpo = manifest(full_run, "dpo")["results"]
    assert f"{dpo['reward_accuracy']:.1%}" in rows[1]
    churn = [line for line in page.splitlines() if line.startswith("| 1 | heldout | ")]
    assert len(churn) == 1 and int(churn[0].split(" | ")[2]) == 4 * 6  # round 1 against the base, every item
    assert "## Examples (round 1: the first DPO pair of each capability)" in page
    assert page.count("[SFT, chosen]") + page.count("  [chosen]") == page.count("[rejected]") > 0  # a pair each


def test_show_marks_what_the_real_round_selected_and_mixed(full_run):
    """`posttrain show` on the real round: every train prompt with its 4 samples; the SFT mark on a passing sample
    of exactly the prompts with an SFT example, the chosen at the top and the rejected at the bottom of the
    ranking for the prompts with a pair, and the mix's verdict agreeing with the mix's own tables."""
    from posttrain.reporting.show import journeys

    train = pq.read_table(full_run / "round_0" / "prompts" / "train.parquet", columns=["id"])["id"].to_pylist()
    r, found = journeys(full_run, num=len(train))
    assert r == 1 and [j["prompt"]["id"] for j in found] == sorted(train)
    select = {t: {row["prompt_id"]: row for row in pq.read_table(full_run / "round_1" / "select" / f"{t}.parquet")
                  .to_pylist()} for t in ("sft", "pairs")}
    mixed = {t: {i.split("#")[0] for i in pq.read_table(full_run / "round_1" / "mix" / f"{t}.parquet")["id"]
                 .to_pylist()} for t in ("sft", "pairs")}
    for j in found:
        pid, samples = j["prompt"]["id"], j["samples"]
        assert len(samples) == 4
        marked = {m: s for s in samples for m in s["went"]}
        assert ("SFT" in marked) == (pid in select["sft"]) == j["sft"]
        if "SFT" in marked:
            assert marked["SFT"]["reward"] >= 1.0
            assert marked["SFT"]["completion"] == select["sft"][pid]["messages"][-1]["content"]
        assert ("chosen" in marked) == ("rejected" in marked) == (pid in select["pairs"]) == j["pair"]
        if "chosen" in marked:
            # selection's best of the samples not cut at max_tokens (those may not be chosen)
            assert marked["chosen"] is next(s for s in samples if s["finish_reason"] != "length")
            assert marked["rejected"]["completion"] == select["pairs"][pid]["rejected"][0]["content"]
        for t in ("sft", "pairs"):
            assert (j["mix"][t] is not None and j["mix"][t].startswith("kept")) == (f"{pid}/round1" in mixed[t])


def test_show_eval_agrees_with_the_eval_tables(full_run):
    """`posttrain show --eval` on the real run: every held-out item with its base and round-1 results, as many
    passing samples as evals.parquet holds, and --failed / --regressed picking exactly the items they name."""
    from posttrain.reporting.show import eval_journeys

    heldout = pq.read_table(full_run / "round_0" / "prompts" / "heldout.parquet", columns=["id"])["id"].to_pylist()
    passing = {r: {} for r in (0, 1)}
    for r in (0, 1):
        for row in pq.read_table(full_run / f"round_{r}" / "eval" / "evals.parquet").to_pylist():
            passing[r][row["prompt_id"]] = passing[r].get(row["prompt_id"], 0) + (row["reward"] >= 1.0)
    r, found = eval_journeys(full_run, num=len(heldout))
    assert r == 1 and [j["prompt"]["id"] for j in found] == sorted(heldout)
    for j in found:
        assert {k: c for k, (n, c) in j["history"].items()} == {k: passing[k][j["prompt"]["id"]] for k in (0, 1)}
    failed = [j["prompt"]["id"] for j in eval_journeys(full_run, failed=True, num=len(heldout))[1]]
    assert failed == sorted(i for i in heldout if not passing[1][i])
    regressed = [j["prompt"]["id"] for j in eval_journeys(full_run, regressed=True, num=len(heldout))[1]]
    assert regressed == sorted(i for i in heldout if passing[0][i] and not passing[1][i])


def log_history(run: Path, stage: str) -> list[dict]:
    return json.loads((run / "round_1" / stage / "log_history.json").read_text())


def test_training_logs_are_kept_with_their_last_window_in_the_results(full_run):
    for stage, metric, name in (("sft", "mean_token_accuracy", "token_accuracy"),
                                ("dpo", "rewards/accuracies", "reward_accuracy")):
        results, history = manifest(full_run, stage)["results"], log_history(full_run, stage)
        logged = [e for e in history if "loss" in e]
        assert logged[0]["step"] == 1 and logged[-1]["step"] == results["steps"]  # first and last step logged
        assert results["final_loss"] == round(logged[-1]["loss"], 4)
        assert results[name] == round(logged[-1][metric], 4)
    assert "reward_accuracy" not in manifest(full_run, "sft")["results"]


def test_rerun_reuses_every_stage(full_run):
    before = {s: manifest(full_run, s)["output_id"] for s in STAGE_TABLES}
    proc = run_cli("round", "--recipe", str(full_run.parents[1] / "recipe.yaml"), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "every stage of the 1 round(s) is complete: nothing to run" in proc.stdout
    # stages name the prompt table they read, by content: a prompts rerun that keeps it reruns nothing
    prompts = manifest(full_run, "prompts", round_=0)
    assert manifest(full_run, "generate")["inputs"][str(full_run / "round_0" / "prompts" / "train.parquet")] == \
        "sha256:" + prompts["digests"]["train.parquet"]
    assert str(full_run / "round_0" / "prompts" / "heldout.parquet") in manifest(full_run, "eval")["inputs"]
    proc = run_cli("round", "--recipe", str(full_run.parents[1] / "recipe.yaml"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {s: manifest(full_run, s)["output_id"] for s in STAGE_TABLES} == before
    assert "vLLM engine" not in proc.stderr  # nothing to generate: no engine was started


def test_changed_section_reruns_that_stage_and_after(full_run, tmp_path):
    """On a copy of full_run: it changes the DPO and eval outputs, which the resume tests compare with."""
    recipe = copied_run(full_run.parents[1] / "recipe.yaml", tmp_path)
    run = tmp_path / "runs" / "test"
    before = {s: manifest(run, s)["output_id"] for s in ("generate", "score", "select", "mix", "sft", "dpo")}
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    old_beta = manifest(run, "dpo")["config"]["beta"]
    proc = run_cli("round", "--recipe", str(recipe), "dpo.beta=0.2", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"first to run: round 1 dpo: recipe changed: beta: {old_beta!r} -> 0.2\n" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files  # a dry run writes nothing
    # select.min_margin moves DPO pairs only: select and mix rerun, and write the same SFT table, so the
    # trained SFT model is reused (its input is that table's content); DPO trains again (its beta changed).
    sft_table = manifest(run, "mix")["digests"]["sft.parquet"]
    proc = run_cli("round", "--recipe", str(recipe), "dpo.beta=0.2", "select.min_margin=0.6")
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = {s: manifest(run, s)["output_id"] for s in before}
    assert {s for s in before if before[s] == after[s]} == {"generate", "score", "sft"}
    assert manifest(run, "mix")["digests"]["sft.parquet"] == sft_table
    assert manifest(run, "dpo")["config"]["beta"] == 0.2


def test_a_run_extended_by_a_round_asks_new_prompts_of_the_last_policy(recipe_file):
    """Two rounds, the second added later (rounds=2 on a finished one-round run), with a source that draws
    new prompts each round: round 1 is reused whole; round 2 samples its own prompts from round 1's model,
    and its mix holds both rounds' SFT examples."""
    source = "prompts.sources=[{kind: tiny, num_train: 12, num_heldout: 6, per_round: true}]"
    first = run_cli("round", "--recipe", str(recipe_file), source)
    assert first.returncode == 0, first.stderr[-4000:]
    run = recipe_file.parent / "runs" / "test"
    stages = ("generate", "score", "select", "mix", "sft", "dpo", "eval")
    before = {s: manifest(run, s)["output_id"] for s in stages}
    second = run_cli("round", "--recipe", str(recipe_file), source, "rounds=2")
    assert second.returncode == 0, second.stderr[-4000:]
    assert {s: manifest(run, s)["output_id"] for s in stages} == before  # the prompts stage reran, round 1 did not
    prompts = run / "round_0" / "prompts"
    asked = {r: set(pq.read_table(prompts / f"train_round_{r}.parquet")["id"].to_pylist()) for r in (1, 2)}
    assert schema.read(prompts / "train.parquet", "prompts").num_rows == 0 and len(asked[2]) == 4 * 12
    for r in (1, 2):
        sampled = pq.read_table(run / f"round_{r}" / "generate" / "samples.parquet")["prompt_id"].to_pylist()
        assert set(sampled) == asked[r] and len(sampled) == 4 * 12 * 4
    assert not asked[1] & asked[2]
    inputs = {Path(k).resolve() for k in manifest(run, "generate", 2)["inputs"]}
    assert inputs == {(run / "round_1" / "dpo").resolve(), (prompts / "train.parquet").resolve(),
                      (prompts / "train_round_2.parquet").resolve()}  # round 1's model, round 2's prompts
    sft = [pq.read_table(run / f"round_{r}" / "select" / "sft.parquet").num_rows for r in (1, 2)]
    assert manifest(run, "mix", 2)["results"]["input"] == sum(sft) and min(sft) > 0
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    # `posttrain show` finds round 2's prompts in its own file, and so the report's examples are round 2's
    from posttrain.reporting.show import journeys

    assert [j["prompt"]["id"] for j in journeys(run, num=3)[1]] == sorted(asked[2])[:3]
    page = (run / "report" / "report.md").read_text()
    assert "## Examples (round 2: the first DPO pair of each capability)" in page and "report: no examples" \
        not in second.stderr


def test_round_with_a_reward_model_scores_every_sample(recipe_file):
    prefs = recipe_file.parent / "prefs.jsonl"  # human-style rankings beside the verifier pairs: 3 pairs each
    prefs.write_text("".join(f'{{"prompt": "Greet guest {i}.", "ranking": ["Hello, guest {i}!", "hi", "go away"]}}\n'
                             for i in range(12)))
    overrides = ["reward_model.enabled=true", "reward_model.weight=0.1", "reward_model.eval_fraction=0.5",
                 f"reward_model.preference_sources=[{prefs}]", "dpo.enabled=false", "revise.enabled=true"]
    run = recipe_file.parent / "runs" / "test"
    # A one-stage command first: the round up to its mix, then a stop; the round command goes on from there.
    # Killed first after the RM's first optimizer step (a checkpoint every step: a switch of how, not what).
    every_step = "reward_model.checkpoint_every_steps=1"
    killed = run_cli("mix", "--recipe", str(recipe_file), *overrides, every_step,
                     env={"POSTTRAIN_KILL_AT": "round_1/reward_model/step1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert list((run / "round_1" / "reward_model.tmp" / "checkpoints").glob("checkpoint-*"))
    # Its uninterrupted twin: the same run directory without the killed stage's checkpoint, trained from scratch.
    twin = recipe_file.parent / "twin"
    twin_recipe = copied_run(recipe_file, twin)
    shutil.rmtree(twin / "runs" / "test" / "round_1" / "reward_model.tmp")
    proc = run_cli("mix", "--recipe", str(twin_recipe), *overrides)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = run_cli("mix", "--recipe", str(recipe_file), *overrides)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rm, uninterrupted = (manifest(r, "reward_model")["results"] for r in (run, twin / "runs" / "test"))
    assert rm["resumed"] is True and uninterrupted["resumed"] is False
    assert rm["steps"] == uninterrupted["steps"] >= 2
    assert rm["eval_accuracy"] == uninterrupted["eval_accuracy"]
    got, want = (weights(r / "round_1" / "reward_model" / "model") for r in (run, twin / "runs" / "test"))
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want), "the resumed RM's weights differ"
    for stage, table in (("reward_model", "scored"), ("select", "sft"), ("select", "pairs"), ("mix", "sft")):
        assert (pq.read_table(run / "round_1" / stage / f"{table}.parquet")
                .equals(pq.read_table(twin / "runs" / "test" / "round_1" / stage / f"{table}.parquet"))), (stage, table)
    assert f"mix of round 1: {run / 'round_1' / 'mix'}\n" in proc.stdout
    assert manifest(run, "mix")["results"]["sft"] > 0 and not (run / "round_1" / "sft").exists()
    mixed = manifest(run, "mix")["output_id"]
    proc = run_cli("round", "--recipe", str(recipe_file), *overrides)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert manifest(run, "mix")["output_id"] == mixed  # reused, not redone
    rm = manifest(run, "reward_model")["results"]
    assert rm["pairs"] > 0 and rm["steps"] > 0
    assert rm["eval_pairs"] > 0  # half the prompts' pairs held out
    ranked_right = rm["eval_accuracy"] * rm["eval_pairs"]  # a count of those pairs
    assert abs(ranked_right - round(ranked_right)) < 1e-3 and 0 <= round(ranked_right) <= rm["eval_pairs"]
    held_out = f"{rm['eval_accuracy']:.1%} of {rm['eval_pairs']} held-out pairs ranked right"
    assert f"{rm['pairs']:>8}  {held_out}" in proc.stdout  # the round table's RM line
    scored = pq.read_table(run / "round_1" / "reward_model" / "scored.parquet")
    assert scored.column("rm_score").null_count == 0
    # execution feedback: failed code prompts got revisions, which the RM scored beside the first tries
    revised = manifest(run, "revise")["results"]
    first_tries = pq.read_table(run / "round_1" / "score" / "scored.parquet").num_rows
    assert revised["failed_prompts"] > revised["too_long"]  # some revision conversations fit the context
    assert revised["revisions"] == 2 * (revised["failed_prompts"] - revised["too_long"])  # revise.samples = 2
    assert scored.num_rows == revised["scored"] == first_tries + revised["revisions"]
    rm_inputs = manifest(run, "reward_model")["inputs"]
    assert rm_inputs[str(run / "round_1" / "revise")] == manifest(run, "revise")["output_id"]
    assert f"    1  {revised['failed_prompts']:>14}  {revised['revisions']:>9}" in proc.stdout  # the report's line
    assert (run / "round_1" / "reward_model" / "model" / "config.json").exists()
    assert manifest(run, "select")["config"]["rm_weight"] == 0.1

    # `posttrain reward train`: the same RM outside a round, from the run's scored rounds + a preference file
    proc = run_cli("reward", "train", "--recipe", str(recipe_file), *overrides, "tracking.report_to=[tensorboard]",
                   "--out", str(recipe_file.parent / "rm"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "1 scored round(s)" in proc.stdout and "'eval_accuracy'" in proc.stdout
    assert (recipe_file.parent / "rm" / "model" / "config.json").exists()
    # tracked like a round's RM
    assert list((recipe_file.parent / "rm" / "tensorboard").glob("*/events.out.tfevents.*"))
