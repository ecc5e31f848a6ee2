"""The run report's numbers: `summarize` over stage manifests, `headline` per eval column, the terminal
`table`, the Markdown `training_lines`, per-benchmark `eval_lines`, the mix's `composition_table` and the
decontaminated items, against hand-built runs and summaries."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.reporting.report import (churn_lines, composition_table, decontaminated, decontaminated_lines,
                                        eval_churn, eval_lines, headline, metrics, summarize, table, training_lines,
                                        write_report)
from posttrain.run.rundir import RunDir

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
    assert r1["reward_model"] == {"pairs": 12, "eval_pairs": 4, "eval_accuracy": 0.75, "eval_by_capability": None}
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
     "wall_s": {"generate": 12.4, "score": 3.6}, "reward_model": {
         "pairs": 12, "eval_pairs": 4, "eval_accuracy": 0.75,
         "eval_by_capability": {"code": {"pairs": 1, "accuracy": 0.0}, "math": {"pairs": 3, "accuracy": 1.0}}},
     "training": {"reward_model": {"steps": 0}, "sft": {"steps": 8, "final_loss": 1.25, "token_accuracy": 0.5},
                  "dpo": {"steps": 4, "final_loss": 0.6931, "reward_accuracy": 0.75, "reward_margin": 0.0123}}},
    {"round": 2, "eval": {}, "samples": None, "pass_rate": None, "sft_examples": None, "sft_mix": None,
     "dpo_pairs": None, "wall_s": {}, "reward_model": {"pairs": 3, "eval_pairs": 0},
     "training": {"reward_model": {"steps": 3, "train_accuracy": 0.625, "variants": 2}}},
]}


def test_table_counts_right_answers_failed_for_a_wrong_step_in_rounds_that_had_any():
    rounds = [{**r, "wrong_steps": n} for r, n in zip(SUMMARY["rounds"], (None, 253, 0))]
    lines = table({**SUMMARY, "rounds": rounds}).splitlines()
    at = lines.index("round  wrong_steps  (right answers failed for a false equation: score.check_steps)")
    assert lines[at + 1:at + 3] == ["    1          253", ""]
    assert not any("wrong_steps" in line for line in table(SUMMARY).splitlines())


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
        "    1        12  75.0% of 4 held-out pairs ranked right (code 0% of 1, math 100% of 3)",
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


# --------------------------------------------------------------------------- every eval metric


MMATH = {"items": 8, "pass@1": 0.25, "too_long": 1, "acc_en": 0.5, "acc_fr": 0.0, "language_match": 0.875}


def test_metrics_put_pass_at_k_first_and_counts_last():
    assert list(metrics({**MMATH, "pass@10": 0.5, "pass@4": 0.375})) == [
        "pass@1", "pass@4", "pass@10", "acc_en", "acc_fr", "language_match", "items", "too_long"]
    assert metrics({"accuracy": {"math": 0.5, "overall": 0.5}, "pass@1": 0.5}) == {
        "pass@1": 0.5, "accuracy/math": 0.5, "accuracy/overall": 0.5}


def test_eval_lines_give_every_metric_of_every_benchmark_per_round():
    # headline keeps pass@1 only; the per-benchmark tables keep pass@4, acc_<lang> and language_match
    summary = {"run": "r", "rounds": [
        {"round": 0, "eval": {"mmath": MMATH, "humaneval": {"pass@1": 0.125, "pass@4": 0.3125}}},
        {"round": 1, "eval": {"mmath": {**MMATH, "acc_fr": 0.25}}},
        {"round": 2, "eval": {}}]}
    lines = eval_lines(summary)
    assert lines[:6] == ["## Eval per benchmark (every metric; round 0 = base)", "", "### mmath", "",
                         "| metric | round 0 | round 1 |", "|---|---|---|"]
    for row in ("| acc_en | 50.0% | 50.0% |", "| acc_fr | 0.0% | 25.0% |", "| language_match | 87.5% | 87.5% |",
                "| items | 8 | 8 |", "| pass@4 | 31.2% | - |"):
        assert row in lines, row
    assert eval_lines({"run": "r", "rounds": [{"round": 0, "eval": {}}]}) == []


# --------------------------------------------------------------------------- mix composition


COMPOSITION = {
    "input": {"capability": {"code": 6, "math": 10}, "topic": {"code": 6, "math": 10}, "quality": {"high": 16}},
    "before": {"capability": {"code": 4, "math": 8}, "topic": {"code": 4, "math": 8}, "quality": {"high": 12}},
    "after": {"capability": {"code": 4, "math": 6}, "topic": {"code": 4, "math": 6}, "quality": {"high": 10}}}
MIX = {"input": 16, "exact_dups": 3, "near_dups": 0, "contaminated": 1, "contaminated_pairs": 2,
       "input_by_capability": {"code": 6, "math": 10}, "before_rebalance": {"code": 4, "math": 8},
       "by_capability": {"code": 4, "math": 6}, "composition": COMPOSITION}


def test_composition_table_rows_per_capability_and_tag_against_the_targets():
    # a target capability with no data still gets a row; a tag kind the mix did not count has none
    assert composition_table(MIX, {"code": 0.5, "math": 0.4, "tools": 0.1}) == [
        "| by | value | selected | deduplicated + decontaminated | final mix | share of the final mix | target |",
        "|---|---|---|---|---|---|---|",
        "| capability | code | 6 | 4 | 4 | 40.0% | 50.0% |",
        "| capability | math | 10 | 8 | 6 | 60.0% | 40.0% |",
        "| capability | tools | 0 | 0 | 0 | 0.0% | 10.0% |",
        "| topic | code | 6 | 4 | 4 | 40.0% | - |",
        "| topic | math | 10 | 8 | 6 | 60.0% | - |",
        "| quality | high | 16 | 12 | 10 | 100.0% | - |",
    ]


def test_composition_table_without_tags_or_input_counts():
    # untagged: capability rows only; tagged by an older mix (no "input" composition): "-" where not counted
    untagged = {k: v for k, v in MIX.items() if k != "composition"}
    assert composition_table(untagged, None)[2:] == ["| capability | code | 6 | 4 | 4 | 40.0% | - |",
                                                     "| capability | math | 10 | 8 | 6 | 60.0% | - |"]
    older = {**MIX, "composition": {k: v for k, v in COMPOSITION.items() if k != "input"}}
    assert "| quality | high | - | 12 | 10 | 100.0% | - |" in composition_table(older, None)


def test_decontaminated_items_counted_and_the_first_twenty_listed(tmp_path):
    folder = tmp_path / "round_1" / "mix"
    folder.mkdir(parents=True)
    rows = [{"table": "sft" if i < 20 else "pairs", "id": f"s{i:02d}", "eval_id": f"e{i}"} for i in range(23)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "decontaminated.parquet")
    summary = {"rounds": [{"round": 0, "mix": None}, {"round": 1, "mix": MIX}, {"round": 2, "mix": MIX}]}
    removed = decontaminated(tmp_path, summary)
    assert list(removed) == [1] and removed[1] == (23, rows[:20])  # round 2 has no file, round 0 no mix
    lines = decontaminated_lines(1, removed[1])
    assert lines[0] == ("Decontamination removed 23 items (SFT examples and DPO pairs); the first 20, id -> eval "
                        "item (the full list: `round_1/mix/decontaminated.parquet` in the run folder):")
    assert lines[2:4] == ["- sft `s00` -> `e0`", "- sft `s01` -> `e1`"] and len(lines) == 23
    assert decontaminated_lines(1, (0, []))[0].startswith("Decontamination removed nothing")
    assert decontaminated_lines(1, None) == []


def test_report_page_has_the_eval_and_composition_tables_and_tags_of_every_round(tmp_path):
    folder = tmp_path / "round_2" / "mix"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"table": "sft", "id": "s1", "eval_id": "mmath-3"}]),
                   folder / "decontaminated.parquet")
    entry = {"samples": 40, "pass_rate": 0.5, "prompts": 10, "sft_examples": 6, "sft_mix": 10, "dpo_pairs": 4,
             "mix": MIX, "wall_s": {"mix": 1.0}, "reward_model": None, "revise": None, "training": {}}
    summary = {"run": str(tmp_path), "rounds": [
        {"round": 0, "eval": {"mmath": MMATH}, "samples": None, "pass_rate": None, "mix": None, "wall_s": {},
         "reward_model": None, "revise": None, "training": {}},
        {**entry, "round": 1, "eval": {"mmath": MMATH}}, {**entry, "round": 2, "eval": {}}]}
    page = write_report(tmp_path, summary, {"code": 0.5, "math": 0.5}).read_text()
    for text in ("| language_match | 87.5% | 87.5% |", "### Round 1", "### Round 2",
                 "| capability | math | 10 | 8 | 6 | 60.0% | 50.0% |", "- sft `s1` -> `mmath-3`", "![SFT mix by tag"):
        assert text in page, text
    assert page.count("| capability | code | 6 | 4 | 4 | 40.0% | 50.0% |") == 2  # a table per round
    png = (tmp_path / "report" / "tags.png").read_bytes()
    assert int.from_bytes(png[20:24], "big") == 2 * 400  # a row of panels (4 in at 100 dpi) per tagged round


def test_eval_churn_counts_items_fixed_and_broken_between_evaluated_rounds(tmp_path):
    # round -> (set, item, sample rewards): a fixed, b broken, c passing throughout, d failing throughout; the
    # benchmark is new in round 2 (nothing to compare), and round 1 has no eval (round 2 compares with round 0).
    evals = {0: [("heldout", "a", [0.0, 0.0]), ("heldout", "b", [1.0, 0.0]), ("heldout", "c", [1.0, 1.0]),
                 ("heldout", "d", [0.0, None])],
             2: [("heldout", "a", [0.0, 1.0]), ("heldout", "b", [0.0, 0.0]), ("heldout", "c", [1.0, 0.0]),
                 ("heldout", "d", [0.0, 0.0]), ("bench", "x", [1.0, 1.0])]}
    for r, items in evals.items():
        folder = tmp_path / f"round_{r}" / "eval"
        folder.mkdir(parents=True)
        rows = [{"benchmark": b, "prompt_id": i, "reward": x} for b, i, xs in items for x in xs]
        pq.write_table(pa.Table.from_pylist(rows), folder / "evals.parquet")
    summary = {"run": "runs/t", "rounds": [{"round": 0, "eval": ONE_CAP}, {"round": 1, "eval": {}},
                                           {"round": 2, "eval": ONE_CAP}]}
    churn = eval_churn(tmp_path, summary)
    assert churn == {2: {"heldout": {"items": 4, "passing": 2, "fixed": 1, "broken": 1}}}
    lines = churn_lines(churn, "runs/t")
    assert lines[0] == "## Eval items fixed and broken per round" and "| 2 | heldout | 4 | 2 | 1 | 1 |" in lines
    assert "`posttrain show runs/t --eval SET --round R --regressed`" in lines[2]
    assert churn_lines({}, "runs/t") == []
