"""What a stage's fingerprint holds besides its inputs: its recipe section without the keys that change only
how it runs (HOW_NOT_WHAT), and the content of the files it reads.

Keys that decide how a stage runs (memory, parallelism, checkpoint cadence, kernels), not what it outputs:
changing them, e.g. to resume on other hardware or to turn gradient checkpointing on after running out of
memory, does not redo the stage, and a stage killed midway resumes from its last checkpoint. The training
switches among them take the same steps on the same batches (tests/test_fast_paths.py; attention kernels
and Liger's up to their rounding); packing, length grouping and precomputed reference log-probs change
what a batch holds, so they stay in.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from posttrain.recipe.config import Recipe
from reward import custom

HOW_NOT_WHAT = frozenset({"kv_cache_gib", "gpu_memory_utilization", "num_workers", "checkpoint_every_steps",
                          "gradient_checkpointing", "padding_free", "share_prefix", "use_liger_kernel",
                          "torch_compile", "attn_implementation", "sandbox", "chunk_samples"})


def outputs(cfg, *also: str) -> dict:
    """A config section as a stage's fingerprint sees it: without HOW_NOT_WHAT keys (nor `also`)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HOW_NOT_WHAT and k not in also}


def scoring(recipe: Recipe) -> dict:
    """The score section as the stages that score see it, plus the module file digest of each verifier of the
    user's (reward/custom.py): editing one reruns score, revise and eval."""
    refs = sorted({name for name in recipe.score.verifiers.values() if custom.is_reference(name)})
    extra = {"verifier_sources": {ref: custom.source_digest(ref) for ref in refs}} if refs else {}
    return {**outputs(recipe.score), **extra}


def file_digests(recipe: Recipe) -> dict[str, str]:
    """Content hashes of the prompt files and of every file in a local `hf` dataset folder."""
    files = [src.path for src in recipe.prompts.sources if src.kind == "file"]
    for src in recipe.prompts.sources:
        if src.kind == "hf" and Path(src.name).is_dir():
            files += sorted(str(p) for p in Path(src.name).rglob("*") if p.is_file())
    return digests(files)


def digests(paths: list[str]) -> dict[str, str]:
    """Content hashes: a file edited in place changes the fingerprint of the stage that reads it."""
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
