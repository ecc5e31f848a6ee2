"""Model averaging (Llama 3 §4.1.5): parameter average of checkpoints of one architecture.

The paper averages models trained on different data versions or hyperparameters at each of the RM,
SFT and DPO stages. Tensors are read one at a time with safetensors and summed in float32, so peak
memory is one fp32 copy of the model plus one tensor.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors import safe_open

# Config fields that may differ between checkpoints of the same architecture.
_IGNORED_CONFIG = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache"}


class AverageError(ValueError):
    """The checkpoints cannot be averaged; the message names the offending model."""


def tensor_files(model_dir: Path) -> dict[str, Path]:
    """{tensor name: safetensors file} for a single-file or sharded checkpoint."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        return {k: model_dir / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    single = model_dir / "model.safetensors"
    if not single.exists():
        raise AverageError(f"{model_dir}: no model.safetensors (or index) to average")
    with safe_open(single, "pt") as f:
        return {k: single for k in f.keys()}


def check_compatible(models: list[Path]) -> None:
    """Same architecture (config minus bookkeeping fields) and the same tokenizer vocabulary."""
    from transformers import AutoTokenizer

    def arch(p: Path) -> dict:
        cfg = json.loads((p / "config.json").read_text())
        return {k: v for k, v in cfg.items() if k not in _IGNORED_CONFIG}

    ref_arch, ref_vocab = arch(models[0]), AutoTokenizer.from_pretrained(models[0]).get_vocab()
    for p in models[1:]:
        a = arch(p)
        diff = sorted(k for k in set(a) | set(ref_arch) if a.get(k) != ref_arch.get(k))
        if diff:
            raise AverageError(f"{p}: architecture differs from {models[0]} in {diff[:5]}")
        if AutoTokenizer.from_pretrained(p).get_vocab() != ref_vocab:
            raise AverageError(f"{p}: tokenizer vocabulary differs from {models[0]}")


def model_class(model_dir: Path):
    """The class the checkpoint was saved from (a causal LM, or a reward model's sequence classifier)."""
    import transformers

    archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    return cls if cls is not None else transformers.AutoModelForCausalLM


def average(models: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Writes the weighted parameter average of `models` to `out` (weights default to uniform)."""
    from transformers import AutoTokenizer

    models, out = [Path(m) for m in models], Path(out)
    if not models:
        raise AverageError("no models to average")
    weights = weights or [1.0] * len(models)
    if len(weights) != len(models) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise AverageError(f"weights {weights}: need one non-negative weight per model, not all zero")
    weights = [w / sum(weights) for w in weights]
    check_compatible(models)
    files = [tensor_files(m) for m in models]
    names = set(files[0])
    for m, f in zip(models[1:], files[1:]):
        if set(f) != names:
            raise AverageError(f"{m}: tensor names differ from {models[0]} ({sorted(set(f) ^ names)[:3]})")
    averaged = {}
    for name in sorted(names):
        acc = None
        for w, f in zip(weights, files):
            with safe_open(f[name], "pt") as fh:
                t = fh.get_tensor(name)
            acc = t.float() * w if acc is None else acc.add_(t.float(), alpha=w)
        averaged[name] = acc.to(t.dtype)
    model = model_class(models[0]).from_pretrained(models[0])
    missing, unexpected = model.load_state_dict(averaged, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(model.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise AverageError(f"averaged tensors do not fit {models[0]}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(models[0]).save_pretrained(tmp)
        sources = {"models": [str(m) for m in models], "weights": weights}
        (tmp / "averaged_from.json").write_text(json.dumps(sources, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed; after a failure nothing half-written stays
    return out
