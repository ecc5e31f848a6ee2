"""Prompt text as Arrow strings, and word n-grams as 64-bit keys, vectorised with pyarrow and numpy.

Shapes: n rows of text -> `words` gives offsets int64[n + 1] and word codes int32[m] (m words in all);
`grams` turns those into (doc int64[g], key uint64[g]), the g n-grams of each row in row order.
Everything here is deterministic: the same input gives the same codes and keys.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_K = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio)


def normalize(text: pa.Array) -> pa.Array:
    """string[n] -> string[n]: lowercased, whitespace runs collapsed to one space, trimmed."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s+", " "))


def prompt_text(messages: pa.Array | pa.ChunkedArray, rows: int = 1 << 16, user_only: bool = False) -> pa.ChunkedArray:
    """list<struct<role, content>>[n] -> normalized string[n]: the non-assistant contents of each row, joined
    (`user_only`: the user turns alone). Works `rows` rows at a time, so intermediates stay small."""
    return pa.chunked_array([_prompt_text(messages.slice(i, rows), user_only) for i in range(0, len(messages), rows)],
                            pa.string())


def _prompt_text(messages: pa.Array | pa.ChunkedArray, user_only: bool) -> pa.Array:
    messages = messages.combine_chunks() if isinstance(messages, pa.ChunkedArray) else messages
    flat, parent = messages.flatten(), pc.list_parent_indices(messages)
    keep = pc.equal(flat.field("role"), "user") if user_only else pc.not_equal(flat.field("role"), "assistant")
    content = pc.fill_null(flat.field("content").filter(keep), "")
    counts = np.bincount(parent.filter(keep).to_numpy(), minlength=len(messages))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    return normalize(pc.binary_join(pa.ListArray.from_arrays(offsets, content), " "))


def words(text: pa.Array | pa.ChunkedArray, rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """string[n] -> (offsets int64[n + 1], codes int32[m]): row i's words are codes[offsets[i]:offsets[i + 1]].

    Words are split on whitespace; codes (>= 1) are shared by equal words within this call only. Works
    `rows` rows at a time, growing one vocabulary, so no more than a chunk's words exist as strings at once.
    """
    vocab, offsets, codes = pa.array([], pa.string()), [np.zeros(1, np.int64)], [np.zeros(0, np.int32)]
    for start in range(0, len(text), rows):
        part = text.slice(start, rows)
        part = part.combine_chunks() if isinstance(part, pa.ChunkedArray) else part
        part = pc.if_else(pc.equal(pc.utf8_length(part), 0), pa.scalar(None, pa.string()), part)  # "" has no words
        lists = pc.utf8_split_whitespace(part)
        local = pc.dictionary_encode(lists.flatten())
        code = pc.index_in(local.dictionary, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.float64)  # NaN: new
        new = np.isnan(code)
        code[new] = len(vocab) + np.arange(new.sum())
        vocab = pa.concat_arrays([vocab, local.dictionary.filter(pa.array(new))])
        codes.append((code.astype(np.int32) + 1)[local.indices.to_numpy(zero_copy_only=False)])
        o = lists.offsets.to_numpy().astype(np.int64)
        offsets.append(o[1:] - o[0] + offsets[-1][-1])
    return np.concatenate(offsets), np.concatenate(codes)


def grams(offsets: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-grams of each row -> (doc int64[g], key uint64[g]), docs ascending.

    A row with L >= n words has L - n + 1 grams; a row with 0 < L < n words has one gram, the whole
    row (so two equal short rows always share a key); an empty row has none. Keys are 64-bit hashes.
    """
    lens = np.diff(offsets)
    count = np.where(lens >= n, lens - n + 1, (lens > 0).astype(np.int64))
    doc = np.repeat(np.arange(len(lens), dtype=np.int64), count)
    first = np.cumsum(count) - count  # index of each row's first gram
    pos = offsets[:-1][doc] + (np.arange(len(doc), dtype=np.int64) - first[doc])
    end = offsets[1:][doc]
    padded = np.append(codes, 0).astype(np.uint64)  # code 0 pads a short row up to n words
    key = np.zeros(len(doc), np.uint64)
    for t in range(n):
        idx = pos + t
        key = (key + padded[np.where(idx < end, idx, len(codes))]) * _K
    return doc, mix64(key)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: uint64[k] -> uint64[k], well spread."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def chunks(offsets: np.ndarray, codes: np.ndarray, rows: int = 1 << 16):
    """Splits n rows into runs of `rows` (bounded memory): yields (start, stop, offsets, codes) of each run,
    its offsets rebased to its own codes, ready for `grams`."""
    for start in range(0, len(offsets) - 1, rows):
        stop = min(start + rows, len(offsets) - 1)
        lo, hi = offsets[start], offsets[stop]
        yield start, stop, offsets[start:stop + 1] - lo, codes[lo:hi]
