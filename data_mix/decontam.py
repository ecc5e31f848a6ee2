"""Decontamination: training prompts that overlap an eval prompt.

`contaminated(table, evals, n)`: table (id, text) of the training prompts, evals (id, text) of the eval
prompts -> (id string[c], eval_id string[c]) of the c contaminated training rows, in table order.

Both texts go through `text.plain_words` here (lowercased, punctuation and symbols dropped, whitespace
collapsed), identically, so "What is the capital of France?" matches "what is the capital of france" inside
a longer prompt, and a comma added to a 20-word eval item changes nothing. A training prompt is contaminated
when, after that normalization,
- it shares a word n-gram with an eval prompt of n or more words (n = `mix.ngram`, 13 by default), or
- it contains an eval prompt of `min_words` to n - 1 words as a run of whole words (a short eval item
  cannot share an n-gram; equal counts as contained), or
- it equals an eval prompt of fewer than `min_words` words (one or two words, "hello" or "call ana",
  occur inside unrelated prompts too often to count containment).
eval_id is the eval prompt of the row's earliest match (by start word; ties to the smallest eval id).

Matching is by 64-bit keys of word runs (a false match needs a key collision: ~(words * eval runs) / 2^64),
tested a run length at a time against a bitmap of the eval keys before an exact lookup, and done a chunk of
training rows at a time (bounded memory).

No near match of whole prompts (MinHash) is done here, on purpose. A prompt that shares no 13-gram with an
eval item of L words yet reaches the recipe's Jaccard of 0.8 over word 3-gram shingles is, for one changed
word, an item of 11 to 13 words with its first or last word changed (J = (L - 3) / (L - 1) = 0.80 to 0.83;
a change inside cuts J below 0.8, and more changes lower it further). That is where templated prompts
collide: "write a python function kadi x that returns x plus 3" against the eval item "... plus 4" has
J = 0.8, so the tiny world's code prompts would mostly be removed, though none is an eval question. A higher
threshold adds nothing the n-gram and containment tests miss; and MinHash would cost as much again as near
dedup (~10 s per 1M prompts).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix.text import _K, chunks, plain_words, words

MIN_WORDS = 3  # eval prompts shorter than this are matched only by equality, never by containment


def contaminated(table: pa.Table, evals: pa.Table, n: int = 13, min_words: int = MIN_WORDS) -> pa.Table:
    evals = evals.sort_by("id")  # ties go to the smallest eval id
    num = table.num_rows
    text = pa.chunked_array([plain_words(c) for c in table["text"].chunks + evals["text"].chunks], pa.string())
    offsets, codes = words(text)  # one word code space for both
    index = _eval_index(offsets[num:] - offsets[num], codes[offsets[num]:], n, min_words)
    rows, match = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, _, offs, cods in chunks(offsets[:num + 1], codes):
        runs = _Runs(offs, cods)
        hit_doc, hit_pos, hit_eval = [], [], []
        for length, key, live in runs.steps(n):
            for keys, eval_doc, bitmap, shift, whole_only in index.get(length, ()):
                cand = np.flatnonzero(bitmap[key >> shift])  # few windows pass the bitmap to the exact lookup
                cand = cand[live[cand] & (runs.whole(cand, length) if whole_only else True)]
                at = np.minimum(np.searchsorted(keys, key[cand]), len(keys) - 1)
                ok = keys[at] == key[cand]
                hit_doc.append(runs.doc[cand[ok]])
                hit_pos.append(runs.rel[cand[ok]])
                hit_eval.append(eval_doc[at[ok]])
        if hit_doc:
            d, p, e = np.concatenate(hit_doc), np.concatenate(hit_pos), np.concatenate(hit_eval)
            order = np.lexsort((e, p, d))  # by row, then start word, then eval id
            first_doc, first = np.unique(d[order], return_index=True)
            rows.append(start + first_doc)
            match.append(e[order][first])
    rows, match = np.concatenate(rows), np.concatenate(match)
    return pa.table({"id": table["id"].take(rows), "eval_id": pc.take(evals["id"], match)})


class _Runs:
    """The runs of 1..n consecutive words of each row, as one window per word (the runs starting there):
    doc int64[w] (its row), rel int64[w] (its start word within the row)."""

    def __init__(self, offsets: np.ndarray, codes: np.ndarray):
        lens = np.diff(offsets)
        self.doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
        self.pos = np.arange(len(codes), dtype=np.int64)
        self.end = offsets[1:][self.doc]
        self.rel = self.pos - offsets[:-1][self.doc]
        self.codes = codes

    def steps(self, n: int):
        """Yields (length, key uint64[w], live bool[w]) for length = 1..n: each window's key of its first
        `length` words, valid where live (the row has that many words from there on). Equal word runs have
        equal keys, whatever their rows."""
        padded = np.append(self.codes, 0).astype(np.uint64)
        key = np.zeros(len(self.pos), np.uint64)
        for t in range(n):
            idx = self.pos + t
            live = idx < self.end
            key = (key + padded[np.where(live, idx, len(self.codes))]) * _K
            yield t + 1, key, live

    def whole(self, at: np.ndarray, length: int) -> np.ndarray:
        """bool[len(at)]: the run of `length` words at windows `at` is its whole row."""
        return (self.rel[at] == 0) & (self.end[at] - self.pos[at] == length)


def _eval_index(offsets: np.ndarray, codes: np.ndarray, n: int, min_words: int) -> dict[int, list[tuple]]:
    """{run length: [(sorted keys, their eval docs, bitmap, shift, whole_only)]}: the n-grams of the eval
    prompts of n or more words and, to be found contained (whole_only False) or equal (True), the whole of
    the shorter ones. Equal keys are ordered by eval doc (eval id)."""
    runs, index = _Runs(offsets, codes), {}
    for length, key, live in runs.steps(n):
        at = np.flatnonzero(live)
        if length < n:
            at = at[runs.whole(at, length)]
        if len(at):
            index[length] = [(*_lookup(key[at], runs.doc[at]), length < min_words)]
    return index


def _lookup(key: np.ndarray, doc: np.ndarray) -> tuple:
    """keys, docs -> (sorted keys, their docs, bitmap over the keys' top bits, shift to index it)."""
    order = np.lexsort((doc, key))
    key, doc = key[order], doc[order]
    bits = int(min(max(np.ceil(np.log2(max(len(key), 1) * 16)), 16), 26))  # ~16 slots a key: few false passes
    bitmap = np.zeros(1 << bits, bool)
    shift = np.uint64(64 - bits)
    bitmap[key >> shift] = True  # the top bits of a multiplicative hash are its best mixed
    return key, doc, bitmap, shift
