"""`posttrain score`: scores a samples file made anywhere with the recipe's verifiers, and optionally a
trained reward model (a folder, or the newest of a run's reward_model stages)."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.recipe.config import ScoreConfig
from posttrain.run import schema
from posttrain.run.rundir import MANIFEST
from posttrain.stages.reward_model import rm_scores
from posttrain.stages.scoring import score_samples

log = logging.getLogger("posttrain")


def read_samples_file(path: Path) -> tuple[pa.Table, pa.Table]:
    """A JSONL/Parquet of records = prompt fields + `completion` (+ optional `sample_index`) ->
    (samples, prompts). A prompt id may repeat, once per completion, with the same prompt fields."""
    if path.suffix == ".parquet":
        try:
            records = ((f"{path}: row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist(), 1))
        except (pa.ArrowInvalid, OSError) as e:
            raise schema.SchemaError(f"{path}: cannot read as Parquet: {e}") from None
    else:
        records = ((where, rec) for where, _label, rec in schema.jsonl_records(path))
    prompts: dict[str, dict] = {}
    samples, seen = [], Counter()
    for where, rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("completion"), str):
            raise schema.SchemaError(f"{where}: a sample record needs a string 'completion'")
        rec = {k: v for k, v in rec.items() if v is not None or k in schema.PROMPTS.names}
        completion, index = rec.pop("completion"), rec.pop("sample_index", None)
        prompt = schema.check_prompt_record(rec, where)
        if prompt["id"] in prompts and prompts[prompt["id"]] != prompt:
            raise schema.SchemaError(f"{where}: prompt id {prompt['id']!r} repeats with different prompt fields")
        prompts[prompt["id"]] = prompt
        samples.append({"prompt_id": prompt["id"], "completion": completion,
                        "sample_index": seen[prompt["id"]] if index is None else index, "num_prompt_tokens": 0,
                        "num_completion_tokens": 0, "logprob": None, "finish_reason": None})
        seen[prompt["id"]] += 1
    if not samples:
        raise schema.SchemaError(f"{path}: no sample records")
    return (schema.from_records(samples, "samples", str(path)),
            schema.from_records(list(prompts.values()), "prompts", str(path)))


class RewardModelError(ValueError):
    """`posttrain score --reward-model PATH` names no reward model folder."""


def check_reward_model(path: Path, flag: str = "--reward-model") -> Path:
    """`path` if it is a saved reward model (a one-label sequence classifier, as the reward-model stage and
    `posttrain reward train` save in <folder>/model); else a RewardModelError naming `flag`."""
    config = path / "config.json"
    if not config.is_file():
        hint = f" (did you mean {path / 'model'}?)" if (path / "model" / "config.json").is_file() else ""
        raise RewardModelError(f"{flag} {path}: not a model folder (no config.json){hint}")
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise RewardModelError(f"{flag} {path}: cannot read config.json: {e}") from None
    architectures = meta.get("architectures") or []
    labels = len(meta.get("id2label") or {}) or meta.get("num_labels", 2)
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or labels != 1:
        raise RewardModelError(f"{flag} {path}: not a reward model ({', '.join(architectures) or 'no architecture'}"
                               f" with {labels} label(s); a reward model is a sequence classifier with 1)")
    return path


def reward_model_for(flag: str | None, recipe) -> tuple[Path | None, str]:
    """(the reward model `posttrain score` uses, why): `--reward-model PATH` (checked), "none", or by default,
    with reward_model.enabled, the newest one trained in the recipe's run directory."""
    if flag == "none":
        return None, "--reward-model none"
    if flag is not None:
        return check_reward_model(Path(flag)), "--reward-model"
    if not recipe.reward_model.enabled:
        return None, "reward_model.enabled is false"
    rm = newest_reward_model(recipe.run_dir)
    if rm is None:
        return None, f"no trained reward model in {recipe.run_dir}"
    why = f"newest in {recipe.run_dir}"
    return check_reward_model(rm, f"reward model ({why})"), why


def newest_reward_model(run_dir: Path) -> Path | None:
    """The most recently trained reward model in a run directory, or None: a completed round's reward-model
    stage (round_<r>/reward_model/model) or `posttrain reward train`'s default output (reward_model/model)."""
    found = [stage / "model" for stage in run_dir.glob("round_*/reward_model") if (stage / MANIFEST).is_file()]
    found += [run_dir / "reward_model" / "model"]
    found = [m for m in found if (m / "config.json").is_file()]
    return max(found, key=lambda m: (m / "config.json").stat().st_mtime_ns, default=None)


def score_file(input_path: Path, output_path: Path, cfg: ScoreConfig, reward_model_dir: Path | None = None,
               rm_cfg=None, template_kwargs: dict | None = None) -> int:
    """`posttrain score`: scores a samples file made anywhere; the output appears only when complete.

    With `reward_model_dir` every sample also gets its `rm_score` (batched: `rm_scores`, with `rm_cfg`'s
    score_batch_size and max_length, a `RewardModelConfig`, and the recipe's `chat_template_kwargs`); without,
    rm_score stays null."""
    samples, prompts = read_samples_file(input_path)
    table = score_samples(samples, prompts, cfg)
    if reward_model_dir is not None:
        rm = rm_scores(reward_model_dir, samples, prompts, rm_cfg, template_kwargs).column("rm_score")  # samples' order
        table = table.set_column(table.schema.get_field_index("rm_score"), "rm_score", rm)
        nonfinite = sum(not math.isfinite(x) for x in rm.to_pylist())
        if nonfinite:
            log.warning("reward model: %d of %d scores are NaN or infinite", nonfinite, len(rm))
    tmp = output_path.with_name(output_path.name + ".tmp")
    try:
        rows = schema.write(table, "scored", tmp)
        tmp.replace(output_path)
    finally:
        tmp.unlink(missing_ok=True)  # gone once renamed; after a failure (a full disk) nothing half-written stays
    return rows
