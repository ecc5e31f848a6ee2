"""Pushing a round to the Hugging Face Hub: the model with its card, the round's data with its card, the report.

The cards themselves are written by posttrain/publish/cards.py; this module checks, stages and uploads.

Why it is shaped this way:

- Everything local is checked first (config, token present, model and data files, both cards built), then one
  `whoami` with a deadline proves the token and the network, and only then is a repo created or a file sent:
  a push that cannot succeed fails in seconds, before it has changed anything on the Hub.
- One `upload_folder` (one commit) per repo and revision: the model, its card and the report land together,
  so no revision ever shows a model beside the card of another round. The folder uploaded is a staging
  folder of symlinks in the system temp dir, removed afterwards (a killed push's, by the next push): nothing is
  written into the run directory, and stage outputs (which are immutable once their manifest exists) are never
  touched.
- every_round pushes round r to the branch `round-<r>` (revision_per_round) and the last round to main too;
  final pushes the last round to main only. Files are added or overwritten, never deleted, as
  transformers' own `push_to_hub` does: a repo shared with other work is not silently emptied.
- The token is resolved by huggingface_hub itself (HF_TOKEN, then `hf auth login`'s token file). This
  module only asks whether one exists; it never logs, returns or writes it, and scrubs it (and anything
  shaped like an HF token) from every error message it raises.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from posttrain.publish.cards import HubError as HubError  # raised by both modules
from posttrain.publish.cards import DATA_FILES, dataset_card, hub_config, model_card
from posttrain.recipe.config import HubConfig
from posttrain.run.faults import kill_if

log = logging.getLogger("posttrain")

# Trainer leftovers that are not part of the model: a pickle (unsafe to load, and TrainingArguments can hold
# a hub token), checkpoints, our own bookkeeping, and any card a trainer wrote (ours replaces it).
MODEL_IGNORE = ["training_args.bin", "checkpoint-*", "checkpoint-*/*", ".fingerprint", "*.tmp", "README.md", ".git/*"]
STAGING_PREFIX = "posttrain-hub-"  # + "<pid>-": the push's staging folder in the system temp dir
LOGIN_HINT = "run `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}")


# --------------------------------------------------------------------------- what to push where


def revisions(hub: HubConfig, round_: int, final: bool) -> list[str]:
    """The revisions this round goes to; [] when the recipe does not push it (so callers may call push() always)."""
    if hub.push == "never" or (hub.push == "final" and not final):
        return []
    if hub.push == "final" or not hub.revision_per_round:
        return ["main"]
    return [f"round-{round_}", *(["main"] if final else [])]


# --------------------------------------------------------------------------- push


def push(run_dir: Path, recipe: dict, summary: dict, round_: int, model_dir: Path, mix_dir: Path, final: bool,
         api=None) -> dict:
    """Pushes round `round_` as the recipe's hub section says; returns what was pushed (for the stage manifest).

    Returns {} when this round is not pushed (push: never, or push: final and not the final round).
    Raises HubError, before anything is uploaded when it can be known in advance (no token, bad token,
    Hub unreachable, missing files).
    """
    hub = hub_config(recipe)
    revs = revisions(hub, round_, final)
    if not revs:
        return {}
    if hub.repo_id is None:
        raise HubError(f"hub.push is {hub.push} but hub.repo_id is not set; set it to 'owner/name'")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    _require_token(api, hub.repo_id)
    uploads = _plan(Path(run_dir), recipe, summary, round_, Path(model_dir), Path(mix_dir), hub)
    _preflight(api, hub.repo_id)
    _remove_stale_staging()
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    commits, message = [], _message(recipe, round_, final)
    try:
        for repo_id, repo_type, files in uploads:  # the model repo first, then the dataset repo
            commits += _upload(api, repo_id, repo_type, files, revs, staging, hub.private, message)
            kill_if(f"round_{round_}/push/{repo_type}")  # one repo pushed, the other not yet (crash tests)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"round": round_, "final": final, "private": hub.private, "revisions": revs,
            "repos": {repo_type: repo_id for repo_id, repo_type, _ in uploads}, "commits": commits}


def _plan(run_dir: Path, recipe: dict, summary: dict, round_: int, model_dir: Path, mix_dir: Path,
          hub: HubConfig) -> list[tuple[str, str, dict[str, Path | str]]]:
    """(repo_id, repo_type, {path in repo: local file or text}) per repo; all local checks happen here."""
    model_files: dict[str, Path | str] = {}
    if hub.push_model:
        if not (model_dir / "config.json").is_file():
            raise HubError(f"hub push to {hub.repo_id}: {model_dir} is not a model folder (no config.json)")
        model_files.update(_tree(model_dir, MODEL_IGNORE))
        base = recipe.get("base_model", "")
        model_files["README.md"] = str(model_card(recipe, summary, round_, base))
    if hub.push_report:
        report = run_dir / "report"
        if report.is_dir():
            model_files.update({f"report/{k}": v for k, v in _tree(report, []).items()})
        else:
            log.warning("hub: no report at %s yet; pushing without it", report)
    uploads = [(hub.repo_id, "model", model_files)] if model_files else []
    if hub.push_datasets:
        missing = [f for f in DATA_FILES if not (mix_dir / f).is_file()]
        if missing:
            raise HubError(f"hub push to {hub.dataset_repo}: {mix_dir} lacks {', '.join(missing)}")
        files: dict[str, Path | str] = {f: mix_dir / f for f in DATA_FILES}
        files["README.md"] = str(dataset_card(recipe, summary, round_, mix_dir))
        uploads.append((hub.dataset_repo, "dataset", files))
    return uploads


def _upload(api, repo_id: str, repo_type: str, files: dict[str, Path | str], revs: list[str], staging: Path,
            private: bool, message: str) -> list[dict]:
    """Creates the repo (and round branch) if needed and commits `files` to every revision in `revs`."""
    folder = _stage(staging / repo_type, files)
    _call(api, f"creating {repo_type} repo", repo_id, api.create_repo, repo_id, repo_type=repo_type, private=private,
          exist_ok=True)
    out = []
    for rev in revs:
        if rev != "main":
            _call(api, f"creating branch {rev}", repo_id, api.create_branch, repo_id, branch=rev, repo_type=repo_type,
                  exist_ok=True)
        info = _call(api, f"uploading to {rev}", repo_id, api.upload_folder, repo_id=repo_id, repo_type=repo_type,
                     folder_path=str(folder), revision=rev, commit_message=message)
        record = {"repo_id": repo_id, "repo_type": repo_type, "revision": rev,
                  "commit_url": getattr(info, "commit_url", None), "oid": getattr(info, "oid", None),
                  "files": sorted(files)}
        log.info("hub: pushed %d files to %s %s@%s: %s", len(files), repo_type, repo_id, rev, record["commit_url"])
        out.append(record)
    return out


def _stage(folder: Path, files: dict[str, Path | str]) -> Path:
    """A folder laid out as the repo will be: text written, files symlinked (copied where links are refused)."""
    for rel, src in files.items():
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str):
            dest.write_text(src, encoding="utf-8")
            continue
        try:
            dest.symlink_to(Path(src).resolve())
        except OSError:
            shutil.copy2(src, dest)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _remove_stale_staging() -> None:
    """Removes the staging folders of pushes whose process is gone (killed mid-push: its `finally` never ran).
    A folder names its process id; one whose process still runs (another push, or a reused pid) stays."""
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _tree(root: Path, ignore: list[str]) -> dict[str, Path]:
    """Every file under `root` by its posix path relative to it, minus the `ignore` globs."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in ignore):
            out[rel] = path
    return out


def _message(recipe: dict, round_: int, final: bool) -> str:
    return f"posttrain {recipe.get('name', '')}: round {round_}" + (" (final)" if final else "")


# --------------------------------------------------------------------------- token, preflight, errors


def _require_token(api, repo_id: str) -> None:
    """Fails before any network call when no token is configured: only its presence is looked at."""
    if isinstance(getattr(api, "token", None), str) and api.token:
        return
    from huggingface_hub import get_token

    try:
        found = get_token() is not None
    except Exception as e:  # e.g. an OIDC exchange that failed
        raise _hub_error(e, repo_id, "reading the token") from None
    if not found:
        raise HubError(f"hub push to {repo_id}: no Hugging Face token found; {LOGIN_HINT} (a token with write "
                       f"access to {repo_id.split('/')[0]}), then rerun")


def _preflight(api, repo_id: str) -> None:
    """One whoami with a deadline: a bad token or an unreachable Hub fails here, before any repo is created.

    huggingface_hub's HTTP client has no timeout, so the call runs in a daemon thread that is abandoned
    after HF_HUB_ETAG_TIMEOUT seconds (default 10) rather than letting a dead network hang the run.
    """
    timeout = _timeout()
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["who"] = api.whoami()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=call, name="posttrain-hub-whoami", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise HubError(f"hub push to {repo_id}: no answer from {_endpoint(api)} within {timeout:g} s "
                       "(HF_HUB_ETAG_TIMEOUT); check the network (or HF_ENDPOINT) and rerun")
    if "error" in box:
        raise _hub_error(box["error"], repo_id, "checking the token (whoami)", _endpoint(api)) from None
    role = (((box.get("who") or {}).get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"hub push to {repo_id}: the token is read-only; create a write token at "
                       f"https://huggingface.co/settings/tokens and {LOGIN_HINT}")


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10))
    except ValueError:
        return 10.0


def _call(api, what: str, repo_id: str, fn, /, *args, **kwargs):
    """Runs one Hub call, turning any failure into a HubError that says what to do."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise _hub_error(e, repo_id, what, _endpoint(api)) from None


def _hub_error(e: BaseException, repo_id: str, what: str, endpoint: str = "the Hub") -> HubError:
    """The message a user can act on: which repo, what failed, how to fix it; the token scrubbed out."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    head = f"hub push to {repo_id}: {what} failed"
    status = getattr(getattr(e, "response", None), "status_code", None) if isinstance(e, HfHubHTTPError) else None
    if isinstance(e, OfflineModeIsEnabled):
        msg = f"{head}: HF_HUB_OFFLINE is set; unset it to push"
    elif isinstance(e, LocalTokenNotFoundError):
        msg = f"{head}: no Hugging Face token found; {LOGIN_HINT}"
    elif status == 401:
        msg = f"{head}: the token was refused (401: invalid or expired); {LOGIN_HINT} with a valid write token"
    elif status == 403:
        msg = (f"{head}: the token may not write to {repo_id} (403); use a write token, or a fine-grained one "
               f"with write access to '{repo_id.split('/')[0]}' ({LOGIN_HINT})")
    elif status == 404:
        msg = f"{head}: not found (404); check that the namespace '{repo_id.split('/')[0]}' exists and is yours"
    elif status is not None:
        msg = f"{head}: HTTP {status}: {_first_line(e)}"
    elif _is_network_error(e):
        msg = (f"{head}: cannot reach {endpoint} ({type(e).__name__}: {_first_line(e)}); check the network "
               "(or HF_ENDPOINT) and rerun")
    else:
        msg = f"{head}: {type(e).__name__}: {_first_line(e)}"
    return HubError(_scrub(msg))


def _is_network_error(e: BaseException) -> bool:
    """Connection-level failures, whichever HTTP library this huggingface_hub uses (httpx2, httpx, requests)."""
    if isinstance(e, (OSError, TimeoutError)):
        return True
    return any(c.__module__.split(".")[0] in ("httpx2", "httpx", "requests", "urllib3")
               and c.__name__ in ("TransportError", "RequestError", "ConnectionError", "Timeout", "HTTPError")
               for c in type(e).__mro__)


def _scrub(text: str) -> str:
    """Removes the configured token and anything shaped like an HF token from `text`."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:
        token = None
    if token:
        text = text.replace(token, "***")
    return _TOKEN_SHAPE.sub("hf_***", text)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _endpoint(api) -> str:
    from huggingface_hub import constants

    return getattr(api, "endpoint", None) or constants.ENDPOINT

