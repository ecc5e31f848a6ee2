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

from data_mix.tagger import MIDDLE_DIFFICULTY


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


def rebalance(table: pa.Table, targets: dict[str, float], max_repeat: int, total: int | None, seed: int, *,
              tags: pa.Table | None = None, topic_targets: dict[str, float] | None = None,
              difficulty_weight: float = 0.0) -> pa.Table:
    """sft table[n] -> sft table[sum of quotas], sorted by (round, id).

    A capability with quota k = q * count + rem keeps every row q times plus a seeded sample of rem rows
    once more (k < count: a plain seeded downsample). Copy m >= 1 of a row gets id `<id>#rep<m>`.
    Rows are drawn from the capability's rows in id order with a generator seeded by (seed, capability),
    so the choice does not depend on input row order or on other capabilities.

    With `tags` (the tagger's table, joined by id):
    - topic_targets {coarse topic: share}: each capability's quota is split over its rows' topics by
      `quotas` (renormalized over the topics present; a topic without a target gets none, as a capability
      without a target does), and each (capability, topic) group is drawn as above, seeded by both names
      (a scarce topic capped at count * max_repeat leaves its capability short of its quota);
    - difficulty_weight w > 0: the sampled rows are drawn without replacement with probability
      proportional to difficulty ** w (Efraimidis-Spirakis keys), so harder examples survive a downsample
      more often. w = 0 is the uniform draw, identical to the draw without tags.
    """
    table = table.sort_by("id")
    caps = table["capability"].to_numpy(zero_copy_only=False)
    groups = {c: np.flatnonzero(caps == c) for c in np.unique(caps)}
    quota = quotas({c: len(rows) for c, rows in groups.items()}, targets, max_repeat, total)
    topic = tag_column(table, tags, "topic") if topic_targets is not None else None
    # An unknown difficulty (the LLM judge gave no answer: NaN here) weighs as the middle level.
    weight = np.nan_to_num(tag_column(table, tags, "difficulty").astype(np.float64), nan=MIDDLE_DIFFICULTY) \
        ** difficulty_weight \
        if difficulty_weight else None
    take, copy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for cap, rows in groups.items():
        for key, sub, k in _split(cap, rows, quota[cap], topic, topic_targets, max_repeat):
            t, c = _draw(sub, k, np.random.default_rng([seed, *(zlib.crc32(x.encode()) for x in key)]),
                         None if weight is None else weight[sub])
            take.append(t)
            copy.append(c)
    take, copy = np.concatenate(take), np.concatenate(copy)
    out = table.take(take)
    suffix = pa.array(np.where(copy == 0, "", np.char.add("#rep", copy.astype(str))), pa.string())
    out = out.set_column(out.schema.get_field_index("id"), "id", pc.binary_join_element_wise(out["id"], suffix, ""))
    return out.sort_by([("round", "ascending"), ("id", "ascending")])


def _split(cap: str, rows: np.ndarray, quota: int, topic: np.ndarray | None, topic_targets: dict[str, float] | None,
           max_repeat: int):
    """Yields (seed key, rows, quota) per draw group: the capability, or its (capability, topic) groups."""
    if topic is None:
        yield (cap,), rows, quota
        return
    by_topic = {t: rows[topic[rows] == t] for t in np.unique(topic[rows])}
    split = quotas({t: len(r) for t, r in by_topic.items()}, topic_targets, max_repeat, quota)
    for t, sub in by_topic.items():
        yield (cap, str(t)), sub, split[t]


def _draw(rows: np.ndarray, k: int, rng: np.random.Generator, weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """k rows out of `rows` -> (take, copy number): every row q times, plus rem sampled rows once more."""
    q, rem = divmod(k, len(rows))
    if weight is None:
        sample = np.sort(rng.permutation(len(rows))[:rem])
    else:  # Efraimidis-Spirakis: the rem largest u^(1/w) are a weighted sample without replacement
        keys = np.log(rng.random(len(rows))) / np.maximum(weight, 1e-12)
        sample = np.sort(np.argsort(-keys, kind="stable")[:rem])
    take = [rows] * q + [rows[sample]]
    copy = [np.full(len(rows), m) for m in range(q)] + [np.full(rem, q)]
    return np.concatenate(take), np.concatenate(copy)


def above_floor(table: pa.Table, tags: pa.Table, floor: str) -> pa.Table:
    """The rows of `table` whose quality (tags joined by id) is `floor` or better (QUALITY is ascending)."""
    from data_mix.tagger import QUALITY

    rank = {q: i for i, q in enumerate(QUALITY)}
    keep = [rank[q] >= rank[floor] for q in tag_column(table, tags, "quality")]
    return table.filter(pa.array(keep, pa.bool_()))


def tag_column(table: pa.Table, tags: pa.Table | None, name: str) -> np.ndarray:
    """tags[name] for each row of `table`, joined by id; every row must have tags."""
    if tags is None:
        raise ValueError(f"rebalancing by {name} needs the tagger's table")
    at = pc.index_in(table["id"], value_set=tags["id"].combine_chunks() if isinstance(tags["id"], pa.ChunkedArray)
                     else tags["id"])
    if at.null_count:
        raise ValueError(f"{at.null_count} row(s) have no tags, e.g. {table['id'].filter(pc.is_null(at))[0]}")
    return tags[name].take(at).to_numpy(zero_copy_only=False)
