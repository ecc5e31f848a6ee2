"""`posttrain show`: a round's samples of a prompt, ranked as selection ranked them, marked with where each went.

The run directory is made by the real stage machinery (RunDir.stage, selection.run), with hand-written scored
samples whose outcome is known: the marks, the order and the mix's verdicts are derived by hand below."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.run import schema

from posttrain.stages import selection
from posttrain.cli import main
from posttrain.recipe.config import SelectConfig
from posttrain.run.rundir import RunDir, RunDirError
from posttrain.reporting.show import eval_journeys, journeys, render, render_eval

SEED = 0
PROMPTS = [
    {"id": "math-1", "capability": "math", "messages": [{"role": "user", "content": "2 + 2?"}], "answer": "4"},
    {"id": "math-2", "capability": "math", "messages": [{"role": "user", "content": "3 + 3?"}], "answer": "6"},
    {"id": "math-3", "capability": "math", "messages": [{"role": "user", "content": "1 + 1?"}], "answer": "2"},
]
# (prompt id, sample index, completion, reward, reason)
SAMPLES = [
    ("math-1", 0, "The answer is 5.", 0.0, "wrong answer: got 5, expected 4"),
    ("math-1", 1, "The answer is 4.", 1.0, "correct"),
    ("math-1", 2, "The answer is 4.", 1.0, "correct"),  # same text as #1: selection took one of them
    ("math-1", 3, "The answer is 3.", 0.0, "wrong answer: got 3, expected 4"),
    ("math-2", 0, "The answer is 7.", 0.0, "wrong answer: got 7, expected 6"),
    ("math-2", 1, "The answer is 5.", 0.0, "wrong answer: got 5, expected 6"),
    ("math-3", 0, "The answer is 2.", 1.0, "correct"),
    ("math-3", 1, "", None, "not applicable"),  # left out of the ranking: shown last
]

HELDOUT = [{"id": f"h{i}", "capability": "math", "messages": [{"role": "user", "content": f"{i} + 1?"}],
            "answer": str(i + 1)} for i in (1, 2)]
BENCH = [{"id": "toybench/1", "capability": "math", "messages": [{"role": "user", "content": "9 + 9?"}],
          "answer": "18"}]
# eval round -> (set, item, passed): h1 passes at the base and fails after round 1 (a regression), h2 the reverse.
EVALS = {0: [("heldout", "h1", True), ("heldout", "h2", False), ("toybench", "toybench/1", False)],
         1: [("heldout", "h1", False), ("heldout", "h2", True), ("toybench", "toybench/1", True)]}


def scored_table() -> pa.Table:
    rows = [{"prompt_id": p, "sample_index": i, "completion": c, "num_prompt_tokens": 4, "num_completion_tokens": 5,
             "logprob": -1.0, "finish_reason": "stop", "capability": "math", "verifier": "math", "reward": r,
             "reason": why, "rm_score": None} for p, i, c, r, why in SAMPLES]
    return schema.from_records(rows, "scored")


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """Round 1 of a run up to its mix: math-1's SFT example repeated twice by rebalancing, math-3's pair
    decontaminated, math-3's SFT example dropped (as dedup would)."""
    root = tmp_path / "runs" / "show"
    run = RunDir(root)
    (root / "recipe.json").write_text(json.dumps({"seed": SEED, "rounds": 1}))
    # As with a per_round source: the round's prompts in two files, train.parquet and train_round_1.parquet.
    prompts = run.stage(0, "prompts", {}, [], lambda out: {
        "train": schema.write(schema.from_records(PROMPTS[:2], "prompts"), "prompts", out / "train.parquet"),
        "round_1": schema.write(schema.from_records(PROMPTS[2:], "prompts"), "prompts", out / "train_round_1.parquet"),
        "heldout": schema.write(schema.from_records(HELDOUT, "prompts"), "prompts", out / "heldout.parquet")})
    benchmarks = run.stage(0, "benchmarks", {}, [], lambda out: {
        "toybench": schema.write(schema.from_records(BENCH, "prompts"), "prompts", out / "toybench.parquet")})
    for r in (0, 1):
        rows = [{"benchmark": b, "prompt_id": i, "sample_index": 0, "capability": "math", "completion": f"{i} in {r}",
                 "reward": float(ok), "reason": "correct" if ok else "wrong answer"} for b, i, ok in EVALS[r]]
        run.stage(r, "eval", {}, [prompts.part("heldout.parquet"), benchmarks], lambda out, rows=rows: {
            "evals": schema.write(schema.from_records(rows, "evals"), "evals", out / "evals.parquet"),
            "scores": {"heldout": {}, "toybench": {}}})
    scored = run.stage(1, "score", {}, [], lambda out: {
        "scored": schema.write(scored_table(), "scored", out / "scored.parquet")})
    cfg = SelectConfig()
    parts = [prompts.part("train.parquet"), prompts.part("train_round_1.parquet")]
    asked, samples = pa.concat_tables([pq.read_table(p.path) for p in parts]), scored.path / "scored.parquet"
    select = run.stage(1, "select", {"select": cfg, "rm_weight": 0.0}, [scored, *parts],
                       lambda out: selection.run(out, pq.read_table(samples), asked, cfg, SEED, 1))

    def mix(out: Path) -> dict:
        sft = pq.read_table(select.path / "sft.parquet")
        pairs = pq.read_table(select.path / "pairs.parquet")
        one = sft.filter(pa.compute.equal(sft["id"], "math-1/round1"))
        again = one.set_column(0, one.schema.field("id"), pa.array(["math-1/round1#rep1"]))
        pq.write_table(pa.concat_tables([one, again]), out / "sft.parquet")
        pq.write_table(pairs.filter(pa.compute.equal(pairs["id"], "math-1/round1")), out / "pairs.parquet")
        pq.write_table(pa.table({"table": ["pairs"], "id": ["math-3/round1"], "eval_id": ["heldout-9"]}),
                       out / "decontaminated.parquet")
        return {}

    run.stage(1, "mix", {}, [select], mix)
    return root


def test_samples_are_ranked_and_marked_where_selection_took_them(run_dir):
    r, found = journeys(run_dir)
    assert r == 1 and [j["prompt"]["id"] for j in found] == ["math-1", "math-2", "math-3"]
    one, two, three = found
    # math-1: the two passing samples first (the seeded tiebreak orders them), then the two failing ones.
    ranked = selection.rank([s for s in scored_table().to_pylist() if s["prompt_id"] == "math-1"], SEED, 0.0, 1.0)
    assert [s["sample_index"] for s in one["samples"]] == [s["sample_index"] for s in ranked]
    assert sorted(s["sample_index"] for s in one["samples"][:2]) == [1, 2]
    marks = {s["sample_index"]: s["went"] for s in one["samples"]}
    top, bottom = one["samples"][0]["sample_index"], one["samples"][-1]["sample_index"]
    assert marks[top] == ["SFT", "chosen"] and marks[bottom] == ["rejected"]
    assert sum(map(len, marks.values())) == 3  # the other sample with the SFT text is not marked
    assert one["sft"] and one["pair"] and one["mix"] == {"sft": "kept x2", "pairs": "kept"}
    # math-2: nothing passed, so no SFT example and (chosen must pass) no pair.
    assert not two["sft"] and not two["pair"] and all(s["went"] == [] for s in two["samples"])
    # math-3: one passing sample, the inapplicable one last; SFT dropped by the mix, the pair none (one ranked).
    assert [s["sample_index"] for s in three["samples"]] == [0, 1] and three["samples"][0]["went"] == ["SFT"]
    assert three["mix"] == {"sft": None, "pairs": "decontaminated: heldout-9"}


def test_filters_pick_prompts_by_id_capability_and_failure(run_dir):
    assert [j["prompt"]["id"] for j in journeys(run_dir, 1, ["math-3", "math-1"])[1]] == ["math-3", "math-1"]
    assert [j["prompt"]["id"] for j in journeys(run_dir, failed=True)[1]] == ["math-2"]
    assert [j["prompt"]["id"] for j in journeys(run_dir, num=1)[1]] == ["math-1"]
    assert journeys(run_dir, capability="code")[1] == []


def test_render_shows_reward_reason_marks_and_mix(run_dir):
    r, found = journeys(run_dir)
    text = render(r, found[0])
    assert text.splitlines()[0] == "== round 1  math-1  (math)"
    assert "   answer: 4" in text and "-- 4 samples, 2 passing (reward >= 1); best first:" in text
    assert "correct  [SFT, chosen]" in text and "wrong answer: got 3, expected 4  [rejected]" in text
    assert "-- SFT example: in the round's mix: kept x2" in text and "-- DPO pair: in the round's mix: kept" in text
    assert render(r, found[2]).endswith("-- SFT example: in the round's mix: dropped (dedup or rebalancing)\n"
                                        "-- DPO pair: none selected")
    long = {**found[0], "samples": [{**found[0]["samples"][0], "completion": "x" * 50 + "\ny"}]}
    assert "x" * 17 + "..." in render(r, long, width=20) and "x" * 50 + "\\ny" in render(r, long, width=0)


def test_cli_prints_and_bad_input_is_a_clear_error(run_dir, tmp_path, capsys):
    assert main(["show", str(run_dir), "--prompt", "math-2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== round 1  math-2  (math)") and "-- DPO pair: none selected" in out
    assert main(["show", str(run_dir), "--prompt", "nope"]) == 2
    assert "no prompt 'nope' in round 1 (3 prompts)" in capsys.readouterr().err
    assert main(["show", str(run_dir), "--round", "2"]) == 2
    assert "round 2 has not finished its select stage" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "not a run directory (no run.json)" in capsys.readouterr().err
    assert main(["show", str(run_dir), "--capability", "code"]) == 1


def test_a_run_without_a_finished_select_says_so(tmp_path):
    RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="no round has finished its select stage"):
        journeys(tmp_path / "run")


def test_eval_items_carry_every_round_and_regressions_are_found(run_dir):
    r, found = eval_journeys(run_dir)
    assert r == 1 and [j["prompt"]["id"] for j in found] == ["h1", "h2"]
    assert found[0]["history"] == {0: (1, 1), 1: (1, 0)} and found[1]["history"] == {0: (1, 0), 1: (1, 1)}
    assert [s["completion"] for s in found[0]["samples"]] == ["h1 in 1"]
    assert [j["prompt"]["id"] for j in eval_journeys(run_dir, regressed=True)[1]] == ["h1"]
    assert [j["prompt"]["id"] for j in eval_journeys(run_dir, failed=True)[1]] == ["h1"]
    assert [j["prompt"]["id"] for j in eval_journeys(run_dir, 0, failed=True)[1]] == ["h2"]
    assert eval_journeys(run_dir, 0, regressed=True)[1] == []  # the base has no round before it
    r, (bench,) = eval_journeys(run_dir, name="toybench")
    assert bench["history"] == {0: (1, 0), 1: (1, 1)} and bench["prompt"]["answer"] == "18"
    text = render_eval(r, bench)
    assert text.splitlines()[0] == "== round 1  eval toybench  toybench/1  (math)"
    assert "-- passing samples by round: 0: 0/1  1: 1/1" in text and "#0   reward 1.00  correct" in text
    sets = r"\(it has: \['heldout', 'toybench'\]\)"
    with pytest.raises(RunDirError, match=r"round 1's eval has no set 'humaneval' " + sets):
        eval_journeys(run_dir, name="humaneval")
    with pytest.raises(RunDirError, match=r"no prompt 'h9' in eval set heldout \(2 prompts\)"):
        eval_journeys(run_dir, prompt_ids=["h9"])


def test_cli_eval_mode(run_dir, capsys):
    assert main(["show", str(run_dir), "--eval", "--regressed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== round 1  eval heldout  h1  (math)") and "h2" not in out
    assert main(["show", str(run_dir), "--regressed"]) == 2
    assert "--regressed compares eval results: add --eval [SET]" in capsys.readouterr().err


def test_the_report_shows_the_first_pair_of_each_capability(run_dir):
    from posttrain.reporting.report import example_lines

    summary = {"run": str(run_dir), "rounds": [{"round": 0}, {"round": 1, "dpo_pairs": 1}]}
    lines = example_lines(run_dir, summary)
    assert lines[0] == "## Examples (round 1: the first DPO pair of each capability)"
    block = "\n".join(lines[lines.index("````") + 1:-2])  # inside the fence (completions may hold ```)
    assert block == render(1, journeys(run_dir, 1, ["math-1"])[1][0])  # math-1: the one prompt with a pair
    assert lines[-2:] == ["````", ""]
    assert example_lines(run_dir, {"run": str(run_dir), "rounds": [{"round": 1, "dpo_pairs": 0}]}) == []


def test_a_select_manifest_without_its_inputs_costs_the_report_its_examples_only(run_dir, caplog):
    from posttrain.reporting.report import example_lines

    path = run_dir / "round_1" / "select" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "inputs": {}}))
    with pytest.raises(RunDirError, match="names no scored table or prompt file among its inputs"):
        journeys(run_dir)
    assert example_lines(run_dir, {"run": str(run_dir), "rounds": [{"round": 1, "dpo_pairs": 1}]}) == []
    assert "report: no examples:" in caplog.text
