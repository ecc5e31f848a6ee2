"""Hub pushes (posttrain/publish/hub.py): what goes where, and the cards a push uploads.

What the model card says is tested in tests/test_cards.py (with this file's run summary and recipes); here,
that a push uploads the cards it built, and the dataset card's tables, built from the run's parquet files.
Config checks, push failures, token secrecy and failing fast offline are in tests/test_hub_errors.py, which
shares this file's fake HfApi, run fixture and autouse no_real_hub fixture.

Nothing here reaches huggingface.co: pushes go to a fake HfApi that records its calls, and huggingface_hub's
default endpoint is redirected to http://127.0.0.1:9 (nothing listens there) for every test, so a call that
slipped through would fail instead of going out.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, constants

from posttrain.publish import cards, hub

from posttrain.run import schema
from posttrain.recipe.config import HubConfig
from posttrain.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
SECRET = "hf_secret_test_value"
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch, tmp_path):
    """No token unless a test sets one, no token file, and every default endpoint dead."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setattr(constants, "ENDPOINT", DEAD)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return SECRET


@pytest.fixture
def staging_tmp(monkeypatch, tmp_path):
    """tempfile's folder, so a test can see that the staging folder is gone afterwards (others may write there too:
    torch's inductor cache appears when the first test of a process imports it)."""
    import tempfile

    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


class FakeApi:
    """Records HfApi calls and snapshots each uploaded folder (contents read through the staging symlinks)."""

    endpoint = "http://fake-hub.invalid"

    def __init__(self, fail: dict | None = None, role: str = "write", whoami_delay: float = 0):
        self.calls: list[tuple] = []
        self.uploads: list[dict] = []
        self.fail, self.role, self.whoami_delay = fail or {}, role, whoami_delay

    def _maybe_fail(self, name):
        if name in self.fail:
            raise self.fail[name]

    def whoami(self):
        time.sleep(self.whoami_delay)
        self.calls.append(("whoami",))
        self._maybe_fail("whoami")
        return {"name": "tester", "auth": {"accessToken": {"role": self.role}}}

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        self._maybe_fail("create_repo")

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False):
        self.calls.append(("create_branch", repo_id, repo_type, branch, exist_ok))
        self._maybe_fail("create_branch")

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, repo_type, revision))
        self._maybe_fail("upload_folder")
        root = Path(folder_path)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        self.uploads.append({"repo_id": repo_id, "repo_type": repo_type, "revision": revision, "files": files,
                             "message": commit_message})
        n = len(self.uploads)
        return SimpleNamespace(commit_url=f"https://hub.test/{repo_id}/commit/{n:040d}", oid=f"{n:040d}")

    def upload(self, repo_type: str, revision: str) -> dict:
        [u] = [u for u in self.uploads if u["repo_type"] == repo_type and u["revision"] == revision]
        return u


# --------------------------------------------------------------------------- a small run


def round_entry(r: int, acc: dict | None, pass1: float, mix: dict | None = None) -> dict:
    ev = {"heldout": {"accuracy": acc, "items": 40, "pass@1": acc["overall"], "too_long": 1},
          "humaneval": {"items": 16, "pass@1": pass1, "pass@4": pass1 + 0.1, "too_long": 3}} if acc else {}
    return {"round": r, "eval": ev, "samples": 800 * r or None, "too_long": 0, "pass_rate": 0.25 + 0.01 * r,
            "prompts": 100, "sft_examples": 60 + r, "dpo_pairs": 50 + r, "sft_mix": 35, "mix": mix,
            "wall_s": {"eval": 1.0}}


MIX2 = {"input": 41, "exact_dups": 7, "near_dups": 3, "contaminated": 2, "contaminated_pairs": 1,
        "input_by_capability": {"math": 30, "code": 11}, "before_rebalance": {"math": 25, "code": 4},
        "by_capability": {"math": 27, "code": 8}}
SUMMARY = {"run": "runs/hubtest", "rounds": [
    round_entry(0, {"math": 0.05, "code": 0.1, "overall": 0.075}, 0.0),
    round_entry(1, {"math": 0.111, "code": 0.222, "overall": 0.1665}, 0.03125, {**MIX2, "input": 20}),
    round_entry(2, {"math": 0.123, "code": 0.456, "overall": 0.2895}, 0.0625, MIX2),
]}


def recipe_dict(**hub_keys) -> dict:
    overrides = [f"hub.{k}={json.dumps(v)}" for k, v in hub_keys.items()]
    return json.loads(json.dumps(dataclasses.asdict(load_recipe(TINY, overrides)), default=str))


def write_rows(path: Path, name: str, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.TABLES[name]), path)


@pytest.fixture
def run(tmp_path) -> SimpleNamespace:
    root = tmp_path / "runs" / "hubtest"
    model = root / "round_2" / "dpo" / "model"
    (model / "checkpoint-2").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (model / "tokenizer.json").write_text("{}")
    (model / "training_args.bin").write_bytes(b"pickle")
    (model / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    mix = root / "round_2" / "mix"
    mix.mkdir(parents=True)
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    write_rows(mix / "sft.parquet", "sft", [
        {"id": f"s{i}", "prompt_id": f"p{i}", "capability": cap, "round": 1 + i % 2, "messages": msgs, "reward": 1.0}
        for i, cap in enumerate(["math", "math", "math", "code", "code"])])
    write_rows(mix / "pairs.parquet", "pairs", [
        {"id": f"d{i}", "prompt_id": f"p{i}", "capability": cap, "round": 2, "prompt": msgs[:1], "chosen": msgs[1:],
         "rejected": msgs[1:], "chosen_reward": 1.0, "rejected_reward": 0.0}
        for i, cap in enumerate(["math", "math", "tools"])])
    (mix / "decontaminated.parquet").write_bytes(b"x")
    (mix / "manifest.json").write_text("{}")
    report = root / "report"
    report.mkdir()
    (report / "report.md").write_text("# Run report")
    (report / "eval.png").write_bytes(b"\x89PNG")
    (root / "run.json").write_text('{"format": 1}')
    return SimpleNamespace(root=root, model=model, mix=mix)


def do_push(run, recipe, round_=2, final=True, api=None):
    return hub.push(run.root, recipe, copy.deepcopy(SUMMARY), round_, run.model, run.mix, final, api=api)


def snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "README.md", "report/report.md", "report/eval.png"}
DATA_FILES = {"sft.parquet", "pairs.parquet", "README.md"}


# --------------------------------------------------------------------------- where each round goes


@pytest.mark.parametrize("push,per_round,round_,final,expected", [
    ("never", True, 2, True, []),
    ("final", True, 1, False, []),
    ("final", True, 2, True, ["main"]),
    ("every_round", True, 1, False, ["round-1"]),
    ("every_round", True, 2, True, ["round-2", "main"]),
    ("every_round", False, 1, False, ["main"]),
    ("every_round", False, 2, True, ["main"]),
])
def test_revisions(push, per_round, round_, final, expected):
    assert hub.revisions(HubConfig(repo_id="me/m", push=push, revision_per_round=per_round), round_, final) == expected


def test_every_round_pushes_a_round_branch_and_the_final_round_to_main(run, token):
    recipe = recipe_dict(repo_id="me/tiny-model", push="every_round")
    api = FakeApi()
    out = hub.push(run.root, recipe, SUMMARY, 1, run.model, run.mix, False, api=api)
    assert api.calls == [
        ("whoami",),
        ("create_repo", "me/tiny-model", "model", True, True),
        ("create_branch", "me/tiny-model", "model", "round-1", True),
        ("upload_folder", "me/tiny-model", "model", "round-1"),
        ("create_repo", "me/tiny-model-data", "dataset", True, True),
        ("create_branch", "me/tiny-model-data", "dataset", "round-1", True),
        ("upload_folder", "me/tiny-model-data", "dataset", "round-1"),
    ]
    assert out["revisions"] == ["round-1"]
    assert out["repos"] == {"model": "me/tiny-model", "dataset": "me/tiny-model-data"}
    assert [c["commit_url"] for c in out["commits"]] == [f"https://hub.test/me/tiny-model/commit/{1:040d}",
                                                         f"https://hub.test/me/tiny-model-data/commit/{2:040d}"]
    json.dumps(out)  # goes into a stage manifest

    api = FakeApi()
    out = do_push(run, recipe, 2, True, api)
    uploads = [c for c in api.calls if c[0] == "upload_folder"]
    assert uploads == [("upload_folder", "me/tiny-model", "model", "round-2"),
                       ("upload_folder", "me/tiny-model", "model", "main"),
                       ("upload_folder", "me/tiny-model-data", "dataset", "round-2"),
                       ("upload_folder", "me/tiny-model-data", "dataset", "main")]
    assert [c[3] for c in api.calls if c[0] == "create_branch"] == ["round-2", "round-2"]  # main is never created
    assert [(c["repo_type"], c["revision"]) for c in out["commits"]] == [
        ("model", "round-2"), ("model", "main"), ("dataset", "round-2"), ("dataset", "main")]
    model = api.upload("model", "main")
    assert set(model["files"]) == MODEL_FILES  # no training_args.bin, no checkpoint-*
    assert model["files"]["model.safetensors"] == (run.model / "model.safetensors").read_bytes()
    assert set(api.upload("dataset", "main")["files"]) == DATA_FILES
    assert api.upload("dataset", "main")["files"]["sft.parquet"] == (run.mix / "sft.parquet").read_bytes()
    assert "round 2 (final)" in model["message"]


def test_final_pushes_only_the_last_round_to_main(run, token):
    recipe = recipe_dict(repo_id="me/tiny-model", push="final", private=False)
    api = FakeApi()
    assert hub.push(run.root, recipe, SUMMARY, 1, run.model, run.mix, False, api=api) == {}
    assert api.calls == []
    out = do_push(run, recipe, 2, True, api)
    assert [c for c in api.calls if c[0] != "whoami"] == [
        ("create_repo", "me/tiny-model", "model", False, True),
        ("upload_folder", "me/tiny-model", "model", "main"),
        ("create_repo", "me/tiny-model-data", "dataset", False, True),
        ("upload_folder", "me/tiny-model-data", "dataset", "main"),
    ]
    assert out["private"] is False and out["revisions"] == ["main"]


def test_every_round_without_revisions_goes_to_main(run, token):
    api = FakeApi()
    recipe = recipe_dict(repo_id="me/m", push="every_round", revision_per_round=False, dataset_repo_id="org/the-data")
    out = hub.push(run.root, recipe, SUMMARY, 1, run.model, run.mix, False, api=api)
    assert not [c for c in api.calls if c[0] == "create_branch"]
    assert [(c[1], c[3]) for c in api.calls if c[0] == "upload_folder"] == [("me/m", "main"), ("org/the-data", "main")]
    assert out["repos"]["dataset"] == "org/the-data"


def test_never_pushes_nothing_and_needs_no_token(run):
    api = FakeApi()
    assert do_push(run, recipe_dict(), api=api) == {}
    assert api.calls == []


@pytest.mark.parametrize("model,datasets,report", [
    (True, True, True), (False, True, True), (True, False, True), (True, True, False), (False, False, True),
    (False, True, False), (True, False, False)])
def test_push_switches(run, token, model, datasets, report):
    api = FakeApi()
    recipe = recipe_dict(repo_id="me/m", push="final", push_model=model, push_datasets=datasets, push_report=report)
    out = do_push(run, recipe, api=api)
    model_files = {f for f in MODEL_FILES
                   if (model and not f.startswith("report/")) or (report and f.startswith("report/"))}
    repos = {u["repo_type"]: set(u["files"]) for u in api.uploads}
    assert repos == {**({"model": model_files} if model_files else {}), **({"dataset": DATA_FILES} if datasets else {})}
    assert set(out["repos"]) == set(repos)
    assert {c[2] for c in api.calls if c[0] == "create_repo"} == set(repos)


def test_missing_report_is_skipped_and_missing_data_fails_before_any_call(run, token, caplog):
    import shutil

    shutil.rmtree(run.root / "report")
    api = FakeApi()
    with caplog.at_level(logging.WARNING, logger="posttrain"):
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=api)
    assert not any(f.startswith("report/") for f in api.upload("model", "main")["files"])
    assert "no report" in caplog.text
    (run.mix / "pairs.parquet").unlink()
    api = FakeApi()
    with pytest.raises(hub.HubError, match=r"me/m-data.*pairs\.parquet"):
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=api)
    assert api.calls == []


# --------------------------------------------------------------------------- the cards a push uploads


def test_pushed_cards_are_the_built_cards(run, token):
    api = FakeApi()
    recipe = recipe_dict(repo_id="me/m", push="final")
    do_push(run, recipe, api=api)
    readme = api.upload("model", "main")["files"]["README.md"].decode()
    assert readme == str(cards.model_card(recipe, SUMMARY, 2, recipe["base_model"]))
    data_card = DatasetCard(api.upload("dataset", "main")["files"]["README.md"].decode())
    meta = data_card.data.to_dict()
    assert [c["config_name"] for c in meta["configs"]] == ["sft", "pairs"]
    assert meta["license"] == "other"
    text = data_card.text
    assert "## `sft` (sft.parquet, 5 rows)" in text and "| messages |" in text
    assert "| chosen_reward | `double` |" in text
    assert "| math | 3 |" in text and "| code | 2 |" in text and "| tools | 1 |" in text
    assert 'load_dataset("me/m-data", "pairs", split="train")' in text

