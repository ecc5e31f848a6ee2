"""`posttrain score`: any samples file is scored by the recipe's verifiers; bad input writes nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
MATH = {"id": "m1", "capability": "math", "messages": [{"role": "user", "content": "2 + 3?"}], "answer": "5"}
CODE = {"id": "c1", "capability": "code", "messages": [{"role": "user", "content": "f(x) = x + 1"}],
        "tests": "assert f(1) == 2", "entry_point": "f"}


def score(tmp_path, lines: list[str]):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.parquet"
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "score", "--recipe", "recipes/tiny.yaml",
                           "--input", str(path), "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    return proc, out


def test_scores_every_sample_by_prompt_id(tmp_path):
    rows = [{**MATH, "completion": "The answer is 5."}, {**CODE, "completion": "def f(x):\n    return x + 1"},
            {**MATH, "completion": "The answer is 6."}, {**CODE, "completion": "def f(x):\n    return x"}]
    proc, out = score(tmp_path, [json.dumps(r) for r in rows])
    assert proc.returncode == 0, proc.stderr
    got = {(r["prompt_id"], r["sample_index"]): (r["reward"], r["capability"]) for r in pq.read_table(out).to_pylist()}
    assert got == {("m1", 0): (1.0, "math"), ("m1", 1): (0.0, "math"),
                   ("c1", 0): (1.0, "code"), ("c1", 1): (0.0, "code")}


def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path):
    proc, out = score(tmp_path, [json.dumps({**MATH, "completion": "5"}), "{not json"])
    assert proc.returncode == 2
    assert "samples.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


def test_missing_completion_or_verifier_field_is_an_error(tmp_path):
    proc, _ = score(tmp_path, [json.dumps(MATH)])
    assert proc.returncode == 2 and "samples.jsonl:1" in proc.stderr and "completion" in proc.stderr
    no_tests = {k: v for k, v in CODE.items() if k != "tests"}
    proc, _ = score(tmp_path, [json.dumps({**no_tests, "completion": "x"})])
    assert proc.returncode == 2 and "needs 'tests'" in proc.stderr
