"""Mix stage: builds this round's SFT mix and DPO pairs from the selected data.

For now a pass-through: SFT examples accumulated over the rounds given (the paper re-fine-tunes on all
SFT data so far; with `sft.start_from: previous` the caller passes only this round), and this round's
DPO pairs (the paper trains DPO on the latest batches). Tagging, dedup, decontamination and
rebalancing toward recipe targets come in here later.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from posttrain import schema


def mix(out: Path, sft_tables: list[pa.Table], pairs: pa.Table) -> dict:
    """sft_tables: the `sft` tables of the rounds to train on (oldest first); pairs: this round's `pairs`."""
    sft = pa.concat_tables([schema.validate(t, "sft") for t in sft_tables]).sort_by([("round", "ascending"), ("id", "ascending")])
    return {"sft": schema.write(sft, "sft", out / "sft.parquet"),
            "pairs": schema.write(pairs, "pairs", out / "pairs.parquet")}
