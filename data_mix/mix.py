"""Mix stage: builds this round's SFT mix and DPO pairs from the selected data.

SFT examples accumulated over the rounds given (the paper re-fine-tunes on all SFT data so far; with
`sft.start_from: previous` the caller passes only this round) and this round's DPO pairs (the paper
trains DPO on the latest batches) go through, in order:

1. exact dedup of SFT prompts (normalized for case and whitespace)       data_mix/dedup.py `exact`
2. near-duplicate dedup of SFT prompts (MinHash LSH, Jaccard threshold) data_mix/dedup.py `near`
   (both compare the user turns, among prompts of equal system messages / tool lists)
3. decontamination of SFT and pair prompts against the eval prompts     data_mix/decontam.py
   (user turns, punctuation dropped: shared n-gram, contained short item, or equal)
4. semantic dedup of SFT prompts (embedding clusters, cosine threshold)  data_mix/semantic.py
   (user turns, within a context as in 1-2)
5. quality floor, then rebalancing of SFT toward `mix.targets` per
   capability (optionally per topic, harder rows favoured, only
   high-quality rows repeated)                                          data_mix/rebalance.py

Tagging (topic, complexity, difficulty, quality, cleaning flags: data_mix/tagger.py) runs only when asked for
(`mix.tag`) or when a step reads the tags (`dedup_semantic`, `quality_floor`, `topic_targets`,
`difficulty_weight`, a judge): it embeds every prompt (all-MiniLM-L6-v2, ~350 prompts/s on 2 CPU cores; equal
user turns once). It tags the input rows, before step 1, so counts["composition"] has "input" (before dedup
and decontamination), "before" (after them: what semantic dedup, the floor and rebalancing start from) and
"after"; an RM-score quality quartile is thus of the input rows' group. Semantic dedup follows near dedup
rather than replacing it because it keeps the best quality x difficulty first; it also sees only clean rows,
so a contaminated prompt cannot displace a clean paraphrase.

Outputs: sft.parquet, pairs.parquet and decontaminated.parquet (table, id, eval_id: every removed row
and the eval prompt it matched); with tagging, tags.parquet (one row per sft.parquet id: `tagger.TAGS`;
a rebalancing copy `<id>#rep<m>` carries its source's tags) and, with semantic dedup,
semantic_dups.parquet (id, dup_of, similarity). Rows are removed by id, never by position.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_mix import decontam, dedup, tagger
from data_mix.rebalance import above_floor, rebalance
from data_mix.config import MixConfig
from data_mix.text import CONTEXT, USER, prompt_text, prompt_texts, sort_by
from data_mix import semantic
from data_mix.embed import embed

DECONTAMINATED = pa.schema([pa.field("table", pa.string()), pa.field("id", pa.string()),
                            pa.field("eval_id", pa.string())])


class Mixed(NamedTuple):
    sft: pa.Table  # the SFT mix (posttrain's `sft` schema), in (round, id) order
    pairs: pa.Table  # the DPO pairs left after decontamination
    tables: dict[str, pa.Table]  # the audit tables by file stem: decontaminated, tags, semantic_dups
    counts: dict  # what each step did, for the stage's manifest


def mix_tables(sft: pa.Table, pairs: pa.Table, heldout: pa.Table, cfg: MixConfig, seed: int, *,
               benchmarks: pa.Table | None = None, scored: dict[int, pa.Table] | None = None,
               pass_threshold: float = 1.0, judged: pa.Table | None = None, judge_counts: dict | None = None) -> Mixed:
    """sft: the `sft` rows of the rounds to train on (oldest round first); pairs: this round's `pairs`;
    heldout: the run's held-out `prompts`, found only whole in a training prompt (they are its siblings, drawn
    from the same templates); benchmarks: the `prompts` of every eval benchmark, found by shared n-grams too.

    For tagging only: scored {round: that round's `scored` table} brings each example's RM score and
    finish_reason (the sft table has neither); pass_threshold is `select.pass_threshold` (a verifier pass);
    judged (with `mix.judge.model`): the judge stages' judgments (data_mix.judge's JUDGED table) of at least
    every sft row, joined by id; judge_counts: this round's judge stage counts, reported as "judge"."""
    tables = {}
    counts = {"input": sft.num_rows, "exact_dups": 0, "near_dups": 0, "contaminated": 0, "contaminated_pairs": 0,
              "input_by_capability": _by_capability(sft)}
    counts["before_rebalance"] = counts["input_by_capability"]  # after dedup and decontamination, below
    removed = DECONTAMINATED.empty_table()
    if cfg.enabled:
        # Dedup keeps the first occurrence in (round, id) order: older data wins over a later round's copy.
        # Dedup and decontamination compare user turns. Dedup groups rows by the rest of the prompt (system
        # messages, tool lists: CONTEXT): a tool list shared by many prompts does not make them alike (hashed
        # with the questions, one 168-word list made three tools prompts with different questions near
        # duplicates), and one question asked with other tools offered is another task. Exact dedup thus drops a
        # prompt whose user turns and context both equal an earlier one's (so prompt + reply duplicates go too).
        # Why the oldest copy stays, not the newest: docs/data_mix.md#which-copy-dedup-keeps (measured).
        user, context = prompt_texts(sft["messages"], (USER, CONTEXT))
        tags = embeddings = None
        if needs_tags(cfg):  # every input row, so the report can show what dedup and decontamination removed
            embeddings, tags = _tag(sft, user, cfg, scored, pass_threshold, judged)
            counts["composition"] = {"input": composition(sft, tags)}
            if judge_counts is not None:
                counts["judge"] = judge_counts
        group = pc.dictionary_encode(context).combine_chunks().indices
        view = pa.table({"id": sft["id"], "round": sft["round"], "text": user, "group": group})
        view = sort_by(view, [("round", "ascending"), ("id", "ascending")]).select(["id", "text", "group"])
        if cfg.dedup_exact:
            view = _drop(view, dedup.exact(view, _codes(view)), counts, "exact_dups")
        if cfg.dedup_near:
            view = _drop(view, dedup.near(view, cfg.near_threshold, cfg.num_perm, seed, _codes(view)), counts,
                         "near_dups")
        if cfg.decontaminate:
            # User turns only: a system message (instructions, a tool list) is shared by many prompts, train
            # and eval alike, and would make every tools prompt "contain" every eval item's 13-grams.
            evals = pa.concat_tables([_eval_view(heldout, 1.0), _eval_view(benchmarks, cfg.ngram_overlap)])
            args = dict(n=cfg.ngram, max_evals=cfg.ngram_max_evals)  # the overlap: each eval row's own
            hits = decontam.contaminated(view.select(["id", "text"]), evals, **args)
            view = _drop(view, hits, counts, "contaminated")
            pair_view = pa.table({"id": pairs["id"], "text": prompt_text(pairs["prompt"], user_only=True)})
            pair_hits = decontam.contaminated(pair_view, evals, **args)
            pairs = _drop(pairs, pair_hits, counts, "contaminated_pairs")
            removed = pa.concat_tables([_tagged("sft", hits), _tagged("pairs", pair_hits)])
        sft = sft.filter(pc.is_in(sft["id"], value_set=view["id"].combine_chunks()))  # join by id
        if tags is not None:
            context_group = pa.table({"id": view["id"], "group": view["group"]})  # the kept rows' contexts
            sft, tags = _filter_tagged(tables, sft, tags, embeddings, context_group, cfg, seed, counts)
        counts["before_rebalance"] = _by_capability(sft)
        if cfg.targets is not None:
            sft = rebalance(sft, cfg.targets, cfg.max_repeat, cfg.total, seed, tags=tags,
                            topic_targets=cfg.topic_targets, difficulty_weight=cfg.difficulty_weight)
        if tags is not None:
            tags = _tags_of(sft, tags)
            counts["composition"]["after"] = composition(sft, tags)
            tables["tags"] = tags.sort_by("id")
    sft = sort_by(sft, [("round", "ascending"), ("id", "ascending")])  # past 2 GiB of replies too (text.take)
    tables["decontaminated"] = removed
    return Mixed(sft, pairs, tables, {**counts, "by_capability": _by_capability(sft)})


def needs_tags(cfg: MixConfig) -> bool:
    """Tagging runs when asked for or when a later step reads the tags."""
    return (cfg.tag or cfg.dedup_semantic or cfg.quality_floor is not None or cfg.topic_targets is not None
            or cfg.difficulty_weight > 0 or cfg.judge.model is not None)


def _tag(sft: pa.Table, user: pa.ChunkedArray, cfg: MixConfig, scored: dict[int, pa.Table] | None,
         pass_threshold: float, judged: pa.Table | None) -> tuple[np.ndarray, pa.Table]:
    """Tags every row of sft -> (embeddings[n] of its user turns, TAGS[n]), row i of sft. `user`: the rows'
    normalized user turns; equal ones are embedded once (exact duplicates cost nothing)."""
    # User turns, as for decontamination: a shared system message (a tool list) would make all its prompts alike.
    unique = pc.dictionary_encode(user).combine_chunks()
    embeddings = embed(unique.dictionary, cfg.embedding_model)[unique.indices.to_numpy(zero_copy_only=False)]
    info = tagger.sample_info(sft, scored) if scored else None
    tags = tagger.tag(sft, embeddings, cfg.topics, info, pass_threshold, cfg.embedding_model, judged)
    return embeddings, tags


def _filter_tagged(tables: dict[str, pa.Table], sft: pa.Table, tags: pa.Table, embeddings: np.ndarray,
                   context_group: pa.Table, cfg: MixConfig, seed: int, counts: dict) -> tuple[pa.Table, pa.Table]:
    """The rows left after dedup and decontamination (tags and embeddings of the input, and their
    (id, group) context codes, joined by id) -> semantic dedup within each context and the quality floor
    when on -> (kept sft rows, their tags). Adds composition["before"] and the removal counts to `counts`."""
    at = pc.index_in(sft["id"], value_set=tags["id"].combine_chunks()).to_numpy(zero_copy_only=False)
    tags, embeddings = tags.take(at), embeddings[at]  # row i of sft
    counts["composition"]["before"] = composition(sft, tags)
    if cfg.dedup_semantic:
        quality = pc.index_in(tags["quality"], value_set=pa.array(tagger.QUALITY)).to_numpy(zero_copy_only=False)
        level = pc.fill_null(tags["difficulty"], tagger.MIDDLE_DIFFICULTY).to_numpy()
        score = pa.table({"id": tags["id"], "score": (quality + 1) * level})
        counts["semantic_dups"] = 0
        at_group = pc.index_in(sft["id"], value_set=context_group["id"].combine_chunks())
        group = context_group["group"].combine_chunks().take(at_group).to_numpy(zero_copy_only=False).astype(np.int64)
        dups = semantic.dedup(score, embeddings, cfg.semantic_threshold, cfg.semantic_cluster_size, seed, group)
        sft = _drop(sft, dups, counts, "semantic_dups")
        tables["semantic_dups"] = dups
    if cfg.quality_floor is not None:
        kept = above_floor(sft, tags, cfg.quality_floor)
        counts["below_quality_floor"] = sft.num_rows - kept.num_rows
        sft = kept
    return sft, tags


def _tags_of(sft: pa.Table, tags: pa.Table) -> pa.Table:
    """One tags row per sft id: a rebalancing copy `<id>#rep<m>` takes the row of `<id>` (joined by id)."""
    source = pc.replace_substring_regex(sft["id"], r"#rep\d+$", "")
    at = pc.index_in(source, value_set=tags["id"].combine_chunks())
    return tags.take(at).set_column(0, "id", sft["id"]).cast(tags.schema)


def composition(sft: pa.Table, tags: pa.Table) -> dict[str, dict]:
    """Row counts by capability, by each tag and by capability x topic, for the report's plots (tags joined by id)."""
    at = pc.index_in(sft["id"], value_set=tags["id"].combine_chunks())
    t = tags.take(at)
    flags = pc.list_flatten(t["cleaning_flags"])
    out = {"capability": _counts(sft["capability"])}
    out.update({name: _counts(pc.fill_null(pc.cast(t[name], pa.string()), tagger.UNKNOWN)) for name in
                ("topic", "fine_topic", "quality", "difficulty", "complexity")})
    out["cleaning_flags"] = _counts(flags)
    pair = pc.binary_join_element_wise(sft["capability"], t["topic"], "\x00")
    out["capability_topic"] = {}
    for key, n in _counts(pair).items():
        cap, topic = key.split("\x00")
        out["capability_topic"].setdefault(cap, {})[topic] = n
    return out


def _counts(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(values).to_pylist() if len(values) else []
    return {v["values"]: v["counts"] for v in sorted(counts, key=lambda v: _natural(v["values"]))}


def _natural(value: str):
    """Numbers in numeric order ("2" before "10"), then strings."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _by_capability(sft: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(sft["capability"]).to_pylist()
    return {v["values"]: v["counts"] for v in sorted(counts, key=lambda v: v["values"])}


def _eval_view(prompts: pa.Table | None, overlap: float) -> pa.Table:
    """(id, text, overlap) of eval prompts for `decontam.contaminated`: their user turns."""
    if prompts is None:
        return pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                         "overlap": pa.array([], pa.float64())})
    text = prompt_text(prompts["messages"], user_only=True)
    need = pa.array([overlap] * prompts.num_rows, pa.float64())
    return pa.table({"id": prompts["id"], "text": text, "overlap": need})


def _drop(table: pa.Table, dropped: pa.Table, counts: dict, key: str) -> pa.Table:
    """`table` without the rows whose id is in `dropped`; adds their number to counts[key]."""
    counts[key] += dropped.num_rows
    return table.filter(pc.invert(pc.is_in(table["id"], value_set=dropped["id"].combine_chunks())))


def _codes(view: pa.Table) -> np.ndarray:
    """The view's context group codes as int64[n]."""
    return view["group"].to_numpy().astype(np.int64)


def _tagged(name: str, hits: pa.Table) -> pa.Table:
    return pa.table({"table": pa.array([name] * hits.num_rows, pa.string()), "id": hits["id"],
                     "eval_id": hits["eval_id"]}, schema=DECONTAMINATED)
