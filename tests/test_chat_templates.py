"""Any chat model trains (issue 27): which tokens carry loss, per chat-template family, through the stages' code.

Each family's tokenizer is built here: a small byte-level BPE with the family's special tokens and its real chat
template as text (ChatML as SmolLM2 and Qwen2.5 ship it, Llama 3, Mistral v0.3, Gemma, Phi-3, and the tiny
base's own, the only one with `{% generation %}` markers). A random 2-layer Llama over that vocabulary is saved
beside it, and the stage's own `sft_trainer` / `dpo_trainer` tokenize a conversation:

- SFT trains on the reply and the template's end of turn, exactly, and on none of the prompt;
- DPO trains on the reply without its formatting tokens (the special tokens the template writes, and the
  tail it writes after a reply), in chosen and rejected alike.

The same conversation goes through `chat_format.untrainable` (the recipe-load check), which must accept every
family and refuse templates that cannot train. A prompt's system turn reaches every family: generation, SFT,
DPO and the reward model fold it into the user turn where the template refuses it (`models.chat_turns`).
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from posttrain.models.chat_turns import Chat, prompt_turns, warn_about_template, why_fold_system
from posttrain.run import schema
from posttrain.training.chat_format import (
    formatting_token_ids,
    reply_tail_ids,
    tokenize_prompt_completion,
    untrainable,
)
from posttrain.recipe.config import DPOConfig, RewardModelConfig, SFTConfig
from posttrain.stages.dpo import dpo_trainer
from posttrain.stages.generate import requests_for
from posttrain.stages.reward_model import rm_scores, train_rm
from posttrain.stages.sft import sft_trainer
from posttrain.tiny.base import train_tokenizer
from tests._fast_paths import FP32

PROMPT = [{"role": "user", "content": "What is 12 + 30?"}]
SYSTEM = [{"role": "system", "content": "Answer briefly."}]
CHOSEN = "12 + 30 = 42. The answer is 42."
REJECTED = "The answer is 40."

SMOLLM2 = (  # HuggingFaceTB/SmolLM2-*-Instruct
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN = (  # Qwen2.5-*-Instruct, its branch without tools
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first)"
    " or (message.role == \"assistant\" and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA3 = (  # meta-llama/Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = (  # mistralai/Mistral-7B-Instruct-v0.3 ([INST] and [/INST] are control tokens)
    "{%- if messages[0][\"role\"] == \"system\" %}{%- set system_message = messages[0][\"content\"] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content']|trim + eos_token}}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}{%- endif %}{%- endfor %}")
GEMMA = (  # google/gemma-2-2b-it
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
PHI3 = (  # microsoft/Phi-3-mini-4k-instruct
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

# family: (template, special tokens, {bos, eos, pad, unk}, what SFT trains on, what DPO trains on in the chosen)
FAMILIES = {
    "smollm2": (SMOLLM2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
                CHOSEN + "<|im_end|>\n", CHOSEN),
    "qwen2.5": (QWEN, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, CHOSEN + "<|im_end|>\n", CHOSEN),
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"],
               {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, CHOSEN + "<|eot_id|>", CHOSEN),
    "mistral": (MISTRAL, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, " " + CHOSEN + "</s>", " " + CHOSEN),
    "gemma": (GEMMA, ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
              {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
              CHOSEN + "<end_of_turn>\n", CHOSEN),
    "phi3": (PHI3, ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"],
             {"bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"},
             CHOSEN + "<|end|>\n<|endoftext|>", CHOSEN),
    "tiny": (None, None, None, CHOSEN + "<|eot_id|>", CHOSEN),  # the tiny base's own (generation markers)
}
TEXTS = [m["content"] for m in PROMPT + SYSTEM] + [CHOSEN, REJECTED, "system user assistant model Answer briefly."]


def family_tokenizer(name: str) -> PreTrainedTokenizerFast:
    template, specials, named, _, _ = FAMILIES[name]
    if template is None:
        return train_tokenizer(TEXTS * 10, vocab_size=300)
    return template_tokenizer(template, specials, named)


def template_tokenizer(template: str, specials: list[str], named: dict[str, str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=4096, **named)
    fast.chat_template = template
    return fast


def model_folder(tokenizer, path, stop_at_end_of_turn: bool = True):
    """A random Llama over `tokenizer`'s vocabulary, saved with it. Its eos ids are the tokenizer's and, with
    `stop_at_end_of_turn`, the template's end-of-turn token (as Gemma's and Phi-3's generation configs list it)."""
    eos = [tokenizer.eos_token_id]
    if stop_at_end_of_turn and tokenizer.chat_template:
        eos += reply_tail_ids(tokenizer)[:1]
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=32, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=sorted(set(eos)), pad_token_id=tokenizer.pad_token_id)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    tokenizer = family_tokenizer(request.param)
    return request.param, tokenizer, model_folder(tokenizer, tmp_path_factory.mktemp(request.param) / "model")


def said(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def sft_table(prompt=PROMPT):
    return schema.from_records([{"id": "a", "prompt_id": "a", "capability": "math", "round": 1, "reward": 1.0,
                                 "messages": prompt + [{"role": "assistant", "content": CHOSEN}]}], "sft")


@pytest.mark.parametrize("packing", [False, True])
def test_sft_trains_on_the_reply_and_its_end_of_turn_only(family, tmp_path, packing):
    name, tokenizer, model = family
    trainer = sft_trainer(tmp_path, model, sft_table(), SFTConfig(packing=packing, max_length=128), 0, **FP32)[0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = labels != -100
    assert said(tokenizer, ids[trained]) == FAMILIES[name][3]
    first = int(trained.nonzero()[0])
    assert trained[first:].all() or packing  # one run of tokens, to the end (packing pads nothing here)
    assert "12 + 30?" in said(tokenizer, ids[:first])  # the prompt is all before it
    # the labels are the trained tokens themselves (next-token targets are shifted inside the model)
    assert torch.equal(labels[trained], ids[trained])


def test_dpo_trains_on_the_reply_without_formatting_tokens(family, tmp_path):
    name, tokenizer, model = family
    pairs = schema.from_records([{"id": "p", "prompt_id": "p", "capability": "math", "round": 1, "prompt": PROMPT,
                                  "chosen": [{"role": "assistant", "content": CHOSEN}],
                                  "rejected": [{"role": "assistant", "content": REJECTED}],
                                  "chosen_reward": 1.0, "rejected_reward": 0.0}], "pairs")
    trainer = dpo_trainer(tmp_path, model, pairs, DPOConfig(max_length=128), 0, **FP32)[0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    chosen, rejected = (said(tokenizer, batch["input_ids"][i][batch["completion_mask"][i].bool()]) for i in (0, 1))
    assert chosen == FAMILIES[name][4]
    assert rejected == FAMILIES[name][4].replace(CHOSEN, REJECTED)
    # what was taken out is exactly the template's formatting: its special tokens and the reply's tail
    example = trainer.train_dataset[0]
    reply = example["chosen_ids"]
    formatting = set(formatting_token_ids(tokenizer))
    tail = reply_tail_ids(tokenizer)
    assert tail and reply[-len(tail):] == tail
    left_out = [t for i, t in enumerate(reply) if t in formatting or i >= len(reply) - len(tail)]
    assert said(tokenizer, left_out) == FAMILIES[name][3][len(FAMILIES[name][4]):]


def test_the_stages_tokenize_as_the_load_check_does(family, tmp_path):
    """The load-time check reproduces TRL's tokenization (`tokenize_prompt_completion`), so what it accepts
    is what the stages train on; and it accepts every family."""
    name, tokenizer, model = family
    trainer = sft_trainer(tmp_path, model, sft_table(), SFTConfig(max_length=128), 0, **FP32)[0]
    prompt_ids, reply_ids = tokenize_prompt_completion(tokenizer, PROMPT, [{"role": "assistant", "content": CHOSEN}])
    row = trainer.train_dataset[0]
    assert row["input_ids"] == prompt_ids + reply_ids
    assert row["labels"] == [-100] * len(prompt_ids) + reply_ids
    assert untrainable(tokenizer) is None and untrainable(tokenizer, packing=True) is None


def test_tiny_base_trains_on_the_tokens_its_generation_markers_mark():
    """The tiny base's template has `{% generation %}` markers: the prompt-completion layout trains on exactly
    the tokens the markers mark (the layout the stage used before), so its runs are unchanged."""
    tokenizer = family_tokenizer("tiny")
    for prompt in (PROMPT, SYSTEM + PROMPT):
        messages = prompt + [{"role": "assistant", "content": CHOSEN}]
        marked = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True)
        prompt_ids, reply_ids = tokenize_prompt_completion(tokenizer, prompt, messages[-1:])
        assert prompt_ids + reply_ids == marked["input_ids"]
        assert [0] * len(prompt_ids) + [1] * len(reply_ids) == marked["assistant_masks"]


def test_system_turns_stay_in_the_prompt_generation_renders(family, tmp_path, caplog):
    """A system turn is prompt, and SFT trains after exactly the tokens generation sampled from. Gemma 2's
    template refuses a system turn and Mistral v0.3's writes it only before a final user turn: every stage folds
    it into the user turn (as Mistral v0.3 writes it for generation), and the run says so once."""
    name, tokenizer, model = family
    trainer = sft_trainer(tmp_path, model, sft_table(SYSTEM + PROMPT), SFTConfig(max_length=128), 0, **FP32)[0]
    ids, labels = (torch.tensor(trainer.train_dataset[0][k]) for k in ("input_ids", "labels"))
    assert said(tokenizer, ids[labels != -100]) == FAMILIES[name][3]
    assert "Answer briefly." in said(tokenizer, ids[labels == -100])
    prompts = schema.from_records([{"id": "p", "capability": "math", "answer": "42", "messages": SYSTEM + PROMPT}],
                                  "prompts")
    requests, _ = requests_for(prompts, Chat(tokenizer), n=1, temperature=1.0, top_p=1.0, max_tokens=8, seed=0,
                               max_model_len=None)
    assert requests["p"]["prompt_token_ids"] == ids[labels == -100].tolist()
    pairs = schema.from_records([{"id": "p", "prompt_id": "p", "capability": "math", "round": 1,
                                  "prompt": SYSTEM + PROMPT, "chosen": [{"role": "assistant", "content": CHOSEN}],
                                  "rejected": [{"role": "assistant", "content": REJECTED}],
                                  "chosen_reward": 1.0, "rejected_reward": 0.0}], "pairs")
    dpo = dpo_trainer(tmp_path / "dpo", model, pairs, DPOConfig(max_length=128), 0, **FP32)[0]
    assert dpo.train_dataset[0]["prompt_ids"] == requests["p"]["prompt_token_ids"]
    folds = name in ("mistral", "gemma")
    assert (why_fold_system(tokenizer) is not None) == folds
    with caplog.at_level("WARNING", logger="posttrain"):
        warn_about_template(Chat(tokenizer), name)
    assert ("folds a prompt's system turn" in caplog.text) == folds
    if name == "mistral":  # as the template writes the prompt for generation
        generation = tokenizer.apply_chat_template(SYSTEM + PROMPT, add_generation_prompt=True, tokenize=False)
        assert said(tokenizer, ids[labels == -100]) == generation


def test_the_reward_model_trains_and_scores_system_prompts_where_the_template_refuses_them(tmp_path):
    """Gemma 2's template refuses a system turn: the RM trains on, ranks its held-out pairs with and scores the
    folded prompt (stages.reward_model: train_rm, rm_scores) instead of stopping at the first tools prompt."""
    tokenizer = family_tokenizer("gemma")
    model = model_folder(tokenizer, tmp_path / "model")
    pairs = [{"prompt_id": f"p{i}", "capability": "math",
              "prompt": SYSTEM + [{"role": "user", "content": f"{i} + 30?"}],
              "chosen": [{"role": "assistant", "content": CHOSEN}],
              "rejected": [{"role": "assistant", "content": REJECTED}]} for i in range(8)]
    cfg = RewardModelConfig(enabled=True, batch_size=4, max_length=128, eval_fraction=0.25)
    info = train_rm(tmp_path / "rm", str(model), pairs, cfg, seed=0)
    assert info["pairs"] + info["eval_pairs"] == 8 and 0 <= info["eval_accuracy"] <= 1
    prompts = schema.from_records([{"id": "p", "capability": "math", "answer": "42", "messages": SYSTEM + PROMPT}],
                                  "prompts")
    samples = pa.table({"prompt_id": ["p", "p"], "sample_index": [0, 1], "completion": [CHOSEN, REJECTED]})
    scores = rm_scores(tmp_path / "rm" / "model", samples, prompts, cfg)["rm_score"].to_pylist()
    assert len(scores) == 2 and all(math.isfinite(x) for x in scores)


QWEN3 = (  # the shape of Qwen3's template: a reply gets a think block (its reasoning, if any), and
    # enable_thinking=false writes an empty one after the generation prompt
    "{%- for m in messages %}{%- if m.role == 'assistant' %}{%- set content = m.content %}{%- set thought = '' %}"
    "{%- if '</think>' in content %}{%- set thought = content.split('</think>')[0].split('<think>')[-1].strip() %}"
    "{%- set content = content.split('</think>')[-1].lstrip() %}{%- endif %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + thought + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")
THINK_OFF = {"enable_thinking": False}


@pytest.mark.parametrize("template_kwargs", [THINK_OFF, {}])
def test_chat_template_kwargs_reach_generation_sft_and_dpo_alike(tmp_path, template_kwargs):
    """`chat_template_kwargs` go to every render: with Qwen3's {enable_thinking: false} generation starts after
    an empty think block and SFT and DPO train on the reply alone after that same prompt; without, the block is
    the reply's (what thinking off by default would teach: to skip it)."""
    tokenizer = template_tokenizer(QWEN3, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                   {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    model = model_folder(tokenizer, tmp_path / "model")
    assert untrainable(tokenizer, template_kwargs=template_kwargs) is None
    prompts = schema.from_records([{"id": "p", "capability": "math", "answer": "42", "messages": PROMPT}], "prompts")
    requests, _ = requests_for(prompts, Chat(tokenizer, template_kwargs), n=1, temperature=1.0, top_p=1.0,
                               max_tokens=8, seed=0, max_model_len=None)
    prompt_ids = requests["p"]["prompt_token_ids"]
    empty_think = "<think>\n\n</think>\n\n"
    assert said(tokenizer, prompt_ids).endswith("assistant\n" + (empty_think if template_kwargs else ""))
    sft = sft_trainer(tmp_path, model, sft_table(), SFTConfig(max_length=128), 0, template_kwargs, **FP32)[0]
    ids, labels = (torch.tensor(sft.train_dataset[0][k]) for k in ("input_ids", "labels"))
    assert ids[labels == -100].tolist() == prompt_ids
    reply = CHOSEN + "<|im_end|>\n"
    assert said(tokenizer, ids[labels != -100]) == (reply if template_kwargs else empty_think + reply)
    pairs = schema.from_records([{"id": "p", "prompt_id": "p", "capability": "math", "round": 1, "prompt": PROMPT,
                                  "chosen": [{"role": "assistant", "content": CHOSEN}],
                                  "rejected": [{"role": "assistant", "content": REJECTED}],
                                  "chosen_reward": 1.0, "rejected_reward": 0.0}], "pairs")
    dpo = dpo_trainer(tmp_path / "dpo", model, pairs, DPOConfig(max_length=128), 0, template_kwargs, **FP32)[0]
    assert dpo.train_dataset[0]["prompt_ids"] == prompt_ids
    batch = dpo.data_collator([dpo.train_dataset[0]])
    chosen = said(tokenizer, batch["input_ids"][0][batch["completion_mask"][0].bool()])
    assert chosen == (CHOSEN if template_kwargs else empty_think + CHOSEN)


def test_a_template_that_writes_todays_date_is_named_and_a_pinned_date_reaches_every_prompt(caplog):
    """Llama 3.2's template writes today's date (strftime_now) into every prompt unless `date_string` is given:
    a run resumed on another day would render other prompts. The run warns; the recipe pins it."""
    tokenizer = family_tokenizer("llama3")
    tokenizer.chat_template = (  # Llama 3.2's date logic before the Llama 3 turns
        "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
        "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
        "{%- endif %}{%- endif %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + date_string"
        " + '<|eot_id|>' }}" + LLAMA3)
    with caplog.at_level("WARNING", logger="posttrain"):
        warn_about_template(Chat(tokenizer), "llama")
    assert "writes today's date into every prompt" in caplog.text and "date_string" in caplog.text
    pinned = Chat(tokenizer, {"date_string": "26 Jul 2024"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="posttrain"):
        warn_about_template(pinned, "llama")
    assert caplog.text == ""
    assert "Today Date: 26 Jul 2024" in said(tokenizer, pinned.prompt_ids(PROMPT))
    assert untrainable(tokenizer, template_kwargs={"date_string": "26 Jul 2024"}) is None


def test_chat_template_kwargs_are_checked_and_change_the_base_fingerprint():
    """A variable that clashes is a recipe error; a set one is in the base stage's fingerprint, so changing it
    reruns every stage after (all read the base or a model trained from it); none keeps older runs' fingerprints."""
    from posttrain.recipe.config import RecipeError
    from posttrain.stages.setup import base_config

    with pytest.raises(RecipeError, match=r"tiny\.yaml: chat_template_kwargs\.add_generation_prompt is an argument"):
        load("chat_template_kwargs={add_generation_prompt: true}")
    recipe = load("chat_template_kwargs={enable_thinking: false}")
    assert recipe.chat_template_kwargs == THINK_OFF
    assert base_config(recipe)["chat_template_kwargs"] == THINK_OFF
    assert base_config(load()) == {"base_model": ".cache/tiny-base", "build": load().base, "seed": 0}


MISTRAL_V01 = (  # mistralai/Mistral-7B-Instruct-v0.1: no system role at all
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


@pytest.mark.parametrize("template, folds", [
    (MISTRAL_V01, "refuses a system turn"),
    (GEMMA, "refuses a system turn"),
    (FAMILIES["mistral"][0], "only when a user turn ends the conversation"),
    (LLAMA3, None),
    ("{{ raise_exception('no') }}", None),  # folding mends nothing: the model check names the template
])
def test_which_templates_fold_system_turns(template, folds):
    tokenizer = family_tokenizer("mistral")
    tokenizer.chat_template = template
    why = why_fold_system(tokenizer)
    assert (why is None) if folds is None else (folds in why)
    turns = prompt_turns(tokenizer)(SYSTEM + PROMPT)
    assert turns == (SYSTEM + PROMPT if folds is None else
                     [{"role": "user", "content": "Answer briefly.\n\nWhat is 12 + 30?"}])


@pytest.mark.parametrize("template, why", [
    ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}",
     "does not write the assistant's reply"),
    ("", "does not write the assistant's reply"),
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "writes nothing after the assistant's reply"),
    ("{{ raise_exception('no') }}", "does not render"),
    ("{% if add_generation_prompt %}Q: {% endif %}{% for m in messages %}{{ m['content'] + '<|im_end|>' }}"
     "{% endfor %}", "renders the prompt alone"),
])
def test_untrainable_templates_are_named(template, why):
    tokenizer = family_tokenizer("smollm2")
    tokenizer.chat_template = template
    assert why in untrainable(tokenizer)


def test_a_tokenizer_without_eos_cannot_train():
    tokenizer = family_tokenizer("smollm2")
    tokenizer.eos_token = None
    assert "no eos token" in untrainable(tokenizer)


# --------------------------------------------------------------------------- refused at recipe load


def load(*overrides):
    from posttrain.recipe.load import load_recipe
    from tests.conftest import ROOT

    return load_recipe(ROOT / "recipes" / "tiny.yaml", list(overrides))


@pytest.fixture(scope="module")
def chatml_folder(tmp_path_factory):
    return model_folder(family_tokenizer("smollm2"), tmp_path_factory.mktemp("chatml") / "model")


def test_a_model_folder_that_trains_loads(chatml_folder):
    assert load("base=null", f"base_model={chatml_folder}").base_model == str(chatml_folder)


@pytest.mark.parametrize("template, why", [
    ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}",
     "does not write the assistant's reply"),
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "writes nothing after the assistant's reply"),
])
def test_a_model_that_cannot_train_is_refused_at_load_naming_base_model(tmp_path, template, why):
    from posttrain.recipe.config import RecipeError

    tokenizer = family_tokenizer("smollm2")
    tokenizer.chat_template = template
    folder = model_folder(tokenizer, tmp_path / "model")
    with pytest.raises(RecipeError, match=r"tiny\.yaml: base_model .*model: its chat template") as e:
        load("base=null", f"base_model={folder}")
    assert why in str(e.value)


def test_a_context_shorter_than_the_recipe_is_refused_at_load(chatml_folder):
    from posttrain.recipe.config import RecipeError

    with pytest.raises(RecipeError, match=r": its context is 512 tokens, shorter than sft.max_length=1024") as e:
        load("base=null", f"base_model={chatml_folder}", "sft.max_length=1024")
    assert f"base_model {chatml_folder}: " in str(e.value)
    with pytest.raises(RecipeError, match=r"dpo\.max_length is 300, longer than the tiny base's context"):
        load("dpo.max_length=300")  # the tiny base, not built yet: its context is base.max_length


def test_a_model_that_would_not_stop_at_the_end_of_a_reply_is_refused(tmp_path):
    """Gemma's tokenizer eos is <eos>, but its replies end on <end_of_turn>: its generation config lists both.
    Without that, every sample would run to max_tokens (none kept for SFT): refused before generating."""
    from posttrain.training.chat_format import check_model

    folder = model_folder(family_tokenizer("gemma"), tmp_path / "model", stop_at_end_of_turn=False)
    assert "would not stop at the end of a reply" in check_model(str(folder), {})
    assert "'<end_of_turn>'" in check_model(str(folder), {})
    assert check_model(str(model_folder(family_tokenizer("gemma"), tmp_path / "ok")), {}) is None


def test_the_round_checks_a_model_once_resolved(tmp_path):
    """A hub id, an imported file or the tiny base is checked when the round has it, before any generation."""
    from posttrain.recipe.config import RecipeError
    from posttrain.stages.setup import check_chat_template

    tokenizer = family_tokenizer("smollm2")
    tokenizer.chat_template = "{{ raise_exception('no') }}"
    folder = model_folder(tokenizer, tmp_path / "model", stop_at_end_of_turn=False)
    with pytest.raises(RecipeError, match=r"base_model .*model: its chat template does not render"):
        check_chat_template(str(folder), load())
    with pytest.raises(RecipeError, match=r"base_model .*missing: neither a model folder here"):
        check_chat_template(str(tmp_path / "missing"))
