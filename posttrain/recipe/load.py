"""Loading a recipe: YAML read strictly, `a.b=value` overrides applied, typed into a `Recipe` and checked
(posttrain/recipe/checks.py) before any work starts."""

from __future__ import annotations

from pathlib import Path

from posttrain.models.gguf_import import GGUFError, package_file
from posttrain.recipe.checks import check, check_preference_files, check_prompt_files
from posttrain.recipe.config import Recipe, RecipeError
from posttrain.recipe.strict_yaml import apply_override, build, read_yaml


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Reads a recipe YAML, applies `a.b=value` overrides, and validates it into a `Recipe`."""
    path = Path(path)
    data = read_yaml(path)
    for item in overrides:
        apply_override(data, item, path)
    recipe = build(Recipe, data, str(path), "")
    if recipe.base_model.startswith("pkg://"):  # a file shipped in a package: its path, which the checks see
        try:
            recipe.base_model = str(package_file(recipe.base_model))
        except GGUFError as e:
            raise RecipeError(f"{path}: base_model {e}") from None
    check(recipe, str(path))
    check_prompt_files(recipe, str(path))
    check_preference_files(recipe, str(path))
    return recipe
