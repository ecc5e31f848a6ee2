"""Tool-call verifier: Llama 3.1 JSON tool calls checked against the offered tools and the expected call.

The call format, asked for by `render_tools_prompt` and read by the verifier, is Llama 3.1's JSON tool
call: one JSON object {"name": ..., "parameters": {...}} ("arguments" is accepted too; a leading
<|python_tag|> or prose is skipped, and so is a one-element JSON list). `call_text` writes one. A completion
holds exactly one call: a second object that names a tool, a list of two calls or calls on further lines fail
("2 calls where 1 is expected", BFCL's "Wrong number of functions"), so a right call followed by anything else
earns nothing in training either.

A call passes when its name is an offered tool, its arguments validate against that tool's parameter
schema (BFCL's pseudo-types such as "dict" and "float" are first mapped to JSON Schema; "integer" means an
int, as BFCL's checker types it: 10.0 fails where 10 passes, while a "float"/"number" takes 10), and it matches
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
  The schema is checked as far as BFCL's AST checker checks it (`bfcl_checked`): required arguments, each
  argument's type and an array's items' type; the answer key, not an enum, lists the acceptable values.
  tests/test_bfcl_agreement.py grades every bfcl_simple and bfcl_multiple item, and perturbations of it,
  with bfcl-eval's own checker and this verifier: they agree but for two answer-key bugs, where BFCL accepts
  a value because it has the key's type rather than the schema's (simple_python_307's `venue: true` for a
  string, simple_python_149's list of lists for a list of strings) and this verifier refuses it.
Values that pass the schema compare by JSON type (3 == 3.0, but "3" != 3 and true != 1; key order is
irrelevant) and strings compare the way BFCL's AST checker does (see `standardize_string`).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

DECODER = json.JSONDecoder()
_JSON_START = re.compile(r"[{[]")  # where a JSON object or list may start

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
    calls = tool_calls(text)
    if not calls:
        return Verdict(FAIL, "no tool call")
    if len(calls) > 1:  # BFCL: "Wrong number of functions"; in training, a right call plus anything else
        return Verdict(FAIL, f"{len(calls)} calls where 1 is expected")
    [(name, args)] = calls
    if name not in offered:
        return Verdict(FAIL, f"unknown tool {name}")
    bfcl_form = "possible_arguments" in expected
    schema = bfcl_checked(offered[name]) if bfcl_form else offered[name]
    try:
        validate(args, schema)
    except jsonschema.ValidationError as e:
        return Verdict(FAIL, f"schema: {e.message}")
    except jsonschema.SchemaError as e:
        return Verdict(None, f"not applicable: invalid schema for {name} ({e.message})")
    if name != expected.get("name"):
        return Verdict(FAIL, "wrong tool")
    if bfcl_form:
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


def tool_calls(text: str) -> list[tuple[str, Any]]:
    """(name, arguments) of every call in the text: each JSON object that names a tool, alone or in a JSON list,
    read left to right (a value inside a call is part of it, not another call). Prose around the calls is
    skipped; if the first JSON object is not a call, the text has no call."""
    calls = []
    start = _JSON_START.search(text)
    while start is not None:
        try:
            value, end = DECODER.raw_decode(text, start.start())
        except ValueError:
            start = _JSON_START.search(text, start.start() + 1)
            continue
        for obj in [value] if isinstance(value, dict) else value if isinstance(value, list) else []:
            if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                calls.append((obj["name"], _arguments(obj)))
            elif isinstance(obj, dict) and not calls:
                return []  # the first object is not a call: no tool call
        start = _JSON_START.search(text, end)
    return calls


def _arguments(call: dict) -> Any:
    args = call["parameters"] if "parameters" in call else call.get("arguments", {})
    if isinstance(args, str):  # some emitters encode the arguments as a JSON string
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def validate(args: Any, schema: dict) -> None:
    """jsonschema.validate, but "integer" is an int, not an integral float: BFCL's checker refuses 10.0 where an
    integer is declared (and accepts 10 where a float is, as JSON Schema's "number" does)."""
    if (error := best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(args))) is not None:
        raise error


@functools.lru_cache(maxsize=4096)
def _validator(schema_json: str) -> Validator:
    """A checked schema's validator, built once per schema (checking a schema costs ~100x validating a call)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return _strict_integers(cls)(schema)


@functools.cache
def _strict_integers(cls: type) -> type:
    checker = cls.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    return jsonschema.validators.extend(cls, type_checker=checker)


def bfcl_checked(schema: dict) -> dict:
    """The part of a tool's schema that BFCL's AST checker checks: the required arguments, each argument's type
    and an array's items' type (one level down). BFCL compares deeper values (a dict's values, a nested list's
    items) with the answer key only, and the answer key, not an enum, lists the acceptable values."""
    if not isinstance(schema, dict):
        return schema  # not a schema: validation says so
    out = {k: v for k, v in schema.items() if k in ("type", "required", "additionalProperties")}
    out["properties"] = {name: _shallow(prop) for name, prop in schema.get("properties", {}).items()}
    return out


def _shallow(prop: Any) -> dict:
    out = {"type": prop["type"]} if isinstance(prop, dict) and "type" in prop else {}
    if isinstance(prop, dict) and isinstance(prop.get("items"), dict) and "type" in prop["items"]:
        out["items"] = {"type": prop["items"]["type"]}
    return out


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
