"""The model and dataset cards (README.md) a push puts on the Hub, built from the recipe and the run summary.

The model card holds the Hub metadata (license, base model, tags, datasets, a model-index of every eval number)
and how the model was made: the method, sampling and selection settings, the eval table per round, the training
data of the round (dedup, decontamination and rebalancing counts), the SFT and DPO hyperparameters, the full
recipe and how to load the model. The dataset card holds one config per table (sft, pairs) with its schema and
its rows per capability, how to load it, the same training-data counts and the recipe.

Cards are written without any network call or token, only from local files, so they can be tested and previewed
offline; posttrain/publish/hub.py builds them before it contacts the Hub and uploads them beside the model and data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from posttrain.recipe.config import HubConfig
from posttrain.reporting.summary import by_capability, headline

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, ModelCard

TAGS = ["posttrain", "llama-3-style", "dpo", "sft", "rejection-sampling"]
DATA_FILES = ("sft.parquet", "pairs.parquet")


class HubError(RuntimeError):
    """A push failed or cannot start; the message names the repo and what to do, never the token."""


def hub_config(recipe: dict) -> HubConfig:
    """The recipe's hub section as a HubConfig (keys missing from an older recipe.json take their defaults)."""
    known = {f.name for f in dataclasses.fields(HubConfig)}
    return HubConfig(**{k: v for k, v in (recipe.get("hub") or {}).items() if k in known})


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
    """model-index entries: held-out accuracy per capability, every pass@k of every benchmark (of the held-out
    set: k > 1, its pass@1 is the accuracy), and MMATH's accuracy per language and language match."""
    from huggingface_hub import EvalResult

    out = []
    for bench, result in scores.items():
        for label, (metric, value, config) in _index_metrics(bench, result).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(EvalResult(task_type="text-generation", dataset_type=bench, dataset_config=config,
                                      dataset_name=bench if config is None else f"{bench} ({config})",
                                      metric_type=metric, metric_name=label, metric_value=float(value)))
    return out


def _index_metrics(bench: str, result: dict) -> dict[str, tuple[str, Any, str | None]]:
    """{metric name: (metric type, value, dataset config)} of one benchmark's eval.json entry."""
    passes = {k: (k, v, None) for k, v in result.items() if k.startswith("pass@")}
    if bench == "heldout":
        acc = result.get("accuracy") or {}
        if len(acc) == 2 and "overall" in acc:  # one capability: "overall" repeats it (as in report.headline)
            acc = {k: v for k, v in acc.items() if k != "overall"}
        return {**{f"accuracy ({cap})": ("accuracy", v, cap) for cap, v in acc.items()},
                **{k: m for k, m in passes.items() if k != "pass@1"}}
    langs = {f"accuracy ({k[4:]})": ("accuracy", v, k[4:]) for k, v in result.items() if k.startswith("acc_")}
    match = {"language_match": ("language_match", result["language_match"], None)} if "language_match" in result else {}
    return {**passes, **langs, **match}


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
             *([f"- execution feedback (Llama 3 §4.3.1): {_revise(recipe['revise'], summary, round_)}"]
               if recipe.get("revise", {}).get("enabled") else []),
             f"- selection: {_inline(recipe.get('select', {}))}",
             "- reward model: " + (f"trained each round, weight {_weight(rm.get('weight'))}"
                                   f"{_rm_accuracy(summary, round_)}" if rm.get("enabled") else "none"),
             f"- SFT starts from: {recipe.get('sft', {}).get('start_from', 'base')}",
             *(f"- {stage}: parameter average of {len(v)} variants (Llama 3 §4.1.5): {_inline(v)}"
               for stage in ("reward_model", "sft", "dpo") if (v := recipe.get(stage, {}).get("variants"))), ""]
    rows = [r for r in summary["rounds"] if 1 <= r["round"] <= round_]
    if rows:
        lines += ["| round | samples | pass rate | SFT new | SFT mix | DPO pairs |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {_fmt(r.get('samples'))} | {_pct(r.get('pass_rate'))} | "
                  f"{_fmt(r.get('sft_examples'))} | {_fmt(r.get('sft_mix'))} | {_fmt(r.get('dpo_pairs'))} |"
                  for r in rows]
        lines.append("")
    return lines


def _revise(cfg: dict, summary: dict, round_: int) -> str:
    """The revise section and what it did in the rounds so far."""
    done = [r["revise"] for r in summary["rounds"] if 1 <= r["round"] <= round_ and r.get("revise")]
    failed, rescued = (sum(v[k] for v in done) for k in ("failed_prompts", "rescued_prompts"))
    return (f"{cfg.get('capabilities')} prompts with no passing sample get the verifier's reason and "
            f"{cfg.get('samples')} more tries; {rescued} of {failed} such prompts rescued so far")


def _weight(weight) -> str:
    """`reward_model.weight`: one number, or per capability ("code 0.1, math 0"; others 0)."""
    if not isinstance(weight, dict):
        return str(weight)
    return ", ".join(f"{c} {w:g}" for c, w in sorted(weight.items())) + " (other capabilities 0)"


def _rm_accuracy(summary: dict, round_: int) -> str:
    """This round's RM accuracy on its held-out pairs, when it held any out."""
    rm = next((r.get("reward_model") for r in summary["rounds"] if r["round"] == round_), None) or {}
    if not rm.get("eval_pairs"):
        return ""
    return (f"; ranks {rm['eval_accuracy']:.1%} of {rm['eval_pairs']} held-out pairs right (50% = chance)"
            f"{by_capability(rm.get('eval_by_capability'))}")


def _eval_section(summary: dict, round_: int) -> list[str]:
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
