"""Mix stage: builds this round's SFT mix and DPO pairs from the selected data.

SFT examples accumulated over the rounds given (the paper re-fine-tunes on all SFT data so far; with
`sft.start_from: previous` the caller passes only this round) and this round's DPO pairs (the paper
trains DPO on the latest batches) go through, in order:

1. exact dedup of SFT prompts (normalized for case and whitespace)       data_mix/dedup.py `exact`
2. near-duplicate dedup of SFT prompts (MinHash LSH, Jaccard threshold) data_mix/dedup.py `near`
3. decontamination of SFT and pair prompts against the eval prompts     data_mix/decontam.py
4. rebalancing of SFT toward `mix.targets` per capability               data_mix/rebalance.py

Outputs: sft.parquet, pairs.parquet and decontaminated.parquet (table, id, eval_id: every removed row
and the eval prompt it matched). Rows are removed by id, never by position.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_mix import decontam, dedup
from data_mix.rebalance import rebalance
from data_mix.text import prompt_text
from posttrain import schema
from posttrain.config import MixConfig

DECONTAMINATED = pa.schema([pa.field("table", pa.string()), pa.field("id", pa.string()), pa.field("eval_id", pa.string())])


def mix(out: Path, sft_tables: list[pa.Table], pairs: pa.Table, heldout: pa.Table, cfg: MixConfig, seed: int) -> dict:
    """sft_tables: the `sft` tables of the rounds to train on (oldest first); pairs: this round's `pairs`;
    heldout: the run's held-out `prompts` (the eval set). Returns the counts for the manifest."""
    sft = pa.concat_tables([schema.validate(t, "sft") for t in sft_tables])
    pairs = schema.validate(pairs, "pairs")
    counts = {"input": sft.num_rows, "exact_dups": 0, "near_dups": 0, "contaminated": 0, "contaminated_pairs": 0,
              "input_by_capability": _by_capability(sft)}
    counts["before_rebalance"] = counts["input_by_capability"]  # after dedup and decontamination, below
    removed = DECONTAMINATED.empty_table()
    if cfg.enabled:
        # Dedup keeps the first occurrence in (round, id) order: older data wins over a later round's copy.
        view = pa.table({"id": sft["id"], "round": sft["round"], "text": prompt_text(sft["messages"])})
        view = view.sort_by([("round", "ascending"), ("id", "ascending")]).select(["id", "text"])
        if cfg.dedup_exact:
            view = _drop(view, dedup.exact(view), counts, "exact_dups")
        if cfg.dedup_near:
            view = _drop(view, dedup.near(view, cfg.near_threshold, cfg.num_perm, seed), counts, "near_dups")
        if cfg.decontaminate:
            # User turns only: a system message (instructions, a tool list) is shared by many prompts, train
            # and eval alike, and would make every tools prompt "contain" every eval item's 13-grams.
            evals = pa.table({"id": heldout["id"], "text": prompt_text(heldout["messages"], user_only=True)})
            user_view = pa.table({"id": sft["id"], "text": prompt_text(sft["messages"], user_only=True)})
            user_view = user_view.filter(pc.is_in(user_view["id"], value_set=view["id"].combine_chunks()))
            hits = decontam.contaminated(user_view, evals, cfg.ngram)
            view = _drop(view, hits, counts, "contaminated")
            pair_view = pa.table({"id": pairs["id"], "text": prompt_text(pairs["prompt"], user_only=True)})
            pair_hits = decontam.contaminated(pair_view, evals, cfg.ngram)
            pairs = _drop(pairs, pair_hits, counts, "contaminated_pairs")
            removed = pa.concat_tables([_tagged("sft", hits), _tagged("pairs", pair_hits)])
        sft = sft.filter(pc.is_in(sft["id"], value_set=view["id"].combine_chunks()))  # join by id
        counts["before_rebalance"] = _by_capability(sft)
        if cfg.targets is not None:
            sft = rebalance(sft, cfg.targets, cfg.max_repeat, cfg.total, seed)
    sft = sft.sort_by([("round", "ascending"), ("id", "ascending")])
    pq.write_table(removed, out / "decontaminated.parquet")
    return {"sft": schema.write(sft, "sft", out / "sft.parquet"),
            "pairs": schema.write(pairs, "pairs", out / "pairs.parquet"),
            **counts,
            "by_capability": _by_capability(sft)}


def _by_capability(sft: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(sft["capability"]).to_pylist()
    return {v["values"]: v["counts"] for v in sorted(counts, key=lambda v: v["values"])}


def _drop(table: pa.Table, dropped: pa.Table, counts: dict, key: str) -> pa.Table:
    """`table` without the rows whose id is in `dropped`; adds their number to counts[key]."""
    counts[key] += dropped.num_rows
    return table.filter(pc.invert(pc.is_in(table["id"], value_set=dropped["id"].combine_chunks())))


def _tagged(name: str, hits: pa.Table) -> pa.Table:
    return pa.table({"table": pa.array([name] * hits.num_rows, pa.string()), "id": hits["id"], "eval_id": hits["eval_id"]},
                    schema=DECONTAMINATED)
