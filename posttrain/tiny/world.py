"""The tiny world: four task families, one per capability, small enough to learn on a CPU in minutes.

Each family draws a prompt record (the `prompts` schema: id, capability, messages and the metadata
its verifier needs) together with the reference reply used only to pretrain the tiny base.
Held-out and training prompts come from disjoint parts of each family's prompt space (a fifth held out,
split by a hash of the question), so evaluation never sees a training prompt.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
from typing import Callable

from reward.number_words import NUMBER_WORDS as NUMBER_WORDS  # the verifier's table: the world draws its words

# --------------------------------------------------------------------------- math

# Name spaces are large on purpose: a held-out prompt is a new combination that the model must read
# (copy a name, a city, a number) rather than recall, so what post-training teaches can transfer.
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "bo"]


def _word(rng: random.Random, n: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Mo", "Nia",
         "Omar", "Pia", "Raj", "Sara", "Tom", "Uma"]
ITEMS = ["apples", "books", "coins", "cards", "pens", "shells"]


def math_task(rng: random.Random) -> tuple[dict, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        q = f"{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?"
        c, work = a + b, f"{a} + {b} = {a + b}"
    else:
        a, b = max(a, b), min(a, b)
        q = f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have now?"
        c, work = a - b, f"{a} - {b} = {a - b}"
    return {"capability": "math", "messages": [_user(q)], "answer": str(c)}, f"{work}. The answer is {c}."


# --------------------------------------------------------------------------- code

OPS = {"plus": ("+", operator.add), "minus": ("-", operator.sub), "times": ("*", operator.mul)}


def code_task(rng: random.Random) -> tuple[dict, str]:
    fn, word, k = _word(rng), rng.choice(list(OPS)), rng.randint(1, 9)
    op, apply = OPS[word]
    q = f"Write a Python function {fn}(x) that returns x {word} {k}."
    tests = "\n".join(f"assert {fn}({x}) == {apply(x, k)}" for x in (0, 1, 4, -3))
    reply = f"```python\ndef {fn}(x):\n    return x {op} {k}\n```"
    return {"capability": "code", "messages": [_user(q)], "tests": tests, "entry_point": fn}, reply


# --------------------------------------------------------------------------- tools

# Argument values come from large spaces (made-up places and people from syllables, beside real ones) and
# each request has several phrasings, so a held-out request is a new combination: the model must copy the
# value from the question. With 95 distinct requests (the first version) every held-out value was one the
# training half never asked for, and SFT taught the model to answer with a training value instead.
CITIES = ["Paris", "Lima", "Oslo", "Tokyo", "Cairo", "Quito", "Rome", "Delhi", "Accra", "Seoul", "Bern", "Dakar",
          "Hanoi", "Kiev", "Riga", "Sofia", "Tunis", "Baku", "Doha", "Male"]
TOOLS = {
    "get_weather": {"city": "string"},
    "set_timer": {"minutes": "integer"},
    "play_song": {"title": "string"},
    "call_contact": {"name": "string"},
}
SONG_WORDS = (["Blue", "Night", "Sun", "Old", "Red", "Wild", "Slow", "Gold"],
              ["Sky", "Train", "Dance", "Road", "River", "Moon", "Fire", "Song"])
REQUESTS = {  # tool -> phrasings of the request, {v} = the argument's value
    "get_weather": ["What is the weather in {v}?", "How is the weather in {v} today?", "Weather in {v}, please."],
    "set_timer": ["Set a timer for {v} minutes.", "Start a timer of {v} minutes.", "Timer for {v} minutes, please."],
    "play_song": ["Play the song {v}.", "Put on the song {v}.", "I want to hear the song {v}."],
    "call_contact": ["Call {v}.", "Please phone {v}.", "Make a call to {v}."],
}


def _tool_value(tool: str, rng: random.Random) -> str | int:
    made_up = _word(rng).capitalize()  # a place or a person no list names: only copying gets it right
    if tool == "get_weather":
        return rng.choice(CITIES) if rng.random() < 0.5 else made_up
    if tool == "set_timer":
        return rng.randint(1, 90)
    if tool == "play_song":
        return f"{rng.choice(SONG_WORDS[0])} {rng.choice(SONG_WORDS[1])}"
    return rng.choice(NAMES) if rng.random() < 0.5 else made_up


def _tool_schema(name: str) -> dict:
    props = {arg: {"type": t} for arg, t in TOOLS[name].items()}
    return {"name": name, "parameters": {"type": "object", "properties": props, "required": list(props)}}


def tools_task(rng: random.Random) -> tuple[dict, str]:
    target = rng.choice(list(TOOLS))
    offered = sorted({target, *rng.sample(list(TOOLS), 2)})
    value = _tool_value(target, rng)
    q = rng.choice(REQUESTS[target]).format(v=value)
    args = {next(iter(TOOLS[target])): value}
    system = "Tools: " + "; ".join(f"{t}({', '.join(TOOLS[t])})" for t in offered)
    call = {"name": target, "arguments": args}
    record = {"capability": "tools", "messages": [{"role": "system", "content": system}, _user(q)],
              "tools": json.dumps([_tool_schema(t) for t in offered]), "expected_call": json.dumps(call)}
    return record, json.dumps({"name": target, "parameters": args})


# --------------------------------------------------------------------------- multilingual

LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German"}


def multilingual_task(rng: random.Random) -> tuple[dict, str]:
    lang, n = rng.choice(list(NUMBER_WORDS)), rng.randint(0, 12)
    template = rng.choice(["Write the number {n} as a word in {L}.", "How do you say {n} in {L}?",
                           "Answer in {L}: what is the word for {n}?", "In {L}, {n} is written how?",
                           "Give the {L} word for the number {n}.", "{n} in {L}, please."])
    word = NUMBER_WORDS[lang][n]
    q = template.format(n=n, L=LANGUAGE_NAMES[lang])
    return {"capability": "multilingual", "messages": [_user(q)], "language": lang, "answer": word,
            "verifier": "number_words"}, word


FAMILIES: dict[str, Callable[[random.Random], tuple[dict, str]]] = {
    "math": math_task, "code": code_task, "tools": tools_task, "multilingual": multilingual_task,
}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


WORLD_VERSION = 3  # bump when what a family draws or how it splits changes: cached bases are rebuilt


def is_heldout(record: dict) -> bool:
    """Deterministic ~1/5 of each family's prompt space is reserved for evaluation, split by the user's
    question alone: a held-out question never appears in training, not even with other tools offered."""
    text = json.dumps([m["content"] for m in record["messages"] if m["role"] == "user"])
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5 == 0


def draw(capability: str, split: str, n: int, seed: int) -> list[tuple[dict, str]]:
    """`n` (record, reference reply) pairs from one split ("train" or "heldout"), ids stable per seed."""
    rng = random.Random(f"{seed}-{capability}-{split}")
    family, want_heldout = FAMILIES[capability], split == "heldout"
    out = []
    while len(out) < n:
        record, reply = family(rng)
        if is_heldout(record) == want_heldout:
            record["id"] = f"{capability}-{split}-{seed}-{len(out):05d}"
            out.append((record, reply))
    return out
