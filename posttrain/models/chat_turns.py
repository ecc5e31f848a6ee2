"""The turns a model's chat template is given: a prompt's system turn, for templates that cannot take one as it is.

Prompts may carry a system turn (a tool list, a steering prompt while sampling). Most templates write it as a
turn of its own; two kinds cannot, and would break a run that every other template runs:
  - Gemma's and Mistral v0.1's refuse it (`raise_exception('System role not supported')`), so generation would
    stop mid-round on the first tools prompt;
  - Mistral v0.3's writes it into the last user turn only when that turn ends the conversation: the prompt
    rendered for generation holds it, the prompt followed by a reply does not, and SFT would train on a prompt
    the model never saw.
For both, every stage (generation, eval, SFT, DPO, the reward model) folds a leading system turn into the user
turn after it, "<system>\\n\\n<user>": what Mistral v0.3 writes itself, and what Gemma's model card asks for.
Light on purpose (no torch, no TRL): the generate stage imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jinja2.exceptions import TemplateError

log = logging.getLogger("posttrain")

PROBE = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3?"}]
PROBE_REPLY = [{"role": "assistant", "content": "The answer is 5."}]


def fold_system(messages: list[dict]) -> list[dict]:
    """A leading system turn merged into the user turn after it ("<system>\\n\\n<user>")."""
    if len(messages) > 1 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        merged = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        return [merged, *messages[2:]]
    return list(messages)


@dataclass
class Chat:
    """A model's chat template as the stages render prompts with it: its tokenizer, the recipe's
    `chat_template_kwargs` (variables the template reads, e.g. Qwen3's {enable_thinking: false}) and the turns
    it takes (`prompt_turns`)."""

    tokenizer: Any
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def turns(self) -> Callable[[list[dict]], list[dict]]:
        return prompt_turns(self.tokenizer, self.template_kwargs)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The tokens generation continues from: the prompt's turns rendered with the generation prompt."""
        return render_ids(self.tokenizer, self.turns(messages), add_generation_prompt=True, **self.template_kwargs)


def why_fold_system(tokenizer, template_kwargs: dict | None = None) -> str | None:
    """Why prompts' system turns must be folded into the user turn for this tokenizer's chat template (it refuses
    them, or writes them only before a final user turn) while the folded prompt renders and trains; None when
    they need not be (or folding would not mend it: the model check then says what is wrong)."""
    def renders_as_prefix(prompt) -> bool:
        prompt_ids = render_ids(tokenizer, prompt, add_generation_prompt=True, **(template_kwargs or {}))
        return render_ids(tokenizer, prompt + PROBE_REPLY, **(template_kwargs or {}))[:len(prompt_ids)] == prompt_ids

    try:
        if not renders_as_prefix(fold_system(PROBE)):
            return None
    except (TemplateError, ValueError):  # no chat template at all (ValueError): the model check names it
        return None
    try:
        if renders_as_prefix(PROBE):
            return None
    except TemplateError as e:
        return f"its chat template refuses a system turn ({e})"
    return ("its chat template writes a system turn only when a user turn ends the conversation (as Mistral "
            "v0.3's does), so a reply would be trained without it")


def prompt_turns(tokenizer, template_kwargs: dict | None = None) -> Callable[[list[dict]], list[dict]]:
    """What every stage does to a prompt's turns before the chat template renders them: `fold_system` where the
    template needs it (`why_fold_system`), else nothing."""
    return fold_system if why_fold_system(tokenizer, template_kwargs) is not None else list


def template_column(num_examples: int, template_kwargs: dict | None) -> dict[str, list]:
    """TRL's per-example `chat_template_kwargs` column (SFT, DPO, reward trainers) for a dataset of
    `num_examples`; none without variables, so such a dataset is what it was before the key existed."""
    return {"chat_template_kwargs": [dict(template_kwargs)] * num_examples} if template_kwargs else {}


def warn_about_template(chat: Chat, model: str) -> None:
    """Log lines on what the template does to prompts that a user should know (once per run: the round's model
    check, `posttrain eval`): system turns folded (`prompt_turns`), today's date written into every prompt."""
    if (why := why_fold_system(chat.tokenizer, chat.template_kwargs)) is not None:
        log.warning("%s: %s; every stage folds a prompt's system turn into the user turn after it "
                    "(\"<system>\\n\\n<user>\")", model, why)
    if writes_todays_date(chat):
        log.warning("%s: its chat template writes today's date into every prompt (strftime_now, as Llama 3.2's "
                    "does), so a run resumed on another day samples and trains on other prompts; pin it with "
                    "chat_template_kwargs: {date_string: \"26 Jul 2024\"}", model)


def writes_todays_date(chat: Chat) -> bool:
    """Whether the template reads the clock (`strftime_now`) and the recipe has not pinned `date_string`, the
    variable Llama 3.x templates take instead."""
    return "strftime_now" in template_text(chat.tokenizer) and "date_string" not in chat.template_kwargs


def template_text(tokenizer) -> str:
    """The chat template's source (every named template of a tokenizer that has several), "" without one."""
    template = tokenizer.chat_template or ""
    return "\n".join(template.values()) if isinstance(template, dict) else template


def render_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    """`messages` rendered by the tokenizer's chat template, as token ids (kwargs: apply_chat_template's)."""
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])
