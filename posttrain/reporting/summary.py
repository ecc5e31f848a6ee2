"""The run summary: each round's numbers read from its stages' manifests (summary.json), and the headline
number per eval column that the table, the plots and the cards show."""

from __future__ import annotations

from posttrain.run.rundir import RunDir

STAGES = ("generate", "score", "revise", "reward_model", "select", "judge", "mix", "sft", "dpo", "eval")
TRAINED_STAGES = ("reward_model", "sft", "dpo")
TRAINING_KEYS = ("steps", "train_loss", "final_loss", "token_accuracy", "reward_accuracy", "reward_margin",
                 "train_accuracy")


# Stages a recipe may switch off: a folder left by an earlier run counts only while a stage of the round
# still reads it (the reward model's table feeds select, the judgments feed mix).
OPTIONAL_STAGES = ("revise", "reward_model", "judge")


def _consumed(stage, outputs) -> bool:
    """Whether `stage` (a completed StageOutput or None) is an input of one of `outputs`."""
    return stage is not None and any(  # by output id (unique per stage run), not by path: runs move
        o is not None and stage.output_id in o.manifest.get("inputs", {}).values() for o in outputs)


def _training(results: dict) -> dict:
    """A trained stage's numbers from its results (with variants: the first variant's, and their count)."""
    first = (results.get("variants") or [results])[0]
    out = {k: first[k] for k in TRAINING_KEYS if first.get(k) is not None}
    if results.get("variants"):
        out["variants"] = len(results["variants"])
        out["steps"] = results.get("steps", out.get("steps"))
    return out


def summarize(run: RunDir, rounds: int) -> dict:
    """Reads the manifests of rounds 0..rounds into {"rounds": [{round, eval, samples, ...}]}."""
    out = []
    for r in range(rounds + 1):
        m = {s: run.completed(r, s) for s in STAGES}
        m = {s: (out if s not in OPTIONAL_STAGES or _consumed(out, m.values()) else None) for s, out in m.items()}
        res = lambda s, key: (m[s].manifest["results"].get(key) if m[s] else None)  # noqa: E731
        out.append({
            "round": r,
            "eval": res("eval", "scores") or {},
            "samples": res("generate", "samples"),
            "too_long": res("generate", "too_long"),
            "pass_rate": res("score", "pass_rate"),
            "pass_threshold": res("score", "pass_threshold"),
            "wrong_steps": res("score", "wrong_steps"),  # right answers that score.check_steps failed
            "revise": ({k: res("revise", k) for k in ("failed_prompts", "revisions", "rescued_prompts")}
                       if m["revise"] else None),
            "prompts": res("select", "prompts"),
            "sft_examples": res("select", "sft"),
            "dpo_pairs": res("select", "pairs"),
            "truncated_samples": res("select", "truncated"),  # cut at max_tokens: never SFT or chosen by default
            "nonfinite_samples": res("select", "nonfinite"),
            "sft_mix": res("mix", "sft"),
            "mix": ({k: res("mix", k) for k in ("input", "exact_dups", "near_dups", "contaminated",
                                                 "contaminated_pairs", "input_by_capability", "before_rebalance",
                                                 "by_capability", "semantic_dups", "below_quality_floor",
                                                 "composition", "judge")}
                    if m["mix"] else None),
            "reward_model": ({k: res("reward_model", k) for k in ("pairs", "eval_pairs", "eval_accuracy",
                                                                 "eval_by_capability")}
                             if m["reward_model"] else None),
            "training": {s: _training(m[s].manifest["results"]) for s in TRAINED_STAGES if m[s]},
            "wall_s": {s: m[s].manifest["wall_s"] for s in STAGES if m[s]},
        })
    return {"run": str(run.root), "rounds": out}


def headline(scores: dict) -> dict[str, float]:
    """One number per eval column: held-out accuracy per capability (+ overall), pass@1 of each benchmark."""
    out = {}
    for name, result in scores.items():
        if name == "heldout":
            acc = result.get("accuracy", {})
            if len(acc) == 2:  # one capability: its "overall" is the same number
                acc = {k: v for k, v in acc.items() if k != "overall"}
            out.update({f"heldout/{cap}": v for cap, v in acc.items()})
        else:
            out[name] = result.get("pass@1", 0.0)
    return out


def by_capability(accuracy: dict | None) -> str:
    """The RM's held-out accuracy per capability: " (code 61% of 23, math 48% of 40)"; "" without a split."""
    if not accuracy:
        return ""
    return " (" + ", ".join(f"{c} {a['accuracy']:.0%} of {a['pairs']}" for c, a in accuracy.items()) + ")"
