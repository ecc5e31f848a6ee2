"""Arrow schemas: validate() at stage boundaries, and user prompt files with file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.run import schema
from posttrain.run.schema import SchemaError, from_records, read, read_prompt_file, validate, write

U = [{"role": "user", "content": "hi"}]
A = [{"role": "assistant", "content": "ok"}]

GOOD_PROMPTS = [
    {"id": "m1", "capability": "math", "messages": [{"role": "system", "content": "be brief"},
                                                    {"role": "user", "content": "1+1?"}], "answer": "2"},
    {"id": "c1", "capability": "code", "messages": U, "tests": "assert f() == 1", "entry_point": "f"},
    {"id": "t1", "capability": "tools", "messages": U,
     "tools": [{"name": "add", "parameters": {"a": "int", "b": "int"}}],
     "expected_call": {"name": "add", "arguments": {"a": 1, "b": 2}}},
    {"id": "l1", "capability": "multilingual", "messages": U, "language": "fr", "answer": "bonjour"},
]

# One valid record per table, so every schema is exercised end to end.
RECORDS = {
    "prompts": {"id": "p", "capability": "math", "messages": U, "answer": "2"},
    "samples": {"prompt_id": "p", "sample_index": 0, "completion": "2", "num_prompt_tokens": 5,
                "num_completion_tokens": 1, "logprob": -0.5, "finish_reason": "stop"},
    "scored": {"prompt_id": "p", "sample_index": 0, "completion": "2", "num_prompt_tokens": 5,
               "num_completion_tokens": 1, "logprob": None, "finish_reason": None,
               "capability": "math", "verifier": "math", "reward": None, "reason": "no answer"},
    "sft": {"id": "p/round1", "prompt_id": "p", "capability": "math", "round": 1, "messages": U + A, "reward": 1.0},
    "pairs": {"id": "p/round1", "prompt_id": "p", "capability": "math", "round": 1, "prompt": U, "chosen": A,
              "rejected": [{"role": "assistant", "content": "no"}], "chosen_reward": 1.0, "rejected_reward": 0.0},
    "evals": {"benchmark": "heldout", "prompt_id": "p", "sample_index": 0, "capability": "math", "completion": "2",
              "reward": 1.0, "reason": None},
}


def samples(rows: list[tuple[str, int]]) -> pa.Table:
    return pa.table({
        "prompt_id": [p for p, _ in rows], "sample_index": [i for _, i in rows], "completion": ["x"] * len(rows),
        "num_prompt_tokens": [3] * len(rows), "num_completion_tokens": [1] * len(rows),
        "logprob": [None] * len(rows), "finish_reason": ["stop"] * len(rows),
    })


def jsonl(tmp_path: Path, lines: list, name: str = "file.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def prompt_error(path: Path) -> str:
    with pytest.raises(SchemaError) as e:
        read_prompt_file(path)
    return str(e.value)


# --------------------------------------------------------------------------- validate


@pytest.mark.parametrize("name", sorted(schema.TABLES))
def test_every_table_accepts_a_good_record(name, tmp_path):
    table = from_records([RECORDS[name]], name)
    assert table.schema == schema.TABLES[name]
    assert table.num_rows == 1
    assert write(table, name, tmp_path / f"{name}.parquet") == 1
    back = read(tmp_path / f"{name}.parquet", name)
    assert back.equals(table)
    assert back.to_pylist()[0] == {f.name: RECORDS[name].get(f.name) for f in schema.TABLES[name]}


def test_tables_and_unique_keys_cover_the_same_names():
    assert set(schema.TABLES) == set(schema.UNIQUE_KEYS)


def test_validate_selects_orders_and_casts_columns():
    t = samples([("a", 0), ("a", 1)])
    t = t.append_column("extra", pa.array([1, 2]))
    t = t.select(list(reversed(t.column_names)))  # extra first, columns reversed, sample_index int64
    out = validate(t, "samples")
    assert out.column_names == schema.SAMPLES.names
    assert out.schema.field("sample_index").type == pa.int32()
    assert out.column("sample_index").to_pylist() == [0, 1]


def test_validate_accepts_empty_table():
    assert validate(schema.SAMPLES.empty_table(), "samples").num_rows == 0


def test_missing_column():
    t = samples([("a", 0)]).drop_columns(["completion"])
    with pytest.raises(SchemaError, match=r"gen/out\.parquet: samples table is missing column\(s\) \['completion'\]"):
        validate(t, "samples", "gen/out.parquet")


def test_wrong_type():
    t = samples([("a", 0)]).set_column(1, "sample_index", pa.array(["zero"]))
    with pytest.raises(SchemaError, match="samples table has the wrong type"):
        validate(t, "samples")


def test_wrong_type_messages_as_string():
    t = pa.table({"id": ["p"], "capability": ["math"], "messages": ["hi"], "answer": ["2"], "tests": [None],
                  "entry_point": [None], "preamble": [None], "tools": [None], "expected_call": [None],
                  "language": [None], "verifier": [None]})
    with pytest.raises(SchemaError, match="prompts table has the wrong type"):
        validate(t, "prompts")


def test_null_in_non_nullable_column():
    t = samples([("a", 0), ("a", 1)]).set_column(2, "completion", pa.array([None, "x"], pa.string()))
    with pytest.raises(SchemaError, match=r"samples\.completion has 1 null value\(s\)"):
        validate(t, "samples")


def test_null_in_non_nullable_field_from_records():
    rec = dict(RECORDS["pairs"], chosen_reward=None)
    with pytest.raises(SchemaError, match=r"^select/pairs: pairs\.chosen_reward has 1 null value\(s\)"):
        from_records([rec], "pairs", "select/pairs")


def test_null_in_nullable_column_is_fine():
    out = validate(samples([("a", 0)]), "samples")
    assert out.column("logprob").to_pylist() == [None]


def test_duplicate_id():
    recs = [RECORDS["prompts"], dict(RECORDS["prompts"], answer="3")]
    with pytest.raises(SchemaError, match="prompts has duplicate id values"):
        from_records(recs, "prompts")


def test_duplicate_prompt_id_sample_index():
    with pytest.raises(SchemaError, match="samples has duplicate prompt_id/sample_index values"):
        validate(samples([("a", 0), ("a", 1), ("a", 0)]), "samples")


def test_composite_key_only_duplicates_when_both_parts_match():
    out = validate(samples([("a", 0), ("a", 1), ("b", 0), ("b", 1)]), "samples")
    assert out.num_rows == 4


def test_write_refuses_an_invalid_table(tmp_path):
    path = tmp_path / "bad.parquet"
    with pytest.raises(SchemaError, match="bad.parquet"):
        write(samples([("a", 0), ("a", 0)]), "samples", path)
    assert not path.exists()


# --------------------------------------------------------------------------- prompt files: JSONL


def test_good_jsonl_loads(tmp_path):
    path = jsonl(tmp_path, [GOOD_PROMPTS[0], "", GOOD_PROMPTS[1], "   ", *GOOD_PROMPTS[2:]])  # blank lines skipped
    t = read_prompt_file(path)
    assert t.schema == schema.PROMPTS
    rows = {r["id"]: r for r in t.to_pylist()}
    assert list(rows) == ["m1", "c1", "t1", "l1"]
    assert rows["m1"]["messages"] == GOOD_PROMPTS[0]["messages"]
    assert rows["m1"]["answer"] == "2" and rows["m1"]["tests"] is None
    assert (rows["c1"]["tests"], rows["c1"]["entry_point"]) == ("assert f() == 1", "f")
    # tools / expected_call given as JSON objects are stored as JSON text
    assert isinstance(rows["t1"]["tools"], str) and isinstance(rows["t1"]["expected_call"], str)
    assert json.loads(rows["t1"]["tools"]) == GOOD_PROMPTS[2]["tools"]
    assert json.loads(rows["t1"]["expected_call"]) == {"name": "add", "arguments": {"a": 1, "b": 2}}
    assert (rows["l1"]["language"], rows["l1"]["answer"]) == ("fr", "bonjour")


def test_tools_given_as_json_text_are_kept_verbatim(tmp_path):
    text = '{"name": "add", "arguments": {"a": 1}}'
    rec = dict(GOOD_PROMPTS[2], tools="[]", expected_call=text)
    row = read_prompt_file(jsonl(tmp_path, [rec])).to_pylist()[0]
    assert (row["tools"], row["expected_call"]) == ("[]", text)


def test_malformed_json_names_file_and_line(tmp_path):
    path = jsonl(tmp_path, [GOOD_PROMPTS[0], GOOD_PROMPTS[1], '{"id": "x", "capability": "math",'])
    msg = prompt_error(path)
    assert "file.jsonl:3" in msg and "malformed JSON" in msg


def test_line_numbers_count_blank_lines(tmp_path):
    path = jsonl(tmp_path, [GOOD_PROMPTS[0], "", "not json"])
    assert "file.jsonl:3" in prompt_error(path)


def test_record_must_be_an_object(tmp_path):
    assert "file.jsonl:1: a prompt record is a JSON object, got list" in prompt_error(jsonl(tmp_path, [[1, 2]]))


def test_missing_id(tmp_path):
    rec = {k: v for k, v in GOOD_PROMPTS[0].items() if k != "id"}
    msg = prompt_error(jsonl(tmp_path, [GOOD_PROMPTS[1], rec]))
    assert "file.jsonl:2" in msg and "'id'" in msg


def test_non_string_id(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], id=7)]))
    assert "file.jsonl:1" in msg and "'id' must be a string" in msg


def test_duplicate_id_names_file(tmp_path):
    path = jsonl(tmp_path, [GOOD_PROMPTS[0], dict(GOOD_PROMPTS[1], id="m1")])
    msg = prompt_error(path)
    assert str(path) in msg and "duplicate id" in msg


def test_code_prompt_without_tests(tmp_path):
    rec = {k: v for k, v in GOOD_PROMPTS[1].items() if k != "tests"}
    msg = prompt_error(jsonl(tmp_path, [GOOD_PROMPTS[0], rec]))
    assert "file.jsonl:2" in msg and "needs 'tests'" in msg


def test_code_prompt_with_empty_tests(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[1], tests="")]))
    assert "file.jsonl:1" in msg and "needs 'tests'" in msg


def test_tools_prompt_without_expected_call(tmp_path):
    rec = {k: v for k, v in GOOD_PROMPTS[2].items() if k != "expected_call"}
    msg = prompt_error(jsonl(tmp_path, [rec]))
    assert "file.jsonl:1" in msg and "needs 'expected_call'" in msg


def test_empty_messages(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], messages=[])]))
    assert "file.jsonl:1" in msg and "'messages'" in msg


def test_messages_must_be_role_content_objects(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], messages=[{"role": "user"}])]))
    assert "file.jsonl:1" in msg and "{role, content}" in msg


def test_last_message_not_from_user(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], messages=U + A)]))
    assert "file.jsonl:1" in msg and "last message" in msg


def test_unknown_capability(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], capability="poetry")]))
    assert "file.jsonl:1" in msg and "unknown capability 'poetry'" in msg


def test_non_string_capability(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], capability=["math"])]))
    assert "file.jsonl:1" in msg and "'capability' must be a string" in msg


def test_non_string_metadata_names_line(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [GOOD_PROMPTS[1], dict(GOOD_PROMPTS[0], answer=2)]))
    assert "file.jsonl:2" in msg and "'answer' must be a string" in msg


def test_unknown_field(tmp_path):
    msg = prompt_error(jsonl(tmp_path, [dict(GOOD_PROMPTS[0], difficulty="hard")]))
    assert "file.jsonl:1" in msg and "difficulty" in msg


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "file.jsonl"
    path.write_bytes(json.dumps(GOOD_PROMPTS[0]).encode() + b"\n" + b'{"id": "caf\xe9"}\n')
    msg = prompt_error(path)
    assert "file.jsonl:2" in msg and "UTF-8" in msg


def test_empty_file(tmp_path):
    assert "no prompt records" in prompt_error(jsonl(tmp_path, ["", ""]))


# --------------------------------------------------------------------------- prompt files: Parquet


def test_good_parquet_prompt_file(tmp_path):
    path = tmp_path / "prompts.parquet"
    table = from_records([dict(r, tools=None, expected_call=None) for r in GOOD_PROMPTS[:2]], "prompts")
    pq.write_table(table, path)
    assert read_prompt_file(path).equals(table)


def test_parquet_with_wrong_schema_names_path(tmp_path):
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), path)
    with pytest.raises(SchemaError) as e:
        read_prompt_file(path)
    assert str(path) in str(e.value) and "missing column" in str(e.value)


def test_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "prompts.parquet"
    path.write_text("id,capability\n")
    with pytest.raises(SchemaError, match="cannot read as Parquet") as e:
        read_prompt_file(path)
    assert str(path) in str(e.value)
