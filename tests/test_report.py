"""The run report's numbers: `summarize` over stage manifests, `headline` per eval column, the terminal
`table` and the Markdown `training_lines`, against hand-built runs and summaries."""

from __future__ import annotations

from posttrain.report import headline, summarize, table, training_lines
from posttrain.rundir import RunDir

ONE_CAP = {"heldout": {"accuracy": {"math": 0.25, "overall": 0.25}}}


def stage(run: RunDir, round_: int, name: str, results: dict, inputs=()):
    return run.stage(round_, name, {}, list(inputs), lambda tmp: results)


# --------------------------------------------------------------------------- summarize


def test_summarize_reads_every_round_and_only_the_optional_stages_a_round_used(tmp_path):
    run = RunDir(tmp_path / "run")
    stage(run, 0, "eval", {"scores": ONE_CAP})
    gen = stage(run, 1, "generate", {"samples": 40, "too_long": 2})
    score = stage(run, 1, "score", {"pass_rate": 0.375}, [gen])
    rm = stage(run, 1, "reward_model", {"pairs": 12, "eval_pairs": 4, "eval_accuracy": 0.75, "steps": 3,
                                        "final_loss": 0.5}, [score])
    stage(run, 1, "judge", {"asked": 9}, [score])  # left by an earlier run: nothing of this round reads it
    select = stage(run, 1, "select", {"prompts": 10, "sft": 6, "pairs": 4}, [rm])
    sft = stage(run, 1, "sft", {"variants": [{"steps": 3, "train_loss": 0.9, "token_accuracy": None},
                                             {"steps": 3, "train_loss": 0.7}], "steps": 6}, [select])
    stage(run, 1, "eval", {"scores": {"heldout": {"accuracy": {"math": 0.5, "overall": 0.5}}}}, [sft])

    summary = summarize(run, 1)
    assert summary["run"] == str(run.root) and [r["round"] for r in summary["rounds"]] == [0, 1]
    base, r1 = summary["rounds"]
    assert (base["eval"], base["samples"], base["pass_rate"], base["training"], base["reward_model"]) == \
        (ONE_CAP, None, None, {}, None)
    assert set(base["wall_s"]) == {"eval"}
    assert (r1["samples"], r1["too_long"], r1["pass_rate"], r1["prompts"], r1["sft_examples"], r1["dpo_pairs"],
            r1["sft_mix"], r1["mix"]) == (40, 2, 0.375, 10, 6, 4, None, None)
    assert r1["reward_model"] == {"pairs": 12, "eval_pairs": 4, "eval_accuracy": 0.75}
    # variants: the first variant's numbers (its None left out), their count, and the steps of all of them
    assert r1["training"] == {"reward_model": {"steps": 3, "final_loss": 0.5},
                              "sft": {"steps": 6, "train_loss": 0.9, "variants": 2}}
    assert set(r1["wall_s"]) == {"generate", "score", "reward_model", "select", "sft", "eval"}  # not judge


def test_a_reward_model_no_stage_reads_is_left_out(tmp_path):
    # e.g. the recipe switched the reward model off after a run that trained one: select reads score now
    run = RunDir(tmp_path / "run")
    score = stage(run, 1, "score", {"pass_rate": 0.5})
    stage(run, 1, "reward_model", {"pairs": 12, "steps": 3}, [score])
    stage(run, 1, "select", {"prompts": 2, "sft": 1, "pairs": 0}, [score])
    r1 = summarize(run, 1)["rounds"][1]
    assert (r1["reward_model"], r1["training"], set(r1["wall_s"])) == (None, {}, {"score", "select"})


# --------------------------------------------------------------------------- headline and table


def test_headline_drops_overall_when_there_is_one_capability():
    assert headline(ONE_CAP) == {"heldout/math": 0.25}


def test_headline_keeps_overall_with_several_capabilities_and_reads_benchmarks_pass_at_1():
    scores = {"heldout": {"accuracy": {"math": 0.5, "code": 0.25, "overall": 0.375}},
              "gsm8k": {"pass@1": 0.125, "n": 8}, "humaneval": {}}
    assert headline(scores) == {"heldout/math": 0.5, "heldout/code": 0.25, "heldout/overall": 0.375,
                                "gsm8k": 0.125, "humaneval": 0.0}


SUMMARY = {"run": "/runs/demo", "rounds": [
    {"round": 0, "eval": ONE_CAP, "samples": None, "pass_rate": None, "sft_examples": None, "sft_mix": None,
     "dpo_pairs": None, "wall_s": {"eval": 3.0}, "reward_model": None, "training": {}},
    {"round": 1, "eval": {"heldout": {"accuracy": {"math": 0.5, "overall": 0.5}}, "gsm8k": {"pass@1": 0.125}},
     "samples": 40, "pass_rate": 0.375, "sft_examples": 6, "sft_mix": 5, "dpo_pairs": 4,
     "wall_s": {"generate": 12.4, "score": 3.6}, "reward_model": {"pairs": 12, "eval_pairs": 4, "eval_accuracy": 0.75},
     "training": {"reward_model": {"steps": 0}, "sft": {"steps": 8, "final_loss": 1.25, "token_accuracy": 0.5},
                  "dpo": {"steps": 4, "final_loss": 0.6931, "reward_accuracy": 0.75, "reward_margin": 0.0123}}},
    {"round": 2, "eval": {}, "samples": None, "pass_rate": None, "sft_examples": None, "sft_mix": None,
     "dpo_pairs": None, "wall_s": {}, "reward_model": {"pairs": 3, "eval_pairs": 0},
     "training": {"reward_model": {"steps": 3, "train_accuracy": 0.625, "variants": 2}}},
]}


def test_table_renders_eval_columns_per_round_then_the_round_numbers():
    # columns 12 wide (the minimum; "heldout/math" is 12); a number missing in a round is "-"
    assert table(SUMMARY).splitlines() == [
        "eval (held-out accuracy per capability; pass@1 per benchmark; round 0 = base)",
        "round  heldout/math         gsm8k",
        "    0         25.0%             -",
        "    1         50.0%         12.5%",
        "    2             -             -",
        "",
        "round  samples  pass_rate  sft_new  sft_mix  dpo_pairs  wall time per stage (s)",
        "    1       40      37.5%        6        5          4  generate=12 score=4",
        "    2        -          -        -        -          -  ",
        "",
        "round  rm_pairs  reward model accuracy (50% = chance)",
        "    1        12  75.0% of 4 held-out pairs ranked right",
        "    2         3  no held-out pairs",
    ]


def test_training_lines_give_a_markdown_row_per_round_and_trained_stage():
    # round 1's reward model logged no step (nothing trained): no row; a missing number is "-"
    assert training_lines(SUMMARY) == [
        "## Training per round (last logging window)",
        "",
        "| round | stage | steps | final loss | token acc. | DPO reward acc. | DPO margin | RM pair acc. |",
        "|---|---|---|---|---|---|---|---|",
        "| 1 | sft | 8 | 1.250 | 50.0% | - | - | - |",
        "| 1 | dpo | 4 | 0.693 | - | 75.0% | 0.012 | - |",
        "| 2 | reward_model | 3 | - | - | - | - | 62.5% |",
        "",
    ]


def test_training_lines_are_empty_without_training():
    assert training_lines({"run": "r", "rounds": [{"round": 0, "eval": ONE_CAP, "training": {}}]}) == []
