"""An LLM judge for the tagger (Llama 3 §4.2.3, `mix.judge`).

The paper tags topics with a fine-tuned Llama 3 8B, counts intentions (InsTag) and rates difficulty on 3
points and quality on 3 points (2 for code) with Llama 3 70B. Here any chat model that vLLM serves judges,
each judgment with a prompt template from a file (data_mix/judge_prompts/, or `mix.judge.prompt_dir`):

    topic.txt         {topics} {prompt}  ->  {"topic": "<fine topic name>"}
    complexity.txt    {prompt}           ->  {"intentions": ["...", ...], "difficulty": 1..3}
    quality.txt       {prompt} {reply}   ->  {"score": 1..3}     (quality_code.txt, when present: code, 1..2)

The answer is the last JSON object in the judge's reply that parses and passes its judgment's check (a
known topic, a non-empty list of intentions, a score on the template's scale). A row without one is asked
once more, sampled at `retry_temperature` with a new seed; if that fails too, the value is null (unknown)
and the judgment is listed in the row's `judge_unknown`. Rows are joined by id, never by position.

In the round the judge is its own stage (posttrain/stages/judge.py, between select and mix): each round's new SFT
examples are judged once, sharded by id over the ranks' vLLM engines like generation, and the mix reads
the judgments of every round it mixes. With `model: policy`, an example keeps the judgment of the policy
of the round that produced it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from data_mix.config import JudgeConfig
from data_mix.tagger import last_reply, user_text

log = logging.getLogger("posttrain")

PROMPTS = Path(__file__).parent / "judge_prompts"
PLACEHOLDERS = {"topic": ("{topics}", "{prompt}"), "complexity": ("{prompt}",), "quality": ("{prompt}", "{reply}")}
SCALE = {"quality": 3, "quality_code": 2}  # the paper's quality scales: 3 points in general, 2 for code
COLUMNS = {  # what each judgment adds to the JUDGED table
    "topic": [pa.field("judge_fine_topic", pa.string())],
    "complexity": [pa.field("intentions", pa.list_(pa.string())), pa.field("judge_difficulty", pa.int32())],
    "quality": [pa.field("judge_quality", pa.int32()), pa.field("judge_quality_max", pa.int32())],
}


def judged_schema(judgments: list[str]) -> pa.Schema:
    return pa.schema([pa.field("id", pa.string(), nullable=False),
                      *(f for j in judgments for f in COLUMNS[j]),
                      pa.field("judge_unknown", pa.list_(pa.string()), nullable=False)])


def judge(sft: pa.Table, cfg: JudgeConfig, topics: dict[str, dict[str, str]], engine, tokenizer,
          seed_of: Callable[[str], int], template_kwargs: dict | None = None,
          ) -> tuple[pa.Table, dict[str, dict[str, int]]]:
    """sft rows -> (JUDGED: one row per sft id, in sft's order; {judgment: counts}).

    engine: what generates: anything with `generate(requests) -> results` and `max_model_len` (posttrain's vLLM
    Engine, or a stand-in); seed_of: a request key -> its sampling seed (posttrain derives it from the run's seed);
    tokenizer: the judge model's, whose chat template wraps each filled-in template as a user turn (with
    `template_kwargs`, the variables its template reads, e.g. {enable_thinking: false}).
    counts: asked, retried (the first answer did not parse), too_long (no room in the context) and
    unknown (no usable answer after the retry, too_long included)."""
    ids = sft["id"].to_pylist()
    rows = [{"id": i, "judge_unknown": []} for i in ids]
    fields = {"prompt": user_text(sft["messages"]).to_pylist(), "reply": last_reply(sft["messages"]).to_pylist()}
    capability = sft["capability"].to_pylist()
    texts = templates(cfg.prompt_dir, cfg.judgments)
    topic_list = "\n".join(f"{fine}: {desc}" for fines in topics.values() for fine, desc in fines.items())
    fines = {fine for group in topics.values() for fine in group}
    counts = {}
    for j in cfg.judgments:
        for row in rows:
            row.update({f.name: None for f in COLUMNS[j]})
        jobs, too_long = {}, 0  # row index -> (prompt token ids, template name)
        for i in range(len(ids)):
            name = "quality_code" if j == "quality" and capability[i] == "code" and "quality_code" in texts else j
            text = render(texts[name], topics=topic_list, prompt=fields["prompt"][i], reply=fields["reply"][i])
            user = [{"role": "user", "content": text}]
            tokens = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                   **(template_kwargs or {}))["input_ids"]
            if len(tokens) + cfg.max_tokens > engine.max_model_len:
                too_long += 1
                rows[i]["judge_unknown"].append(j)
            else:
                jobs[i] = (tokens, name)
        pending, retried = list(jobs), 0
        for attempt, temperature in enumerate((cfg.temperature, cfg.retry_temperature)):
            if not pending:
                break
            results = engine.generate([{
                "prompt_token_ids": jobs[i][0], "n": 1, "temperature": temperature, "top_p": 1.0,
                "max_tokens": cfg.max_tokens, "seed": seed_of(f"judge/{j}/{attempt}/{ids[i]}")}
                for i in pending])
            failed = []
            for i, result in zip(pending, results, strict=True):
                value = parse(j, result["completions"][0]["text"], fines=fines, scale=SCALE.get(jobs[i][1], 0))
                if value is None:
                    failed.append(i)
                else:
                    rows[i].update(value)
            retried = retried or len(failed)
            pending = failed
        for i in pending:
            rows[i]["judge_unknown"].append(j)
        counts[j] = {"asked": len(ids), "retried": retried, "too_long": too_long, "unknown": len(pending) + too_long}
        log.info("mix: judge %s: %d asked, %d asked again, %d unknown (%d too long for the context)",
                 j, len(ids), retried, len(pending) + too_long, too_long)
    return pa.Table.from_pylist(rows, schema=judged_schema(cfg.judgments)), counts


def templates(prompt_dir: str | None, judgments: list[str]) -> dict[str, str]:
    """{template name: text} for the judgments asked for (+ quality_code when the folder has one)."""
    folder = Path(prompt_dir) if prompt_dir is not None else PROMPTS
    names = [*judgments, *(["quality_code"] if "quality" in judgments and (folder / "quality_code.txt").is_file()
                           else [])]
    return {name: (folder / f"{name}.txt").read_text(encoding="utf-8") for name in names}


def render(template: str, **fields: str) -> str:
    """Fills {name} placeholders; every other brace (the JSON answer format in the template) stays as written."""
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def parse(judgment: str, text: str, *, fines: set[str], scale: int) -> dict | None:
    """The judgment's columns from the last JSON object in `text` that passes its check, or None."""
    for obj in reversed(_objects(text)):
        value = _check(judgment, obj, fines, scale)
        if value is not None:
            return value
    return None


def _objects(text: str) -> list[dict]:
    out = []
    for m in re.finditer(r"\{[^{}]*\}", text):  # flat objects: the answers hold lists, never nested objects
        try:
            obj = json.loads(m.group())
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _check(judgment: str, obj: dict, fines: set[str], scale: int) -> dict | None:
    if judgment == "topic":
        topic = obj.get("topic")
        topic = topic.strip().rsplit("/", 1)[-1] if isinstance(topic, str) else None  # "math/algebra" or "algebra"
        return {"judge_fine_topic": topic} if topic in fines else None
    if judgment == "complexity":
        intentions, level = obj.get("intentions"), obj.get("difficulty")
        if (isinstance(intentions, list) and intentions and all(isinstance(x, str) and x.strip() for x in intentions)
                and _whole(level, 1, 3)):
            return {"intentions": [x.strip() for x in intentions], "judge_difficulty": int(level)}
        return None
    score = obj.get("score")
    return {"judge_quality": int(score), "judge_quality_max": scale} if _whole(score, 1, scale) else None


def _whole(value, low: int, high: int) -> bool:
    """An integer (3 or 3.0, not True or "3") in [low, high]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
            and low <= value <= high)
