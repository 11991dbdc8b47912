"""GPU sampling sweep: `reset.sample.generate` against one `model.generate` per candidate, LLaMA-7B shape.

The sampling benchmark (benchmarks/sampling.py) on a CUDA device with a
randomly initialised LLaMA-7B-shaped model in bf16 (the paper samples from a
7B `instruct_mtl` checkpoint) and the SmolLM2 tokenizer; sampling.batch_size
rows a batch (64 at paper scale). Random weights rarely emit EOS, so every row
decodes max_new_tokens: the figure is decoding throughput, not answer length.
Skipped, with the command to run it, when no CUDA device is present.

Usage: python -m benchmarks.gpu_sample [--examples N] [--max-new-tokens T] [--batch-size B]
       python -m benchmarks.gpu_sample --device cpu --shape tiny   (the same code on CPU, for a smoke test)
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import emit, log
from benchmarks.gpu import SHAPES, cuda_available, llama_config, skipped

COMMAND = "python -m benchmarks.gpu_sample   # or: make bench, on a machine with a CUDA GPU"


def run(examples: int = 16, max_new_tokens: int = 128, batch_size: int = 64, repeats: int = 2,
        shape: str = "llama-7b", device: str = "cuda") -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.sampling import TARGET_RATIO, measure, smollm2_dir, sweep_rows
    from reset.models import load_tokenizer

    if device == "cuda" and not cuda_available():
        return skipped("gpu_sampling_sweep", [COMMAND])
    tokenizer = load_tokenizer(smollm2_dir())
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    log(f"gpu_sample: building a random {shape} model ({dtype}) on {device}")
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(shape, vocab_size=len(tokenizer))).to(dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    rows = sweep_rows(examples)
    figures = measure(model, tokenizer, rows, max_new_tokens, repeats, batch_size)
    return {
        "name": "gpu_sampling_sweep",
        "baseline": "one transformers model.generate call per (example, setting)",
        "model": f"random {shape} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, {dtype})",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "examples": examples, **figures,
        # random bf16 logits are near-ties, so greedy agreement is reported, not required here
        "ok": figures["ratio"] >= TARGET_RATIO,
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=int, default=16, help="examples, one sweep round (7 settings) each")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="our rows per batch (paper: 64)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-7b")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.examples, args.max_new_tokens, args.batch_size, args.repeats, args.shape, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
