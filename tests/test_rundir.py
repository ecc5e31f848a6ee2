"""Run directory: atomic stage outputs, reuse by fingerprint, invalidation downstream, crash recovery."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from posttrain.recipe.config import SFTConfig
from posttrain.run.rundir import MANIFEST, RunDir, RunDirError, StageOutput, fingerprint


class Stage:
    """A stage function that records its calls and what it saw in its temp dir."""

    def __init__(self, text: str = "out", fail: bool = False, results: dict | None = None):
        self.calls = 0
        self.seen: list[set[str]] = []
        self.text, self.fail, self.results = text, fail, results

    def __call__(self, tmp: Path) -> dict | None:
        self.calls += 1
        self.seen.append({p.name for p in tmp.iterdir()})
        (tmp / "data.txt").write_text(self.text)
        if self.fail:
            raise RuntimeError("stage crashed")
        return {"rows": 3} if self.results is None else self.results


@pytest.fixture
def rd(tmp_path) -> RunDir:
    return RunDir(tmp_path / "run")


def complete(out: StageOutput) -> None:
    """The invariants of every finished stage: manifest present, no temp dir left beside it."""
    assert (out.path / MANIFEST).is_file()
    assert json.loads((out.path / MANIFEST).read_text()) == out.manifest
    assert not out.path.with_name(out.path.name + ".tmp").exists()


# --------------------------------------------------------------------------- the run directory itself


def test_new_run_dir_is_marked(tmp_path):
    RunDir(tmp_path / "a" / "b")
    assert json.loads((tmp_path / "a" / "b" / "run.json").read_text())["format"] == 1


def test_empty_existing_dir_is_accepted(tmp_path):
    (tmp_path / "run").mkdir()
    RunDir(tmp_path / "run")
    assert (tmp_path / "run" / "run.json").is_file()


def test_non_empty_foreign_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="run.json"):
        RunDir(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["thesis.tex"]  # nothing written


def test_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir(tmp_path / "run")


def test_existing_run_dir_reopens(rd):
    a = rd.stage(1, "generate", {"k": 8}, [], Stage())
    marker = (rd.root / "run.json").read_text()
    again = RunDir(rd.root)  # has run.json: reopened as it is, not re-marked (its "created" time stays)
    assert (rd.root / "run.json").read_text() == marker
    assert again.completed(1, "generate").manifest == a.manifest


# --------------------------------------------------------------------------- running and reusing


def test_stage_runs_once_then_is_reused(rd):
    fn = Stage()
    a = rd.stage(1, "generate", {"k": 8}, [], fn)
    assert fn.calls == 1
    assert a.path == rd.root / "round_1" / "generate"
    assert (a.path / "data.txt").read_text() == "out"
    complete(a)
    b = rd.stage(1, "generate", {"k": 8}, [], fn)
    assert fn.calls == 1
    assert b.output_id == a.output_id and b.path == a.path


def test_reused_after_restart(rd):
    fn = Stage()
    a = rd.stage(1, "generate", {"k": 8}, [], fn)
    again = RunDir(rd.root)  # a new process on the same run
    assert again.completed(1, "generate").output_id == a.output_id
    assert again.stage(1, "generate", {"k": 8}, [], fn).output_id == a.output_id
    assert fn.calls == 1


def test_config_key_order_does_not_matter(rd):
    fn = Stage()
    a = rd.stage(1, "generate", {"k": 8, "t": 1.0}, [], fn)
    b = rd.stage(1, "generate", {"t": 1.0, "k": 8}, [], fn)
    assert fn.calls == 1 and b.output_id == a.output_id


def test_changed_config_reruns_with_new_output_id(rd):
    a = rd.stage(1, "generate", {"k": 8}, [], Stage("old"))
    fn = Stage("new")
    b = rd.stage(1, "generate", {"k": 4}, [], fn)
    assert fn.calls == 1
    assert b.output_id != a.output_id and b.manifest["fingerprint"] != a.manifest["fingerprint"]
    assert (b.path / "data.txt").read_text() == "new"  # the old output is replaced, not merged
    complete(b)


def test_dataclass_config_is_fingerprinted_by_value(rd):
    fn = Stage()
    a = rd.stage(1, "sft", SFTConfig(learning_rate=1e-3), [], fn)
    assert rd.stage(1, "sft", SFTConfig(learning_rate=1e-3), [], fn).output_id == a.output_id
    assert fn.calls == 1
    rd.stage(1, "sft", SFTConfig(learning_rate=2e-3), [], fn)
    assert fn.calls == 2
    assert a.manifest["config"]["learning_rate"] == 1e-3  # stored as plain data


def test_same_stage_in_another_round_is_separate(rd):
    fn = Stage()
    a = rd.stage(1, "generate", {"k": 8}, [], fn)
    b = rd.stage(2, "generate", {"k": 8}, [], fn)
    assert fn.calls == 2 and b.path == rd.root / "round_2" / "generate"
    assert a.manifest["fingerprint"] != b.manifest["fingerprint"]


def test_downstream_reruns_when_upstream_reran(rd):
    up = rd.stage(1, "generate", {"k": 8}, [], Stage())
    down_fn = Stage()
    down = rd.stage(1, "score", {"v": 1}, [up], down_fn)
    assert down.manifest["inputs"] == {str(up.path): up.output_id}
    # upstream reused -> same output_id -> downstream reused
    up_again = rd.stage(1, "generate", {"k": 8}, [], Stage())
    assert rd.stage(1, "score", {"v": 1}, [up_again], down_fn).output_id == down.output_id
    assert down_fn.calls == 1
    # upstream reran (changed config) -> new output_id -> downstream reruns with the same config
    up2 = rd.stage(1, "generate", {"k": 4}, [], Stage())
    down2 = rd.stage(1, "score", {"v": 1}, [up2], down_fn)
    assert down_fn.calls == 2 and down2.output_id != down.output_id
    assert down2.manifest["inputs"] == {str(up2.path): up2.output_id}


def test_fingerprint_depends_on_each_part():
    up = StageOutput(Path("x"), {"output_id": "aaa"})
    base = fingerprint("score", 1, {"v": 1}, [up])
    assert base == fingerprint("score", 1, {"v": 1}, [StageOutput(Path("elsewhere"), {"output_id": "aaa"})])
    assert base != fingerprint("select", 1, {"v": 1}, [up])
    assert base != fingerprint("score", 2, {"v": 1}, [up])
    assert base != fingerprint("score", 1, {"v": 2}, [up])
    assert base != fingerprint("score", 1, {"v": 1}, [StageOutput(Path("x"), {"output_id": "bbb"})])
    assert base != fingerprint("score", 1, {"v": 1}, [])


# --------------------------------------------------------------------------- manifest


def test_manifest_contents(rd):
    out = rd.stage(1, "select", {"m": 0.5}, [], Stage(results={"sft": 10, "pairs": 7}))
    m = out.manifest
    assert len(m["fingerprint"]) == 16 and m["fingerprint"] == fingerprint("select", 1, {"m": 0.5}, [])
    assert len(m["output_id"]) == 32
    assert m["results"] == {"sft": 10, "pairs": 7}
    assert isinstance(m["wall_s"], (int, float)) and m["wall_s"] >= 0
    assert (m["stage"], m["round"], m["config"], m["inputs"]) == ("select", 1, {"m": 0.5}, {})
    complete(out)


def test_fn_returning_none_gives_empty_results(rd):
    out = rd.stage(1, "mix", {}, [], lambda tmp: None)
    assert out.manifest["results"] == {}
    complete(out)


def test_model_property(rd):
    trained = rd.stage(1, "sft", {}, [], lambda tmp: {"steps": 3})
    assert trained.model == str(trained.path / "model")
    base = rd.stage(0, "base", {}, [], lambda tmp: {"model_path": "org/model"})
    assert base.model == "org/model"


# --------------------------------------------------------------------------- failures and resumption


def test_failed_stage_leaves_no_output_and_next_call_runs_cleanly(rd):
    final = rd.stage_dir(1, "generate")
    with pytest.raises(RuntimeError, match="stage crashed"):
        rd.stage(1, "generate", {"k": 8}, [], Stage("partial", fail=True))
    assert not final.exists()
    assert rd.completed(1, "generate") is None
    assert not final.with_name("generate.tmp").exists()  # nothing half-written left behind
    with pytest.raises(RuntimeError, match="stage crashed"):  # a resumable stage keeps its partial work
        rd.stage(1, "sft", {"k": 8}, [], Stage("partial", fail=True), resumable=True)
    assert (rd.stage_dir(1, "sft").with_name("sft.tmp") / "data.txt").read_text() == "partial"
    assert not list(rd.root.rglob(MANIFEST))  # no manifest anywhere, not even in the .tmp
    fn = Stage("full")
    out = rd.stage(1, "generate", {"k": 8}, [], fn)
    assert fn.calls == 1
    assert fn.seen == [{".fingerprint"}]  # the crashed attempt's partial file was wiped
    assert (out.path / "data.txt").read_text() == "full"
    complete(out)


def test_failed_rerun_keeps_previous_output_for_its_own_config(rd):
    old = rd.stage(1, "generate", {"k": 8}, [], Stage("old"))
    with pytest.raises(RuntimeError):
        rd.stage(1, "generate", {"k": 4}, [], Stage("new", fail=True))
    # the previous complete output is untouched and still answers for its own config only
    assert rd.completed(1, "generate").output_id == old.output_id
    fn = Stage("new")
    assert rd.stage(1, "generate", {"k": 4}, [], fn).output_id != old.output_id and fn.calls == 1


def test_leftover_tmp_is_wiped_without_resumable(rd):
    tmp = rd.stage_dir(1, "generate").with_name("generate.tmp")
    tmp.mkdir(parents=True)
    (tmp / "junk.bin").write_text("half written")
    fn = Stage()
    out = rd.stage(1, "generate", {"k": 8}, [], fn)
    assert fn.seen == [{".fingerprint"}]
    assert not (out.path / "junk.bin").exists()
    complete(out)


def test_resumable_keeps_matching_partial_tmp(rd):
    with pytest.raises(RuntimeError):
        rd.stage(1, "sft", {"lr": 1}, [], Stage("checkpoint-50", fail=True), resumable=True)
    seen = {}

    def resume(tmp: Path) -> dict:
        seen["ckpt"] = (tmp / "data.txt").read_text()
        (tmp / "model").mkdir()
        return {"steps": 100}

    out = rd.stage(1, "sft", {"lr": 1}, [], resume, resumable=True)
    assert seen == {"ckpt": "checkpoint-50"}
    assert (out.path / "data.txt").is_file() and (out.path / "model").is_dir()
    complete(out)


def test_resumable_wipes_partial_tmp_for_another_config(rd):
    with pytest.raises(RuntimeError):
        rd.stage(1, "sft", {"lr": 1}, [], Stage("checkpoint-50", fail=True), resumable=True)
    fn = Stage()
    rd.stage(1, "sft", {"lr": 2}, [], fn, resumable=True)
    assert fn.seen == [{".fingerprint"}]


def test_resumable_wipes_tmp_without_fingerprint(rd):
    tmp = rd.stage_dir(1, "sft").with_name("sft.tmp")
    tmp.mkdir(parents=True)
    (tmp / "stale").write_text("")
    fn = Stage()
    rd.stage(1, "sft", {"lr": 1}, [], fn, resumable=True)
    assert fn.seen == [{".fingerprint"}]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM])
def test_disk_full_or_unwritable_is_a_clear_error_and_keeps_earlier_outputs(rd, err):
    old = rd.stage(1, "generate", {"k": 8}, [], Stage("old"))

    def write_fails(tmp: Path) -> dict:
        (tmp / "half.parquet").write_text("half")
        raise OSError(err, os.strerror(err), str(tmp / "data.parquet"))

    with pytest.raises(RunDirError, match=f"cannot write stage generate of round 1: {os.strerror(err)}.*intact") as e:
        rd.stage(1, "generate", {"k": 4}, [], write_fails)
    assert e.value.__cause__.errno == err  # the OSError itself stays attached for the traceback
    assert rd.completed(1, "generate").manifest == old.manifest  # untouched
    assert (rd.stage_dir(1, "generate") / "data.txt").read_text() == "old"
    assert not (rd.stage_dir(1, "generate").with_name("generate.tmp") / MANIFEST).exists()  # not marked done
    # "rerun the same command once it is writable": the stage then runs afresh and replaces the old output
    fn = Stage("new")
    new = rd.stage(1, "generate", {"k": 4}, [], fn)
    assert fn.calls == 1 and fn.seen == [{".fingerprint"}] and new.output_id != old.output_id
    assert (new.path / "data.txt").read_text() == "new"
    complete(new)


def test_other_os_errors_are_not_disguised_as_storage_errors(rd, tmp_path):
    def missing(tmp: Path) -> dict:
        raise FileNotFoundError(2, "No such file", "/nope")

    with pytest.raises(FileNotFoundError):
        rd.stage(1, "generate", {}, [], missing)

    def unreadable_model(tmp: Path) -> dict:  # a model folder or cache elsewhere: not the run directory's
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "elsewhere" / "config.json"))

    with pytest.raises(PermissionError):
        rd.stage(1, "generate", {}, [], unreadable_model)


# --------------------------------------------------------------------------- dry run


def listing(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_dry_run_names_the_first_stage_to_run_and_why_and_writes_nothing(rd):
    from posttrain.run.rundir import WouldRun

    gen, score = Stage(), Stage()
    up = rd.stage(1, "generate", {"k": 8, "sampling": {"temperature": 1.0}}, [], gen)
    rd.stage(1, "score", {"v": 1}, [up], score)
    before = listing(rd.root)

    def plan(cfg, down_cfg=None):
        dry = RunDir(rd.root, dry_run=True)
        up = dry.stage(1, "generate", cfg, [], gen)
        dry.stage(1, "score", down_cfg or {"v": 1}, [up], score)
        dry.stage(1, "select", {}, [], Stage())

    with pytest.raises(WouldRun) as would:
        plan({"k": 8, "sampling": {"temperature": 1.0}})
    assert (would.value.round, would.value.name, would.value.reason) == (1, "select", "not run yet")
    assert would.value.reused == [(1, "generate"), (1, "score")]
    with pytest.raises(WouldRun) as would:
        plan({"k": 4, "sampling": {"temperature": 0.7}})
    assert would.value.name == "generate" and would.value.reused == []
    assert would.value.reason == "recipe changed: k: 8 -> 4; sampling.temperature: 1.0 -> 0.7"
    with pytest.raises(WouldRun) as would:
        plan({"k": 8, "sampling": {"temperature": 1.0}}, {"v": 1, "extra": True})
    assert would.value.name == "score" and would.value.reason == "recipe changed: extra: None -> True"
    assert gen.calls == score.calls == 1 and listing(rd.root) == before  # nothing ran, nothing written


def test_dry_run_sees_new_inputs_and_partial_outputs(rd):
    from posttrain.run.rundir import WouldRun

    up = rd.stage(1, "generate", {"k": 8}, [], Stage())
    rd.stage(1, "score", {"v": 1}, [up], Stage())
    up2 = rd.stage(1, "generate", {"k": 4}, [], Stage())  # a run that reran generate, then stopped
    with pytest.raises(RuntimeError):
        rd.stage(1, "sft", {"lr": 1}, [up2], Stage("checkpoint-50", fail=True), resumable=True)
    dry = RunDir(rd.root, dry_run=True)
    with pytest.raises(WouldRun, match="round 1 score: new inputs from round_1/generate"):
        dry.stage(1, "score", {"v": 1}, [dry.stage(1, "generate", {"k": 4}, [], Stage())], Stage())
    with pytest.raises(WouldRun, match="resumes from its partial output"):
        dry.stage(1, "sft", {"lr": 1}, [up2], Stage(), resumable=True)


def test_dry_run_of_a_missing_run_dir_creates_nothing(tmp_path):
    from posttrain.run.rundir import WouldRun

    with pytest.raises(WouldRun, match="round 0 base: not run yet"):
        RunDir(tmp_path / "new", dry_run=True).stage(0, "base", {}, [], Stage())
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- inputs by content


def test_a_stage_reading_one_table_is_reused_when_its_upstream_reran_but_wrote_the_same_table(rd):
    def mix(pairs: str):
        def fn(tmp: Path) -> dict:
            (tmp / "sft.parquet").write_bytes(b"the same sft rows")
            (tmp / "pairs.parquet").write_bytes(pairs.encode())
            return {}
        return fn

    mixed = rd.stage(1, "mix", {"min_margin": 0.5}, [], mix("pairs at 0.5"))
    assert set(mixed.manifest["digests"]) == {"pairs.parquet", "sft.parquet"}
    sft, dpo = Stage(), Stage()
    rd.stage(1, "sft", {}, [mixed.part("sft.parquet")], sft)
    rd.stage(1, "dpo", {}, [mixed.part("pairs.parquet")], dpo)
    remixed = rd.stage(1, "mix", {"min_margin": 0.7}, [], mix("fewer pairs at 0.7"))
    assert remixed.output_id != mixed.output_id  # the stage reran
    sft_again = rd.stage(1, "sft", {}, [remixed.part("sft.parquet")], sft)
    rd.stage(1, "dpo", {}, [remixed.part("pairs.parquet")], dpo)
    assert (sft.calls, dpo.calls) == (1, 2)  # same SFT table: reused; new pairs: DPO trains again
    assert sft_again.manifest["inputs"] == {str(remixed.path / "sft.parquet"): remixed.part("sft.parquet").output_id}
    dry = RunDir(rd.root, dry_run=True)
    from posttrain.run.rundir import WouldRun

    with pytest.raises(WouldRun, match=r"new inputs from round_1/mix/pairs\.parquet"):
        dry.stage(1, "dpo", {}, [mixed.part("pairs.parquet")], Stage())


def test_a_part_of_an_older_manifest_without_digests_is_identified_by_the_stage_run(rd):
    out = rd.stage(1, "mix", {}, [], Stage())
    old = StageOutput(out.path, {k: v for k, v in out.manifest.items() if k != "digests"})
    assert old.part("sft.parquet").output_id == f"{out.output_id}/sft.parquet"
