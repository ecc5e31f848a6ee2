"""Tool-call verifier: Llama 3.1 JSON tool calls checked against the offered tools and the expected call.

A call is the first JSON object in the completion, {"name": ..., "parameters": {...}} ("arguments" is
accepted too). Its name must be an offered tool, its arguments must validate against that tool's JSON
schema, and it must equal the expected call: numbers compare by value (3 == 3.0) but types otherwise
matter ("3" != 3, true != 1), key order is irrelevant, and an optional argument may be left out.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

DECODER = json.JSONDecoder()


def score(completions: list, tools: list | None = None, expected_call: list | None = None,
          **_) -> list[Verdict]:
    """completions[i] vs tools[i] (JSON list of {"name", "parameters"}) and expected_call[i]."""
    n = len(completions)
    rows = zip(completions, column(tools, n, "tools"), column(expected_call, n, "expected_call"))
    return [_verdict(as_text(c), t, e) for c, t, e in rows]


def _verdict(text: str, tools_json: str | None, expected_json: str | None) -> Verdict:
    if (na := missing(tools=tools_json, expected_call=expected_json)) is not None:
        return na
    try:
        offered = _offered(tools_json)
        expected = json.loads(expected_json)
    except (ValueError, TypeError, KeyError) as e:  # broken metadata is the data's fault, not the model's
        return Verdict(None, f"not applicable: unreadable tool metadata ({e})")
    call = first_call(text)
    if call is None:
        return Verdict(FAIL, "no tool call")
    name, args = call
    if name not in offered:
        return Verdict(FAIL, f"unknown tool {name}")
    schema = offered[name]
    try:
        jsonschema.validate(args, schema)
    except jsonschema.ValidationError as e:
        return Verdict(FAIL, f"schema: {e.message}")
    except jsonschema.SchemaError as e:
        return Verdict(None, f"not applicable: invalid schema for {name} ({e.message})")
    if name != expected.get("name"):
        return Verdict(FAIL, "wrong tool")
    want = _arguments(expected)
    if not _same_arguments(args, want, set(schema.get("required", ()))):
        return Verdict(FAIL, "wrong arguments")
    return Verdict(PASS, "correct")


def _offered(tools_json: str) -> dict[str, dict]:
    """{tool name: parameters schema}; OpenAI-style {"type": "function", "function": {...}} also read."""
    out = {}
    for tool in json.loads(tools_json):
        tool = tool.get("function", tool)
        out[tool["name"]] = tool.get("parameters") or {"type": "object"}
    return out


def first_call(text: str) -> tuple[str, Any] | None:
    """(name, arguments) of the first JSON object in the text that names a tool, else None."""
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = DECODER.raw_decode(text, start)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("name"), str):
                return obj["name"], _arguments(obj)
            return None  # the first object is not a call: no tool call
        start = text.find("{", start + 1)
    return None


def _arguments(call: dict) -> Any:
    args = call["parameters"] if "parameters" in call else call.get("arguments", {})
    if isinstance(args, str):  # some emitters encode the arguments as a JSON string
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def _same_arguments(got: Any, want: Any, required: set[str]) -> bool:
    """Top-level argument match: shared keys equal, a key on one side only allowed if not required."""
    if not isinstance(got, dict) or not isinstance(want, dict):
        return same_value(got, want)
    for key in got.keys() | want.keys():
        if key in got and key in want:
            if not same_value(got[key], want[key]):
                return False
        elif key in required:
            return False
    return True


def same_value(a: Any, b: Any) -> bool:
    """JSON equality that is type-aware: 3 == 3.0, but "3" != 3 and True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b
