"""Hub pushes that must not go through: config checks, Hub failures, the token's secrecy, failing fast offline.

A recipe's hub section is checked when it loads. A push without a usable token, or one the Hub refuses or never
answers, fails with a HubError naming the repo (a missing or read-only token before any repo is created), and
leaves the run folder as it was and no staging folder behind. The token never appears in an error, a log, an
upload or a file. The real-HfApi tests point at http://127.0.0.1:9 (nothing listens there) and must fail fast,
not retry. What a successful push uploads where is in tests/test_hub.py, whose fake HfApi, run fixture and
autouse no_real_hub fixture (every default endpoint dead, no token unless a test sets one) are used here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub.errors import HfHubHTTPError

from posttrain.publish import hub
from posttrain.recipe.config import RecipeError
from posttrain.recipe.load import load_recipe
from tests import test_hub
from tests.test_hub import DEAD, REPO, SECRET, SUMMARY, TINY, FakeApi, do_push, recipe_dict, snapshot

# tests/test_hub.py's fixtures (no_real_hub is autouse), bound here so that pytest finds them; bound, not imported by
# name, since ruff reads a test argument named like an imported name as a redefinition of an unused import (F811).
no_real_hub, run, staging_tmp, token = test_hub.no_real_hub, test_hub.run, test_hub.staging_tmp, test_hub.token


FAILS_FAST_S = 30.0  # a push to a dead endpoint fails by then (not retried); see its test


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
