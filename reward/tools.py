"""Tool-call verifier: Llama 3.1 JSON tool calls checked against the offered tools and the expected call.

The call format, asked for by `render_tools_prompt` and read by the verifier, is Llama 3.1's JSON tool
call: the first JSON object in the completion, {"name": ..., "parameters": {...}} ("arguments" is
accepted too; a leading <|python_tag|> or prose is skipped). `call_text` writes one.

A call passes when its name is an offered tool, its arguments validate against that tool's parameter
schema (BFCL's pseudo-types such as "dict" and "float" are first mapped to JSON Schema), and it matches
the expected call, which comes in one of two forms:
- exact: {"name", "arguments"}: every argument the expected call lists must be given with an equal value,
  except an optional one (not in the schema's `required`) whose expected value is what leaving it out
  means: the schema's declared `default` (or null); an argument the expected call leaves out may be given
  only if the schema declares it optional. An optional argument without a declared default that the
  expected call lists must be given: the expected call lists exactly what the question asked for ("label
  the timer tea"), and leaving it out leaves the value to the tool. (This is the exact form's version of
  BFCL's "" below, which BFCL's ground truth writes beside the values that mean the same as leaving out;
  the possible-answers form keeps BFCL's rule alone, so scores stay comparable with BFCL's checker.)
- possible answers (BFCL's ground truth): {"name", "possible_arguments": {arg: [acceptable values]}}:
  each given argument must equal one acceptable value, "" in the list means the argument may be left
  out, and an argument without a list must not be given. Inside an acceptable value, a dict is itself a
  pattern {key: [acceptable values]} and a list matches element-wise (BFCL's dict/list-of-dict checkers).
Values compare by JSON type (3 == 3.0, but "3" != 3 and true != 1; key order is irrelevant) and strings
compare the way BFCL's AST checker does (see `standardize_string`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

DECODER = json.JSONDecoder()

# BFCL's parameter types that are not JSON Schema types (None: no constraint).
PSEUDO_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}

# Llama 3.1's wording for JSON-based tool calling (its model card's "JSON based tool calling" prompt).
TOOLS_INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. '
    "Do not use variables."
)


# --------------------------------------------------------------------------- prompt and call format


def render_tools_prompt(tools: list[dict], question_messages: list[dict]) -> list[dict]:
    """The chat messages for a tool-use prompt: a system message with the instruction and every tool as JSON
    (parameters in JSON Schema), then the question. Training generators and eval benchmarks both use it, so
    the model sees tools the same way in both. An existing system message is kept, after the tool text.
    One compact JSON object per tool, not Llama 3.1's indent=4: ~40% fewer prompt tokens, same content."""
    listing = "\n".join(json.dumps(_presented(t)) for t in tools)
    system = f"{TOOLS_INSTRUCTION}\n\n{listing}"
    messages = [dict(m) for m in question_messages]
    if messages and messages[0]["role"] == "system":
        system = f"{system}\n\n{messages.pop(0)['content']}"
    return [{"role": "system", "content": system}, *messages]


def _presented(tool: dict) -> dict:
    tool = tool.get("function", tool)
    shown = {"name": tool["name"], "description": tool.get("description", "")}
    shown["parameters"] = to_json_schema(tool.get("parameters") or {"type": "object", "properties": {}})
    return shown


def call_text(name: str, arguments: dict) -> str:
    """A tool call written the way the prompt asks for it."""
    return json.dumps({"name": name, "parameters": arguments})


def to_json_schema(schema: Any) -> Any:
    """BFCL's pseudo-JSON-schema -> JSON Schema: dict->object, float->number, tuple->array, any->no type,
    recursively through properties and items. Real JSON Schema passes through unchanged."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type":
            types = [PSEUDO_TYPES.get(t, t) for t in (value if isinstance(value, list) else [value])]
            if None not in types:  # "any" anywhere in the type means any value
                out["type"] = types if isinstance(value, list) else types[0]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = [to_json_schema(s) for s in value] if isinstance(value, list) else to_json_schema(value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- verifier


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
        expected = _expected(expected_json)
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # broken metadata is the data's fault
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
    if "possible_arguments" in expected:
        problem = possible_mismatch(args, expected["possible_arguments"])
    else:
        problem = exact_mismatch(args, _arguments(expected), schema)
    return Verdict(FAIL, f"wrong arguments: {problem}") if problem else Verdict(PASS, "correct")


def _offered(tools_json: str) -> dict[str, dict]:
    """{tool name: parameters as JSON Schema}; OpenAI-style {"type": "function", "function": {...}} also read."""
    out = {}
    for tool in json.loads(tools_json):
        tool = tool.get("function", tool)
        out[tool["name"]] = to_json_schema(tool.get("parameters") or {"type": "object"})
    return out


def _expected(expected_json: str) -> dict:
    expected = json.loads(expected_json)
    if not isinstance(expected, dict) or not isinstance(expected.get("possible_arguments", {}), dict):
        raise TypeError("expected_call must be an object, its possible_arguments too")
    return expected


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


# --------------------------------------------------------------------------- argument matching


def exact_mismatch(got: Any, want: Any, schema: dict) -> str | None:
    """Why `got` differs from the exact expected arguments (None: it matches). The expected call's
    arguments must all be given, but for an optional one expected at its schema default (or null), which
    may be left out; the model may add an argument only if the schema declares it optional."""
    if not isinstance(got, dict) or not isinstance(want, dict):
        return None if same_value(got, want) else "not the expected value"
    properties = schema.get("properties", {})
    optional = set(properties) - set(schema.get("required", ()))
    for key in sorted(got.keys() | want.keys()):
        if key in got and key in want:
            if not same_value(got[key], want[key]):
                return f"{key} = {json.dumps(got[key])}, expected {json.dumps(want[key])}"
        elif key in want:
            if key not in optional or not _means_absent(want[key], properties[key]):
                return f"missing {key}"
        elif key not in optional:
            return f"unexpected {key}"
    return None


def _means_absent(value: Any, prop: Any) -> bool:
    """Whether leaving an optional argument out gives `value`: null, or the default its schema declares."""
    if value is None:
        return True
    return isinstance(prop, dict) and "default" in prop and same_value(value, prop["default"])


def possible_mismatch(got: Any, possible: dict) -> str | None:
    """Why `got` matches none of BFCL's possible answers (None: it matches one). `possible` maps each
    argument to its acceptable values; "" among them means it may be left out (BFCL's convention)."""
    if not isinstance(got, dict):
        return "arguments are not an object"
    for key in sorted(got):
        if key not in possible:  # BFCL: "Unexpected parameter"
            return f"unexpected {key}"
        if not one_of(got[key], possible[key]):
            return f"{key} = {json.dumps(got[key])}, expected one of {json.dumps(possible[key])}"
    for key in sorted(possible.keys() - got.keys()):
        if "" not in _alternatives(possible[key]):
            return f"missing {key}"
    return None


def one_of(value: Any, acceptable: Any) -> bool:
    """Whether value equals one of the acceptable values ("" only marks an omittable argument)."""
    return any(_matches(value, alt) for alt in _alternatives(acceptable) if alt != "")


def _alternatives(acceptable: Any) -> list:
    return acceptable if isinstance(acceptable, list) else [acceptable]


def _matches(value: Any, alt: Any) -> bool:
    """One acceptable value: a dict is a pattern of acceptable values per key, a list matches element-wise."""
    if isinstance(alt, dict):
        return isinstance(value, dict) and possible_mismatch(value, alt) is None
    if isinstance(alt, list):
        return isinstance(value, list) and len(value) == len(alt) and all(map(_matches, value, alt))
    return same_value(value, alt)


def same_value(a: Any, b: Any) -> bool:
    """JSON equality that is type-aware: 3 == 3.0, but "3" != 3 and True != 1; strings as BFCL compares them."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, str):
        return standardize_string(a) == standardize_string(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def standardize_string(text: str) -> str:
    """BFCL's string normalisation (bfcl_eval/eval_checker/ast_eval/ast_checker.py, `standardize_string`,
    bfcl-eval 2026.3.23): drop spaces and the characters , . / - _ * ^, lowercase, and turn ' into ", so
    "April 1, 2024" == "april 1 2024" and "New York" == "new-york". BFCL applies it to string values, to
    strings inside lists and to string values of dicts; here it applies to strings at any depth."""
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')
