"""Semantic dedup (Llama 3 §4.2.3): cluster prompt embeddings, then within each cluster keep an example
only if its cosine similarity to every example already kept is below a threshold, visiting the cluster's
examples by quality x difficulty, best first.

`dedup(table, embeddings, threshold, cluster_size, seed)`: table (id, score) of n examples and their unit
embeddings float32[n, d] (row i of each) -> the rows to drop as (id, dup_of, similarity): dup_of is the
kept example it is most similar to. Like `dedup.exact` / `dedup.near`, callers drop by id.

Clusters bound the cost: greedy selection is sequential and compares each example with the kept ones,
so one cluster of n would cost O(n^2) similarities. Spherical k-means with k = ceil(n / cluster_size)
keeps clusters near cluster_size; pairs split across clusters are missed (the price the paper pays too).
n <= cluster_size is one cluster: exact greedy. Deterministic: seeded k-means initialisation, ties in
score broken by id, so the result does not depend on input row order.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KMEANS_ITERS = 10  # Lloyd steps; assignments of prompt embeddings settle in a handful


def dedup(table: pa.Table, embeddings: np.ndarray, threshold: float, cluster_size: int = 2000,
          seed: int = 0, group: np.ndarray | None = None) -> pa.Table:
    """(id, score)[n] + unit embeddings[n, d] -> dropped rows (id, dup_of, similarity), in id order.
    `group`: int64[n] context codes (system message, tool list); a row only duplicates a row of its own
    group, as in exact and near dedup: the same question with other tools offered is another task."""
    n = table.num_rows
    order = np.asarray(pc.sort_indices(table, [("score", "descending"), ("id", "ascending")]))
    emb = np.ascontiguousarray(embeddings[order], np.float32)  # rows in visiting order from here on
    label = kmeans(emb, math.ceil(n / cluster_size), seed) if n > cluster_size else np.zeros(n, np.int64)
    if group is not None:
        label = label * (int(group.max(initial=0)) + 1) + np.asarray(group, np.int64)[order]
    dup_of, sim = np.arange(n), np.zeros(n, np.float32)
    by_label = np.argsort(label, kind="stable")  # each cluster's rows stay in visiting order
    for rows in np.split(by_label, np.flatnonzero(np.diff(label[by_label])) + 1):
        if len(rows) < 2:
            continue  # alone in its cluster (many groups: one prompt per tool list): nothing to compare
        of, s = greedy(emb[rows], threshold)
        dup_of[rows], sim[rows] = rows[of], s
    drop = np.flatnonzero(dup_of != np.arange(n))
    ids = table["id"].take(pa.array(order))
    out = pa.table({"id": ids.take(pa.array(drop)), "dup_of": ids.take(pa.array(dup_of[drop])),
                    "similarity": pa.array(sim[drop])})
    return out.sort_by("id")


def greedy(emb: np.ndarray, threshold: float, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows in visiting order -> (dup_of int64[m], similarity float32[m]): dup_of[i] = i for a kept row,
    else the kept row of highest similarity (>= threshold) visited before it.

    Equivalent to "keep i if max cosine to the kept rows < threshold", computed the other way round: each
    kept row marks the later rows within threshold, a block of rows' similarities at a time (one matmul).
    """
    m = len(emb)
    dup_of, best = np.arange(m), np.full(m, -np.inf, np.float32)
    for start in range(0, m, block):
        stop = min(start + block, m)
        sims = emb[start:stop] @ emb[start:].T  # block rows x (the rows from this block on)
        for i in range(start, stop):
            if dup_of[i] != i:
                continue  # dropped: it marks nothing
            row = sims[i - start, i - start + 1:]
            later = i + 1 + np.flatnonzero((row >= threshold) & (row > best[i + 1:]))
            dup_of[later], best[later] = i, sims[i - start, later - start]
    return dup_of, np.where(dup_of == np.arange(m), 0, best).astype(np.float32)


def kmeans(emb: np.ndarray, k: int, seed: int, iters: int = KMEANS_ITERS, rows: int = 1 << 14) -> np.ndarray:
    """Spherical k-means (cosine) over unit rows -> label int64[n]. Centres start at k seeded distinct rows;
    a centre that loses all its rows keeps its place. Rows are assigned `rows` at a time (bounded memory)."""
    from scipy.sparse import coo_matrix

    rng = np.random.default_rng(seed)
    centres = emb[np.sort(rng.choice(len(emb), size=min(k, len(emb)), replace=False))].copy()
    label = np.zeros(len(emb), np.int64)
    for _ in range(iters):
        for start in range(0, len(emb), rows):
            label[start:start + rows] = (emb[start:start + rows] @ centres.T).argmax(1)
        member = coo_matrix((np.ones(len(emb), np.float32), (label, np.arange(len(emb)))),
                            shape=(len(centres), len(emb)))
        sums = np.asarray(member.tocsr() @ emb)  # per-centre sums of its rows (np.add.at is ~50x slower)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centres = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centres)
    return label
