"""Hub pushes end to end, offline: the real push path against a local stand-in for the Hub's HTTP API.

tests/test_hub.py checks what posttrain/publish/hub.py asks of HfApi with a fake HfApi object. Here nothing is faked on
the client side: a fresh `python` process runs `hub.push(...)` exactly as the round's push stage does (api=None,
so huggingface_hub's own HfApi, with the token from HF_TOKEN and the endpoint from HF_ENDPOINT), and its HTTP
requests go to `HubStandIn`, a ThreadingHTTPServer on 127.0.0.1 (port 0) in a background thread. The tests then
rebuild, from the bytes the server received, the folders a user would download, and check that they load.

The stand-in (tests/_hub_stand_in.py) serves the endpoints huggingface_hub calls for a push; its docstring lists
them and the one departure from the real exchange (every file is sent inline, none through LFS or Xet).

With hf_xet installed (as here) upload_folder takes huggingface_hub's pipelined path (preupload, then commits
from a committer thread), and without it the single create_commit path; both are pushed through (the second
with HF_HUB_DISABLE_XET=1). The push process also runs with a socket guard that refuses any connection or name
lookup other than 127.0.0.1/::1/localhost and reports each attempt, so "no network beyond localhost" is checked,
not assumed. The real push path runs unchanged when a token and network exist: only environment variables differ.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from posttrain.publish import cards, hub
from tests._fast_paths import build_model, dpo_pairs, sft_mix
from tests._hub_stand_in import HubStandIn, check_card
from tests.test_hub import SUMMARY, recipe_dict, snapshot

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_OfflineStandInToken0123456789abcdefXYZ"  # shaped like a real token
MODEL_REPO, DATA_REPO = "me/tiny-offline", "me/tiny-offline-data"
# --------------------------------------------------------------------------- a run with a real tiny model


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> SimpleNamespace:
    """A run directory as the round leaves it before its push: round 2's DPO model (a real tiny Llama with its
    tokenizer, plus trainer leftovers a push must skip), its mix (sft and pairs parquet) and the report."""
    root = tmp_path_factory.mktemp("offline") / "runs" / "offline"
    model = build_model(root / "round_2" / "dpo" / "model")
    model_files = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    (model / "training_args.bin").write_bytes(b"pickle")
    (model / "checkpoint-1").mkdir()
    (model / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    (model / "README.md").write_text("a trainer's card, replaced by ours")
    mix = root / "round_2" / "mix"
    mix.mkdir(parents=True)
    pq.write_table(sft_mix(), mix / "sft.parquet")
    pq.write_table(dpo_pairs(), mix / "pairs.parquet")
    (mix / "decontaminated.parquet").write_bytes(b"not pushed")
    (mix / "manifest.json").write_text("{}")
    (root / "report").mkdir()
    (root / "report" / "report.md").write_text("# Run report")
    (root / "report" / "eval.png").write_bytes(b"\x89PNG")
    recipe = recipe_dict(repo_id=MODEL_REPO, push="every_round")  # private: the default
    assert recipe["hub"]["private"] is True
    return SimpleNamespace(root=root, model=model, mix=mix, recipe=recipe, model_files=model_files)


# The push process: a socket guard first (loopback only, every other attempt refused and reported), then the
# push exactly as the push stage (stages/push.py) calls it, with the CLI's logging and huggingface_hub's at debug.
PUSH = """
import json, socket, sys
LOCAL = {"127.0.0.1", "::1", "localhost"}
blocked = []
def _host(address):
    return address[0] if isinstance(address, tuple) else address
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in LOCAL:
        blocked.append(repr(address))
        raise OSError("blocked by the test: only loopback")
    return _connect(self, address)
def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in LOCAL:
        blocked.append(repr(address))
        return 111
    return _connect_ex(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host is not None and (host.decode() if isinstance(host, bytes) else host) not in LOCAL:
        blocked.append(repr(host))
        raise socket.gaierror(socket.EAI_NONAME, "blocked by the test: only loopback")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo

from pathlib import Path
from huggingface_hub.utils import logging as hf_logging
from posttrain.publish import hub
from posttrain.cli import setup_logging
setup_logging()
hf_logging.set_verbosity_debug()
run, recipe, summary = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = hub.push(run, recipe, summary, 2, run / "round_2/dpo/model", run / "round_2/mix", final=True)
print(json.dumps({"pushed": out, "blocked": blocked}))
"""


def push_in_subprocess(run: SimpleNamespace, server: HubStandIn, tmp: Path, **env_extra: str) -> SimpleNamespace:
    """Runs the push in a fresh process pointed at the stand-in by HF_ENDPOINT; returns its output and records."""
    tmpdir = tmp / "proc-tmp"
    tmpdir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_ENDPOINT=server.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               TMPDIR=str(tmpdir), PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", **env_extra)
    before = snapshot(run.root)
    proc = subprocess.run([sys.executable, "-c", PUSH, str(run.root), json.dumps(run.recipe), json.dumps(SUMMARY)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert snapshot(run.root) == before  # nothing written into the run directory
    assert list(tmpdir.iterdir()) == []  # the staging folder is gone
    return SimpleNamespace(proc=proc, out=result["pushed"], blocked=result["blocked"], tmp=tmp)


@pytest.fixture(scope="module")
def pushed(offline_run, tmp_path_factory):
    """Round 2 (the final round of an every_round recipe) pushed once to a stand-in that stays up for the module."""
    with HubStandIn(TOKEN) as server:
        push = push_in_subprocess(offline_run, server, tmp_path_factory.mktemp("push"))
        yield SimpleNamespace(server=server, **vars(push))


def expected_model_files(run: SimpleNamespace) -> set[str]:
    return run.model_files | {"README.md", "report/report.md", "report/eval.png"}


DATA_FILES = {"sft.parquet", "pairs.parquet", "README.md"}


def rebuild(files: dict[str, bytes], folder: Path) -> Path:
    """The folder a download of these repo files gives."""
    for rel, content in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    return folder


# --------------------------------------------------------------------------- tests


def test_push_sends_the_expected_files_to_the_expected_repos(offline_run, pushed):
    server, run = pushed.server, offline_run
    assert pushed.blocked == [], f"the push tried to reach beyond localhost: {pushed.blocked}"
    assert server.unexpected == []
    assert all(r["status"] < 400 for r in server.requests), [(r["path"], r["status"]) for r in server.requests]

    # the order hub.push promises: whoami first, then per repo: create, branch, commits
    calls = [(r["method"], r["path"]) for r in server.requests if not r["path"].endswith(("/preupload/round-2",
                                                                                          "/preupload/main"))]
    assert calls[0] == ("GET", "/api/whoami-v2")
    creates = [json.loads(r["body"]) for r in server.requests if r["path"] == "/api/repos/create"]
    assert [(c["type"], c["organization"], c["name"], c["visibility"]) for c in creates] == [
        ("model", "me", "tiny-offline", "private"), ("dataset", "me", "tiny-offline-data", "private")]
    assert {k: v["private"] for k, v in server.repos.items()} == {("model", MODEL_REPO): True,
                                                                 ("dataset", DATA_REPO): True}
    assert [(c["repo_type"], c["repo_id"], c["revision"]) for c in server.commits] == [
        ("model", MODEL_REPO, "round-2"), ("model", MODEL_REPO, "main"),
        ("dataset", DATA_REPO, "round-2"), ("dataset", DATA_REPO, "main")]
    assert all(c["summary"] == "posttrain tiny: round 2 (final)" for c in server.commits)

    # the model repo: the model and tokenizer files, our card, the report; no trainer leftovers
    model_files = expected_model_files(run)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= run.model_files
    for rev in ("round-2", "main"):
        files = server.files("model", MODEL_REPO, rev)
        assert set(files) == model_files, rev
        for rel in run.model_files:
            assert files[rel] == (run.model / rel).read_bytes(), rel
        assert files["report/report.md"] == (run.root / "report" / "report.md").read_bytes()
        assert files["README.md"].decode() == str(cards.model_card(run.recipe, SUMMARY, 2, run.recipe["base_model"]))
        data = server.files("dataset", DATA_REPO, rev)
        assert set(data) == DATA_FILES, rev
        for rel in ("sft.parquet", "pairs.parquet"):
            assert data[rel] == (run.mix / rel).read_bytes(), rel
        assert data["README.md"].decode() == str(cards.dataset_card(run.recipe, SUMMARY, 2, run.mix))

    # what the push stage records in its manifest agrees with the server
    out = pushed.out
    assert out["repos"] == {"model": MODEL_REPO, "dataset": DATA_REPO}
    assert out["private"] is True and out["revisions"] == ["round-2", "main"]
    assert [(c["repo_id"], c["revision"], c["oid"]) for c in out["commits"]] == [
        (c["repo_id"], c["revision"], c["oid"]) for c in server.commits]
    assert all(c["commit_url"].startswith(server.url) for c in out["commits"])


def test_token_is_sent_only_as_the_bearer_and_leaks_nowhere(offline_run, pushed):
    server = pushed.server
    authed = [r for r in server.requests if r["path"] != "/api/validate-yaml"]
    assert authed and all(r["authorization"] == f"Bearer {TOKEN}" for r in authed)
    needles = [TOKEN.encode(), base64.b64encode(TOKEN.encode())]
    for r in server.requests:
        assert TOKEN not in r["path"] + r["query"], r["path"]
        assert not any(n in r["body"] for n in needles), r["path"]
    for c in server.commits:
        for rel, content in c["files"].items():
            assert TOKEN.encode() not in content, rel
    assert TOKEN not in pushed.proc.stdout + pushed.proc.stderr
    assert "hub: pushed" in pushed.proc.stderr and " DEBUG " in pushed.proc.stderr  # logging was on, debug too
    assert TOKEN not in json.dumps(pushed.out)
    for path in offline_run.root.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_the_pushed_model_folder_loads_with_from_pretrained(offline_run, pushed, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = rebuild(pushed.server.files("model", MODEL_REPO, "main"), tmp_path / "download")
    model = AutoModelForCausalLM.from_pretrained(folder)
    reference = AutoModelForCausalLM.from_pretrained(offline_run.model)
    assert type(model).__name__ == "LlamaForCausalLM"
    ref = reference.state_dict()
    assert model.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())

    tokenizer, ref_tok = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(offline_run.model)
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert tokenizer.chat_template and prompt == ref_tok.apply_chat_template(msgs, tokenize=False,
                                                                             add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    assert ids["input_ids"][0].tolist() == ref_tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 or out[0, -1].item() == tokenizer.eos_token_id


def test_the_pushed_cards_load_and_validate(pushed, tmp_path, monkeypatch):
    from huggingface_hub import DatasetCard, ModelCard, constants

    server = pushed.server
    # upload_folder had every README validated (repoType included) before it uploaded anything
    assert [(v["repo_type"], v["errors"]) for v in server.validations] == [
        ("model", []), ("model", []), ("dataset", []), ("dataset", [])]

    monkeypatch.setattr(constants, "ENDPOINT", server.url)  # RepoCard.validate() posts to ENDPOINT/api/validate-yaml
    model_dir = rebuild(server.files("model", MODEL_REPO, "main"), tmp_path / "model")
    card = ModelCard.load(model_dir / "README.md")
    card.validate()
    meta = card.data
    assert meta.license == "other" and meta.library_name == "transformers"
    assert meta.pipeline_tag == "text-generation" and "posttrain" in meta.tags
    assert meta.datasets == [DATA_REPO]
    results = {(r.dataset_type, r.metric_name): r.metric_value for r in meta.eval_results}
    assert results[("heldout", "accuracy (code)")] == pytest.approx(0.456)
    assert results[("humaneval", "pass@1")] == pytest.approx(0.0625)
    assert f'AutoModelForCausalLM.from_pretrained("{MODEL_REPO}", revision="round-2")' in card.text

    data_dir = rebuild(server.files("dataset", DATA_REPO, "main"), tmp_path / "data")
    data_card = DatasetCard.load(data_dir / "README.md")
    data_card.validate()
    assert [c["config_name"] for c in data_card.data.to_dict()["configs"]] == ["sft", "pairs"]

    # the stand-in's validation is not a rubber stamp (more in test_stand_in_refuses_what_the_hub_would)
    with pytest.raises(ValueError, match="license"):
        ModelCard(str(card).replace("license: other", "license: no-such-license", 1)).validate()


def test_the_pushed_dataset_loads_by_its_card_configs(offline_run, pushed, tmp_path):
    """load_dataset(<folder>, "sft"): the configs in the card's metadata point at the pushed parquet files."""
    from datasets import load_dataset

    folder = rebuild(pushed.server.files("dataset", DATA_REPO, "main"), tmp_path / "data")
    for table in ("sft", "pairs"):
        ds = load_dataset(str(folder), table, split="train", cache_dir=str(tmp_path / "cache"))
        local = pq.read_table(offline_run.mix / f"{table}.parquet")
        assert ds.num_rows == local.num_rows and ds.column_names == local.column_names
        assert ds.to_list() == local.to_pylist()


def test_the_legacy_commit_path_sends_the_same_files(offline_run, pushed, tmp_path):
    """Without hf_xet (HF_HUB_DISABLE_XET=1) upload_folder makes one create_commit instead of its pipeline."""
    with HubStandIn(TOKEN) as server:
        push = push_in_subprocess(offline_run, server, tmp_path, HF_HUB_DISABLE_XET="1")
    assert push.blocked == [] and server.unexpected == []
    assert [(c["repo_type"], c["revision"]) for c in server.commits] == [
        ("model", "round-2"), ("model", "main"), ("dataset", "round-2"), ("dataset", "main")]
    for (repo_type, repo_id), repo in server.repos.items():
        for rev, files in repo["branches"].items():
            assert files == pushed.server.files(repo_type, repo_id, rev), (repo_type, rev)
    assert TOKEN not in push.proc.stdout + push.proc.stderr


def test_a_refused_token_stops_the_push_before_any_repo_is_created(offline_run, tmp_path, monkeypatch):
    """The real HfApi against the stand-in with another token: whoami answers 401, nothing is created."""
    from huggingface_hub import HfApi

    wrong = "hf_" + "W" * 34
    monkeypatch.setenv("HF_TOKEN", wrong)  # what _scrub looks for
    with HubStandIn(TOKEN) as server:
        with pytest.raises(hub.HubError) as e:
            hub.push(offline_run.root, offline_run.recipe, copy.deepcopy(SUMMARY), 2, offline_run.model,
                     offline_run.mix, True, api=HfApi(endpoint=server.url, token=wrong))
    assert "401" in str(e.value) and MODEL_REPO in str(e.value) and wrong not in str(e.value)
    assert [(r["method"], r["path"]) for r in server.requests] == [("GET", "/api/whoami-v2")]
    assert server.repos == {} and server.commits == []


def test_stand_in_refuses_what_the_hub_would(offline_run):
    """The stand-in's card checks, so that the validations above mean something."""
    import yaml

    card = str(cards.model_card(offline_run.recipe, SUMMARY, 2, offline_run.recipe["base_model"]))
    assert check_card(card, "model") == []
    meta = yaml.safe_load(card.split("---")[1])
    del meta["model-index"][0]["results"][0]["task"]  # an eval result without its task
    assert check_card(f"---\n{yaml.safe_dump(meta)}---\n# x\n", "model")
    assert check_card("# no metadata\n", "model")
    assert check_card("---\nlicense: other\ntags: [1, 2]\n---\n", "model")
    assert check_card("---\nlicense: other\nconfigs:\n- config_name: x\n---\n", "dataset")  # no data_files
