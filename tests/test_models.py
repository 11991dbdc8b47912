"""Model sources load safely: safetensors only, remote code only when allowed."""

from __future__ import annotations

import shutil

import pytest
import torch

from reset.models import build_tiny_llama, embedded_gguf, load_causal_lm, load_tokenizer, source_slug


def test_slug_is_stable_readable_and_distinct():
    assert source_slug("huggyllama/llama-7b") == source_slug("huggyllama/llama-7b")
    assert source_slug("huggyllama/llama-7b").startswith("huggyllama--llama-7b-")
    assert source_slug("a/b") != source_slug("a-b")
    assert "/" not in source_slug("/abs/path/to/model")


def test_embedded_gguf_is_found_and_unknown_names_are_refused():
    assert embedded_gguf("smollm2").suffix == ".gguf"
    with pytest.raises(ValueError, match="unknown embedded model"):
        embedded_gguf("gpt5")


def test_converted_model_is_safetensors_and_generates(smollm2_dir):
    assert (smollm2_dir / "model.safetensors").exists()
    assert not list(smollm2_dir.glob("*.bin"))
    model = load_causal_lm(smollm2_dir)
    tokenizer = load_tokenizer(smollm2_dir)
    assert model.dtype == torch.float32
    assert "quantization_config" not in model.config.to_dict()
    batch = tokenizer(["The capital of France is"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_pickled_weights_are_refused(tiny_llama_dir, tmp_path):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no .safetensors weights"):
        load_causal_lm(pickled)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(tmp_path / "nowhere")


def test_tiny_llama_is_deterministic(smollm2_dir, tmp_path):
    build_tiny_llama(tmp_path / "a", smollm2_dir, seed=3)
    build_tiny_llama(tmp_path / "b", smollm2_dir, seed=3)
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


def test_remote_code_is_off_by_default(tiny_llama_dir, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_causal_lm(tiny_llama_dir)
    assert seen["trust_remote_code"] is False
    assert seen["use_safetensors"] is True


def _tiny_classifier(tokenizer_dir, out_dir, pickled=False):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if pickled:  # transformers 5 only writes safetensors; make an old-style .bin checkpoint
        (out_dir / "model.safetensors").unlink()
        torch.save(model.state_dict(), out_dir / "pytorch_model.bin")


def test_nli_classifier_is_prepared_as_sequence_classifier(smollm2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from reset.models import prepare_model

    _tiny_classifier(smollm2_dir, tmp_path / "src")
    prepare_model(str(tmp_path / "src"), tmp_path / "out", task="seq-cls")
    assert (tmp_path / "out/model.safetensors").exists()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", use_safetensors=True)
    assert model.config.num_labels == 3


def test_pickled_source_needs_explicit_permission(smollm2_dir, tmp_path):
    from reset.models import prepare_model

    _tiny_classifier(smollm2_dir, tmp_path / "src", pickled=True)
    assert not list((tmp_path / "src").glob("*.safetensors"))
    with pytest.raises(Exception):  # noqa: B017 - transformers' own error type varies by version
        prepare_model(str(tmp_path / "src"), tmp_path / "refused", task="seq-cls")
    assert not (tmp_path / "refused").exists()
    prepare_model(str(tmp_path / "src"), tmp_path / "ok", task="seq-cls", allow_pickle_weights=True)
    assert (tmp_path / "ok/model.safetensors").exists()
