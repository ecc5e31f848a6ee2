"""Bad input at the CLI: every user error fails fast, cleanly and before any work.

Every case runs the real command (`posttrain.cli.main(["round", "--recipe", ...])`), all of them in one
fresh process (starting ~40 interpreters cost a minute of imports; each case gets its own working directory,
stderr and logging handlers there), and one case also as its own `python -m posttrain.cli` process. Each
checks: exit status 2; a message naming the recipe file and dotted key (recipe errors) or the data file and
line (prompt-file errors); no traceback; and no partial output (no `runs/<name>/round_*`).
The recipe has no `base` section and its `base_model` is an empty folder, so nothing can be built or
loaded: a case that got past validation would fail later, with a traceback or a stage folder.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from posttrain.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"

U = [{"role": "user", "content": "hi"}]
GOOD = {
    "math": {"id": "m1", "capability": "math", "messages": U, "answer": "2"},
    "code": {"id": "c1", "capability": "code", "messages": U, "tests": "assert f() == 1", "entry_point": "f"},
    "tools": {"id": "t1", "capability": "tools", "messages": U, "tools": [{"name": "add"}],
              "expected_call": {"name": "add", "arguments": {"a": 1}}},
    "multilingual": {"id": "l1", "capability": "multilingual", "messages": U, "language": "fr", "answer": "un"},
}


def without(rec: dict, key: str) -> dict:
    return {k: v for k, v in rec.items() if k != key}


class Case:
    """A tmp_path with a valid recipe (and helpers to break it or its prompt file)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        base = tmp_path / "base-model"
        base.mkdir()
        data = yaml.safe_load(TINY.read_text())
        data.pop("base")  # nothing gets built
        data.update(base_model=str(base), output_dir=str(tmp_path / "runs"))
        self.data = data
        self.recipe = tmp_path / "recipe.yaml"
        self.data_file: Path | None = None

    @property
    def run_dir(self) -> Path:
        return self.tmp / "runs" / "tiny"

    def write_recipe(self, edit: Callable[[dict], None] | None = None) -> Path:
        data = copy.deepcopy(self.data)
        if edit:
            edit(data)
        self.recipe.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.recipe

    def add_file_source(self, path: Path, **extra) -> None:
        self.data["prompts"]["sources"].append({"kind": "file", "path": str(path), **extra})

    def jsonl(self, lines: list, name: str = "file.jsonl") -> Path:
        """A JSONL prompt file (dicts are dumped, str/bytes written as they are) used by the recipe."""
        path = self.tmp / name
        path.write_bytes(b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
                                  + b"\n" for x in lines))
        self.add_file_source(path)
        self.data_file = path
        self.write_recipe()
        return path


@dataclass
class Expect:
    recipe: Path
    overrides: tuple[str, ...] = ()
    needles: tuple[str, ...] = ()  # substrings stderr must contain
    cwd: Path = ROOT


# --------------------------------------------------------------------------- recipe errors


def unknown_top_level_key(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d.update(trainer={"lr": 1})), needles=("unknown key trainer",))


def unknown_nested_key(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["sft"].update(learnin_rate=1e-5)), needles=("sft.learnin_rate",))


def unknown_nested_key_by_override(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("sft.learnin_rate=1e-5",), ("sft.learnin_rate",))


def wrong_type(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["generate"].update(num_samples="eight")),
                  needles=("generate.num_samples must be int", "'eight'"))


def wrong_type_by_override(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("rounds=two",), ("rounds must be int",))


def literal_out_of_range(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["sft"].update(start_from="scratch")), needles=("sft.start_from",))


def missing_required_field(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d.pop("rounds")), needles=("missing required key rounds",))


def negative_k_by_override(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("generate.num_samples=-1",), ("generate.num_samples must be >= 1, got -1",))


def prompt_file_missing(c: Case) -> Expect:
    c.add_file_source(c.tmp / "no_such_prompts.jsonl")
    return Expect(c.write_recipe(), needles=("prompts.sources[1].path", "no_such_prompts.jsonl"))


def prompt_path_is_a_directory(c: Case) -> Expect:
    (c.tmp / "prompts_dir").mkdir()
    c.add_file_source(c.tmp / "prompts_dir")
    return Expect(c.write_recipe(), needles=("prompts.sources[1].path", "prompts_dir"))


def unknown_capability_in_source(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["prompts"]["sources"][0].update(capabilities=["math", "poetry"])),
                  needles=("prompts.sources[0].capabilities", "'poetry'"))


def unknown_verifier(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["score"].update(verifiers={"math": "regex"})),
                  needles=("score.verifiers.math", "'regex'"))


def missing_absolute_base_model(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d.update(base_model=str(c.tmp / "no-such-model"))),
                  needles=("base_model", "no-such-model"))


def malformed_yaml(c: Case) -> Expect:
    c.recipe.write_text("name: tiny\nrounds: 1\nsft:\n  learning_rate: [1e-3\n")
    return Expect(c.recipe, needles=("not valid YAML", "line"))


def recipe_file_missing(c: Case) -> Expect:
    return Expect(c.tmp / "missing.yaml", needles=("not found",))


def recipe_file_missing_relative(c: Case) -> Expect:
    return Expect(Path("missing.yaml"), needles=("not found",), cwd=c.tmp)


def override_without_equals(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("sft.learning_rate",), ("sft.learning_rate", "expected dotted.key=value"))


def override_into_non_section(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("rounds.x=1",), ("rounds.x", "rounds is not a section"))


def override_value_not_yaml(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("sft.learning_rate=[1e-3",), ("sft.learning_rate",))


# --------------------------------------------------------------------------- prompt-file (data) errors


def malformed_json_line(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], GOOD["code"], '{"id": "x", "capability": "math",'])
    return Expect(c.recipe, needles=(f"{path}:3", "malformed JSON"))


def missing_id(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], without(GOOD["code"], "id")])
    return Expect(c.recipe, needles=(f"{path}:2", "'id'"))


def duplicate_id_across_lines(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], GOOD["code"], dict(GOOD["tools"], id="m1")])
    return Expect(c.recipe, needles=(f"{path}:3", "duplicate id 'm1'", "line 1"))


def code_without_tests(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], without(GOOD["code"], "tests")])
    return Expect(c.recipe, needles=(f"{path}:2", "needs 'tests'"))


def tools_without_expected_call(c: Case) -> Expect:
    path = c.jsonl([without(GOOD["tools"], "expected_call")])
    return Expect(c.recipe, needles=(f"{path}:1", "needs 'expected_call'"))


def empty_messages(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], dict(GOOD["code"], messages=[])])
    return Expect(c.recipe, needles=(f"{path}:2", "'messages'"))


def non_string_role(c: Case) -> Expect:
    path = c.jsonl([dict(GOOD["math"], messages=[{"role": 1, "content": "be brief"}, *U])])  # Arrow would choke
    return Expect(c.recipe, needles=(f"{path}:1", "'messages'"))


def non_utf8_bytes(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], b'{"id": "x\xff", "capability": "math"}'])
    return Expect(c.recipe, needles=(f"{path}:2", "not UTF-8"))


def last_message_not_from_user(c: Case) -> Expect:
    path = c.jsonl([dict(GOOD["math"], messages=U + [{"role": "assistant", "content": "ok"}])])
    return Expect(c.recipe, needles=(f"{path}:1", "last message"))


def unknown_capability_in_record(c: Case) -> Expect:
    path = c.jsonl([GOOD["math"], GOOD["code"], GOOD["tools"], dict(GOOD["math"], id="p", capability="poetry")])
    return Expect(c.recipe, needles=(f"{path}:4", "unknown capability 'poetry'"))


def empty_prompt_file(c: Case) -> Expect:
    path = c.jsonl([""])
    return Expect(c.recipe, needles=(str(path), "no prompt records"))


def duplicate_id_across_files(c: Case) -> Expect:
    first = c.jsonl([GOOD["math"]], name="train.jsonl")
    second = c.jsonl([dict(GOOD["code"], id="m1")], name="heldout.jsonl")
    c.data["prompts"]["sources"][-1]["split"] = "heldout"
    c.write_recipe()
    return Expect(c.recipe, needles=("prompts.sources[2]", "'m1'", str(first), str(second)))


def parquet_wrong_schema(c: Case) -> Expect:
    path = c.tmp / "prompts.parquet"
    pq.write_table(pa.table({"id": ["m1"], "question": ["1+1?"]}), path)
    c.add_file_source(path)
    return Expect(c.write_recipe(), needles=(str(path), "missing column"))


def parquet_wrong_types(c: Case) -> Expect:
    from posttrain.run import schema

    path = c.tmp / "prompts.parquet"
    cols = {f: [None] for f in schema.PROMPTS.names}
    pq.write_table(pa.table({**cols, "id": ["m1"], "capability": ["math"], "messages": ["1+1?"], "answer": ["2"]},
                            schema=pa.schema([pa.field(f, pa.string()) for f in schema.PROMPTS.names])), path)
    c.add_file_source(path)
    return Expect(c.write_recipe(), needles=(str(path), "wrong type"))


def parquet_bad_record(c: Case) -> Expect:
    from posttrain.run import schema

    rows = [GOOD["math"], without(GOOD["code"], "tests")]
    rows = [{k: (json.dumps(v) if k in ("tools", "expected_call") else v) for k, v in r.items()} for r in rows]
    path = c.tmp / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist([{f: r.get(f) for f in schema.PROMPTS.names} for r in rows],
                                        schema=schema.PROMPTS), path)
    c.add_file_source(path)
    return Expect(c.write_recipe(), needles=(str(path), "row 2", "needs 'tests'"))


def parquet_not_parquet(c: Case) -> Expect:
    path = c.tmp / "prompts.parquet"
    path.write_text('{"id": "m1"}\n')
    c.add_file_source(path)
    return Expect(c.write_recipe(), needles=(str(path), "Parquet"))


def targets_not_summing_to_one(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["mix"].update(targets={"math": 0.5, "code": 0.3})),
                  needles=("mix.targets", "must sum to 1"))


def unknown_benchmark(c: Case) -> Expect:
    return Expect(c.write_recipe(), ("eval.benchmarks=[heldout,mmlu]",), ("eval.benchmarks[1]", "'mmlu'"))


def unknown_generator(c: Case) -> Expect:
    return Expect(c.write_recipe(lambda d: d["prompts"]["sources"].append(
        {"kind": "generator", "name": "poems", "num_train": 4})), needles=("prompts.sources[1].name", "'poems'"))


def bad_preference_line(c: Case) -> Expect:
    path = c.tmp / "prefs.jsonl"
    path.write_text('{"prompt": "x", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": "a"}\n')
    return Expect(c.write_recipe(lambda d: d.setdefault("reward_model", {}).update(preference_sources=[str(path)])),
                  needles=("reward_model.preference_sources[0]", f"{path}:2", "needs 'ranking'"))


def tokenizer_without_chat_template(c: Case) -> Expect:
    base = c.tmp / "base-model"
    (base / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return Expect(c.write_recipe(), needles=("base_model", "no chat template"))


RECIPE_CASES = [
    unknown_top_level_key, unknown_nested_key, unknown_nested_key_by_override, wrong_type, wrong_type_by_override,
    literal_out_of_range, missing_required_field, negative_k_by_override, prompt_file_missing,
    prompt_path_is_a_directory, unknown_capability_in_source, unknown_verifier, missing_absolute_base_model,
    malformed_yaml, recipe_file_missing, recipe_file_missing_relative, override_without_equals,
    override_into_non_section, override_value_not_yaml, targets_not_summing_to_one, unknown_benchmark,
    unknown_generator, bad_preference_line, tokenizer_without_chat_template,
]
DATA_CASES = [
    malformed_json_line, missing_id, duplicate_id_across_lines, code_without_tests, tools_without_expected_call,
    empty_messages, non_string_role, non_utf8_bytes, last_message_not_from_user, unknown_capability_in_record,
    empty_prompt_file, duplicate_id_across_files, parquet_wrong_schema, parquet_wrong_types, parquet_bad_record,
    parquet_not_parquet,
]


def run_round(recipe: Path, overrides: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    """The command in a fresh process. "Fast" is "before any work": no stage folder (checked by the test); how
    long the interpreter takes to import is not asserted (speed lives in bench/). The timeout only ends a hang."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "posttrain.cli", "round", "--recipe", str(recipe), *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# One process runs every case in turn, as `python -m posttrain.cli` would run it alone.
DRIVER = """
import contextlib, io, json, logging, os, sys, traceback
from posttrain.cli import main

results = []
for case in json.load(sys.stdin):
    os.chdir(case["cwd"])
    logging.root.handlers.clear()  # the CLI's logging writes to this case's stderr, as in a fresh process
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["round", "--recipe", case["recipe"], *case["overrides"]])
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""
CASES = RECIPE_CASES + DATA_CASES


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Case, Expect, dict]]:
    """Every case built in its own folder, then run by one `python -c DRIVER` process."""
    built = {}
    for make in CASES:
        c = Case(tmp_path_factory.mktemp(make.__name__))
        built[make.__name__] = (c, make(c))
    jobs = [{"recipe": str(e.recipe), "overrides": list(e.overrides), "cwd": str(e.cwd)} for _, e in built.values()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(jobs), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (c, e, r) for (name, (c, e)), r in zip(built.items(), results, strict=True)}


def check(c: Case, expect: Expect, proc: dict) -> None:
    err = proc["stderr"]
    assert proc["returncode"] == 2, f"exit {proc['returncode']}, want 2 (user error)\nstdout:\n{proc['stdout']}\n" \
                                    f"stderr:\n{err}"
    assert "Traceback" not in err, err
    assert err.startswith("posttrain: "), err  # the message only: no log lines, no usage text
    assert str(expect.recipe) in err, err  # names the recipe file, as given on the command line
    for needle in expect.needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert not list(c.run_dir.glob("round_*")), sorted(p.name for p in c.run_dir.iterdir())


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_bad_input_fails_fast_and_cleanly(make, outcomes):
    check(*outcomes[make.__name__])


@pytest.mark.parametrize("make", [unknown_nested_key_by_override, malformed_json_line], ids=lambda f: f.__name__)
def test_bad_input_fails_the_same_in_a_process_of_its_own(make, tmp_path):
    """The exit status a shell sees, from the interpreter itself: a recipe case and a prompt-file case."""
    c = Case(tmp_path)
    expect = make(c)
    proc = run_round(expect.recipe, expect.overrides, expect.cwd)
    check(c, expect, {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})


def test_the_unbroken_recipe_and_prompt_file_are_valid(tmp_path, monkeypatch):
    """Control: each case breaks one thing; the recipe and records they start from load fine."""
    c = Case(tmp_path)
    c.jsonl(list(GOOD.values()))
    monkeypatch.chdir(ROOT)
    r = load_recipe(c.recipe)
    assert r.base is None and r.prompts.sources[-1].path == str(c.data_file)
    assert not c.run_dir.exists()  # loading a recipe creates nothing
