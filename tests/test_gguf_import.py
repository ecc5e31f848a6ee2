"""posttrain.models.gguf_import: a .gguf base model becomes a cached float32 model folder with its tokenizer and chat
template. The GGUF is written here (a 2-layer llama with a byte-level BPE tokenizer, F32 tensors, in
llama.cpp's layout) from a transformers model, so the import must give back that model's logits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from posttrain.recipe.config import RecipeError  # noqa: E402
from posttrain.recipe.load import load_recipe  # noqa: E402

from posttrain.models.gguf_import import MARKER, GGUFError, cache_key, gguf_file, package_file, resolve  # noqa: E402

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tokenizer():
    """A byte-level BPE of ~300 tokens with ChatML's special tokens at ids 0-2 (SmolLM2's layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What is 2 + 3? The answer is 5.", "user assistant system", "Write a function."] * 20,
                            trainer)
    return json.loads(tok.to_str())["model"]


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it on load)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, chat_template: str | None = CHATML):
    """A tiny LlamaForCausalLM written as a llama GGUF; returns the transformers model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    bpe = _tokenizer()
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(16)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(2):
        for hf, ll in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if ll == "attn_q":
                t = _permute(t, 4)
            elif ll == "attn_k":
                t = _permute(t, 2)
            w.add_tensor(f"blk.{i}.{ll}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    model = write_tiny_gguf(root / "tiny.gguf")
    return root / "tiny.gguf", model


def test_import_gives_back_the_model_its_tokenizer_and_template(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, original = tiny
    folder = Path(resolve(str(path), tmp_path / "cache"))
    assert folder.parent == tmp_path / "cache" and folder.name == f"tiny-{cache_key(path)}"
    assert json.loads((folder / MARKER).read_text())["source"] == str(path.resolve())
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert next(model.parameters()).dtype == torch.float32
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 5 and tok.decode(ids[0]) == text  # the BPE round-trips
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-4, atol=1e-4)


def test_reused_when_cached_and_reimported_when_the_file_changes(tiny, tmp_path):
    path, _ = tiny
    cache = tmp_path / "cache"
    first = resolve(str(path), cache)
    (Path(first) / "model.safetensors").unlink()  # proof of reuse: a second import would rewrite it
    assert resolve(str(path.parent), cache) == first  # a folder holding one .gguf is that file
    assert not (Path(first) / "model.safetensors").exists()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # "edited": another key, a new import
    second = resolve(str(path), cache)
    assert second != first and (Path(second) / "model.safetensors").is_file()
    assert sorted(p.name for p in cache.iterdir()) == sorted([Path(first).name, Path(second).name])  # no tmp left


def test_a_gguf_without_chat_template_is_refused_and_leaves_nothing(tmp_path):
    write_tiny_gguf(tmp_path / "base.gguf", chat_template=None)
    with pytest.raises(GGUFError, match="no chat template"):
        resolve(str(tmp_path / "base.gguf"), tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_names_that_are_not_gguf_pass_through(tmp_path):
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "extra.gguf").write_bytes(b"")
    assert gguf_file(str(tmp_path / "model")) is None  # a model folder (config.json) is loaded as it is
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"")
    with pytest.raises(GGUFError, match="holds 2 .gguf files"):
        gguf_file(str(tmp_path / "two"))


def test_pkg_names_a_file_inside_an_installed_package():
    here = Path(__file__).parents[1] / "posttrain" / "models" / "gguf_import.py"
    assert package_file("pkg://posttrain/models/gguf_import.py") == here
    with pytest.raises(GGUFError, match="no installed Python package 'no_such_pkg'"):
        package_file("pkg://no_such_pkg/model.gguf")
    with pytest.raises(GGUFError, match="has no missing.gguf"):
        package_file("pkg://posttrain/missing.gguf")


def test_recipe_resolves_pkg_at_load_and_names_the_key(tmp_path):
    root = Path(__file__).parents[1]
    recipe = load_recipe(root / "recipes" / "tiny.yaml", ["base=null", "base_model=pkg://posttrain/tiny"])
    assert recipe.base_model == str(root / "posttrain" / "tiny")
    with pytest.raises(RecipeError, match="base_model pkg://no_such_pkg/x.gguf: no installed"):
        load_recipe(root / "recipes" / "tiny.yaml", ["base=null", "base_model=pkg://no_such_pkg/x.gguf"])
