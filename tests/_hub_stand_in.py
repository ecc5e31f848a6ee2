"""A local stand-in for the Hub's HTTP API, enough for posttrain/publish/hub.py's push (tests/test_hub_offline.py).

What it implements (the endpoints huggingface_hub 1.x/2.x call for whoami, create_repo, create_branch
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
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LICENSES = {"other", "apache-2.0", "mit", "llama3", "llama3.1", "llama3.2", "llama3.3", "cc-by-4.0", "cc-by-sa-4.0",
            "cc-by-nc-4.0", "bsd-3-clause", "gpl-3.0", "openrail", "unknown"}


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
