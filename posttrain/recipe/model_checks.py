"""What the recipe's `base_model` must be, checked at load: a folder that exists (or a hub id), a tokenizer
with a chat template that trains, a context that holds the recipe's lengths, and never a model of the user's
where the tiny base would be built."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from posttrain.recipe.config import TINY_BASE_MARKER, Recipe, may_build_tiny_base_in

Need = Callable[[bool, str, str], None]  # need(ok, key, msg): raises "<where>: <key> <msg>" unless ok


def check_base_model(r: Recipe, need: Need) -> None:
    if r.base is not None:
        _check_tiny_base_target(r.base_model, need)
    elif _is_path(r.base_model):  # "owner/name" that is no local folder: a hub id
        need(Path(r.base_model).expanduser().exists(), "base_model",
             f"does not exist: {r.base_model} (and no `base` section builds it)")
    need(r.base is not None or _has_chat_template(Path(r.base_model)) is not False, "base_model",
         f"{r.base_model}: its tokenizer has no chat template, which every stage uses to render prompts; use a "
         f"model (or tokenizer_config.json) that has one, e.g. the -Instruct tokenizer of the same family")


def check_trainable(r: Recipe, need: Need) -> None:
    """What SFT and DPO need of the model, in seconds (`chat_format.check_model`): its chat template renders one
    example and trains it through both stages' collators, eos exists, its context holds the recipe's lengths.

    A model folder is checked here. The tiny base (a `base` section) has the project's own template and is
    checked by the round once built, before any generation, as is a hub id once downloaded or a file the round
    imports (`stages.setup.check_chat_template`); here its context is `base.max_length`.
    """
    from posttrain.training.chat_format import recipe_lengths  # torch and TRL: only when a model folder is checked

    lengths = recipe_lengths(r)
    if r.base is not None:
        for key, n in lengths.items():
            need(n <= r.base.max_length, key,
                 f"is {n}, longer than the tiny base's context (base.max_length={r.base.max_length})")
        return
    path = Path(r.base_model).expanduser()
    if not (path / "config.json").is_file():
        return
    from posttrain.training.chat_format import check_model  # torch and TRL: only when a model folder is checked

    why = check_model(str(path), lengths, packing=r.sft.packing, template_kwargs=dict(r.chat_template_kwargs))
    need(why is None, "base_model", f"{r.base_model}: {why}")


def _check_tiny_base_target(name: str, need: Need) -> None:
    """With a `base` section, `base_model` is the folder the tiny base is built in, and replaced when it was
    built with other settings: it must not be a model of the user's, nor a hub id that would silently name
    a local tiny model (every shipped recipe has a `base` section, so `base_model=<your model>` alone hits this)."""
    path = Path(name).expanduser()
    drop = "to post-train it, drop the `base` section (on the command line: base=null)"
    if path.exists():
        need(may_build_tiny_base_in(path), "base_model",
             f"{name} holds files posttrain did not build (no {TINY_BASE_MARKER}), and the `base` section would "
             f"replace them with the tiny base; {drop}")
    else:
        need(_is_path(name) or not _is_hub_id(name), "base_model",
             f"{name!r} reads as a hub id, but the `base` section builds the tiny base in a local folder of that "
             f"name; {drop}, or write the folder as a path (./{name}) to build the tiny base there")


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _is_path(name: str) -> bool:
    """Whether `base_model` can only be a local path: absolute, ./ ../ ~, or more than one '/' (a hub id
    is "name" or "owner/name")."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _has_chat_template(model_dir: Path) -> bool | None:
    """Whether a local model folder's tokenizer has a chat template; None when it cannot be told from the
    files (a hub id, or no tokenizer_config.json: the round checks again once the tokenizer loads)."""
    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return None
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, OSError):
        return None
