"""Hub pushes end to end, offline: the real push path against a local stand-in for the Hub's HTTP API.

tests/test_hub.py checks what posttrain/hub.py asks of HfApi with a fake HfApi object. Here nothing is faked on
the client side: a fresh `python` process runs `hub.push(...)` exactly as the round's push stage does (api=None,
so huggingface_hub's own HfApi, with the token from HF_TOKEN and the endpoint from HF_ENDPOINT), and its HTTP
requests go to `HubStandIn`, a ThreadingHTTPServer on 127.0.0.1 (port 0) in a background thread. The tests then
rebuild, from the bytes the server received, the folders a user would download, and check that they load.

What the stand-in implements (the endpoints huggingface_hub 1.x/2.x call for whoami, create_repo, create_branch
and upload_folder; anything else is answered 404 and recorded as unexpected, and the tests require none):

- GET  /api/whoami-v2: a write token's answer; 401 for any Authorization other than `Bearer <the token>`.
- POST /api/repos/create: records name, namespace, type and visibility (private/public); 409 if it exists.
- POST /api/{models,datasets}/<ns>/<name>/branch/<branch>: a branch from main's current files; 409 if it exists.
- POST /api/validate-yaml: upload_folder sends every README.md here before uploading, and RepoCard.validate()
  calls it too. The real Hub checks the metadata against its schema; the stand-in checks what can be checked
  offline: the front matter parses to a non-empty mapping, ModelCardData/DatasetCardData accept it (this parses
  the model-index: every eval result needs a task, dataset and metric), license is a known id, tags are strings,
  and a dataset's configs each name a config and its data files. Errors are answered 400 as the Hub does.
- POST /api/{type}s/<ns>/<name>/preupload/<rev>: answers uploadMode "regular" for every file. The real Hub answers
  "lfs" for large or binary files (model.safetensors, the parquet files), and those then go to LFS or Xet storage
  (S3 or the Xet CAS, other hosts, with their own protocols). "regular" makes huggingface_hub send each file's
  bytes inline, base64, in the commit itself, so the stand-in receives every byte of every file without
  implementing LFS or Xet, and nothing leaves 127.0.0.1. That is the only departure from the real exchange.
- POST /api/{type}s/<ns>/<name>/commit/<rev>: the NDJSON commit (a header line, then one `file` line per file with
  its base64 content); the revision must exist (404 RevisionNotFound otherwise); answers commitOid and commitUrl.

With hf_xet installed (as here) upload_folder takes huggingface_hub's pipelined path (preupload, then commits
from a committer thread), and without it the single create_commit path; both are pushed through (the second
with HF_HUB_DISABLE_XET=1). The push process also runs with a socket guard that refuses any connection or name
lookup other than 127.0.0.1/::1/localhost and reports each attempt, so "no network beyond localhost" is checked,
not assumed. The real push path runs unchanged when a token and network exist: only environment variables differ.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pyarrow.parquet as pq
import pytest

from posttrain import cards, hub
from tests._fast_paths import build_model, dpo_pairs, sft_mix
from tests.test_hub import SUMMARY, recipe_dict, snapshot

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_OfflineStandInToken0123456789abcdefXYZ"  # shaped like a real token
MODEL_REPO, DATA_REPO = "me/tiny-offline", "me/tiny-offline-data"
LICENSES = {"other", "apache-2.0", "mit", "llama3", "llama3.1", "llama3.2", "llama3.3", "cc-by-4.0", "cc-by-sa-4.0",
            "cc-by-nc-4.0", "bsd-3-clause", "gpl-3.0", "openrail", "unknown"}


# --------------------------------------------------------------------------- the stand-in


def check_card(content: str, repo_type: str) -> list[str]:
    """What the stand-in's validate-yaml refuses (see the module docstring); [] when the card is accepted."""
    from huggingface_hub import DatasetCardData, ModelCardData, RepoCard

    try:
        data = RepoCard(content).data.to_dict()
    except Exception as e:  # malformed front matter
        return [f"metadata does not parse: {type(e).__name__}: {e}"]
    if not data:
        return ["no metadata (empty YAML front matter)"]
    errors = []
    try:
        (ModelCardData if repo_type == "model" else DatasetCardData)(**copy.deepcopy(data))
    except Exception as e:
        errors.append(f"{repo_type} metadata refused: {type(e).__name__}: {e}")
    if data.get("license") not in LICENSES:
        errors.append(f"license {data.get('license')!r} is not a known license id")
    if not all(isinstance(t, str) for t in data.get("tags") or []):
        errors.append("tags must be strings")
    for cfg in data.get("configs") or []:
        files = cfg.get("data_files") if isinstance(cfg, dict) else None
        if not (isinstance(cfg, dict) and isinstance(cfg.get("config_name"), str) and files
                and all(isinstance(f, str) or (isinstance(f, dict) and "path" in f) for f in files)):
            errors.append(f"bad dataset config: {cfg!r}")
    return errors


class HubStandIn(ThreadingHTTPServer):
    """A Hub API on 127.0.0.1, enough for hub.push (see the module docstring); keeps every request and commit."""

    daemon_threads = True

    def __init__(self, token: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # method, path, query, authorization, body (bytes), status
        self.unexpected: list[str] = []
        self.repos: dict[tuple[str, str], dict] = {}  # (type, id) -> {private, branches: {name: {files}}, ...}
        self.commits: list[dict] = []  # repo_type, repo_id, revision, summary, files, oid
        self.validations: list[dict] = []  # repo_type, content, errors
        self.thread = threading.Thread(target=self.serve_forever, name="hub-stand-in", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.repos[(repo_type, repo_id)]["branches"][revision])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length
    server: HubStandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return out
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: dict, error_code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if status >= 400:
            self.send_header("X-Error-Message", payload.get("error", ""))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        body = self._body()
        record = {"method": method, "path": path, "query": parts.query, "body": body,
                  "authorization": self.headers.get("Authorization")}
        with self.server.lock:
            self.server.requests.append(record)
            status, payload, code = self._route(method, path, body, record["authorization"])
            record["status"] = status
        self._send(status, payload, code)

    def _route(self, method: str, path: str, body: bytes, auth: str | None) -> tuple[int, dict, str | None]:
        s = self.server
        if method == "POST" and path == "/api/validate-yaml":  # RepoCard.validate() sends no token
            req = json.loads(body)
            errors = check_card(req["content"], req.get("repoType") or "model")
            s.validations.append({"repo_type": req.get("repoType"), "content": req["content"], "errors": errors})
            if errors:
                return 400, {"error": "invalid metadata", "errors": [{"message": e} for e in errors]}, None
            return 200, {"errors": [], "warnings": []}, None
        if auth != f"Bearer {s.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}, None
        if method == "GET" and path == "/api/whoami-v2":
            token = {"displayName": "test", "role": "write"}
            return 200, {"type": "user", "name": "me", "orgs": [], "auth": {"type": "access_token",
                                                                            "accessToken": token}}, None
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo_type = req.get("type") or "model"
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else f"me/{req['name']}"
            url = f"{s.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            if (repo_type, repo_id) in s.repos:
                return 409, {"error": "You already created this repo", "url": url}, None
            s.repos[(repo_type, repo_id)] = {"private": req.get("visibility") == "private", "request": req,
                                            "branches": {"main": {}}}
            return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}, None
        m = re.fullmatch(r"/api/(model|dataset|space)s/([^/]+/[^/]+)/(branch|preupload|commit)/(.+)", path)
        if method != "POST" or not m:
            s.unexpected.append(f"{method} {path}")
            return 404, {"error": f"the stand-in does not serve {method} {path}"}, None
        repo_type, repo_id, action, rev = m.groups()
        repo = s.repos.get((repo_type, repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}, "RepoNotFound"
        if action == "branch":
            if rev in repo["branches"]:
                return 409, {"error": "Reference already exists"}, None
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            repo["branches"][rev] = dict(repo["branches"][start])
            return 200, {}, None
        if rev not in repo["branches"]:
            return 404, {"error": f"Invalid rev id: {rev}"}, "RevisionNotFound"
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                   for f in files], "commitOid": None}, None
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "commit payload must start with a header line"}, None
        files = {}
        for line in lines[1:]:
            if line["key"] != "file" or line["value"].get("encoding") != "base64":
                return 400, {"error": f"the stand-in answered 'regular' for every file; got {line['key']}"}, None
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        repo["branches"][rev].update(files)
        oid = hashlib.sha1(f"{repo_type}/{repo_id}@{rev}#{len(s.commits)}".encode() + body).hexdigest()
        s.commits.append({"repo_type": repo_type, "repo_id": repo_id, "revision": rev, "files": files, "oid": oid,
                          "summary": lines[0]["value"]["summary"]})
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{s.url}/{prefix}{repo_id}/commit/{oid}",
                     "hookOutput": ""}, None


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
# push exactly as posttrain/round.py's push stage calls it, with the CLI's logging and huggingface_hub's at debug.
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
from posttrain import hub
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
