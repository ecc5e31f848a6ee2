"""Model averaging: hand-checkable weighted means, and clear errors for what cannot be averaged."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.training.average import AverageError, average
from posttrain.tiny.base import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["the answer is 7", "def f(x): return x"] * 20, vocab_size=300)


def make(path, tokenizer, seed, hidden=32):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                         tie_word_embeddings=True))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return load_file(path / "model.safetensors")


def test_weighted_average_is_the_weighted_mean_of_every_tensor(tmp_path, tokenizer):
    a, b = make(tmp_path / "a", tokenizer, 0), make(tmp_path / "b", tokenizer, 1)
    average([tmp_path / "a", tmp_path / "b"], tmp_path / "avg", weights=[1, 3])
    got = load_file(tmp_path / "avg" / "model.safetensors")
    assert set(got) == set(a)
    for k in a:
        torch.testing.assert_close(got[k], 0.25 * a[k] + 0.75 * b[k])
    assert not (tmp_path / "avg.tmp").exists()
    LlamaForCausalLM.from_pretrained(tmp_path / "avg")  # loads as a normal model folder


def test_cli_uniform_average_of_one_model_is_that_model(tmp_path, tokenizer):
    a = make(tmp_path / "a", tokenizer, 0)
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "average", "--models", str(tmp_path / "a"),
                           "--out", str(tmp_path / "same")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = load_file(tmp_path / "same" / "model.safetensors")
    assert all(torch.equal(got[k], a[k]) for k in a)


def test_mismatched_architecture_is_a_clear_error(tmp_path, tokenizer):
    make(tmp_path / "a", tokenizer, 0)
    make(tmp_path / "wide", tokenizer, 0, hidden=64)
    with pytest.raises(AverageError, match="architecture differs.*hidden_size"):
        average([tmp_path / "a", tmp_path / "wide"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_tokenizer_and_bad_weights_are_clear_errors(tmp_path, tokenizer):
    make(tmp_path / "a", tokenizer, 0)
    other = train_tokenizer(["completely different words here"] * 20, vocab_size=len(tokenizer))
    make(tmp_path / "b", other, 1)
    with pytest.raises(AverageError, match="tokenizer vocabulary differs"):
        average([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    with pytest.raises(AverageError, match="one non-negative weight per model"):
        average([tmp_path / "a", tmp_path / "a"], tmp_path / "out", weights=[1.0])
