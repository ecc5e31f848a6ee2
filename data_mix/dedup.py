"""Exact and near-duplicate detection over prompt texts.

Both take a table with `id` and `text` (normalized prompt text, see `text.prompt_text`) in priority
order and return the rows to drop as a table (id string[d], dup_of string[d]): the id of the kept row
each one duplicates. The first row in table order is kept; callers sort by (round, id) so older data wins.
Both take an optional `group` (int64[n]): rows of different groups are never duplicates of each other. The
mix compares user turns and groups by the rest of the prompt (system message, tool list): a tool list shared
by many prompts makes them no more alike, and one question asked with different tools is two tasks.

Near duplicates: MinHash signatures of word 3-gram shingles, banded LSH for candidates (band sizes from
datasketch's MinHashLSH, weighted toward recall), candidates verified by the signatures' estimated
Jaccard >= threshold, and clusters = connected components of verified pairs. The MinHash is our own
numpy version: datasketch's per-document MinHash costs ~180 us a prompt (3 minutes for 1M on one core).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix.text import chunks, grams, mix64, words

SHINGLE = 3  # words per shingle: a one-word change in a 40-word prompt keeps Jaccard ~0.85


def exact(table: pa.Table, group: np.ndarray | None = None) -> pa.Table:
    """Rows whose text equals an earlier row's text (in the same group) -> (id, dup_of)."""
    codes = pc.dictionary_encode(table["text"]).combine_chunks().indices.to_numpy().astype(np.int64)
    if group is not None and len(codes):  # one code per (group, text) pair
        codes = np.asarray(group, np.int64) * (codes.max() + 1) + codes
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return _dropped(table, first[inverse])


def near(table: pa.Table, threshold: float, num_perm: int, seed: int, group: np.ndarray | None = None) -> pa.Table:
    """Rows whose estimated Jaccard similarity (word 3-gram shingles) to an earlier row of their cluster (in
    the same group) reaches `threshold` -> (id, dup_of = the cluster's first row)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = table.num_rows
    if n < 2:
        return _dropped(table, np.arange(n))
    sig = signatures(table["text"], num_perm, seed)
    group = None if group is None else np.asarray(group, np.int64)
    i, j = candidates(sig, *bands(threshold, num_perm), group)
    if group is not None:
        i, j = i[group[i] == group[j]], j[group[i] == group[j]]
    step = 1 << 18  # pairs verified at a time: bounds memory to step * num_perm bytes
    sim = np.concatenate([np.zeros(0)] + [(sig[i[k:k + step]] == sig[j[k:k + step]]).mean(1)
                                          for k in range(0, len(i), step)])
    i, j = i[sim >= threshold], j[sim >= threshold]
    _, label = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    first = np.full(label.max() + 1, n)
    np.minimum.at(first, label, np.arange(n))
    return _dropped(table, first[label])


def signatures(text: pa.Array | pa.ChunkedArray, num_perm: int, seed: int) -> np.ndarray:
    """string[n] -> MinHash signatures uint32[n, num_perm] over word 3-gram shingles.

    Permutation p of a shingle key x is the high 32 bits of a_p * x + b_p (mod 2^64), a_p odd, seeded.
    An empty text has no shingles: its signature is all 0xFFFFFFFF.
    """
    offsets, codes = words(text)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
    sig = np.full((len(offsets) - 1, num_perm), 0xFFFFFFFF, np.uint32)
    for start, stop, offs, cods in chunks(offsets, codes):
        doc, key = grams(offs, cods, SHINGLE)
        rows, heads = np.unique(doc, return_index=True)
        for p in range(num_perm):
            sig[start + rows, p] = np.minimum.reduceat(((key * a[p] + b[p]) >> np.uint64(32)).astype(np.uint32), heads)
    return sig


def bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(b bands, r rows each) for LSH at `threshold`: datasketch's optimum with false negatives weighted 0.9
    (false positives only cost a verification). 0.8 / 64 perms -> (9, 7)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    return lsh.b, lsh.r


def candidates(sig: np.ndarray, b: int, r: int, group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LSH candidate pairs (i int64[c], j int64[c]), i < j: in some band, j shares a bucket whose first row is i
    (with `group`, buckets are per group)."""
    n, pairs = len(sig), []
    start = np.zeros(n, np.uint64) if group is None else mix64(np.asarray(group).astype(np.uint64) + np.uint64(1))
    for band in range(b):
        key = start.copy()
        for col in sig[:, band * r:(band + 1) * r].T:
            key = mix64(key ^ col.astype(np.uint64))
        order = np.argsort(key, kind="stable")  # equal keys stay in row order: a bucket's head is its first row
        sorted_key = key[order]
        new = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
        head = order[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
        pairs.append((head[~new], order[~new]))
    pair = np.unique(np.concatenate([i * n + j for i, j in pairs]))
    return pair // n, pair % n


def _dropped(table: pa.Table, keep_as: np.ndarray) -> pa.Table:
    """keep_as[k] = the row that row k is a duplicate of (itself when kept) -> (id, dup_of) of the dropped rows."""
    dup = np.flatnonzero(keep_as != np.arange(table.num_rows))
    ids = table["id"]
    return pa.table({"id": ids.take(dup), "dup_of": ids.take(keep_as[dup])})
