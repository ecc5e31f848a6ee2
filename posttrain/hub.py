"""Pushing a round to the Hugging Face Hub: the model with its card, the round's data with its card, the report.

Why it is shaped this way:

- Everything local is checked first (config, token present, model and data files, both cards built), then one
  `whoami` with a deadline proves the token and the network, and only then is a repo created or a file sent:
  a push that cannot succeed fails in seconds, before it has changed anything on the Hub.
- One `upload_folder` (one commit) per repo and revision: the model, its card and the report land together,
  so no revision ever shows a model beside the card of another round. The folder uploaded is a staging
  folder of symlinks in the system temp dir, removed afterwards: nothing is written into the run directory,
  and stage outputs (which are immutable once their manifest exists) are never touched.
- every_round pushes round r to the branch `round-<r>` (revision_per_round) and the last round to main too;
  final pushes the last round to main only. Files are added or overwritten, never deleted, as
  transformers' own `push_to_hub` does: a repo shared with other work is not silently emptied.
- The token is resolved by huggingface_hub itself (HF_TOKEN, then `hf auth login`'s token file). This
  module only asks whether one exists; it never logs, returns or writes it, and scrubs it (and anything
  shaped like an HF token) from every error message it raises.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from posttrain.config import HubConfig

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, ModelCard

log = logging.getLogger("posttrain")

TAGS = ["posttrain", "llama-3-style", "dpo", "sft", "rejection-sampling"]
# Trainer leftovers that are not part of the model: a pickle (unsafe to load, and TrainingArguments can hold
# a hub token), checkpoints, our own bookkeeping, and any card a trainer wrote (ours replaces it).
MODEL_IGNORE = ["training_args.bin", "checkpoint-*", "checkpoint-*/*", ".fingerprint", "*.tmp", "README.md", ".git/*"]
DATA_FILES = ("sft.parquet", "pairs.parquet")
LOGIN_HINT = "run `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}")


class HubError(RuntimeError):
    """A push failed or cannot start; the message names the repo and what to do, never the token."""


# --------------------------------------------------------------------------- what to push where


def hub_config(recipe: dict) -> HubConfig:
    """The recipe's hub section as a HubConfig (keys missing from an older recipe.json take their defaults)."""
    known = {f.name for f in dataclasses.fields(HubConfig)}
    return HubConfig(**{k: v for k, v in (recipe.get("hub") or {}).items() if k in known})


def revisions(hub: HubConfig, round_: int, final: bool) -> list[str]:
    """The revisions this round goes to; [] when the recipe does not push it (so callers may call push() always)."""
    if hub.push == "never" or (hub.push == "final" and not final):
        return []
    if hub.push == "final" or not hub.revision_per_round:
        return ["main"]
    return [f"round-{round_}", *(["main"] if final else [])]


# --------------------------------------------------------------------------- cards


def model_card(recipe: dict, summary: dict, round_: int, base_model: str) -> ModelCard:
    """The model repo's README: Hub metadata (license, base model, tags, model-index) and how the model was made."""
    from huggingface_hub import ModelCard, ModelCardData  # noqa: F811 - imported late: only pushes need it

    hub = hub_config(recipe)
    name = (hub.repo_id or recipe.get("name") or "posttrain-model").split("/")[-1]
    results = eval_results(_round(summary, round_)["eval"])
    data = ModelCardData(
        license=hub.license, base_model=base_model if _is_hub_id(base_model) else None, tags=list(TAGS),
        library_name="transformers", pipeline_tag="text-generation",
        datasets=[hub.dataset_repo] if hub.push_datasets and hub.dataset_repo else None,
        model_name=name if results else None, eval_results=results or None)
    body = [f"# {name}", "", _intro(recipe, round_, base_model), "", *_how_made(recipe, summary, round_),
            *_eval_section(summary, round_), *_mix_section(_round(summary, round_), recipe),
            *_hyperparameters(recipe), *_recipe_section(recipe), *_usage(hub, round_)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def dataset_card(recipe: dict, summary: dict, round_: int, mix_dir: Path) -> DatasetCard:
    """The dataset repo's README: one config per table, the schema of each and its counts per capability."""
    from huggingface_hub import DatasetCard, DatasetCardData  # noqa: F811

    hub = hub_config(recipe)
    name = (hub.dataset_repo or f"{recipe.get('name', 'posttrain')}-data").split("/")[-1]
    tables = {f.split(".")[0]: Path(mix_dir) / f for f in DATA_FILES}
    data = DatasetCardData(
        license=hub.license, tags=list(TAGS), task_categories=["text-generation"], pretty_name=name,
        configs=[{"config_name": t, "data_files": [{"split": "train", "path": p.name}]} for t, p in tables.items()])
    body = [f"# {name}", "",
            f"The SFT mix and DPO pairs that trained round {round_} of the posttrain run `{recipe.get('name')}`"
            + (f" (model: `{hub.repo_id}`)" if hub.repo_id and hub.push_model else "") + ": the policy's own "
            "samples, scored by verifiers, selected by rejection sampling, then deduplicated, decontaminated "
            "against every eval set and rebalanced toward the recipe's mix targets (if any).", "",
            "```python", "from datasets import load_dataset", "",
            *(f'{t} = load_dataset("{hub.dataset_repo}", "{t}", split="train")' for t in tables), "```", ""]
    for table, path in tables.items():
        body += _table_section(table, path)
    body += [*_mix_section(_round(summary, round_), recipe), *_recipe_section(recipe)]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def eval_results(scores: dict) -> list:
    """model-index entries: held-out accuracy per capability and every pass@k of every benchmark."""
    from huggingface_hub import EvalResult

    out = []
    for bench, result in scores.items():
        acc = result.get("accuracy") or {}
        if len(acc) == 2 and "overall" in acc:  # one capability: "overall" repeats it (as in report.headline)
            acc = {k: v for k, v in acc.items() if k != "overall"}
        metrics = ({f"accuracy ({cap})": ("accuracy", v, cap) for cap, v in acc.items()}
                   if bench == "heldout" else
                   {k: (k, v, None) for k, v in result.items() if k.startswith("pass@")})
        for label, (metric, value, config) in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(EvalResult(task_type="text-generation", dataset_type=bench, dataset_config=config,
                                      dataset_name=bench if config is None else f"{bench} ({config})",
                                      metric_type=metric, metric_name=label, metric_value=float(value)))
    return out


def _intro(recipe: dict, round_: int, base_model: str) -> str:
    total = recipe.get("rounds")
    return (f"Post-trained from `{base_model}` with posttrain, Llama 3 style (§4 of \"The Llama 3 "
            f"Herd of Models\"): round {round_} of {total}. Each round the policy samples K responses per prompt, "
            "verifiers score them, rejection sampling keeps the best for SFT and pairs best vs worst for DPO, the "
            "SFT data is deduplicated, decontaminated and rebalanced, then SFT and DPO train the next policy.")


def _how_made(recipe: dict, summary: dict, round_: int) -> list[str]:
    g, rm = recipe.get("generate", {}), recipe.get("reward_model", {})
    temp = f"{g.get('temperature')}"
    if g.get("temperature_range"):
        temp = f"drawn per prompt from {g['temperature_range']} before the last round, {g.get('temperature')} in it"
    lines = ["## How it was made", "",
             f"- rounds: {recipe.get('rounds')} (this is round {round_}); seed {recipe.get('seed')}",
             f"- sampling: K = {g.get('num_samples')} samples per prompt, temperature {temp}, top_p {g.get('top_p')}, "
             f"max {g.get('max_tokens')} new tokens",
             f"- verifiers: {_inline(recipe.get('score', {}).get('verifiers', {}))}",
             f"- selection: {_inline(recipe.get('select', {}))}",
             "- reward model: " + (f"trained each round, weight {rm.get('weight')}" if rm.get("enabled") else "none"),
             f"- SFT starts from: {recipe.get('sft', {}).get('start_from', 'base')}",
             *(f"- {stage}: parameter average of {len(v)} variants (Llama 3 §4.1.5): {_inline(v)}"
               for stage in ("reward_model", "sft", "dpo") if (v := recipe.get(stage, {}).get("variants"))), ""]
    rows = [r for r in summary["rounds"] if 1 <= r["round"] <= round_]
    if rows:
        lines += ["| round | samples | pass rate | SFT new | SFT mix | DPO pairs |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {_fmt(r.get('samples'))} | {_pct(r.get('pass_rate'))} | "
                  f"{_fmt(r.get('sft_examples'))} | {_fmt(r.get('sft_mix'))} | {_fmt(r.get('dpo_pairs'))} |" for r in rows]
        lines.append("")
    return lines


def _eval_section(summary: dict, round_: int) -> list[str]:
    from posttrain.report import headline

    rows = [r for r in summary["rounds"] if r["round"] <= round_ and r.get("eval")]
    if not rows:
        return []
    cols = list(dict.fromkeys(c for r in rows for c in headline(r["eval"])))
    lines = ["## Evaluation", "",
             "Held-out accuracy per capability and pass@1 per benchmark; round 0 is the base model.", "",
             "| round | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        h = headline(r["eval"])
        lines.append(f"| {r['round']} | " + " | ".join(_pct(h.get(c)) for c in cols) + " |")
    lines += ["", f"Every number of round {round_}:", "", "| benchmark | metric | value |", "|---|---|---|"]
    for bench, result in _round(summary, round_)["eval"].items():
        lines += [f"| {bench} | {k} | {_fmt(v)} |" for k, v in _flatten(result)]
    return [*lines, ""]


def _mix_section(entry: dict, recipe: dict) -> list[str]:
    mix = entry.get("mix")
    if not mix:
        return []
    labels = {"input": "SFT examples in", "exact_dups": "exact duplicates removed",
              "near_dups": "near duplicates removed (MinHash)",
              "contaminated": "SFT examples removed as contaminated (n-gram overlap with an eval set)",
              "contaminated_pairs": "DPO pairs removed as contaminated"}
    order = [*labels, *sorted(set(mix) - set(labels))]  # known counts first, in pipeline order
    scalars = {k: mix[k] for k in order if k in mix and not isinstance(mix[k], dict)}
    per_cap = {k: v for k, v in mix.items() if isinstance(v, dict)}
    lines = [f"## Training data of round {entry['round']}", "",
             *(f"- {labels.get(k, k.replace('_', ' '))}: {_fmt(v)}" for k, v in scalars.items()),
             f"- SFT examples in the mix: {_fmt(entry.get('sft_mix'))}; "
             f"DPO pairs selected: {_fmt(entry.get('dpo_pairs'))}",
             f"- mix targets: {_inline(recipe.get('mix', {}).get('targets')) or 'none (kept as is)'}", ""]
    caps = sorted({c for v in per_cap.values() for c in v})
    if caps:
        names = {"input_by_capability": "in", "before_rebalance": "after dedup + decontamination",
                 "by_capability": "in the mix"}
        lines += ["| capability | " + " | ".join(names.get(k, k) for k in per_cap) + " |",
                  "|---" * (len(per_cap) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(_fmt(v.get(c)) for v in per_cap.values()) + " |" for c in caps]
        lines.append("")
    return lines


def _table_section(table: str, path: Path) -> list[str]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    counts = pq.read_table(path, columns=["capability"]).column("capability").value_counts().to_pylist()
    lines = [f"## `{table}` ({path.name}, {pq.read_metadata(path).num_rows} rows)", "",
             "| column | type |", "|---|---|", *(f"| {f.name} | `{f.type}` |" for f in schema), "",
             "| capability | rows |", "|---|---|",
             *(f"| {c['values']} | {c['counts']} |" for c in sorted(counts, key=lambda c: str(c["values"]))), ""]
    return lines


def _hyperparameters(recipe: dict) -> list[str]:
    return ["## Training hyperparameters", "",
            *(line for stage in ("sft", "dpo") if stage in recipe
              for line in (f"{stage.upper()}:", "", "```yaml", _yaml(recipe[stage]).rstrip(), "```", ""))]


def _recipe_section(recipe: dict) -> list[str]:
    return ["## Recipe", "", "<details><summary>The full recipe</summary>", "", "```yaml",
            _yaml(recipe).rstrip(), "```", "", "</details>", ""]


def _usage(hub: HubConfig, round_: int) -> list[str]:
    if not hub.repo_id:
        return []
    rev = f', revision="round-{round_}"' if hub.push == "every_round" and hub.revision_per_round else ""
    return ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = AutoModelForCausalLM.from_pretrained("{hub.repo_id}"{rev})',
            f'tokenizer = AutoTokenizer.from_pretrained("{hub.repo_id}"{rev})', "```", ""]


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
    staging = Path(tempfile.mkdtemp(prefix="posttrain-hub-"))
    try:
        commits = [c for repo_id, repo_type, files in uploads
                   for c in _upload(api, repo_id, repo_type, files, revs, staging, hub.private,
                                    _message(recipe, round_, final))]
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


# --------------------------------------------------------------------------- small formatting helpers


def _round(summary: dict, round_: int) -> dict:
    for entry in summary["rounds"]:
        if entry["round"] == round_:
            return entry
    raise HubError(f"the run summary has no round {round_} (rounds: {[r['round'] for r in summary['rounds']]})")


def _is_hub_id(name: str) -> bool:
    """Card metadata may only name a Hub model; a local folder (the tiny base) is described in the text instead."""
    return bool(name) and "/" in name and HubConfig.valid_repo_id(name) and not Path(name).exists()


def _flatten(result: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in result.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _inline(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True) if obj else ""


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False)
