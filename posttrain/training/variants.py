"""Train several variants of a stage and average them (Llama 3 §4.1.5).

The paper averages models "obtained from experiments using various versions of data or
hyperparameters at each RM, SFT, or DPO stage". A stage section (`sft`, `dpo`, `reward_model`) lists
`variants`, each a mapping of that section's keys to override (plus `seed`, which reorders the data);
every variant starts from the stage's same input model, and the stage's model is their parameter
average, weighted by `variant_weights` (uniform by default).

Each variant trains into `<stage>.tmp/variants/<i>/`; a training that saved its model is never redone
(posttrain.training.trainer.trained), so a killed stage resumes at the first unfinished variant (from its last
checkpoint). The average is marked done (`done.json`, the stage's results) before the variant models are
deleted (their results stay in the manifest), so a kill at any point trains nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.run.dist import barrier, world
from posttrain.run.rundir import write_json
from posttrain.recipe.strict_yaml import RecipeError, build
from posttrain.training.average import average

log = logging.getLogger("posttrain")

NOT_VARIED = ("variants", "variant_weights", "enabled", "start_from", "checkpoint_every_steps", "eval_fraction",
              "preference_sources", "score_batch_size", "weight")  # what data / where from / how saved


def variant(cfg: Any, overrides: dict, seed: int) -> tuple[Any, int]:
    """(the section with `overrides` applied and no variants of its own, the variant's training seed).
    Raises RecipeError (naming the key inside the variant) for a key that is unknown or not variable."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    for key in overrides:
        if key != "seed" and (key not in fields or key in NOT_VARIED):
            raise RecipeError(f"{key}: cannot vary between variants (variable: seed, "
                              f"{', '.join(sorted(fields - set(NOT_VARIED)))})")
    data = dataclasses.asdict(cfg)
    for k, v in overrides.items():  # a nested section (lora) takes the keys given, keeps the others
        if k != "seed":
            data[k] = {**data[k], **v} if isinstance(data[k], dict) and isinstance(v, dict) else v
    data.update(variants=[], variant_weights=None)
    if not isinstance(overrides.get("seed", seed), int) or isinstance(overrides.get("seed"), bool):
        raise RecipeError(f"seed: must be int, got {overrides['seed']!r}")
    return build(type(cfg), data, "", ""), overrides.get("seed", seed)


def train_variants(out: Path, cfg: Any, seed: int, train: Callable[[Path, Any, int], dict]) -> dict:
    """`train(out, cfg, seed) -> results` once, or once per variant then averaged into `out/model`.

    `train` must not train again what it saved before (the stages check `training.trained` first)."""
    if not cfg.variants:
        return train(out, cfg, seed)
    done = out / "done.json"
    if done.is_file():  # averaged before; the variant models may be gone already
        log.info("%s: finished before, not trained again", out)
        return json.loads(done.read_text())
    results, models = [], []
    for i, overrides in enumerate(cfg.variants):
        vdir = out / "variants" / str(i)
        vcfg, vseed = variant(cfg, overrides, seed)
        log.info("variant %d of %d: %s (seed %d)", i + 1, len(cfg.variants), overrides or "as the section", vseed)
        results.append({"overrides": overrides, "seed": vseed, **train(vdir, vcfg, vseed)})
        models.append(vdir / "model")
    weights = cfg.variant_weights or [1.0] * len(models)
    summary = {"variants": results, "weights": [x / sum(weights) for x in weights],
               "steps": sum(r.get("steps", 0) for r in results)}
    barrier()  # every rank has trained every variant (and the main one saved them)
    if world().is_main:
        average(models, out / "model", cfg.variant_weights)
        write_json(done, summary)
        for m in models:  # only the average is kept; each variant's results stay in the manifest
            shutil.rmtree(m, ignore_errors=True)
    barrier()
    return summary
