"""Hub pushes (posttrain/publish/hub.py): what goes where, config checks, token secrecy, failing fast offline.

What the model card says is tested in tests/test_cards.py (with this file's run summary and recipes); here,
that a push uploads the cards it built, and the dataset card's tables, built from the run's parquet files.

Nothing here reaches huggingface.co: pushes go to a fake HfApi that records its calls, the real-HfApi tests
point at http://127.0.0.1:9 (nothing listens there), and huggingface_hub's default endpoint is redirected
there too for every test, so a call that slipped through would fail instead of going out.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard, constants
from huggingface_hub.errors import HfHubHTTPError

from posttrain.publish import cards, hub

from posttrain.run import schema
from posttrain.recipe.config import HubConfig, RecipeError
from posttrain.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
SECRET = "hf_secret_test_value"
FAILS_FAST_S = 30.0  # a push to a dead endpoint fails by then (not retried); see its test
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


# --------------------------------------------------------------------------- config


def hub_error(tmp_path, **hub_keys) -> str:
    data = yaml.safe_load(TINY.read_text())
    data["hub"] = {**(data.get("hub") or {}), **hub_keys}
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert "variant.yaml" in str(e.value)
    return str(e.value)


def test_config_defaults():
    h = load_recipe(TINY).hub
    assert (h.push, h.private, h.push_model, h.push_datasets, h.push_report, h.license, h.revision_per_round) == (
        "never", True, True, True, True, "other", True)
    assert load_recipe(TINY, ["hub.repo_id=me/x", "hub.push=final"]).hub.dataset_repo == "me/x-data"


@pytest.mark.parametrize("keys,needle", [
    ({"push": "every_round"}, "hub.repo_id is required with hub.push: every_round"),
    ({"push": "final", "repo_id": None}, "hub.repo_id is required"),
    ({"repo_id": "no-owner"}, "hub.repo_id must be 'owner/name'"),
    ({"repo_id": "a/b/c"}, "hub.repo_id must be 'owner/name'"),
    ({"repo_id": "-me/model"}, "hub.repo_id must be 'owner/name'"),
    ({"repo_id": "me/mo--del"}, "hub.repo_id must be 'owner/name'"),
    ({"repo_id": "me/" + "m" * 97}, "hub.repo_id must be 'owner/name'"),
    ({"repo_id": "me/ok", "dataset_repo_id": "bad id"}, "hub.dataset_repo_id must be 'owner/name'"),
    ({"repo_id": "me/" + "m" * 92, "push": "final"}, "hub.dataset_repo_id is needed"),
    ({"repo_id": "me/ok", "push": "final", "push_model": False, "push_datasets": False, "push_report": False},
     "nothing to push"),
    ({"license": " "}, "hub.license must not be empty"),
    ({"push": "always"}, "hub.push must be one of"),
    ({"private": "yes"}, "hub.private must be bool"),
])
def test_config_errors(tmp_path, keys, needle):
    assert needle in hub_error(tmp_path, **keys)


# --------------------------------------------------------------------------- errors and the token


def http_error(status: int) -> HfHubHTTPError:
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(f"{status} Client Error", response=response)


def test_no_token_fails_before_any_call(run):
    api = FakeApi()
    with pytest.raises(hub.HubError) as e:
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=api)
    assert api.calls == []
    msg = str(e.value)
    assert "me/m" in msg and "hf auth login" in msg and "HF_TOKEN" in msg


@pytest.mark.parametrize("fail,needle", [
    ({"whoami": http_error(401)}, "401"),
    ({"create_repo": http_error(403)}, "may not write to me/m (403)"),
    ({"upload_folder": http_error(500)}, "HTTP 500"),
    ({"create_branch": ConnectionError("network is unreachable")}, "cannot reach http://fake-hub.invalid"),
])
def test_hub_failures_become_hub_errors(run, token, staging_tmp, fail, needle):
    api = FakeApi(fail=fail)
    before = snapshot(run.root)
    with pytest.raises(hub.HubError) as e:
        do_push(run, recipe_dict(repo_id="me/m", push="every_round"), api=api)
    assert needle in str(e.value) and "me/m" in str(e.value)
    if "whoami" in fail:
        assert api.calls == [("whoami",)]  # a refused token stops everything before a repo is created
    assert not [c for c in api.calls[api.calls.index(next(c for c in api.calls if c[0] in fail)) + 1:]]
    assert snapshot(run.root) == before and list(staging_tmp.glob("posttrain-hub-*")) == []


def test_read_only_token_fails_before_creating_repos(run, token):
    api = FakeApi(role="read")
    with pytest.raises(hub.HubError, match="read-only"):
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=api)
    assert api.calls == [("whoami",)]


def test_an_unresponsive_hub_times_out(run, token, monkeypatch):
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.3")
    api = FakeApi(whoami_delay=3)
    # the message is raised only while the call is still unanswered at the deadline: the timeout fired
    with pytest.raises(hub.HubError, match=r"no answer from http://fake-hub.invalid within 0.3 s"):
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=api)


def test_the_next_push_removes_a_killed_pushs_staging_folder(run, token, staging_tmp):
    """A push killed mid-way (SIGKILL: its `finally` never runs) leaves its staging folder in the temp dir; the next
    push removes it, but not the folder of a push whose process still runs, nor a folder it did not name."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = staging_tmp / f"posttrain-hub-{int(exited.stdout)}-k1ll3d"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "config.json").symlink_to(run.model / "config.json")  # staged files are links to the run's
    running = staging_tmp / f"posttrain-hub-{os.getppid()}-st1ll"  # pytest's parent: alive
    running.mkdir()
    unrelated = staging_tmp / "posttrain-hub-notes"
    unrelated.mkdir()
    do_push(run, recipe_dict(repo_id="me/m", push="final"), api=FakeApi())
    assert not stale.exists() and running.is_dir() and unrelated.is_dir()
    assert (run.model / "config.json").read_text() == '{"model_type": "llama"}'  # the link went, not its target
    assert sorted(p.name for p in staging_tmp.glob("posttrain-hub-*")) == sorted([running.name, unrelated.name])


def test_token_appears_nowhere(run, token, staging_tmp, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, huggingface_hub's included
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG)
    api = FakeApi()
    out = do_push(run, recipe_dict(repo_id="me/m", push="every_round"), api=api)
    leaky = FakeApi(fail={"upload_folder": RuntimeError(f"server said: bad token {SECRET} / hf_{'A' * 34}")})
    with pytest.raises(hub.HubError) as e:
        do_push(run, recipe_dict(repo_id="me/m", push="every_round"), api=leaky)
    assert SECRET not in str(e.value) and "hf_" + "A" * 34 not in str(e.value)
    assert SECRET not in json.dumps(out)
    assert caplog.records and not [r for r in caplog.records if SECRET in r.getMessage()]
    for upload in api.uploads:
        for name, content in upload["files"].items():
            assert SECRET.encode() not in content, name
    for path in [*run.root.rglob("*"), *staging_tmp.rglob("*")]:
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_real_hfapi_against_a_dead_endpoint_fails_fast(run, token, staging_tmp, caplog, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    caplog.set_level(logging.DEBUG)
    before = snapshot(run.root)
    start = time.monotonic()
    with pytest.raises(hub.HubError) as e:
        do_push(run, recipe_dict(repo_id="me/m", push="final"), api=HfApi(endpoint=DEAD))
    # The bound is the behaviour (a refused connection fails the push, it is not retried with backoff until
    # someone gives up), so it stays, but generous: the push takes well under a second; speed lives in bench/.
    assert time.monotonic() - start < FAILS_FAST_S
    msg = str(e.value)
    assert "me/m" in msg and f"cannot reach {DEAD}" in msg and SECRET not in msg
    assert SECRET not in caplog.text
    assert snapshot(run.root) == before and list(staging_tmp.glob("posttrain-hub-*")) == []


SCRIPT = """
import json, sys, time
from pathlib import Path
from posttrain.publish import hub
run, recipe, summary = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
start = time.monotonic()
try:
    hub.push(run, recipe, summary, 2, run / "round_2/dpo/model", run / "round_2/mix", True)
    print("PUSHED")
except hub.HubError as e:
    print(f"HubError after {time.monotonic() - start:.2f} s: {e}")
"""


def test_default_api_follows_hf_endpoint_and_fails_fast(run, tmp_path):
    """A fresh process, as a user would run it: HF_ENDPOINT and HF_TOKEN from the environment, api=None."""
    tmpdir = tmp_path / "proc-tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=DEAD, HF_TOKEN=SECRET, HF_HUB_ETAG_TIMEOUT="3", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", TMPDIR=str(tmpdir), PYTHONPATH=str(REPO))
    before = snapshot(run.root)
    recipe = recipe_dict(repo_id="me/m", push="final")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(run.root), json.dumps(recipe), json.dumps(SUMMARY)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("HubError after"), proc.stdout + proc.stderr
    assert f"cannot reach {DEAD}" in proc.stdout, proc.stdout
    assert float(proc.stdout.split()[2]) < FAILS_FAST_S  # the push itself, without the interpreter's start
    assert SECRET not in proc.stdout + proc.stderr
    assert snapshot(run.root) == before and list(tmpdir.iterdir()) == []
