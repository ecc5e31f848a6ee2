"""Every shipped recipe parses and validates; every accelerate config is one accelerate accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.recipe.config import CAPABILITIES

from posttrain.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE = ROOT / "accelerate"
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if ACCELERATE not in p.parents)


def test_the_named_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"tiny", "general", *CAPABILITIES} <= names, names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT.parent)  # recipes name paths relative to the repository root
    recipe = load_recipe(path)
    assert recipe.name == path.stem  # runs/<name> never collides between two shipped recipes
    assert recipe.eval.benchmarks, "every recipe evaluates something"


@pytest.mark.parametrize("cap", CAPABILITIES)
def test_capability_recipe_evaluates_on_a_real_benchmark(cap, monkeypatch):
    monkeypatch.chdir(ROOT.parent)
    recipe = load_recipe(ROOT / f"{cap}.yaml")
    assert set(recipe.eval.benchmarks) - {"heldout"}, f"{cap}.yaml evaluates only on its own held-out prompts"
    assert any(s.kind == "generator" for s in recipe.prompts.sources), f"{cap}.yaml has no prompt generator"


def test_general_targets_cover_every_capability(monkeypatch):
    monkeypatch.chdir(ROOT.parent)
    recipe = load_recipe(ROOT / "general.yaml")
    assert set(recipe.mix.targets) == set(CAPABILITIES)
    assert abs(sum(recipe.mix.targets.values()) - 1) < 1e-9


def test_multilingual_uses_the_papers_temperature_schedule(monkeypatch):
    monkeypatch.chdir(ROOT.parent)
    g = load_recipe(ROOT / "multilingual.yaml").generate
    assert g.temperature_range == [0.2, 1.0] and g.temperature == 0.6


@pytest.mark.parametrize("path", sorted(ACCELERATE.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.num_machines == 1


def test_accelerate_configs_cover_the_strategies():
    assert {"cpu", "single", "ddp", "zero2", "zero3", "fsdp"} <= {p.stem for p in ACCELERATE.glob("*.yaml")}
