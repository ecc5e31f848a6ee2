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


def normalize(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """string[n] -> string[n]: lowercased, whitespace runs collapsed to one space, trimmed."""
    # r"\s{2,}|[^\S ]" is r"\s+" but leaves a single space alone: ~8x faster on text that is mostly single spaces.
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s{2,}|[^\S ]", " "))


APOSTROPHES = "['\u2019]"  # deleted: "don't" and "dont" are one word
# A run of punctuation or symbols (anything but letters, digits and combining marks of any script), with the
# spaces around it; matching only runs that hold one keeps a plain space out of the (slow) replacement.
PUNCTUATION = r"\s*[^\p{L}\p{N}\p{M}\s][^\p{L}\p{N}\p{M}]*"


def plain_words(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """string[n] -> string[n]: `normalize`d with punctuation gone, the text decontamination compares
    ("What is the capital of France?" -> "what is the capital of france"). Apostrophes are deleted; every
    other run of punctuation or symbols becomes a space ("2+2" and "2 + 2" -> "2 2", "well-known" ->
    "well known"). Letters and digits of every script are kept, so non-Latin prompts keep their words."""
    text = pc.replace_substring_regex(text, APOSTROPHES, "")
    return normalize(pc.replace_substring_regex(text, PUNCTUATION, " "))


# Messages are processed a block at a time: at most `rows` rows and about BLOCK_BYTES bytes of message content,
# never more than one input chunk. Nothing combines a whole column's chunks, so a column holding more than
# Arrow's 2 GiB per string array (long replies) works, and each block's intermediates stay small.
BLOCK_BYTES = 1 << 28


def blocks(messages: pa.Array | pa.ChunkedArray, rows: int = 1 << 16, max_bytes: int | None = None):
    """list<struct<role, content>>[n] -> yields consecutive zero-copy slices (Arrays) covering the n rows in
    order, each within one chunk, of at most `rows` rows and `max_bytes` (default BLOCK_BYTES) bytes of content
    (a single larger row is a block of its own)."""
    max_bytes = BLOCK_BYTES if max_bytes is None else max_bytes
    for chunk in (messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]):
        n = len(chunk)
        if n == 0:
            continue
        offsets = chunk.offsets.to_numpy().astype(np.int64)  # into chunk.values (the unsliced child)
        size = pc.fill_null(pc.binary_length(chunk.values.field("content")), 0).to_numpy(zero_copy_only=False)
        cum = np.concatenate([[0], np.cumsum(size, dtype=np.int64)])[offsets]  # content bytes before each row
        start = 0
        while start < n:
            stop = min(start + rows, n)
            if cum[stop] - cum[start] > max_bytes:
                stop = max(start + 1, int(np.searchsorted(cum, cum[start] + max_bytes, side="right")) - 1)
            yield chunk.slice(start, stop - start)
            start = stop


PROMPT = "prompt"  # every message but the assistant's
USER = "user"  # the user turns
CONTEXT = "context"  # every message but the user's and the assistant's: system messages, tool lists, tool results


def prompt_texts(messages: pa.Array | pa.ChunkedArray, kinds: tuple[str, ...], rows: int = 1 << 16
                 ) -> tuple[pa.ChunkedArray, ...]:
    """list<struct<role, content>>[n] -> one normalized string[n] per kind (PROMPT, USER or CONTEXT): the
    contents of each row's messages of that kind, joined by spaces, in one pass over the messages."""
    parts = [[] for _ in kinds]
    for block in blocks(messages, rows):
        for part, text in zip(parts, _prompt_texts(block, kinds)):
            part.append(text)
    return tuple(pa.chunked_array(part, pa.string()) for part in parts)


def prompt_text(messages: pa.Array | pa.ChunkedArray, rows: int = 1 << 16, user_only: bool = False) -> pa.ChunkedArray:
    """list<struct<role, content>>[n] -> normalized string[n]: the non-assistant contents of each row, joined
    (`user_only`: the user turns alone). Works a block of messages at a time (`blocks`)."""
    return prompt_texts(messages, (USER if user_only else PROMPT,), rows)[0]


def _prompt_texts(messages: pa.Array, kinds: tuple[str, ...]) -> list[pa.Array]:
    flat, parent = messages.flatten(), pc.list_parent_indices(messages)
    role = flat.field("role")
    out = []
    for kind in kinds:
        if kind == USER:
            keep = pc.equal(role, "user")
        elif kind == PROMPT:
            keep = pc.not_equal(role, "assistant")
        elif kind == CONTEXT:
            keep = pc.and_(pc.not_equal(role, "assistant"), pc.not_equal(role, "user"))
        else:
            raise ValueError(f"unknown prompt text kind {kind!r}")
        content = pc.fill_null(flat.field("content").filter(keep), "")
        counts = np.bincount(parent.filter(keep).to_numpy(), minlength=len(messages))
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
        out.append(normalize(pc.binary_join(pa.ListArray.from_arrays(offsets, content), " ")))
    return out


def words(text: pa.Array | pa.ChunkedArray, rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """string[n] -> (offsets int64[n + 1], codes int32[m]): row i's words are codes[offsets[i]:offsets[i + 1]].

    Words are split on whitespace; codes (>= 1) are shared by equal words within this call only. Works
    `rows` rows of a chunk at a time, growing one vocabulary, so no more than a chunk's words exist as strings at once.
    """
    vocab, offsets, codes = pa.array([], pa.string()), [np.zeros(1, np.int64)], [np.zeros(0, np.int32)]
    parts = (chunk.slice(start, rows) for chunk in (text.chunks if isinstance(text, pa.ChunkedArray) else [text])
             for start in range(0, len(chunk), rows))  # never combines chunks: each stays under 2 GiB of text
    for part in parts:
        part = pc.if_else(pc.equal(pc.utf8_length(part), 0), pa.scalar(None, pa.string()), part)  # "" has no words
        lists = pc.utf8_split_whitespace(part)
        local = pc.dictionary_encode(lists.flatten())
        # NaN: new
        code = pc.index_in(local.dictionary, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.float64)
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


# --------------------------------------------------------------------------- row selection past 2 GiB

SMALL_TABLE = 1 << 30  # bytes under which Arrow's own take is safe (no column can reach 2 GiB of strings)


def take(table: pa.Table, indices) -> pa.Table:
    """table.take(indices) that also works when a string column holds more than 2 GiB over several chunks
    (long replies): Arrow's take concatenates a column's chunks first, which overflows its 32-bit string
    offsets there. Such a table is taken with 64-bit offsets (large types), a part of the indices at a time,
    each part cast back to the original types as a chunk under 2 GiB. Same rows, same schema."""
    if table.nbytes < SMALL_TABLE:
        return table.take(indices)
    indices = np.asarray(indices.to_numpy(zero_copy_only=False) if hasattr(indices, "to_numpy") else indices,
                         np.int64)
    large = table.cast(_large(table.schema))
    parts = max(1, -(-table.nbytes // SMALL_TABLE))
    batches = [b for part in np.array_split(indices, parts) for b in _small(large, part, table.schema)]
    return pa.Table.from_batches(batches, table.schema)


def sort_by(table: pa.Table, keys: list[tuple[str, str]] | str) -> pa.Table:
    """table.sort_by(keys) through `take` (see there); keys as for pyarrow's sort_by."""
    keys = [(keys, "ascending")] if isinstance(keys, str) else keys
    return take(table, pc.sort_indices(table.select([k for k, _ in keys]), sort_keys=keys))


def _small(large: pa.Table, indices: np.ndarray, schema: pa.Schema) -> list[pa.RecordBatch]:
    """The rows `indices` of a large-typed table as batches of `schema`, halved until each fits 32-bit offsets."""
    try:
        return large.take(indices).cast(schema).to_batches()  # take copies just these rows: the cast sees no more
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        if len(indices) < 2:
            raise
        half = len(indices) // 2
        return _small(large, indices[:half], schema) + _small(large, indices[half:], schema)


def _large(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_large_type(f.type)) for f in schema])


def _large_type(t: pa.DataType) -> pa.DataType:
    """t with 64-bit offsets throughout: string -> large_string, binary -> large_binary, list -> large_list."""
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    if pa.types.is_list(t):
        return pa.large_list(t.value_field.with_type(_large_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_large_type(t.field(i).type)) for i in range(t.num_fields)])
    return t
