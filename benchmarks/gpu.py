"""What the GPU benchmarks share: the LLaMA-7B shape, peak FLOPS, and the skip record."""

from __future__ import annotations

# LLaMA-7B (huggyllama/llama-7b, lmsys/vicuna-7b-v1.3): the paper's models
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048}
# a shape small enough to run the same code on CPU (smoke tests)
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}
SHAPES = {"llama-7b": LLAMA_7B, "tiny": TINY}

# dense bf16 tensor-core peak per GPU, TFLOPS (vendor data sheets, without sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0}


def llama_config(shape: str, vocab_size: int | None = None, layers: int | None = None):
    from transformers import LlamaConfig

    sizes = dict(SHAPES[shape])
    if vocab_size:
        sizes["vocab_size"] = vocab_size
    if layers is not None:
        sizes["num_hidden_layers"] = layers
    return LlamaConfig(**sizes, tie_word_embeddings=False)


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name (longest matching key), or None when unknown."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def skipped(name: str, commands: list[str]) -> dict:
    """The record of a GPU benchmark on a machine without one, with the commands to run it where there is."""
    return {"name": name, "skipped": "no CUDA device here: not lent, not measured", "run_with_gpu": commands}
