"""Decontamination: training prompts that share a word n-gram with any eval prompt.

`contaminated(table, evals, n)`: table (id, text) of n training prompts, evals (id, text) of e eval
prompts, both normalized (see `text.prompt_text`) -> (id string[c], eval_id string[c]) of the c
contaminated training rows, in table order. A prompt shorter than n words is one gram (the whole
prompt), so a training prompt equal to a short eval prompt is always caught; a long eval prompt
planted inside a longer training prompt shares all its n-grams with it. eval_id is the eval prompt
of the row's first shared n-gram (the smallest eval id among eval prompts holding that gram).
Gram keys are 64-bit hashes (a false match needs a hash collision: ~g * e_g / 2^64).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix.text import chunks, grams, words


def contaminated(table: pa.Table, evals: pa.Table, n: int = 13) -> pa.Table:
    evals = evals.sort_by("id")  # ties go to the smallest eval id
    num = table.num_rows
    offsets, codes = words(pa.chunked_array(table["text"].chunks + evals["text"].chunks, pa.string()))  # one word code space for both
    eval_offsets = offsets[num:] - offsets[num]
    eval_doc, eval_key = grams(eval_offsets, codes[offsets[num]:], n)
    order = np.argsort(eval_key, kind="stable")
    eval_key, eval_doc = eval_key[order], eval_doc[order]
    rows, match = [], []
    for start, _, offs, cods in chunks(offsets[:num + 1], codes):
        doc, key = grams(offs, cods, n)
        at = np.minimum(np.searchsorted(eval_key, key), max(len(eval_key) - 1, 0))
        hit = np.flatnonzero(eval_key[at] == key) if len(eval_key) else np.zeros(0, np.int64)
        first_doc, first = np.unique(doc[hit], return_index=True)  # each row's first shared gram
        rows.append(start + first_doc)
        match.append(eval_doc[at[hit[first]]])
    rows, match = np.concatenate(rows or [np.zeros(0, np.int64)]), np.concatenate(match or [np.zeros(0, np.int64)])
    return pa.table({"id": table["id"].take(rows), "eval_id": pc.take(evals["id"], match)})
