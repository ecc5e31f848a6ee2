"""Recipe loading: every shipped recipe validates; bad keys, types and values fail naming file and dotted key."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posttrain.recipe.config import CAPABILITIES, Recipe, RecipeError

from posttrain.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if "accelerate" not in p.relative_to(REPO / "recipes").parts)


def tiny_dict() -> dict:
    return yaml.safe_load(TINY.read_text())


def write(tmp_path: Path, data: dict, name: str = "variant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def variant(tmp_path: Path, edit) -> Path:
    data = copy.deepcopy(tiny_dict())
    edit(data)
    return write(tmp_path, data)


def error(path: Path, overrides=()) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, list(overrides))
    msg = str(e.value)
    assert path.name in msg, msg  # every error names the recipe file
    return msg


# --------------------------------------------------------------------------- shipped recipes


def test_tiny_recipe_loads_with_expected_values():
    r = load_recipe(TINY)
    assert isinstance(r, Recipe)
    assert (r.name, r.rounds, r.seed, r.base_model) == ("tiny", 2, 0, ".cache/tiny-base")
    assert r.base is not None and r.base.num_steps == 250 and r.base.hidden_size == 128  # given / default
    [src] = r.prompts.sources
    assert (src.kind, src.capabilities, src.num_train, src.num_heldout) == ("tiny", list(CAPABILITIES), 400, 100)
    assert src.per_round  # new prompts every round
    assert (r.generate.num_samples, r.generate.max_tokens, r.generate.max_model_len) == (8, 64, 256)
    assert r.score.code_timeout_s == 5.0 and type(r.score.code_timeout_s) is float  # YAML int -> float field
    assert r.score.verifiers == {c: c for c in CAPABILITIES}  # default: each capability's own verifier
    assert r.score.check_steps == ["math"]
    assert r.sft.learning_rate == 2e-4 and r.sft.num_epochs == 3.0 and type(r.sft.num_epochs) is float
    assert r.dpo.learning_rate == 1e-5 and r.dpo.nll_weight == 0.2
    assert r.hub.push == "never"
    assert r.run_dir == Path("runs") / "tiny"


def test_recipes_are_found():
    assert TINY in RECIPES
    assert not any("accelerate" in p.parts for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_loads(path, monkeypatch):
    monkeypatch.chdir(REPO)  # file sources are relative to the repo root
    r = load_recipe(path)
    assert r.rounds >= 1 and r.prompts.sources


# --------------------------------------------------------------------------- unknown / missing keys


def test_unknown_top_level_key(tmp_path):
    msg = error(variant(tmp_path, lambda d: d.update(trainer={"lr": 1})))
    assert "unknown key trainer" in msg


def test_unknown_nested_key_names_dotted_path(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["sft"].update(learnin_rate=1e-5)))
    assert "sft.learnin_rate" in msg
    assert "learning_rate" in msg  # lists the known keys


def test_unknown_key_inside_list_item_names_index(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"][0].update(nmu_train=3)))
    assert "prompts.sources[0].nmu_train" in msg


def test_missing_required_top_level_key(tmp_path):
    msg = error(variant(tmp_path, lambda d: d.pop("rounds")))
    assert "missing required key rounds" in msg


def test_missing_required_nested_key(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"][0].pop("kind")))
    assert "missing required key prompts.sources[0].kind" in msg


def test_missing_recipe_file(tmp_path):
    msg = error(tmp_path / "nope.yaml")
    assert "not found" in msg


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "mapping" in error(path)


# --------------------------------------------------------------------------- types


def test_wrong_type_string_for_int(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["generate"].update(num_samples="eight")))
    assert "generate.num_samples must be int" in msg and "'eight'" in msg


def test_bool_is_not_an_int(tmp_path):
    msg = error(variant(tmp_path, lambda d: d.update(rounds=True)))
    assert "rounds must be int" in msg


def test_bool_is_not_a_float(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["sft"].update(learning_rate=True)))
    assert "sft.learning_rate must be float" in msg


def test_float_is_not_an_int(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["sft"].update(batch_size=16.0)))
    assert "sft.batch_size must be int" in msg


def test_int_accepted_for_float_and_converted(tmp_path):
    r = load_recipe(variant(tmp_path, lambda d: d["dpo"].update(beta=1, num_epochs=3)))
    assert r.dpo.beta == 1.0 and type(r.dpo.beta) is float
    assert r.dpo.num_epochs == 3.0 and type(r.dpo.num_epochs) is float


def test_exponent_without_dot_in_file_is_a_float(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(TINY.read_text().replace("learning_rate: 2.0e-4", "learning_rate: 2e-4"))
    assert "learning_rate: 2e-4" in path.read_text()
    r = load_recipe(path)
    assert r.sft.learning_rate == 2e-4 and type(r.sft.learning_rate) is float


def test_literal_field_rejects_other_values(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["sft"].update(start_from="scratch")))
    assert "sft.start_from must be one of ['base', 'previous']" in msg


def test_section_must_be_a_mapping(tmp_path):
    msg = error(variant(tmp_path, lambda d: d.update(sft=[1, 2])))
    assert "sft must be a mapping" in msg


def test_optional_field_accepts_null(tmp_path):
    r = load_recipe(variant(tmp_path, lambda d: d["generate"].update(max_model_len=None)))
    assert r.generate.max_model_len is None


# --------------------------------------------------------------------------- values


def test_negative_num_samples(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["generate"].update(num_samples=-1)))
    assert "generate.num_samples must be >= 1, got -1" in msg


def test_zero_rounds(tmp_path):
    assert "rounds must be >= 1, got 0" in error(variant(tmp_path, lambda d: d.update(rounds=0)))


def test_unknown_capability_in_source(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"][0].update(capabilities=["math", "poetry"])))
    assert "prompts.sources[0].capabilities" in msg and "'poetry'" in msg


def test_unknown_verifier_name(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["score"].update(verifiers={"math": "regex"})))
    assert "score.verifiers.math" in msg and "'regex'" in msg


def test_unknown_capability_as_verifier_key(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["score"].update(verifiers={"poetry": "math"})))
    assert "score.verifiers.poetry" in msg


def test_unknown_capability_in_check_steps(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["score"].update(check_steps=["math", "poetry"])))
    assert "score.check_steps[1]" in msg and "not a known capability" in msg


def test_tiny_source_needs_counts(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"][0].update(num_heldout=0)))
    assert "prompts.sources[0]" in msg and "num_heldout" in msg


def test_empty_sources(tmp_path):
    msg = error(variant(tmp_path, lambda d: d["prompts"].update(sources=[])))
    assert "prompts.sources must name at least one source" in msg


def file_source(path) -> dict:
    return {"kind": "file", "path": path, "split": "heldout", "capabilities": ["math"]}


def test_only_drawn_sources_take_new_prompts_each_round(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "m1", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], '
                       '"answer": "2"}\n')
    src = {**file_source(str(prompts)), "per_round": True}
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"].append(src)))
    assert "prompts.sources[1].per_round" in msg and "only tiny and generator sources" in msg


def test_file_source_with_missing_path(tmp_path):
    missing = str(tmp_path / "no_such_prompts.jsonl")
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"].append(file_source(missing))))
    assert "prompts.sources[1].path does not exist" in msg and "no_such_prompts.jsonl" in msg


def test_file_source_without_path(tmp_path):
    src = file_source(None)
    del src["path"]
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"].append(src)))
    assert "prompts.sources[1].path is required" in msg


def test_file_source_path_is_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    record = {"id": "p1", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}
    (tmp_path / "data" / "p.jsonl").write_text(json.dumps(record) + "\n")  # load_recipe reads file sources
    path = variant(tmp_path, lambda d: d["prompts"]["sources"].append(file_source("data/p.jsonl")))
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path)
    assert r.prompts.sources[1].path == "data/p.jsonl" and r.prompts.sources[1].split == "heldout"
    monkeypatch.chdir(tmp_path / "data")  # same recipe, other cwd: the relative path no longer resolves
    assert "prompts.sources[1].path does not exist" in error(path)


def test_bad_split(tmp_path):
    src = file_source(str(TINY))
    src["split"] = "test"
    msg = error(variant(tmp_path, lambda d: d["prompts"]["sources"].append(src)))
    assert "prompts.sources[1].split must be one of" in msg


# --------------------------------------------------------------------------- overrides


def test_overrides_applied_with_types():
    r = load_recipe(TINY, ["sft.learning_rate=2e-5", "rounds=1"])
    assert r.sft.learning_rate == 2e-5 and type(r.sft.learning_rate) is float
    assert r.rounds == 1 and type(r.rounds) is int
    assert load_recipe(TINY).sft.learning_rate == 2e-4  # the file itself is untouched


def test_override_int_into_float_field_and_strings_and_null():
    r = load_recipe(TINY, ["generate.temperature=0", "name=other", "generate.max_model_len=null", "hub.push=final",
                          "hub.repo_id=me/model"])
    assert r.generate.temperature == 0.0 and type(r.generate.temperature) is float
    assert r.name == "other" and r.run_dir == Path("runs") / "other"
    assert r.generate.max_model_len is None
    assert r.hub.push == "final"


def test_override_creates_missing_section():
    r = load_recipe(TINY, ["hub.repo_id=me/model"])
    assert r.hub.repo_id == "me/model" and r.hub.push == "never"


def test_override_later_wins():
    assert load_recipe(TINY, ["rounds=3", "rounds=4"]).rounds == 4


def test_override_is_validated_like_the_file():
    assert "sft.learnin_rate" in error(TINY, ["sft.learnin_rate=1e-5"])
    assert "rounds must be int" in error(TINY, ["rounds=true"])
    assert "generate.num_samples must be >= 1, got -1" in error(TINY, ["generate.num_samples=-1"])
    assert "generate.num_samples must be int" in error(TINY, ["generate.num_samples=eight"])


def test_malformed_override():
    with pytest.raises(RecipeError, match="expected dotted.key=value"):
        load_recipe(TINY, ["rounds"])
    with pytest.raises(RecipeError, match="is not a section"):
        load_recipe(TINY, ["rounds.x=1"])


@pytest.mark.parametrize("key, value, want", [
    ("sft.batch_size", 0, "sft.batch_size must be >= 1, got 0"),
    ("sft.num_epochs", 0, "sft.num_epochs must be > 0, got 0"),
    ("sft.max_length", 0, "sft.max_length must be >= 1, got 0"),
    ("sft.checkpoint_every_steps", 0, "sft.checkpoint_every_steps must be >= 1, got 0"),
    ("sft.warmup_ratio", 1.5, "sft.warmup_ratio must be in [0, 1), got 1.5"),
    ("dpo.learning_rate", -1.0, "dpo.learning_rate must be > 0, got -1.0"),
    ("dpo.batch_size", 0, "dpo.batch_size must be >= 1, got 0"),
    ("dpo.nll_weight", -1.0, "dpo.nll_weight must be >= 0"),
    ("generate.gpu_memory_utilization", 3.0, "generate.gpu_memory_utilization must be in (0, 1], got 3.0"),
    ("generate.kv_cache_gib", 0, "generate.kv_cache_gib must be >= 1"),
    ("generate.max_model_len", 50, "generate.max_model_len must leave room for a prompt"),
    ("score.num_workers", 0, "score.num_workers must be >= 1, got 0"),
    ("score.code_timeout_s", -1.0, "score.code_timeout_s must be > 0 seconds, got -1.0"),
    ("sft.lr_scheduler_type", "cosine_warmup", "sft.lr_scheduler_type must be one of linear, cosine,"),
    ("dpo.attn_implementation", "flash", "dpo.attn_implementation must be one of ['eager', 'flash_attention_2'"),
    ("reward_model.attn_implementation", "flash_attention_2",  # this machine has no flash-attn
     "reward_model.attn_implementation flash_attention_2 needs the flash_attn package"),
])
def test_out_of_range_values_name_their_key(tmp_path, key, value, want):
    section, name = key.split(".")
    assert want in error(variant(tmp_path, lambda d: d.setdefault(section, {}).update({name: value})))


def test_the_scheduler_names_are_transformers_own():
    from transformers import SchedulerType

    from posttrain.recipe.checks import LR_SCHEDULERS

    assert LR_SCHEDULERS == tuple(s.value for s in SchedulerType)


def test_an_error_before_the_model_checks_comes_without_importing_torch():
    """The sections checked before base_model fail in well under a second: no torch, transformers or TRL."""
    code = ("import sys\nfrom posttrain.recipe.load import load_recipe\n"
            "try:\n    load_recipe('recipes/tiny.yaml', ['eval.max_tokens=0'])\nexcept Exception as e:\n    print(e)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'vllm') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["recipes/tiny.yaml: eval.max_tokens must be >= 1, got 0", "[]"], proc.stderr


@pytest.mark.parametrize("name", ["./models/missing", "models/x/missing", "~/missing-model-dir"])
def test_a_base_model_that_can_only_be_a_path_must_exist(tmp_path, name):
    msg = error(variant(tmp_path, lambda d: (d.pop("base"), d.update(base_model=name))))
    assert f"base_model does not exist: {name}" in msg


def test_an_owner_name_base_model_may_be_a_hub_id(tmp_path):
    r = load_recipe(variant(tmp_path, lambda d: (d.pop("base"), d.update(base_model="meta-llama/Llama-3.2-1B"))))
    assert r.base_model == "meta-llama/Llama-3.2-1B"


def test_the_base_section_never_replaces_a_model_it_did_not_build(tmp_path):
    """`base_model=<your model>` on a recipe with a `base` section: the section would build the tiny base
    over that folder (or, for a hub id, in a local folder of that name and train it silently)."""
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model.safetensors").write_text("weights")
    msg = error(variant(tmp_path, lambda d: None), [f"base_model={model}"])
    assert "base_model" in msg and "did not build" in msg and "base=null" in msg
    assert (model / "model.safetensors").read_text() == "weights"
    msg = error(variant(tmp_path, lambda d: None), ["base_model=meta-llama/Llama-3.1-8B"])
    assert "reads as a hub id" in msg and "base=null" in msg and "./meta-llama/Llama-3.1-8B" in msg
    r = load_recipe(variant(tmp_path, lambda d: None), ["base_model=meta-llama/Llama-3.1-8B", "base=null"])
    assert r.base is None and r.base_model == "meta-llama/Llama-3.1-8B"
    for ours in (tmp_path / "empty", tmp_path / "new" / "tiny-base", "./tiny-base"):  # an empty or new folder
        if ours == tmp_path / "empty":
            ours.mkdir()
        assert load_recipe(variant(tmp_path, lambda d: None), [f"base_model={ours}"]).base is not None


def test_tracking_names_known_and_installed_trackers(tmp_path):
    msg = error(variant(tmp_path, lambda d: d.update(tracking={"report_to": ["tensorbored"]})))
    assert "tracking.report_to[0] names unknown tracker 'tensorbored'" in msg
    msg = error(variant(tmp_path, lambda d: d.update(tracking={"report_to": ["neptune"]})))  # not installed here
    assert "tracking.report_to[0] 'neptune' needs its package installed" in msg
