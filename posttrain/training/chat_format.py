"""What SFT and DPO need from a model's chat template, for any chat model, and the check that it has it.

Every training example here is one prompt and one reply (rejection sampling keeps one reply per prompt).
Both trainers get them in TRL's conversational prompt-completion layout and tokenize them the way TRL 1.16
does (`tokenize_prompt_completion`): the prompt rendered with the generation prompt, the prompt and reply
rendered whole, and the reply's tokens are those after the longest common prefix. That needs no
`{% generation %}` markers, which ChatML (SmolLM2, Qwen), Llama 3, Mistral, Gemma and Phi-3 templates lack.

    ChatML:  <|im_start|>user\\nWhat is 2 + 3?<|im_end|>\\n<|im_start|>assistant\\n | 5<|im_end|>\\n
             prompt (no loss)                                               | reply + its tail: SFT loss
    DPO:     the reply's tokens less the formatting ones: "5" (<|im_end|> and the "\\n" after it left out)

Formatting tokens (DPO, Llama 3 §4.1.4) are derived from the tokenizer, not listed per family: every special
token the template writes (named in its source, or in a rendered conversation) and eos, anywhere in a reply,
plus the tail the template writes after a reply's text (`reply_tail_ids`) where a reply ends on it.

`untrainable` runs one example through all of it (the SFT and DPO collators included) in well under a
second, so a recipe whose model cannot train is refused at load, not after generation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from trl.data_utils import common_prefix_length
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from posttrain.models.chat_turns import render_ids, template_text

# The conversation the check renders: a system turn is left out (some templates refuse one, e.g. Gemma 2's,
# Mistral v0.1's; prompts without one are what every template takes).
PROBE_PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]
PROBE_CHOSEN = "2 + 3 = 5. The answer is 5."
PROBE_REJECTED = "The answer is 6."


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def prompt_completion(messages: list[dict], prompt_turns: Callable[[list[dict]], list[dict]] = list) -> dict:
    """An `sft` row's conversation (ending on the reply) in TRL's prompt-completion layout:
    {"prompt": the turns before the reply, through `prompt_turns` (models.chat_turns), "completion": [the reply]}."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"an SFT conversation must end on the assistant's reply, got roles "
                         f"{[m['role'] for m in messages]}")
    return {"prompt": prompt_turns(messages[:-1]), "completion": list(messages[-1:])}


def tokenize_prompt_completion(tokenizer, prompt: list[dict], completion: list[dict],
                               template_kwargs: dict | None = None) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) as TRL 1.16's SFT and DPO trainers tokenize a conversational example (with
    its `chat_template_kwargs` column: `template_kwargs`): the reply starts where the prompt rendered with the
    generation prompt and the whole conversation diverge (tests/test_chat_templates.py checks both trainers'
    datasets against it)."""
    prompt_ids = render_ids(tokenizer, prompt, add_generation_prompt=True, **(template_kwargs or {}))
    full = render_ids(tokenizer, prompt + completion, **(template_kwargs or {}))
    n = common_prefix_length(prompt_ids, full)
    return full[:n], full[n:]


def formatting_token_ids(tokenizer, template_kwargs: dict | None = None) -> list[int]:
    """Ids of the special tokens the chat template writes (named in its source text, or in a rendered
    conversation: headers, turn ends, bos) and eos: Llama 3's <|start_header_id|>, <|eot_id|>, ...,
    ChatML's <|im_start|>, <|im_end|>, Gemma's <start_of_turn>, <end_of_turn>, Phi-3's <|user|>, <|end|>, ...,
    Mistral's [INST], [/INST] where they are tokens of their own. Special tokens only: an ordinary added token
    can be text."""
    special = {i: t.content for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    special.update(zip(tokenizer.all_special_ids, tokenizer.all_special_tokens))
    special.pop(tokenizer.unk_token_id, None)
    template = template_text(tokenizer)
    ids = {i for i, text in special.items() if text and text in template}
    if tokenizer.chat_template:
        try:
            rendered = render_ids(tokenizer, PROBE_PROMPT + assistant(PROBE_CHOSEN), **(template_kwargs or {}))
            ids |= set(rendered) & set(special)
        except Exception:  # noqa: BLE001 - `untrainable` says why; the template text's tokens are still found
            pass
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def reply_tail_ids(tokenizer, template_kwargs: dict | None = None) -> list[int]:
    """The tokens the chat template writes after a reply's text: its end of turn, e.g. [<|im_end|>, "\\n"]
    (ChatML), [<|eot_id|>] (Llama 3), [</s>] (Mistral), [<|end|>, "\\n", <|endoftext|>] (Phi-3); [] when it
    writes none or cannot be told (a tokenizer without offsets)."""
    text = tokenizer.apply_chat_template(PROBE_PROMPT + assistant(PROBE_CHOSEN), tokenize=False,
                                         **(template_kwargs or {}))
    end = text.rfind(PROBE_CHOSEN)
    if end < 0 or not getattr(tokenizer, "is_fast", False):
        return []
    end += len(PROBE_CHOSEN)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [i for i, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]) if start >= end]


class FormattingTokenMaskCollator(DataCollatorForPreference):
    """TRL's preference collator, with formatting tokens dropped from `completion_mask`: `masked_token_ids`
    anywhere in a reply, and `tail_ids` (`reply_tail_ids`) where a reply ends on them (a reply cut at
    max_length does not)."""

    def __init__(self, *args, masked_token_ids: list[int], tail_ids: list[int] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.masked_token_ids = torch.tensor(masked_token_ids, dtype=torch.long)
        self.tail_ids = torch.tensor(list(tail_ids), dtype=torch.long)

    def torch_call(self, examples):
        out = super().torch_call(examples)
        keep = ~torch.isin(out["input_ids"], self.masked_token_ids)
        n = len(self.tail_ids)
        if n:
            lengths = out["attention_mask"].sum(dim=1)  # right-padded: a reply ends its row's real tokens
            for row, length in enumerate(lengths.tolist()):
                if length >= n and torch.equal(out["input_ids"][row, length - n:length], self.tail_ids):
                    keep[row, length - n:length] = False
        out["completion_mask"] = out["completion_mask"] * keep.to(out["completion_mask"].dtype)
        return out


def dpo_collator(tokenizer, max_length: int | None, template_kwargs: dict | None = None) -> FormattingTokenMaskCollator:
    """The DPO stage's collator for `tokenizer` (formatting tokens out of the loss)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return FormattingTokenMaskCollator(pad_token_id=pad, max_length=max_length,
                                       masked_token_ids=formatting_token_ids(tokenizer, template_kwargs),
                                       tail_ids=reply_tail_ids(tokenizer, template_kwargs))


def model_context(config) -> int | None:
    """A model config's context length in tokens (None when it names none)."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def untrainable(tokenizer, packing: bool = False, template_kwargs: dict | None = None) -> str | None:
    """Why SFT or DPO cannot train with `tokenizer` (its chat template, its special tokens); None when both can.

    One example goes through the stages' own tokenization and collators: SFT must put loss on the reply and
    its end of turn and on none of the prompt, DPO on the reply less its formatting tokens. `packing`: the SFT
    stage's packed-rows collator instead of TRL's padding one."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    if tokenizer.chat_template is None:
        return ("its tokenizer has no chat template, which every stage uses to render prompts; use a model (or "
                "tokenizer_config.json) that has one, e.g. the -Instruct tokenizer of the same family")
    if tokenizer.eos_token_id is None:
        return "its tokenizer has no eos token: generation could not stop and SFT could not pad"
    try:
        prompt_ids, chosen_ids = tokenize_prompt_completion(tokenizer, PROBE_PROMPT, assistant(PROBE_CHOSEN),
                                                            template_kwargs)
        _, rejected_ids = tokenize_prompt_completion(tokenizer, PROBE_PROMPT, assistant(PROBE_REJECTED),
                                                     template_kwargs)
        tail = reply_tail_ids(tokenizer, template_kwargs)
    except Exception as e:  # noqa: BLE001 - a template's own error (raise_exception, a missing variable)
        return f"its chat template does not render a user turn and a reply ({type(e).__name__}: {e})"

    def said(ids) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    if PROBE_CHOSEN not in said(chosen_ids):
        return (f"its chat template does not write the assistant's reply after the prompt (the reply's tokens "
                f"read {said(chosen_ids)!r}): there is nothing to train on")
    if PROBE_PROMPT[0]["content"] in said(chosen_ids):
        return ("its chat template renders the prompt alone (with the generation prompt) differently from the "
                "prompt followed by a reply, so the prompt cannot be kept out of the loss")
    if not tail:
        return ("its chat template writes nothing after the assistant's reply (no end-of-turn token): the model "
                "would never learn to stop")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    row = {"input_ids": prompt_ids + chosen_ids, "labels": [-100] * len(prompt_ids) + chosen_ids}
    if packing:
        labels = PackedRowsCollator(pad_token_id=pad)([{**row, "seq_lengths": [len(row["input_ids"])]}])["labels"]
    else:
        labels = DataCollatorForLanguageModeling(pad_token_id=pad)([row])["labels"]
    trained = labels[0][labels[0] != -100].tolist()
    if trained[-len(tail):] != tail or PROBE_CHOSEN not in said(trained):
        return f"SFT would not train on the reply and its end of turn (it trains on {said(trained)!r})"
    batch = dpo_collator(tokenizer, None, template_kwargs)([{"prompt_ids": prompt_ids, "chosen_ids": chosen_ids,
                                            "rejected_ids": rejected_ids}])
    chosen = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()
    if PROBE_CHOSEN not in said(chosen):
        return (f"DPO's formatting-token mask leaves {said(chosen)!r} of the reply {PROBE_CHOSEN!r}: the reply's own "
                f"tokens are special tokens of this tokenizer")
    return None


def check_model(model: str, max_lengths: dict[str, int], packing: bool = False, tokenizer=None,
                template_kwargs: dict | None = None) -> str | None:
    """Why `model` (a local folder or hub id) cannot be post-trained by a recipe whose sequence lengths are
    `max_lengths` ({recipe key: tokens}); None when it can. Loads the tokenizer (unless given) and config only."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:  # no such folder, no such hub model (or no network), a broken file
        return f"neither a model folder here nor a hub model that could be loaded ({str(e).splitlines()[0]})"
    if (why := untrainable(tokenizer, packing, template_kwargs)) is not None:
        return why
    end_of_turn = reply_tail_ids(tokenizer, template_kwargs)[0]
    stops = stop_token_ids(model, tokenizer, config)
    if end_of_turn not in stops:
        return (f"generation would not stop at the end of a reply: its chat template ends one with "
                f"{tokenizer.convert_ids_to_tokens(end_of_turn)!r}, which is none of its eos tokens "
                f"{tokenizer.convert_ids_to_tokens(sorted(stops))} (tokenizer, config.json, generation_config.json); "
                f"every sample would run to generate.max_tokens and none be kept. Add its id, {end_of_turn}, to "
                f"generation_config.json's eos_token_id")
    context = model_context(config)
    too_long = {key: n for key, n in max_lengths.items() if context is not None and n > context}
    if too_long:
        return (f"its context is {context} tokens, shorter than "
                + ", ".join(f"{key}={n}" for key, n in too_long.items()) + "; lower them to at most that")
    return None


def stop_token_ids(model: str, tokenizer, config) -> set[int]:
    """The token ids generation stops at, as vLLM takes them: the tokenizer's eos, and the eos ids of the
    model's config and generation config."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        generation = None
    ids = {tokenizer.eos_token_id}
    for value in (getattr(config, "eos_token_id", None), generation):
        ids |= set(value) if isinstance(value, list) else {value}
    return ids - {None}


def recipe_lengths(r) -> dict[str, int]:
    """{recipe key: tokens} of the sequence lengths a recipe trains and generates at."""
    lengths = {"sft.max_length": r.sft.max_length}
    if r.dpo.enabled:
        lengths["dpo.max_length"] = r.dpo.max_length
    if r.reward_model.enabled:
        lengths["reward_model.max_length"] = r.reward_model.max_length
    if r.generate.max_model_len is not None:
        lengths["generate.max_model_len"] = r.generate.max_model_len
    return lengths


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """TRL's padding-free collator for packed rows, without flattening the batch into one row.

    Each packed row keeps its own row; position ids restart at 0 at every conversation, which is how
    transformers finds the conversations (with no attention mask given) and masks attention between them.
    Shorter rows are padded at the end with pad tokens that form one more conversation of their own
    (position ids from 0, labels -100), so no real token attends to them. (TRL's logged `num_tokens`,
    which reads the width of `position_ids` when there is no attention mask, then counts one row per batch.)
    """

    def torch_call(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        pad = [width - len(e["input_ids"]) for e in examples]
        seq_lengths = [list(e["seq_lengths"]) + ([n] if n else []) for e, n in zip(examples, pad)]
        input_ids = torch.tensor([list(e["input_ids"]) + [self.pad_token_id] * n for e, n in zip(examples, pad)])
        labels = torch.tensor([list(e["labels"]) + [-100] * n for e, n in zip(examples, pad)])
        position_ids = torch.stack(self.get_position_ids_from_packed_seq_lengths(seq_lengths))
        labels[position_ids == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
