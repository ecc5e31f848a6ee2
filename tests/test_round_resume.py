"""Crash and resume: a real round (vLLM + TRL on the tiny base) killed with SIGKILL at chosen points (after a
stage, mid-stage, mid-training), then rerun: it resumes where it stopped, leaves no process behind, and ends
with the same tables and weights as the uninterrupted run (`full_run`, tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import run_cli
from tests.test_round import STAGE_TABLES, copied_run, log_history, manifest, survivors, weights

pytestmark = pytest.mark.slow


def started_from(full_run: Path, run: Path, first: str) -> None:
    """`run` as full_run up to round 1's `first` stage: the stages before it are done (copied, so reused by
    fingerprint), none from it on. A kill test then runs only the stages it is about."""
    shutil.copytree(full_run, run, symlinks=True)
    later = STAGES[STAGES.index(first):]
    for path in [run / "summary.json", run / "report", *(run / "round_1" / s for s in later)]:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


STAGES = ["generate", "score", "select", "mix", "sft", "dpo", "eval"]


# The first stage each case runs: killed after select, the round runs select alone before the kill; killed
# mid-SFT, it generates first (the engine that must be gone while SFT trains).
@pytest.mark.parametrize("kill_at,first", [("round_1/select/after", "select"), ("round_1/sft/step2", "generate")])
def test_killed_run_resumes_to_the_same_result(full_run, recipe_file, kill_at, first):
    started_from(full_run, recipe_file.parent / "runs" / "test", first)
    mark = uuid.uuid4().hex
    processes = recipe_file.parent / "processes.json"
    killed = run_cli("round", "--recipe", str(recipe_file),
                     env={"POSTTRAIN_KILL_AT": kill_at, "POSTTRAIN_TEST_RUN": mark,
                          "POSTTRAIN_PROCESSES_AT_KILL": str(processes)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not survivors(mark), "a child process (e.g. the vLLM engine) outlived the killed run"
    if "sft" in kill_at:  # generation ran in this process minutes before: its engine must be gone while SFT trains
        running = json.loads(processes.read_text())
        # An engine is a child of multiprocessing's fork server (or a spawned child: spawn_main). The server
        # (vLLM imported, no model) and the sandbox's zygotes (a few MB) may stay.
        servers = {p["pid"] for p in running if "multiprocessing.forkserver" in p["cmdline"]}
        assert servers, running  # generation ran: the engines came from the fork server
        assert not [p for p in running if p["ppid"] in servers or "spawn_main" in p["cmdline"]], running
        assert all(p["pid"] in servers or "_zygote.py" in p["cmdline"] or "resource_tracker" in p["cmdline"]
                   for p in running), running
    run = recipe_file.parent / "runs" / "test"
    stage = kill_at.split("/")[1]
    if kill_at.endswith("after"):
        assert (run / "round_1" / stage / "manifest.json").exists()
        kept = manifest(run, stage)["output_id"]
    else:  # killed mid-training: no final folder, a checkpoint in the temp folder
        assert not (run / "round_1" / stage).exists()
        assert list((run / "round_1" / f"{stage}.tmp" / "checkpoints").glob("checkpoint-*"))
    # Mid-training, the rerun also turns gradient checkpointing off (as after running out of memory, the
    # other way round): a switch that takes the same steps resumes from the checkpoint, not from scratch.
    how = [] if kill_at.endswith("after") else ["sft.gradient_checkpointing=false"]
    resumed = run_cli("round", "--recipe", str(recipe_file), *how)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    if kill_at.endswith("after"):
        assert manifest(run, stage)["output_id"] == kept  # reused, not redone
    else:
        assert manifest(run, "sft")["results"]["resumed"] is True
        assert manifest(run, "sft")["results"]["steps"] == manifest(full_run, "sft")["results"]["steps"]
        # The resumed log carries on from the checkpoint's: every logging step once, none twice.
        steps = lambda r: [e["step"] for e in log_history(r, "sft") if "loss" in e]  # noqa: E731
        assert steps(run) == steps(full_run)
    assert not list(run.glob("round_*/*.tmp"))
    # Same tables as the uninterrupted run: byte-equal data, no duplicated rows.
    for stage_name, tables in STAGE_TABLES.items():
        for t in tables:
            got = pq.read_table(run / "round_1" / stage_name / f"{t}.parquet")
            want = pq.read_table(full_run / "round_1" / stage_name / f"{t}.parquet")
            assert got.equals(want), f"{stage_name}/{t} differs after resume"
    for stage_name in ("sft", "dpo"):
        got, want = (weights(run / "round_1" / stage_name / "model"),
                     weights(full_run / "round_1" / stage_name / "model"))
        assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want), f"{stage_name} weights differ"


def test_generation_killed_mid_stage_keeps_its_finished_chunks(full_run, recipe_file):
    """`generate.chunk_samples=64` splits round 1's 192 samples into 3 engine calls; killed once the second's
    results are written, the rerun generates only the third, and the samples are the uninterrupted run's (the
    logprob sums up to their last digits: another batch composition, as with two ranks)."""
    run = recipe_file.parent / "runs" / "test"
    started_from(full_run, run, "generate")
    chunked, mark = "generate.chunk_samples=64", uuid.uuid4().hex
    killed = run_cli("generate", "--recipe", str(recipe_file), "--round", "1", chunked,
                     env={"POSTTRAIN_KILL_AT": "round_1/generate/chunk1", "POSTTRAIN_TEST_RUN": mark})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not survivors(mark), "the vLLM engine outlived the killed run"
    assert len(list((run / "round_1" / "generate.tmp" / "partial").glob("*.json"))) == 2
    resumed = run_cli("generate", "--recipe", str(recipe_file), "--round", "1", chunked)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "generate: 2 of 3 chunk(s) done before, kept" in resumed.stderr
    assert not (run / "round_1" / "generate" / "partial").exists()
    got, want = (pq.read_table(r / "round_1" / "generate" / "samples.parquet") for r in (run, full_run))
    cols = [c for c in want.column_names if c != "logprob"]
    assert got.select(cols).equals(want.select(cols))
    assert got["logprob"].to_pylist() == pytest.approx(want["logprob"].to_pylist(), rel=1e-5, abs=1e-4)


def test_a_signal_mid_training_checkpoints_that_step_and_the_rerun_resumes_from_it(full_run, recipe_file):
    """SIGTERM after SFT's optimizer step 3 of 4, as a scheduler preempting the job sends it (checkpoints every 100
    steps: none but the one the signal asks for): the run saves it, stops with the shell's status for SIGTERM
    and says to rerun; the rerun resumes there and ends with the uninterrupted run's weights."""
    run = recipe_file.parent / "runs" / "test"
    started_from(full_run, run, "sft")
    once = "sft.checkpoint_every_steps=100"  # how it runs, not what it trains: the same fingerprint
    stopped = run_cli("round", "--recipe", str(recipe_file), once, env={"POSTTRAIN_SIGNAL_AT": "round_1/sft/step3"})
    assert stopped.returncode == 128 + 15, stopped.stderr[-3000:]
    assert "SIGTERM during sft: stopped after optimizer step 3" in stopped.stderr
    assert "run the same command again to resume" in stopped.stderr
    assert not (run / "round_1" / "sft").exists()
    assert [p.name for p in (run / "round_1" / "sft.tmp" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]
    resumed = run_cli("round", "--recipe", str(recipe_file), once)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert manifest(run, "sft")["results"]["resumed"] is True
    assert manifest(run, "sft")["results"]["steps"] == manifest(full_run, "sft")["results"]["steps"] == 4
    for stage_name in ("sft", "dpo"):
        got, want = (weights(r / "round_1" / stage_name / "model") for r in (run, full_run))
        assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want), f"{stage_name} weights differ"


# Every stage of round 0 and round 1, killed in turn: before it starts, mid-stage (outputs written to its
# temp folder, no manifest), after it finished, mid-training after an optimizer step, right after the trained
# model was saved, or mid-eval once 2 of the held-out set's 3 chunks are kept (generate.chunk_samples=8 for 24
# items, from that kill on: how it runs, not what, so the fingerprints stay the full run's).
KILL_SEQUENCE = ["round_0/prompts/written", "round_0/benchmarks/before", "round_0/eval/written",
                 "round_1/generate/written", "round_1/score/before", "round_1/score/written",
                 "round_1/select/written", "round_1/mix/written", "round_1/mix/after", "round_1/sft/before",
                 "round_1/sft/step2", "round_1/sft/saved", "round_1/dpo/step1", "round_1/dpo/written",
                 "round_1/eval/heldout/chunk1",
                 "round_1/eval/written"]
EVAL_CHUNKS = "generate.chunk_samples=8"


def test_killed_at_every_stage_in_turn_resumes_to_the_same_result(full_run, recipe_file):
    run = recipe_file.parent / "runs" / "test"
    for previous, point in zip([None, *KILL_SEQUENCE], KILL_SEQUENCE):
        mark = uuid.uuid4().hex
        chunks = [EVAL_CHUNKS] if point.startswith("round_1/eval") else []
        killed = run_cli("round", "--recipe", str(recipe_file), *chunks, env={"POSTTRAIN_KILL_AT": point,
                                                                             "POSTTRAIN_TEST_RUN": mark})
        assert killed.returncode == -9, f"{point}: {killed.stderr[-3000:]}"
        if previous in ("round_1/sft/saved", "round_1/dpo/written"):  # saved, no manifest yet: not retrained
            assert "finished before, not trained again" in killed.stderr, killed.stderr[-3000:]
        if previous == "round_1/eval/heldout/chunk1":  # the eval's finished chunks were kept
            assert "eval heldout: 2 of 3 chunk(s) done before, kept" in killed.stderr, killed.stderr[-3000:]
        assert not survivors(mark), f"{point}: a child process outlived the killed run"
        round_dir, stage, *_, event = point.split("/")
        complete = (run / round_dir / stage / "manifest.json").exists()
        assert complete == (event == "after"), point  # a stage is complete only once its manifest is in place
    finished = run_cli("round", "--recipe", str(recipe_file))
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert not list(run.glob("round_*/*.tmp"))
    for stage_name in ("sft", "dpo"):  # both killed mid-training: resumed from their checkpoints, same steps
        assert manifest(run, stage_name)["results"]["resumed"] is True
        assert manifest(run, stage_name)["results"]["steps"] == manifest(full_run, stage_name)["results"]["steps"]
    for round_, stage_name, t in [(0, "eval", "evals"), *((1, s, t) for s, ts in STAGE_TABLES.items() for t in ts)]:
        got = pq.read_table(run / f"round_{round_}" / stage_name / f"{t}.parquet")
        want = pq.read_table(full_run / f"round_{round_}" / stage_name / f"{t}.parquet")
        assert got.equals(want), f"round {round_} {stage_name}/{t} differs after resume"
        digest = lambda r: manifest(r, stage_name, round_)["digests"][f"{t}.parquet"]  # noqa: E731
        assert digest(run) == digest(full_run), f"round {round_} {stage_name}/{t}: not byte-equal"
    got, want = weights(run / "round_1" / "dpo" / "model"), weights(full_run / "round_1" / "dpo" / "model")
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want), "dpo weights differ"


def test_push_killed_between_its_repos_is_pushed_whole_by_the_rerun(full_run, tmp_path):
    """The push stage killed after the model repo's commit, before the dataset repo's: the rerun reruns only the
    push (every other stage reused, no engine started) and lands both repos; a third run pushes nothing. The
    pushes go through huggingface_hub to tests/_hub_stand_in.py's local stand-in for the Hub's HTTP API."""
    from tests._hub_stand_in import HubStandIn
    from tests.test_hub_offline import TOKEN

    recipe_file = copied_run(full_run.parents[1] / "recipe.yaml", tmp_path)  # full_run's other tests stay as they were
    run = tmp_path / "runs" / "test"
    before = {s: manifest(run, s)["output_id"] for s in STAGE_TABLES}
    push = ["hub.push=final", "hub.repo_id=me/killed-push"]
    with HubStandIn(TOKEN) as server:
        env = {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
               "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_DISABLE_TELEMETRY": "1"}
        killed = run_cli("round", "--recipe", str(recipe_file), *push,
                         env={**env, "POSTTRAIN_KILL_AT": "round_1/push/model"})
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert {key for key, _ in server.repos} == {"model"}  # the model repo committed, the dataset repo not
        assert not (run / "round_1" / "push" / "manifest.json").exists()

        resumed = run_cli("round", "--recipe", str(recipe_file), *push, env=env)
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert "vLLM engine" not in resumed.stderr  # only the push ran again
        assert {s: manifest(run, s)["output_id"] for s in STAGE_TABLES} == before
        model = server.files("model", "me/killed-push")
        assert {"config.json", "model.safetensors", "README.md", "report/report.md"} <= set(model)
        assert model["model.safetensors"] == (run / "round_1" / "dpo" / "model" / "model.safetensors").read_bytes()
        data = server.files("dataset", "me/killed-push-data")
        assert data["sft.parquet"] == (run / "round_1" / "mix" / "sft.parquet").read_bytes()
        assert data["pairs.parquet"] == (run / "round_1" / "mix" / "pairs.parquet").read_bytes()
        pushed = manifest(run, "push")["results"]
        assert [(c["repo_type"], c["revision"]) for c in pushed["commits"]] == [("model", "main"), ("dataset", "main")]
        assert server.unexpected == []

        commits = len(server.commits)
        again = run_cli("round", "--recipe", str(recipe_file), *push, env=env)
        assert again.returncode == 0, again.stderr[-4000:]
        assert len(server.commits) == commits  # a complete push stage is not pushed again
    assert not list(run.glob("round_*/*.tmp"))
