"""A trained reward model (Llama 3 §4.1.2): Bradley-Terry on preference pairs, batched scoring.

- `expand_ranking`: a best-first ranking of 2 or 3 responses (edited > chosen > rejected) -> every
  ordered (better, worse) pair, as the paper trains on all of them.
- `preference_pairs`: verifier outcomes -> RM preference data: per prompt, a passing sample (chosen)
  vs a failing one (rejected), in TRL's conversational preference format.
- training: posttrain/training/reward_model.py (TRL's `RewardTrainer`, Bradley-Terry, no margin term).
- `split_held_out` / `pairwise_accuracy`: the RM's usual yardstick, the fraction of held-out pairs whose
  chosen response it scores above the rejected one, on prompts it was not trained on; `accuracy_by_capability`
  splits it by the pairs' capability (preference-file pairs: PREFERENCE_FILES), the number to read before
  giving the RM a capability's `reward_model.weight`.
- `score_with_reward_model`: every (prompt, completion) rendered with the chat template exactly as in
  training, sorted by token length, padded per batch, one forward per batch; scores in input order.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import torch

log = logging.getLogger("posttrain")


PREFERENCE_FILES = "preference_files"  # the capability of pairs from reward_model.preference_sources


def expand_ranking(responses: list[str]) -> list[tuple[int, int]]:
    """Best-first ranked responses -> every (better, worse) index pair, better before worse.

    Llama 3 ranks 2 or 3 responses per prompt (edited > chosen > rejected): 2 give 1 pair, 3 give 3.
    Any n >= 2 works. A pair whose two responses are the same text teaches nothing and is left out
    (an "edited" response that the annotator did not change equals "chosen").
    """
    if len(responses) < 2:
        raise ValueError(f"a ranking needs at least 2 responses, got {len(responses)}")
    return [(i, j) for i in range(len(responses)) for j in range(i + 1, len(responses))
            if responses[i] != responses[j]]


def preference_pairs(scored: pa.Table, prompts: pa.Table, pass_threshold: float) -> list[dict]:
    """scored samples + prompts (joined by prompt id) -> RM preference records, sorted by prompt id.

    Per prompt: chosen = the first passing sample (reward >= pass_threshold) by sample_index, rejected =
    the first failing one (reward < pass_threshold) with a different completion. Samples with no reward
    (no verifier applies) take part in neither; a prompt with no pass or no failure gives no pair.
    Records: {"prompt_id", "capability", "prompt": messages, "chosen": [assistant msg], "rejected": [assistant msg]}.
    """
    messages = dict(zip(prompts.column("id").to_pylist(), prompts.column("messages").to_pylist()))
    capability = dict(zip(prompts.column("id").to_pylist(), prompts.column("capability").to_pylist()))
    rows = scored.select(["prompt_id", "sample_index", "completion", "reward"]).to_pylist()
    missing = {r["prompt_id"] for r in rows} - messages.keys()
    if missing:
        raise KeyError(f"scored samples reference {len(missing)} unknown prompt id(s), e.g. {sorted(missing)[:3]}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["reward"] is not None:
            groups[r["prompt_id"]].append(r)
    pairs = []
    for prompt_id in sorted(groups):
        ordered = sorted(groups[prompt_id], key=lambda r: r["sample_index"])
        chosen = next((r for r in ordered if r["reward"] >= pass_threshold), None)
        if chosen is None:
            continue
        rejected = next((r for r in ordered if r["reward"] < pass_threshold
                         and r["completion"] != chosen["completion"]), None)
        if rejected is None:
            continue
        pairs.append({"prompt_id": prompt_id, "capability": capability[prompt_id], "prompt": messages[prompt_id],
                      "chosen": [{"role": "assistant", "content": chosen["completion"]}],
                      "rejected": [{"role": "assistant", "content": rejected["completion"]}]})
    return pairs


def split_held_out(pairs: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out) pairs: a prompt's pairs go to one side, held out with probability `fraction`.

    Drawn by a hash of (seed, prompt), not by position, so the split is the same in every run and rank
    and a prompt seen again in a later round stays on its side. The prompt is the pair id before its
    last "/": verifier pairs are "<prompt id>/round<r>", preference-file pairs "<file>:<line>/<i>><j>"
    (all pairs of one ranking together). A split that would leave nothing to train on holds out nothing.
    """
    def held(pair: dict) -> bool:
        key = pair["prompt_id"].rsplit("/", 1)[0]
        digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    flags = [held(p) for p in pairs]
    train = [p for p, h in zip(pairs, flags) if not h]
    if not train:
        return pairs, []
    return train, [p for p, h in zip(pairs, flags) if h]


def pairwise_accuracy(model_dir: str | Path, pairs: list[dict], batch_size: int = 64, max_length: int = 512) -> float:
    """Fraction of `pairs` whose chosen response the RM scores above the rejected one; a tie counts
    half (a constant RM scores 0.5, chance)."""
    wins = pairwise_wins(model_dir, pairs, batch_size, max_length)
    return sum(wins) / max(1, len(wins))


def accuracy_by_capability(pairs: list[dict], wins: list[float]) -> dict[str, dict]:
    """{capability: {"pairs": n, "accuracy": fraction}} of `pairwise_wins` over `pairs`, by name."""
    groups: dict[str, list[float]] = defaultdict(list)
    for pair, win in zip(pairs, wins, strict=True):
        groups[pair.get("capability") or PREFERENCE_FILES].append(win)
    return {c: {"pairs": len(w), "accuracy": round(sum(w) / len(w), 4)} for c, w in sorted(groups.items())}


def pairwise_wins(model_dir: str | Path, pairs: list[dict], batch_size: int = 64, max_length: int = 512,
                  chat_template_kwargs: dict | None = None) -> list[float]:
    """Per pair: 1 when the RM scores its chosen response above its rejected one, 0.5 on a tie, else 0.
    Chosen and rejected are scored in one batched pass."""
    prompts = [p["prompt"] for p in pairs]
    scores = score_with_reward_model(model_dir, prompts + prompts,
                                     [p["chosen"][-1]["content"] for p in pairs]
                                     + [p["rejected"][-1]["content"] for p in pairs],
                                     batch_size=batch_size, max_length=max_length, progress=False,
                                     chat_template_kwargs=chat_template_kwargs)
    chosen, rejected = scores[:len(pairs)], scores[len(pairs):]
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]


def score_with_reward_model(model_dir: str | Path, prompts_messages: list[list[dict]], completions: list[str],
                            batch_size: int = 64, max_length: int = 512, *, dtype: torch.dtype | None = None,
                            progress: bool = True, chat_template_kwargs: dict | None = None) -> list[float]:
    """RM score of each (prompt messages, completion), in input order.

    Each pair is rendered as prompt + assistant reply with the chat template and `chat_template_kwargs`
    (the same tokens as in training). A sequence longer than `max_length` keeps its first token (BOS) and its last
    `max_length - 1`: the score is read at the last token, so the end of the reply must stay. Inputs
    are sorted by length (longest first, so an out-of-memory shows at once) and padded per batch;
    every batch is one forward pass under `torch.inference_mode`. Device: CUDA when available, else
    CPU; dtype: bfloat16 on a CUDA device that supports it, else float32 (or as given).
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if len(prompts_messages) != len(completions):
        raise ValueError(f"{len(prompts_messages)} prompts but {len(completions)} completions")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"need batch_size >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    if not completions:
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    pad_id = model.config.get_text_config().pad_token_id
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        model.config.get_text_config().pad_token_id = pad_id

    conversations = [list(p) + [{"role": "assistant", "content": c}] for p, c in zip(prompts_messages, completions)]
    texts = tokenizer.apply_chat_template(conversations, tokenize=False, **(chat_template_kwargs or {}))
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]  # = apply_chat_template(tokenize=True), batched
    truncated = sum(len(x) > max_length for x in ids)
    if truncated:
        log.warning("reward model: %d of %d inputs longer than %d tokens keep BOS + their last %d tokens",
                    truncated, len(ids), max_length, max_length - 1)
        ids = [x if len(x) <= max_length else x[:1] + x[len(x) - max_length + 1:] for x in ids]

    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
    scores = torch.empty(len(ids), dtype=torch.float32)
    with torch.inference_mode(), tqdm(total=len(ids), desc="reward model", unit="sample", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            seqs = [torch.tensor(ids[i], dtype=torch.long) for i in batch]
            input_ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)
            lengths = torch.tensor([len(s) for s in seqs])
            attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            scores[torch.tensor(batch)] = logits[:, 0].float().cpu()
            bar.update(len(batch))
    return scores.tolist()
