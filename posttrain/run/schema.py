"""Every table of a round, as an Arrow schema. Stages validate at their boundary and join by id.

prompts  one row per prompt: id, capability, messages, and the metadata its verifier needs
samples  one row per (prompt_id, sample_index): a completion with token counts and its sampling logprob
scored   samples + capability, reward (None = not applicable) and the verifier's reason
sft      one SFT example per kept prompt, TRL conversational `messages`
pairs    one DPO pair per kept prompt, TRL `prompt` / `chosen` / `rejected` (conversational)
evals    one row per (benchmark, item, sample): the completion and its verdict
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from reward import unknown_verifier

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

# Verifier metadata: all nullable; which ones a prompt needs depends on its capability.
VERIFIER_FIELDS = {
    "math": ["answer"],
    "code": ["tests", "entry_point"],
    "tools": ["tools", "expected_call"],
    "multilingual": ["language"],  # with an `answer`, that is checked too; without, the language alone
}
# `preamble` (code, optional): trusted code the prompt gives (helpers its function may call, e.g. HumanEval's
# is_palindrome), run before the reply's code and before the tests (reward/code.py).
META = [pa.field(n, pa.string())
        for n in ("answer", "tests", "entry_point", "preamble", "tools", "expected_call", "language")]

PROMPTS = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("capability", pa.string(), nullable=False),
    pa.field("messages", MESSAGES, nullable=False),
    *META,
    # The verifier that scores this prompt, when it is not the recipe's `score.verifiers[capability]`
    # (e.g. the tiny world's number-word prompts beside multilingual math prompts of the same capability).
    pa.field("verifier", pa.string()),
])

SAMPLES = pa.schema([
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),
    pa.field("completion", pa.string(), nullable=False),
    pa.field("num_prompt_tokens", pa.int32(), nullable=False),
    pa.field("num_completion_tokens", pa.int32(), nullable=False),
    pa.field("logprob", pa.float64()),  # sum of sampled tokens' logprobs under the sampling policy
    pa.field("finish_reason", pa.string()),
])

SCORED = pa.schema([
    *SAMPLES,
    pa.field("capability", pa.string(), nullable=False),
    pa.field("verifier", pa.string(), nullable=False),
    pa.field("reward", pa.float64()),
    pa.field("reason", pa.string()),
    pa.field("rm_score", pa.float64()),  # the reward model's score, when one is trained (else null)
])

SFT = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("capability", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("messages", MESSAGES, nullable=False),
    pa.field("reward", pa.float64()),
])

PAIRS = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("capability", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("prompt", MESSAGES, nullable=False),
    pa.field("chosen", MESSAGES, nullable=False),
    pa.field("rejected", MESSAGES, nullable=False),
    pa.field("chosen_reward", pa.float64(), nullable=False),
    pa.field("rejected_reward", pa.float64(), nullable=False),
])

EVALS = pa.schema([
    pa.field("benchmark", pa.string(), nullable=False),  # "heldout" or an eval/benchmarks name
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),
    pa.field("capability", pa.string(), nullable=False),
    pa.field("completion", pa.string(), nullable=False),  # "" with reason "prompt too long" when skipped
    pa.field("reward", pa.float64()),
    pa.field("reason", pa.string()),
])

TABLES = {"prompts": PROMPTS, "samples": SAMPLES, "scored": SCORED, "sft": SFT, "pairs": PAIRS, "evals": EVALS}
UNIQUE_KEYS = {
    "prompts": ["id"],
    "samples": ["prompt_id", "sample_index"],
    "scored": ["prompt_id", "sample_index"],
    "sft": ["id"],
    "pairs": ["id"],
    "evals": ["benchmark", "prompt_id", "sample_index"],
}


OPTIONAL = {"prompts": ("verifier",)}  # columns a table may lack (read as all null)


class SchemaError(ValueError):
    """A table does not match its schema; the message names the table and where it came from."""


def validate(table: pa.Table, name: str, where: str = "") -> pa.Table:
    """Returns `table` with exactly the columns of schema `name`, in order, cast to its types.

    Raises SchemaError for a missing column, an uncastable type, a null in a non-nullable column,
    or a duplicated key.
    """
    schema = TABLES[name]
    where = where or name
    for col in OPTIONAL.get(name, ()):  # added after files in the wild were written: absent reads as null
        if col not in table.column_names:
            table = table.append_column(schema.field(col), pa.nulls(table.num_rows, schema.field(col).type))
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"{where}: {name} table is missing column(s) {missing}; has {table.column_names}")
    table = table.select(schema.names)
    for f in schema:  # before the cast: pyarrow refuses to cast nulls into a non-nullable field
        if not f.nullable and table.column(f.name).null_count:
            raise SchemaError(f"{where}: {name}.{f.name} has {table.column(f.name).null_count} null value(s)")
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise SchemaError(f"{where}: {name} table has the wrong type: {e}") from None
    key = UNIQUE_KEYS[name]
    if table.num_rows and table.group_by(key).aggregate([]).num_rows != table.num_rows:
        raise SchemaError(f"{where}: {name} has duplicate {'/'.join(key)} values")
    return table


def from_records(records: list[dict], name: str, where: str = "") -> pa.Table:
    schema = TABLES[name]
    rows = [{f.name: r.get(f.name) for f in schema} for r in records]
    return validate(pa.Table.from_pylist(rows, schema=schema), name, where)


def write(table: pa.Table, name: str, path: Path) -> int:
    """Validates and writes a table; returns its row count. Callers write inside a stage's temp dir."""
    table = validate(table, name, str(path))
    pq.write_table(table, path)
    return table.num_rows


def read(path: Path, name: str) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: cannot read as Parquet: {e}") from None
    return validate(table, name, str(path))


def read_prompt_file(path: Path) -> pa.Table:
    """Loads user prompt records from JSONL or Parquet; every error names the file and line (or row)."""
    if path.suffix == ".parquet":
        table = read(path, "prompts")
        rows = ((f"{path}: row {i}", f"row {i}", rec) for i, rec in enumerate(table.to_pylist(), 1))
    else:
        rows = jsonl_records(path)
    records, first = [], {}
    for where, label, rec in rows:
        rec = check_prompt_record(rec, where)
        if rec["id"] in first:
            raise SchemaError(f"{where}: duplicate id {rec['id']!r} (first on {first[rec['id']]})")
        first[rec["id"]] = label
        records.append(rec)
    if not records:
        raise SchemaError(f"{path}: no prompt records")
    return from_records(records, "prompts", str(path))


def jsonl_records(path: Path):
    """Yields (`file:line`, `line N`, parsed record) for every non-blank line of a JSONL file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SchemaError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(f"{where}: malformed JSON: {e.msg} (column {e.colno})") from None
            yield where, f"line {lineno}", rec


def check_prompt_record(rec: object, where: str) -> dict:
    """One prompt record's content checks, beyond types: id, capability, messages, verifier metadata."""
    if not isinstance(rec, dict):
        raise SchemaError(f"{where}: a prompt record is a JSON object, got {type(rec).__name__}")
    for key in ("id", "capability", "messages"):
        if not rec.get(key):
            raise SchemaError(f"{where}: missing or empty {key!r}")
    for key in ("id", "capability"):
        if not isinstance(rec[key], str):
            raise SchemaError(f"{where}: {key!r} must be a string")
    need = VERIFIER_FIELDS.get(rec["capability"])
    if need is None:
        raise SchemaError(f"{where}: unknown capability {rec['capability']!r} (known: {list(VERIFIER_FIELDS)})")
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and m["role"]
                                                 and isinstance(m.get("content"), str) for m in msgs):
        raise SchemaError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    if msgs[-1]["role"] != "user":
        raise SchemaError(f"{where}: the last message of a prompt must be the user's")
    for key in need:
        if rec.get(key) in (None, ""):
            raise SchemaError(f"{where}: capability {rec['capability']!r} needs {key!r} for its verifier")
    rec = dict(rec)
    for key in ("tools", "expected_call"):  # stored as JSON text so every table keeps one flat schema
        if key in rec and not isinstance(rec[key], str) and rec[key] is not None:
            rec[key] = json.dumps(rec[key])
    for f in [*META, PROMPTS.field("verifier")]:
        if rec.get(f.name) is not None and not isinstance(rec[f.name], str):
            raise SchemaError(f"{where}: {f.name!r} must be a string, got {type(rec[f.name]).__name__}")
    if rec.get("verifier") is not None:
        if why := unknown_verifier(rec["verifier"]):
            raise SchemaError(f"{where}: {why}")
    unknown = set(rec) - set(PROMPTS.names)
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {sorted(unknown)}")
    return rec
