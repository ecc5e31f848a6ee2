"""Value checks of the mix section that its types cannot express: ranges, keys that need other keys, the
judge's prompt templates. `need(ok, key, msg)` reports a failed check (posttrain raises it as a recipe error
naming the file and the dotted key)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from data_mix.config import JUDGMENTS, JudgeConfig, MixConfig
from data_mix.judge import PLACEHOLDERS, PROMPTS

Need = Callable[[bool, str, str], None]


def check_mix(m: MixConfig, need: Need, capabilities: tuple[str, ...]) -> None:
    """The mix's dedup keys and capability targets (of `capabilities`), then its tagging keys."""
    need(0 < m.near_threshold <= 1, "mix.near_threshold", f"must be in (0, 1], got {m.near_threshold}")
    need(m.num_perm >= 16, "mix.num_perm", f"must be >= 16, got {m.num_perm}")
    need(m.ngram >= 1, "mix.ngram", f"must be >= 1, got {m.ngram}")
    need(0 < m.ngram_overlap <= 1, "mix.ngram_overlap", f"must be in (0, 1], got {m.ngram_overlap}")
    need(m.ngram_max_evals >= 1, "mix.ngram_max_evals", f"must be >= 1, got {m.ngram_max_evals}")
    need(m.max_repeat >= 1, "mix.max_repeat", f"must be >= 1, got {m.max_repeat}")
    need(m.total is None or m.total >= 1, "mix.total", f"must be >= 1, got {m.total}")
    if m.targets is None:
        need(m.total is None and m.max_repeat == 1, "mix.total" if m.total is not None else "mix.max_repeat",
             "has no effect without mix.targets")
    else:
        for cap, share in m.targets.items():
            need(cap in capabilities, f"mix.targets.{cap}", f"is not a known capability {capabilities}")
            need(share >= 0, f"mix.targets.{cap}", f"must be >= 0, got {share}")
        need(abs(sum(m.targets.values()) - 1) <= 1e-6, "mix.targets",
             f"must sum to 1 (within 1e-6), got {sum(m.targets.values())!r}")
    _check_tags(m, need)


def _check_tags(m: MixConfig, need: Need) -> None:
    """Value checks of the mix's tagging, semantic dedup and tag-based rebalancing keys."""
    _check_judge(m.judge, need)
    need(0 < m.semantic_threshold <= 1, "mix.semantic_threshold", f"must be in (0, 1], got {m.semantic_threshold}")
    need(m.semantic_cluster_size >= 2, "mix.semantic_cluster_size", f"must be >= 2, got {m.semantic_cluster_size}")
    need(m.difficulty_weight >= 0, "mix.difficulty_weight", f"must be >= 0, got {m.difficulty_weight}")
    need(m.embedding_model is None or Path(m.embedding_model).is_dir(), "mix.embedding_model",
         f"is not a local model folder: {m.embedding_model}")
    need(bool(m.topics), "mix.topics", "must name at least one topic")
    fines: dict[str, str] = {}
    for coarse, fine in m.topics.items():
        need(bool(fine), f"mix.topics.{coarse}", "must describe at least one fine topic")
        for name, text in fine.items():
            need(bool(text.strip()), f"mix.topics.{coarse}.{name}", "needs a description (it is what gets embedded)")
            need(name not in fines, f"mix.topics.{coarse}.{name}", f"is also a fine topic of {fines.get(name)}")
            fines[name] = coarse
    if m.targets is None:
        for key, value in (("topic_targets", m.topic_targets), ("difficulty_weight", m.difficulty_weight or None)):
            need(value is None, f"mix.{key}", "has no effect without mix.targets")
    if m.topic_targets is not None:
        for topic, share in m.topic_targets.items():
            need(topic in m.topics, f"mix.topic_targets.{topic}",
                 f"is not a coarse topic of mix.topics {list(m.topics)}")
            need(share >= 0, f"mix.topic_targets.{topic}", f"must be >= 0, got {share}")
        need(abs(sum(m.topic_targets.values()) - 1) <= 1e-6, "mix.topic_targets",
             f"must sum to 1 (within 1e-6), got {sum(m.topic_targets.values())!r}")


def _check_judge(j: JudgeConfig, need: Need) -> None:
    if j.model is None:
        return
    need(j.model == "policy" or not Path(j.model).is_absolute() or Path(j.model).is_dir(), "mix.judge.model",
         f"does not exist: {j.model} (use 'policy', a local model folder or a hub id)")
    need(bool(j.judgments), "mix.judge.judgments", f"must name at least one of {list(JUDGMENTS)}")
    need(len(set(j.judgments)) == len(j.judgments), "mix.judge.judgments", "lists a judgment twice")
    need(j.max_tokens >= 1, "mix.judge.max_tokens", f"must be >= 1, got {j.max_tokens}")
    need(j.temperature >= 0, "mix.judge.temperature", f"must be >= 0, got {j.temperature}")
    need(j.retry_temperature > 0, "mix.judge.retry_temperature", f"must be > 0, got {j.retry_temperature}")
    folder = Path(j.prompt_dir) if j.prompt_dir is not None else PROMPTS
    need(folder.is_dir(), "mix.judge.prompt_dir", f"is not a folder: {folder}")
    for name in j.judgments:
        path = folder / f"{name}.txt"
        need(path.is_file(), "mix.judge.prompt_dir", f"has no {name}.txt (the {name} judgment's prompt template)")
        text = path.read_text(encoding="utf-8")
        for placeholder in PLACEHOLDERS[name]:
            need(placeholder in text, "mix.judge.prompt_dir", f"{path} lacks the {placeholder} placeholder")
