"""Rebalancing toward target proportions per capability: downsample the plentiful, repeat the scarce.

`quotas` is the arithmetic (plain dicts); `rebalance` applies it to an `sft` table. Example: 60/30/10
math/code/tools rows, targets 0.5/0.25/0.25, max_repeat 2 -> tools allows at most 10 * 2 / 0.25 = 80
rows in all -> quotas 40/20/20 (math and code downsampled, every tools row twice).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def quotas(counts: dict[str, int], targets: dict[str, float], max_repeat: int = 1,
           total: int | None = None) -> dict[str, int]:
    """Output rows per capability of `counts` (input rows per capability).

    Targeted capabilities that have rows share the total in proportion to their targets (renormalized,
    so a capability absent from this round's data does not empty the mix); other capabilities get 0.
    total None -> the largest total at which no quota exceeds count * max_repeat. Quotas are the
    largest-remainder rounding of total * share (ties to the capability name), each capped at
    count * max_repeat, so with an explicit total a scarce capability may fall short of its share.
    """
    live = {c: t for c, t in targets.items() if t > 0 and counts.get(c, 0) > 0}
    share = {c: t / sum(live.values()) for c, t in live.items()}
    if total is None:
        total = min((math.floor(counts[c] * max_repeat / s + 1e-9) for c, s in share.items()), default=0)
    exact = {c: total * s for c, s in share.items()}
    out = {c: math.floor(x) for c, x in exact.items()}
    for c in sorted(share, key=lambda c: (out[c] - exact[c], c))[:total - sum(out.values())]:
        out[c] += 1
    return {c: min(out.get(c, 0), counts[c] * max_repeat) for c in counts}


def rebalance(table: pa.Table, targets: dict[str, float], max_repeat: int, total: int | None, seed: int) -> pa.Table:
    """sft table[n] -> sft table[sum of quotas], sorted by (round, id).

    A capability with quota k = q * count + rem keeps every row q times plus a seeded sample of rem rows
    once more (k < count: a plain seeded downsample). Copy m >= 1 of a row gets id `<id>#rep<m>`.
    Rows are drawn from the capability's rows in id order with a generator seeded by (seed, capability),
    so the choice does not depend on input row order or on other capabilities.
    """
    table = table.sort_by("id")
    caps = table["capability"].to_numpy(zero_copy_only=False)
    groups = {c: np.flatnonzero(caps == c) for c in np.unique(caps)}
    quota = quotas({c: len(rows) for c, rows in groups.items()}, targets, max_repeat, total)
    take, copy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for cap, rows in groups.items():
        q, rem = divmod(quota[cap], len(rows))
        sample = np.sort(np.random.default_rng([seed, zlib.crc32(cap.encode())]).permutation(len(rows))[:rem])
        take += [rows] * q + [rows[sample]]
        copy += [np.full(len(rows), m) for m in range(q)] + [np.full(rem, q)]
    take, copy = np.concatenate(take), np.concatenate(copy)
    out = table.take(take)
    suffix = pa.array(np.where(copy == 0, "", np.char.add("#rep", copy.astype(str))), pa.string())
    out = out.set_column(out.schema.get_field_index("id"), "id", pc.binary_join_element_wise(out["id"], suffix, ""))
    return out.sort_by([("round", "ascending"), ("id", "ascending")])
