"""Rebalancing toward target proportions per capability: downsample the plentiful, repeat the scarce.

`quotas` is the arithmetic (plain dicts); `rebalance` applies it to an `sft` table. Example: 60/30/10
math/code/tools rows, targets 0.5/0.25/0.25, max_repeat 2 -> tools allows at most 10 * 2 / 0.25 = 80
rows in all -> quotas 40/20/20 (math and code downsampled, every tools row twice).

Only high-quality rows are repeated: a row may appear up to max_repeat times when its quality tag is
"high" (tagger.QUALITY's top), once otherwise. Without tags (or a quality column) there is no quality
signal, and every row counts as repeatable.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix.tagger import MIDDLE_DIFFICULTY, QUALITY
from data_mix.text import sort_by
from data_mix.text import take as take_rows

REPEATED = QUALITY[-1]  # the quality a row needs to be repeated


def quotas(counts: dict[str, int], targets: dict[str, float], max_repeat: int = 1,
           total: int | None = None, capacity: dict[str, int] | None = None) -> dict[str, int]:
    """Output rows per capability of `counts` (input rows per capability).

    capacity: the most rows each can give (default count * max_repeat; `rebalance` passes count + its
    high-quality rows * (max_repeat - 1)). Targeted capabilities that have rows share the total in proportion
    to their targets (renormalized, so a capability absent from this round's data does not empty the mix);
    other capabilities get 0. total None -> the largest total at which no quota exceeds its capacity.
    With an explicit total, a capability whose share exceeds its capacity gets its capacity and the
    shortfall goes to the others in proportion to their targets (repeatedly, as more reach theirs); only
    when every one is at capacity is the output short of `total`. Quotas are the largest-remainder rounding
    of the shares (ties to the capability name): deterministic, no draw involved.
    """
    cap = {c: counts[c] * max_repeat if capacity is None else capacity[c] for c in counts}
    live = {c: t for c, t in targets.items() if t > 0 and counts.get(c, 0) > 0}
    if total is None:
        total = min((math.floor(cap[c] * sum(live.values()) / t + 1e-9) for c, t in live.items()), default=0)
    out = {c: 0 for c in counts}
    left, grow = total, dict(live)
    while grow:  # water-filling: who would pass their capacity gets it; the rest share what is left
        exact = {c: left * t / sum(grow.values()) for c, t in grow.items()}
        full = [c for c in grow if exact[c] >= cap[c] - 1e-9]
        if not full:
            floor = {c: math.floor(x + 1e-9) for c, x in exact.items()}
            for c in sorted(grow, key=lambda c: (floor[c] - exact[c], c))[:max(left - sum(floor.values()), 0)]:
                floor[c] += 1
            out.update(floor)
            break
        for c in full:
            out[c] = cap[c]
            left -= cap[c]
            del grow[c]
    return {c: min(out[c], cap[c]) for c in counts}


def rebalance(table: pa.Table, targets: dict[str, float], max_repeat: int, total: int | None, seed: int, *,
              tags: pa.Table | None = None, topic_targets: dict[str, float] | None = None,
              difficulty_weight: float = 0.0) -> pa.Table:
    """sft table[n] -> sft table[sum of quotas], sorted by (round, id).

    A group (a capability, or a (capability, topic)) with quota k <= count is a seeded sample of k rows.
    With k > count every row is kept once and the k - count extra rows are copies of its repeatable rows
    (quality "high", see the module docstring; h of them): each q = (k - count) // h times more, plus a
    seeded sample of the remainder once more. Copy m >= 1 of a row gets id `<id>#rep<m>`.
    Rows are drawn from the group's rows in id order with a generator seeded by (seed, capability[, topic]),
    so the choice does not depend on input row order or on other capabilities.

    With `tags` (the tagger's table, joined by id):
    - quality: which rows may be repeated (above);
    - topic_targets {coarse topic: share}: each capability's quota is split over its rows' topics by
      `quotas`: a targeted topic present gets its target's share of the targeted topics' part, a topic
      without a target keeps its own share of the capability's rows (so a capability none of whose topics
      is targeted keeps its quota, split as its rows are), and a target of 0 drops the topic. A topic short
      of its share (capped by max_repeat) leaves the rest to the capability's other topics;
    - difficulty_weight w > 0: the sampled rows are drawn without replacement with probability
      proportional to difficulty ** w (Efraimidis-Spirakis keys), so harder examples survive a downsample
      more often. w = 0 is the uniform draw, identical to the draw without tags.
    """
    table = sort_by(table, "id")
    caps = table["capability"].to_numpy(zero_copy_only=False)
    groups = {c: np.flatnonzero(caps == c) for c in np.unique(caps)}
    repeatable = np.ones(table.num_rows, bool) if tags is None or "quality" not in tags.column_names else \
        tag_column(table, tags, "quality") == REPEATED
    capacity = {c: _capacity(rows, repeatable, max_repeat) for c, rows in groups.items()}
    quota = quotas({c: len(rows) for c, rows in groups.items()}, targets, max_repeat, total, capacity)
    topic = tag_column(table, tags, "topic") if topic_targets is not None else None
    # An unknown difficulty (the LLM judge gave no answer: NaN here) weighs as the middle level.
    weight = np.nan_to_num(tag_column(table, tags, "difficulty").astype(np.float64), nan=MIDDLE_DIFFICULTY) \
        ** difficulty_weight \
        if difficulty_weight else None
    take, copy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for cap, rows in groups.items():
        for key, sub, k in _split(cap, rows, quota[cap], topic, topic_targets, max_repeat, repeatable):
            t, c = _draw(sub, k, np.random.default_rng([seed, *(zlib.crc32(x.encode()) for x in key)]),
                         None if weight is None else weight[sub], repeatable[sub])
            take.append(t)
            copy.append(c)
    take, copy = np.concatenate(take), np.concatenate(copy)
    out = take_rows(table, take)
    suffix = pa.array(np.where(copy == 0, "", np.char.add("#rep", copy.astype(str))), pa.string())
    out = out.set_column(out.schema.get_field_index("id"), "id", pc.binary_join_element_wise(out["id"], suffix, ""))
    return sort_by(out, [("round", "ascending"), ("id", "ascending")])


def _capacity(rows: np.ndarray, repeatable: np.ndarray, max_repeat: int) -> int:
    """The most rows a group can give: each row once, its repeatable rows max_repeat times."""
    return len(rows) + int(repeatable[rows].sum()) * (max_repeat - 1)


def _split(cap: str, rows: np.ndarray, quota: int, topic: np.ndarray | None, topic_targets: dict[str, float] | None,
           max_repeat: int, repeatable: np.ndarray):
    """Yields (seed key, rows, quota) per draw group: the capability, or its (capability, topic) groups."""
    if topic is None:
        yield (cap,), rows, quota
        return
    by_topic = {str(t): rows[topic[rows] == t] for t in np.unique(topic[rows])}
    counts = {t: len(r) for t, r in by_topic.items()}
    split = quotas(counts, topic_shares(counts, topic_targets), max_repeat, quota,
                   {t: _capacity(r, repeatable, max_repeat) for t, r in by_topic.items()})
    for t, sub in by_topic.items():
        yield (cap, t), sub, split[t]


def topic_shares(counts: dict[str, int], topic_targets: dict[str, float]) -> dict[str, float]:
    """{topic: rows of one capability} -> {topic: share of its quota}: untargeted topics keep their share of
    the rows; the targeted ones split the rest in proportion to their targets (a target of 0 gets none).
    Example: 60 math, 30 chat, 10 writing rows, targets {math: 0.4, chat: 0.2, code: 0.4} -> writing 0.1,
    math 0.9 * 0.4 / 0.6 = 0.6, chat 0.3."""
    n = sum(counts.values())
    free = {t: c / n for t, c in counts.items() if t not in topic_targets}
    targeted = {t: topic_targets[t] for t in counts if t in topic_targets}
    part, weight = 1 - sum(free.values()), sum(targeted.values())
    return {**free, **{t: (part * w / weight if weight else 0.0) for t, w in targeted.items()}}


def _draw(rows: np.ndarray, k: int, rng: np.random.Generator, weight: np.ndarray | None,
          repeatable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k rows out of `rows` -> (take, copy number): k <= len(rows): a sample of k; else every row once, every
    repeatable row q more times, and a sample of rem repeatable rows once more (k - len(rows) = q * h + rem)."""
    if k <= len(rows):
        return _sample(rows, k, rng, weight), np.zeros(k, np.int64)
    pool = rows[repeatable]
    if not len(pool):
        raise ValueError(f"quota {k} > {len(rows)} rows, none of them repeatable")  # quotas() never asks this
    q, rem = divmod(k - len(rows), len(pool))
    take = [rows] + [pool] * q + [_sample(pool, rem, rng, None if weight is None else weight[repeatable])]
    copy = [np.zeros(len(rows), np.int64)] + [np.full(len(pool), m) for m in range(1, q + 1)] + [np.full(rem, q + 1)]
    return np.concatenate(take), np.concatenate(copy)


def _sample(rows: np.ndarray, k: int, rng: np.random.Generator, weight: np.ndarray | None) -> np.ndarray:
    """k of `rows` without replacement, in row order: uniform, or with probability ~ weight."""
    if weight is None:
        return rows[np.sort(rng.permutation(len(rows))[:k])]
    # Efraimidis-Spirakis: the k largest u^(1/w) are a weighted sample without replacement
    keys = np.log(rng.random(len(rows))) / np.maximum(weight, 1e-12)
    return rows[np.sort(np.argsort(-keys, kind="stable")[:k])]


def above_floor(table: pa.Table, tags: pa.Table, floor: str) -> pa.Table:
    """The rows of `table` whose quality (tags joined by id) is `floor` or better (QUALITY is ascending)."""
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
