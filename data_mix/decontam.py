"""Decontamination: training prompts that overlap an eval prompt.

`contaminated(table, evals, n, min_words, overlap, max_evals)`: table (id, text) of the training prompts,
evals (id, text[, overlap]) of the eval prompts -> (id string[c], eval_id string[c]) of the c contaminated
training rows, in table order.

Both texts go through `text.plain_words` here (lowercased, punctuation and symbols dropped, whitespace
collapsed), identically, so "What is the capital of France?" matches "what is the capital of france" inside
a longer prompt, and a comma added to a 20-word eval item changes nothing. A training prompt is contaminated
by an eval prompt when, after that normalization,
- the eval prompt has n or more words (n = `mix.ngram`, 13 by default) and the word n-grams it shares with
  the training prompt cover at least `overlap` of its distinctive words (`mix.ngram_overlap`, 0.5; the
  item's own `overlap` column where the eval table has one, e.g. 1.0: only the whole item), or
- it has `min_words` to n - 1 words and appears in the training prompt as a run of whole words (a short eval
  item cannot share an n-gram; equal counts as contained), or
- it has fewer than `min_words` words and equals the training prompt (one or two words, "hello" or "call
  ana", occur inside unrelated prompts too often to count containment).
eval_id is the eval prompt of the row's earliest match (by start word; ties to the smallest eval id).

Distinctive words, and why a single shared n-gram is not enough: benchmarks append the same instructions
to every item (reasoning-gym's "Give the result as your final answer. Do not include units.", our "Solve the
problem step by step...", 22 words), and generators write prompts from templates. Counting any shared
13-gram removed every GSM-symbolic training prompt and most generated code prompts, none of which holds an
eval question. So an n-gram found in more than `max_evals` eval items (`mix.ngram_max_evals`, 20) is shared
text, not a trace of one item: it is ignored, and an item's distinctive words are those its other n-grams
cover. An item copied into a training prompt shares all of them (coverage 1); two questions built from
one template share the template's fixed runs between their names and numbers (rarely half the words of
13-word runs). An item made only of shared text has no distinctive words and is not matched.

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
OVERLAP = 0.5  # of an eval item's distinctive words that shared n-grams must cover
MAX_EVALS = 20  # an n-gram in more eval items than this is shared text (instructions, templates)


def contaminated(table: pa.Table, evals: pa.Table, n: int = 13, min_words: int = MIN_WORDS,
                 overlap: float = OVERLAP, max_evals: int = MAX_EVALS) -> pa.Table:
    evals = evals.sort_by("id")  # ties go to the smallest eval id
    num = table.num_rows
    need = (evals["overlap"].to_numpy(zero_copy_only=False).astype(np.float64) if "overlap" in evals.column_names
            else np.full(evals.num_rows, overlap))
    text = pa.chunked_array([plain_words(c) for c in table["text"].chunks + evals["text"].chunks], pa.string())
    offsets, codes = words(text)  # one word code space for both
    index, grams = _eval_index(offsets[num:] - offsets[num], codes[offsets[num]:], n, min_words, max_evals)
    rows, match = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, _, offs, cods in chunks(offsets[:num + 1], codes):
        runs = _Runs(offs, cods)
        hits = []  # (row, start word in the row, eval doc) of every match that counts
        for length, key, live in runs.steps(n):
            for entry in index.get(length, ()):  # whole short items: any hit counts
                cand = entry.candidates(key, live, runs, length)
                at = np.minimum(np.searchsorted(entry.keys, key[cand]), len(entry.keys) - 1)
                ok = entry.keys[at] == key[cand]
                hits.append((runs.doc[cand[ok]], runs.rel[cand[ok]], entry.doc[at[ok]]))
            if length == n and grams is not None:
                hits.append(grams.covering(key, live, runs, need))
        d, p, e = (np.concatenate(h) for h in zip(*hits)) if hits else (np.zeros(0, np.int64),) * 3
        if len(d):
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


class _Keys:
    """Sorted keys of eval word runs with their eval docs (and start words), and a bitmap over the keys' top
    bits that lets few training windows through to the exact lookup. `whole_only`: a run must be its row."""

    def __init__(self, key: np.ndarray, doc: np.ndarray, pos: np.ndarray | None = None, whole_only: bool = False):
        order = np.lexsort((doc, key) if pos is None else (pos, doc, key))
        self.keys, self.doc = key[order], doc[order]
        self.pos = None if pos is None else pos[order]
        self.whole_only = whole_only
        bits = int(min(max(np.ceil(np.log2(max(len(key), 1) * 16)), 16), 26))  # ~16 slots a key: few false passes
        self.bitmap = np.zeros(1 << bits, bool)
        self.shift = np.uint64(64 - bits)
        self.bitmap[self.keys >> self.shift] = True  # the top bits of a multiplicative hash are its best mixed

    def candidates(self, key: np.ndarray, live: np.ndarray, runs: _Runs, length: int) -> np.ndarray:
        """Windows whose key may be in here (bitmap), live, and whole rows where only whole rows count."""
        cand = np.flatnonzero(self.bitmap[key >> self.shift])
        return cand[live[cand] & (runs.whole(cand, length) if self.whole_only else True)]


class _Grams(_Keys):
    """The eval items' distinctive n-grams (in at most `max_evals` items) and each item's distinctive words."""

    def __init__(self, key: np.ndarray, doc: np.ndarray, pos: np.ndarray, num_docs: int, n: int, max_evals: int):
        pairs = np.unique(np.stack([key, doc.astype(np.uint64)]), axis=1)  # each (key, doc) once
        keys, docs_per_key = np.unique(pairs[0], return_counts=True)
        shared = keys[docs_per_key > max_evals]
        keep = ~np.isin(key, shared)
        super().__init__(key[keep], doc[keep], pos[keep])
        self.n = n
        self.distinct = np.bincount(self.doc, weights=_covered(self.doc, self.pos, n), minlength=num_docs)

    def covering(self, key: np.ndarray, live: np.ndarray, runs: _Runs, need: np.ndarray) -> tuple:
        """(row, first matched word in the row, eval doc) of each pair whose shared n-grams cover at least
        `need[doc]` of the eval doc's distinctive words."""
        cand = self.candidates(key, live, runs, self.n)
        lo = np.searchsorted(self.keys, key[cand], side="left")
        hi = np.searchsorted(self.keys, key[cand], side="right")
        count = hi - lo
        if not count.sum():
            return (np.zeros(0, np.int64),) * 3
        window = np.repeat(cand, count)  # one (training window, eval n-gram) per match
        entry = np.repeat(lo, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        row, word, doc, pos = runs.doc[window], runs.rel[window], self.doc[entry], self.pos[entry]
        (pair_row, pair_doc), pair = np.unique(np.stack([row, doc]), axis=1, return_inverse=True)  # pair ids
        pair = pair.ravel()
        covered = np.bincount(pair, weights=_covered(pair, pos, self.n))
        first_word = np.full(len(covered), np.iinfo(np.int64).max)
        np.minimum.at(first_word, pair, word)
        ok = covered >= need[pair_doc] * self.distinct[pair_doc] - 1e-9
        return pair_row[ok], first_word[ok], pair_doc[ok]


def _covered(group: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """float[len(group)]: each run of n words' contribution to its group's union of runs [start, start + n)
    (sum per group = words covered): sorted by start within a group, a run adds the words up to the next."""
    order = np.lexsort((start, group))
    g, s = group[order], start[order]
    gap = np.diff(s, append=0)
    last = np.append(g[1:] != g[:-1], True)
    add = np.where(last, n, np.minimum(gap, n)).astype(np.float64)
    out = np.empty(len(group))
    out[order] = add
    return out


def _eval_index(offsets: np.ndarray, codes: np.ndarray, n: int, min_words: int, max_evals: int
                ) -> tuple[dict[int, list[_Keys]], _Grams | None]:
    """({run length < n: [whole items to find contained (length >= min_words) or equal]}, the n-grams of the
    items of n or more words). Equal keys are ordered by eval doc (eval id)."""
    runs, index, grams = _Runs(offsets, codes), {}, None
    for length, key, live in runs.steps(n):
        at = np.flatnonzero(live)
        if length == n:
            grams = None if not len(at) else _Grams(key[at], runs.doc[at], runs.rel[at], len(offsets) - 1, n, max_evals)
            continue
        at = at[runs.whole(at, length)]
        if len(at):
            index[length] = [_Keys(key[at], runs.doc[at], whole_only=length < min_words)]
    return index, grams
