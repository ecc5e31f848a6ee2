"""Score stage: every sample gets a reward and a reason from its capability's verifier, joined by prompt id."""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.run import schema
from posttrain.run.dist import barrier, shard, world
from posttrain.recipe.config import ScoreConfig
from posttrain.run.progress import Progress
from reward import steps, verifier

META_COLUMNS = [f.name for f in schema.META]
SCORE_CHUNK = 256  # samples per verifier call: the unit of the score progress
log = logging.getLogger("posttrain")


def score_samples(samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig,
                  verifiers: dict[str, str] | None = None, desc: str = "score") -> pa.Table:
    """samples (one row per prompt_id/sample_index) -> the `scored` table, in the same row order.

    `verifiers` (capability -> verifier name) defaults to the recipe's `score.verifiers`; an eval
    benchmark passes its own. `desc` names the work in the progress log."""
    verifiers = cfg.verifiers if verifiers is None else verifiers
    by_id = {p["id"]: p for p in prompts.to_pylist()}
    rows = samples.to_pylist()
    missing = {r["prompt_id"] for r in rows} - by_id.keys()
    if missing:
        raise KeyError(f"samples reference {len(missing)} unknown prompt id(s), e.g. {sorted(missing)[:3]}")
    by_verifier: dict[str | None, list[dict]] = {}  # a prompt's own verifier, else its capability's
    for r in rows:
        prompt = by_id[r["prompt_id"]]
        r["capability"] = prompt["capability"]
        by_verifier.setdefault(prompt.get("verifier") or verifiers.get(r["capability"]), []).append(r)
    with Progress(desc, len(rows), "samples") as progress:
        for name, group in by_verifier.items():
            if name is None:  # no verifier for this capability: not applicable, left to a reward model
                for r in group:
                    r.update(verifier="none", reward=None, reason="no verifier configured")
                progress.update(len(group))
                continue
            # In chunks, so that progress shows (sandboxed code takes seconds per sample that times out).
            for i in range(0, len(group), SCORE_CHUNK):
                chunk = group[i:i + SCORE_CHUNK]
                columns = {c: [by_id[r["prompt_id"]][c] for r in chunk] for c in [*META_COLUMNS, "messages"]}
                columns["prompts"] = columns.pop("messages")  # TRL's name for them
                verdicts = verifier(name)([r["completion"] for r in chunk], timeout_s=cfg.code_timeout_s,
                                          num_workers=cfg.num_workers, **columns)
                for r, v in zip(chunk, verdicts, strict=True):
                    r.update(verifier=name, reward=v.reward, reason=v.reason)
                progress.update(len(chunk))
    for r in rows:
        if r["capability"] in cfg.check_steps and r["reward"] and (step := steps.wrong_step(r["completion"])):
            r.update(reward=0.0, reason=f"{steps.REASON}: {step}")
    return schema.from_records(rows, "scored")


def score(out: Path, samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig, pass_threshold: float = 1.0) -> dict:
    return score_results(score_samples(samples, prompts, cfg), out, pass_threshold)


def score_results(table: pa.Table, out: Path, pass_threshold: float = 1.0) -> dict:
    """Writes the scored table; its row count and the fraction of scored samples that pass, at the
    threshold rejection sampling uses (select.pass_threshold), recorded beside it for the report, and how
    many right answers `score.check_steps` failed for a false equation (`wrong_steps`), when any."""
    rewards = [x for x in table.column("reward").to_pylist() if x is not None]
    wrong_steps = sum((r or "").startswith(steps.REASON) for r in table.column("reason").to_pylist())
    return {"scored": schema.write(table, "scored", out / "scored.parquet"),
            "pass_rate": round(sum(x >= pass_threshold for x in rewards) / max(1, len(rewards)), 4),
            "pass_threshold": pass_threshold, **({"wrong_steps": wrong_steps} if wrong_steps else {})}


def merge_scored(out: Path, shard_dirs: list[Path], _results: list[dict], prompts: pa.Table,
                 pass_threshold: float = 1.0) -> dict:
    """Sharded score stage: every rank's scored samples, in the single-process order."""
    from posttrain.run.dist import in_prompt_order, read_shards

    table = read_shards(shard_dirs, "scored")
    return score_results(in_prompt_order(table, prompts.column("id").to_pylist()), out, pass_threshold)


def reward_model(out: Path, base_model: str, scored_rounds: list[pa.Table], prompts: pa.Table, cfg,
                 pass_threshold: float, seed: int, trainer_args: dict | None = None) -> dict:
    """Reward-model stage: trains an RM on the recipe's preference files plus passing-vs-failing samples
    of every round so far (`scored_rounds`, oldest first; the last is this round's), then scores this
    round's samples (`rm_score`): every rank its shard of the prompts, joined back by sample id."""
    pairs = preference_data(scored_rounds, prompts, cfg.preference_sources, pass_threshold)
    info = train_rm(out, base_model, pairs, cfg, seed, trainer_args)  # every rank: data-parallel
    barrier()  # the main process has saved the model and its tokenizer: every rank scores with it
    scored = scored_rounds[-1]
    w, shards = world(), out / "rm_shards"
    shards.mkdir(exist_ok=True)
    pq.write_table(rm_scores(out / "model", shard(scored, w, "prompt_id"), prompts, cfg),
                   shards / f"rank{w.rank}.parquet")
    barrier()
    if not w.is_main:
        return {}
    merged = pa.concat_tables([pq.read_table(shards / f"rank{k}.parquet") for k in range(w.size)]).to_pydict()
    by_sample = dict(zip(zip(merged["prompt_id"], merged["sample_index"]), merged["rm_score"]))
    rm = [by_sample[key] for key in zip(scored.column("prompt_id").to_pylist(),
                                        scored.column("sample_index").to_pylist())]
    shutil.rmtree(shards)
    table = scored.drop_columns(["rm_score"]).append_column("rm_score", pa.array(rm, pa.float64()))
    nonfinite = sum(not math.isfinite(x) for x in rm)  # kept as scored, left out by selection, counted here
    if nonfinite:
        log.warning("reward model: %d of %d scores are NaN or infinite; those samples are not selected",
                    nonfinite, len(rm))
    return {**info, "scored": schema.write(table, "scored", out / "scored.parquet"), "rm_nonfinite": nonfinite}


def rm_scores(model_dir: Path, samples: pa.Table, prompts: pa.Table, cfg) -> pa.Table:
    """{prompt_id, sample_index, rm_score} of `samples` (rows with prompt_id, sample_index, completion)."""
    from reward.model import score_with_reward_model

    messages = dict(zip(prompts.column("id").to_pylist(), prompts.column("messages").to_pylist()))
    scores = score_with_reward_model(str(model_dir), [messages[p] for p in samples.column("prompt_id").to_pylist()],
                                     samples.column("completion").to_pylist(), batch_size=cfg.score_batch_size,
                                     max_length=cfg.max_length, progress=world().is_main)
    return pa.table({"prompt_id": samples["prompt_id"], "sample_index": samples["sample_index"],
                     "rm_score": pa.array(scores, pa.float64())})


def train_rm(out: Path, base_model: str, pairs: list[dict], cfg, seed: int, trainer_args: dict | None = None) -> dict:
    """The reward model in out/model: trained once, or per `cfg.variants` and averaged. Variants share the
    score head's initialisation (the recipe seed), so their heads average like the rest of the weights.

    The pairs of a `cfg.eval_fraction` of the prompts are held out of training; the final model's accuracy
    on them (`eval_accuracy`, main process) says whether its ranking is worth its `weight`."""
    from posttrain.reporting.report import by_capability
    from posttrain.training.variants import train_variants
    from reward.model import accuracy_by_capability, pairwise_wins, split_held_out, train_reward_model

    train, held = split_held_out(pairs, cfg.eval_fraction, seed)
    info = train_variants(out, cfg, seed,
                          lambda o, c, s: train_reward_model(o, base_model, train, c, s, init_seed=seed,
                                                             trainer_args=trainer_args))
    if held and world().is_main:
        wins = pairwise_wins(out / "model", held, cfg.score_batch_size, cfg.max_length)
        accuracy = sum(wins) / len(wins)
        info = {**info, "eval_pairs": len(held), "eval_accuracy": round(accuracy, 4),
                "eval_by_capability": accuracy_by_capability(held, wins)}
        log.info("reward model: %.1f%% of %d held-out pairs ranked right (50%% = chance)%s", 100 * accuracy, len(held),
                 by_capability(info["eval_by_capability"]))
    return info


def preference_data(scored_rounds: list[pa.Table], prompts: pa.Table, files: list[str],
                    pass_threshold: float) -> list[dict]:
    """Every RM pair: each preference file's (expanded) rankings, then each round's verifier pairs."""
    from reward.model import preference_pairs, read_preference_file

    pairs = [p for f in files for p in read_preference_file(Path(f))]
    for r, scored in enumerate(scored_rounds, 1):
        pairs += [{**p, "prompt_id": f"{p['prompt_id']}/round{r}"}
                  for p in preference_pairs(scored, prompts, pass_threshold)]
    return pairs


def read_samples_file(path: Path) -> tuple[pa.Table, pa.Table]:
    """A JSONL/Parquet of records = prompt fields + `completion` (+ optional `sample_index`) ->
    (samples, prompts). A prompt id may repeat, once per completion, with the same prompt fields."""
    import pyarrow.parquet as pq

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
    import json

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
    from posttrain.run.rundir import MANIFEST

    found = [stage / "model" for stage in run_dir.glob("round_*/reward_model") if (stage / MANIFEST).is_file()]
    found += [run_dir / "reward_model" / "model"]
    found = [m for m in found if (m / "config.json").is_file()]
    return max(found, key=lambda m: (m / "config.json").stat().st_mtime_ns, default=None)


def score_file(input_path: Path, output_path: Path, cfg: ScoreConfig, reward_model_dir: Path | None = None,
               rm_cfg=None) -> int:
    """`posttrain score`: scores a samples file made anywhere; the output appears only when complete.

    With `reward_model_dir` every sample also gets its `rm_score` (batched: `rm_scores`, with `rm_cfg`'s
    score_batch_size and max_length, a `RewardModelConfig`); without, rm_score stays null."""
    samples, prompts = read_samples_file(input_path)
    table = score_samples(samples, prompts, cfg)
    if reward_model_dir is not None:
        rm = rm_scores(reward_model_dir, samples, prompts, rm_cfg).column("rm_score")  # in the samples' order
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
