"""Tags for every SFT example (Llama 3 §4.2.3, "data processing and quality control"), as columns.

`tag(sft, embeddings, topics, info, judged=...)` -> the TAGS table, one row per SFT id, which consumers join
by id (tags.parquet beside sft.parquet; `info`, the RM scores, and `judged`, the LLM judge's answers from
data_mix/judge.py, are joined by id too). Without a judge every tag comes from fast CPU rules:

topic, fine_topic   embedding classifier: the prompt's embedding against embedded descriptions of fine
                    topics (`MixConfig.topics`: {coarse: {fine: description}}); the nearest description
                    names the fine topic and its coarse parent. topic_similarity is that cosine (a low one
                    means no description fits well). The paper fine-tunes Llama 3 8B as its topic
                    classifier; a frozen sentence encoder against written descriptions needs no labels.
                    With the judge's topic: its fine topic, "unknown" where it gave none, similarity null.
complexity          InsTag-style count of the intentions and constraints of the user turns: questions and
                    instructions (sentences), list items, and constraint phrases ("at most", "in JSON",
                    "do not", "step by step", ...). Adding a constraint never lowers it. With the judge's
                    complexity: the number of intentions it listed (in `intentions`), null = unknown.
difficulty          1-3 from complexity, the numbers in the prompt and its length (a fast CPU heuristic), or
                    the judge's 3-point rating (null = unknown).
quality             "high" / "medium" / "low", and quality_rule, which signal decided:
                    "rm_quartile"  the example has an RM score: high when it is in the top quartile of its
                                   (capability, round) group (each round's RM scores on its own scale);
                    "judge"        the judge gave the top of its scale (judge_quality), the paper's other
                                   signal: high even below the RM quartile (the paper keeps the union);
                                   with no RM score, a lower judge score is "medium";
                    "verifier"     neither an RM score nor a judge score: high when the verifier passed
                                   (reward >= pass_threshold).
                    Whatever the signal, a reply that failed the verifier or was truncated is "low".
cleaning_flags      the paper's problematic tones, found by rules on the reply: "apology" (I'm sorry, I
                    apologize), "as_an_ai" (As an AI / a language model), "emoji", "exclamation" (a run of
                    "!!" or three or more "!"). Flags only: nothing is removed here.
judge_unknown       the judgments the judge was asked for and gave no usable answer to (empty without one).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix.text import blocks
from data_mix.embed import embed

QUALITY = ("low", "medium", "high")  # ascending: a quality floor keeps its level and above

TAGS = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("topic", pa.string(), nullable=False),
    pa.field("fine_topic", pa.string(), nullable=False),
    pa.field("topic_similarity", pa.float32()),  # null when the judge named the topic
    pa.field("complexity", pa.int32()),  # null: the judge gave no usable answer
    pa.field("difficulty", pa.int32()),
    pa.field("intentions", pa.list_(pa.string())),  # the judge's InsTag intentions (null without it)
    pa.field("judge_quality", pa.int32()),
    pa.field("quality", pa.string(), nullable=False),
    pa.field("quality_rule", pa.string(), nullable=False),
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("cleaning_flags", pa.list_(pa.string()), nullable=False),
    pa.field("judge_unknown", pa.list_(pa.string()), nullable=False),
])
UNKNOWN = "unknown"  # the topic of a row the judge could not place
MIDDLE_DIFFICULTY = 2  # what weighting and semantic dedup assume for an unknown difficulty

# RE2 patterns (pyarrow's regex engine), matched case-insensitively.
# A sentence: text holding a letter or digit, up to an end mark followed by a space, a line break or the end
# ("2.5" and "e.g" do not end one).
_BODY = r"(?:[^.?!\n]|[.?!][^\s.?!])*"
SENTENCE = _BODY + r"[a-z0-9]" + _BODY + r"(?:[.?!]+|\n|$)"
LIST_ITEM = r"(?m)^\s*(?:[-*\x{2022}]|\d+[.)])\s+"
CONSTRAINT = (r"\b(?:must|should|exactly|at (?:least|most)|no (?:more|less|fewer) than|only|without|do not|don't|"
              r"never|always|ensure|make sure|avoid|(?:in|as) (?:json|yaml|a table|a list|markdown|bullet points)|"
              r"format|step[- ]by[- ]step|explain|justify|show your work|then|also|and then|finally|each|every|"
              r"both|unless|if|under|within|limit|words|sentences|paragraphs|characters)\b")
NUMBER = r"\b\d+(?:[.,]\d+)?\b"
FLAGS = {
    "apology": r"\b(?:i(?:'|\x{2019})?m (?:so |very |truly )?sorry|i am (?:so |very |truly )?sorry|i apologi[sz]e|"
               r"(?:my|our) apologies)\b",
    "as_an_ai": r"\bas an? (?:ai|artificial intelligence|(?:ai |large )?language model|virtual assistant)\b",
    "emoji": r"[\x{1F000}-\x{1FAFF}\x{2600}-\x{27BF}\x{2B50}\x{2B55}]",
    "exclamation": r"!{2,}|![^!]*![^!]*!",
}


def tag(sft: pa.Table, embeddings: np.ndarray, topics: dict[str, dict[str, str]], info: pa.Table | None = None,
        pass_threshold: float = 1.0, model: str | None = None, judged: pa.Table | None = None) -> pa.Table:
    """sft[n] (+ embeddings[n] of its user turns, row i of sft) -> TAGS[n] in sft's row order.

    info: optional (id, rm_score, finish_reason) per SFT id (see `sample_info`), joined by id.
    judged: optional `judge.judge` table, joined by id; its columns say which judgments replace the rules.
    """
    n = sft.num_rows
    prompt, reply = user_text(sft["messages"]), last_reply(sft["messages"])
    coarse, fine, sim = classify(embeddings, topics, model)
    cx = complexity(prompt)
    level = difficulty(prompt, cx)
    j = _judged(sft["id"], judged)
    intentions = j.get("intentions", pa.nulls(n, pa.list_(pa.string())))
    if "judge_fine_topic" in j:
        parent = {f: c for c, fines in topics.items() for f in fines}
        fine = pc.fill_null(j["judge_fine_topic"], UNKNOWN)
        coarse = pa.array([parent.get(f, UNKNOWN) for f in fine.to_pylist()], pa.string())
        sim = pa.nulls(n, pa.float32())
    if "judge_difficulty" in j:
        cx, level = pc.cast(pc.list_value_length(intentions), pa.int32()), j["judge_difficulty"]
    info = _aligned(sft["id"], info)
    truncated = truncated_replies(reply, info["finish_reason"])
    quality, rule = quality_levels(sft["capability"], sft["round"], sft["reward"], info["rm_score"], truncated,
                                   pass_threshold, j.get("judge_quality"), j.get("judge_quality_max"))
    return pa.table({"id": sft["id"], "topic": coarse, "fine_topic": fine, "topic_similarity": sim,
                     "complexity": cx, "difficulty": level, "intentions": intentions,
                     "judge_quality": j.get("judge_quality", pa.nulls(n, pa.int32())), "quality": quality,
                     "quality_rule": rule, "truncated": truncated, "cleaning_flags": cleaning_flags(reply),
                     "judge_unknown": j.get("judge_unknown", pa.array([[]] * n, pa.list_(pa.string())))},
                    schema=TAGS)


def _judged(ids: pa.ChunkedArray | pa.Array, judged: pa.Table | None) -> dict[str, pa.Array]:
    """judged's columns for each id in `ids` (by id; every id must have been judged)."""
    if judged is None:
        return {}
    at = pc.index_in(ids, value_set=_combined(judged["id"]))
    if at.null_count:
        raise ValueError(f"{at.null_count} SFT row(s) were not judged, e.g. {pc.filter(ids, pc.is_null(at))[0]}")
    return {name: _combined(judged[name].take(at)) for name in judged.column_names if name != "id"}


# --------------------------------------------------------------------------- text


def user_text(messages: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """list<struct<role, content>>[n] -> string[n]: the user turns joined by newlines, case and lines kept
    (complexity counts sentences and list items; the embedding text comes from `text.prompt_text`).
    Like every text helper here, it works a block of messages at a time (`text.blocks`): no 2 GiB limit."""
    return pa.chunked_array([_join(b, lambda role: pc.equal(role, "user"), "\n") for b in blocks(messages)],
                            pa.string())


def last_reply(messages: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """list<struct<role, content>>[n] -> string[n]: each row's last assistant message ("" when none)."""
    return pa.chunked_array([_last_reply(b) for b in blocks(messages)], pa.string())


def _last_reply(messages: pa.Array) -> pa.Array:
    flat, parent = messages.flatten(), pc.list_parent_indices(messages).to_numpy()
    is_reply = pc.equal(flat.field("role"), "assistant").to_numpy(zero_copy_only=False)
    at = np.flatnonzero(is_reply)
    last = np.full(len(messages), -1)
    last[parent[at]] = at  # later entries overwrite earlier ones: the last reply of each row wins
    content = pc.fill_null(flat.field("content"), "")
    return pc.if_else(pa.array(last >= 0), content.take(pa.array(np.maximum(last, 0))), "") if len(flat) else \
        pa.array([""] * len(messages), pa.string())


def _join(messages: pa.Array, keep_role, sep: str) -> pa.Array:
    flat, parent = messages.flatten(), pc.list_parent_indices(messages)
    keep = keep_role(flat.field("role"))
    content = pc.fill_null(flat.field("content").filter(keep), "")
    counts = np.bincount(parent.filter(keep).to_numpy(), minlength=len(messages))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    return pc.binary_join(pa.ListArray.from_arrays(offsets, content), sep)


def _combined(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _count(text: pa.Array, pattern: str) -> np.ndarray:
    return pc.count_substring_regex(text, pattern, ignore_case=True).to_numpy(zero_copy_only=False).astype(np.int64)


# --------------------------------------------------------------------------- topic


def classify(embeddings: np.ndarray, topics: dict[str, dict[str, str]], model: str | None = None
             ) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Unit embeddings[n, d] -> (coarse string[n], fine string[n], cosine float32[n]) of the nearest description.
    Ties go to the first description in recipe order."""
    names = [(coarse, fine) for coarse, fines in topics.items() for fine in fines]
    desc = embed([topics[c][f] for c, f in names], model)
    if len(embeddings) == 0:
        return pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.float32())
    sims = embeddings @ desc.T
    best = sims.argmax(1)
    return (pa.array([names[b][0] for b in best], pa.string()), pa.array([names[b][1] for b in best], pa.string()),
            pa.array(sims[np.arange(len(best)), best].astype(np.float32)))


# --------------------------------------------------------------------------- complexity and difficulty


def complexity(prompt: pa.Array) -> pa.Array:
    """string[n] -> int32[n] >= 1: sentences (questions, instructions, stated facts) + list items + constraint
    phrases. Each added sentence or constraint phrase adds at least one, so it is monotonic in constraints."""
    count = _count(prompt, SENTENCE) + _count(prompt, LIST_ITEM) + _count(prompt, CONSTRAINT)
    return pa.array(np.maximum(count, 1).astype(np.int32))


def difficulty(prompt: pa.Array, cx: pa.Array) -> pa.Array:
    """string[n], complexity[n] -> int32[n] in 1..3 from points = complexity + numbers / 2 (at most 3) +
    one per 60 words (at most 3): 1 below 5 points (a one-step word problem), 3 from 9 (a multi-part task)."""
    numbers = np.minimum(_count(prompt, NUMBER) / 2, 3)
    words = pc.count_substring_regex(prompt, r"\S+").to_numpy(zero_copy_only=False)
    points = cx.to_numpy() + numbers + np.minimum(words // 60, 3)
    return pa.array((1 + (points >= 5) + (points >= 9)).astype(np.int32))


# --------------------------------------------------------------------------- quality and cleaning


def truncated_replies(reply: pa.Array, finish_reason: pa.Array) -> pa.Array:
    """bool[n]: the sampler stopped at max_tokens (finish_reason "length") or, when that is unknown, the reply
    leaves a code fence open."""
    open_fence = pa.array(_count(reply, r"```") % 2 == 1)
    return pc.fill_null(pc.equal(finish_reason, "length"), open_fence)


def quality_levels(capability, round_, reward, rm_score, truncated, pass_threshold: float = 1.0,
                   judge_quality=None, judge_max=None) -> tuple[pa.Array, pa.Array]:
    """Per row -> (quality string[n], quality_rule string[n]); see the module docstring for the rules.
    judge_quality / judge_max: the judge's score and the top of its scale (null: no usable score)."""
    rm = pc.fill_null(pc.cast(rm_score, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    passed = pc.fill_null(pc.greater_equal(reward, pass_threshold), False).to_numpy(zero_copy_only=False)
    ok = passed & ~pc.fill_null(truncated, False).to_numpy(zero_copy_only=False)
    top = top_quartile(capability, round_, rm)
    has_rm = ~np.isnan(rm)
    has_judge = np.zeros(len(rm), bool) if judge_quality is None else \
        pc.is_valid(judge_quality).to_numpy(zero_copy_only=False)
    judge_top = np.zeros(len(rm), bool) if judge_quality is None else \
        pc.fill_null(pc.equal(judge_quality, judge_max), False).to_numpy(zero_copy_only=False)
    high = (has_rm & top) | judge_top | (~has_rm & ~has_judge)
    level = np.where(~ok, 0, np.where(high, 2, 1))
    rule = np.where(has_rm & (top | ~judge_top), "rm_quartile", np.where(has_judge, "judge", "verifier"))
    return pa.array(np.array(QUALITY)[level], pa.string()), pa.array(rule, pa.string())


def top_quartile(capability, round_, rm: np.ndarray) -> np.ndarray:
    """bool[n]: rm[i] >= the 75th percentile (linear interpolation) of the RM scores of row i's
    (capability, round) group; NaN scores take no part and are never top."""
    groups = pc.binary_join_element_wise(pc.cast(capability, pa.string()), pc.cast(round_, pa.string()), "/")
    codes = pc.dictionary_encode(_combined(groups)).indices.to_numpy() if len(rm) else np.zeros(0, np.int64)
    top = np.zeros(len(rm), bool)
    for g in np.unique(codes):
        rows = np.flatnonzero((codes == g) & ~np.isnan(rm))
        if len(rows):
            top[rows] = rm[rows] >= np.quantile(rm[rows], 0.75)
    return top


def cleaning_flags(reply: pa.Array) -> pa.Array:
    """string[n] -> list<string>[n]: the FLAGS names that match each reply, in FLAGS order."""
    names = np.array(list(FLAGS))
    hits = np.stack([pc.match_substring_regex(reply, p, ignore_case=True).to_numpy(zero_copy_only=False)
                     for p in FLAGS.values()], axis=1) if len(reply) else np.zeros((0, len(FLAGS)), bool)
    offsets = np.concatenate([[0], np.cumsum(hits.sum(1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.broadcast_to(names, hits.shape)[hits], pa.string()))


# --------------------------------------------------------------------------- RM scores from the scored samples


def sample_info(sft: pa.Table, scored: dict[int, pa.Table]) -> pa.Table:
    """The scored sample behind each SFT example -> (id, rm_score, finish_reason), for the SFT ids found.

    scored: {round: that round's `scored` table}. An SFT row (id, prompt_id, round, messages) came from the
    sample of its round and prompt whose completion is its last reply; the join key is (round, prompt_id,
    completion). Identical completions of one prompt are one sample for this purpose (the first wins).
    """
    reply = last_reply(sft["messages"])
    keys = pa.table({"id": sft["id"], "round": pc.cast(sft["round"], pa.int64()), "prompt_id": sft["prompt_id"],
                     "completion": reply})
    samples = [pa.table({"round": pa.array([r] * t.num_rows, pa.int64()), "prompt_id": t["prompt_id"],
                         "completion": t["completion"], "rm_score": _column(t, "rm_score", pa.float64()),
                         "finish_reason": _column(t, "finish_reason", pa.string())})
               for r, t in sorted(scored.items())]
    if not samples:
        return pa.table({"id": pa.array([], pa.string()), "rm_score": pa.array([], pa.float64()),
                         "finish_reason": pa.array([], pa.string())})
    samples = pa.concat_tables(samples).group_by(["round", "prompt_id", "completion"], use_threads=False).aggregate(
        [("rm_score", "first"), ("finish_reason", "first")])
    joined = keys.join(samples, ["round", "prompt_id", "completion"], join_type="inner", use_threads=False)
    return pa.table({"id": joined["id"], "rm_score": joined["rm_score_first"],
                     "finish_reason": joined["finish_reason_first"]}).sort_by("id")


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.ChunkedArray:
    """table[name] as type_, all null when absent (scored tables written before the RM existed lack rm_score)."""
    if name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, type_)])
    return pc.cast(table[name], type_)


def _aligned(ids: pa.ChunkedArray | pa.Array, info: pa.Table | None) -> dict[str, pa.Array]:
    """info's rm_score and finish_reason for each id in `ids` (null where info has no row), by id."""
    n = len(ids)
    if info is None or info.num_rows == 0:
        return {"rm_score": pa.nulls(n, pa.float64()), "finish_reason": pa.nulls(n, pa.string())}
    at = pc.index_in(ids, value_set=info["id"].combine_chunks() if isinstance(info["id"], pa.ChunkedArray)
                     else info["id"])
    return {"rm_score": pc.cast(info["rm_score"], pa.float64()).take(at),
            "finish_reason": pc.cast(info["finish_reason"], pa.string()).take(at)}
