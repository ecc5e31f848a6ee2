"""Score stage: every sample gets a reward and a reason from its capability's verifier, joined by prompt id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from posttrain import schema
from posttrain.config import ScoreConfig
from reward import VERIFIERS

META_COLUMNS = [f.name for f in schema.META]


def score_samples(samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig) -> pa.Table:
    """samples (one row per prompt_id/sample_index) -> the `scored` table, in the same row order."""
    by_id = {p["id"]: p for p in prompts.to_pylist()}
    rows = samples.to_pylist()
    missing = {r["prompt_id"] for r in rows} - by_id.keys()
    if missing:
        raise KeyError(f"samples reference {len(missing)} unknown prompt id(s), e.g. {sorted(missing)[:3]}")
    by_capability: dict[str, list[dict]] = {}
    for r in rows:
        r["capability"] = by_id[r["prompt_id"]]["capability"]
        by_capability.setdefault(r["capability"], []).append(r)
    for capability, group in by_capability.items():
        name = cfg.verifiers.get(capability)
        if name is None:  # no verifier for this capability: not applicable, left to a reward model
            for r in group:
                r.update(verifier="none", reward=None, reason="no verifier configured")
            continue
        columns = {c: [by_id[r["prompt_id"]][c] for r in group] for c in META_COLUMNS}
        verdicts = VERIFIERS[name]([r["completion"] for r in group], timeout_s=cfg.code_timeout_s,
                                   num_workers=cfg.num_workers, **columns)
        for r, v in zip(group, verdicts, strict=True):
            r.update(verifier=name, reward=v.reward, reason=v.reason)
    return schema.from_records(rows, "scored")


def score(out: Path, samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig) -> dict:
    table = score_samples(samples, prompts, cfg)
    rewards = [x for x in table.column("reward").to_pylist() if x is not None]
    return {"scored": schema.write(table, "scored", out / "scored.parquet"),
            "pass_rate": round(sum(x >= 1.0 for x in rewards) / max(1, len(rewards)), 4)}
