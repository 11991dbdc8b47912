"""GPU training throughput and MFU: a LLaMA-7B-shaped model under DeepSpeed ZeRO-3, bf16, checkpointing.

The training set-up of the paper experiment (experiments/paper.yaml with
resources/deepspeed/zero3.json: ZeRO stage 3, bf16, gradient checkpointing,
sequence length 2048, 2 sequences per GPU) on a randomly initialised
LLaMA-7B-shaped model and random tokens; the model is built inside
`deepspeed.zero.Init`, so no process ever holds all 7B parameters. A few
warm-up steps, then `--steps` timed optimiser steps.

Figures: tokens/s (all GPUs), tokens/s per GPU, model FLOPs utilisation
    MFU = tokens/s x (6 N + 12 L d s) / (GPUs x peak bf16 FLOPS)
with N the parameters that take part in matrix products (all but the input
embedding), L layers, d hidden size, s sequence length; the recomputation of
gradient checkpointing is not counted (it is hardware, not model, FLOPs).
Peak FLOPS come from the device name (benchmarks/gpu.py) or --peak-tflops.

One GPU cannot hold 7B parameters with Adam states (about 16 bytes each);
use `--layers` for fewer layers there, or launch on a node:
    torchrun --standalone --nproc_per_node 8 -m benchmarks.gpu_train
Skipped, with these commands, when no CUDA device is present.
`--device cpu --shape tiny` runs the same code on CPU over gloo in fp32 (smoke test).

Usage: python -m benchmarks.gpu_train [--steps N] [--layers L] [--seq-len S] [--micro-batch B]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time

from benchmarks import REPO, emit, log
from benchmarks.gpu import SHAPES, cuda_available, llama_config, peak_tflops, skipped

ZERO3 = REPO / "resources" / "deepspeed" / "zero3.json"
COMMANDS = [
    "torchrun --standalone --nproc_per_node 8 -m benchmarks.gpu_train   # one 8-GPU node, the paper's set-up",
    "python -m benchmarks.gpu_train --layers 8   # a single GPU: fewer layers of the same width",
]


def parameter_count(config) -> tuple[int, int]:
    """(all parameters, those in matrix products) of a LLaMA config, without building it."""
    d, ff, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = d * config.num_key_value_heads // config.num_attention_heads
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d
    total = vocab * d + layers * per_layer + d + vocab * d
    return total, total - vocab * d


def flops_per_token(config, seq_len: int) -> float:
    _, matmul = parameter_count(config)
    return 6 * matmul + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def deepspeed_config(micro_batch: int, world: int, hidden: int, bf16: bool) -> dict:
    """resources/deepspeed/zero3.json with its "auto" values filled the way the HF Trainer fills them.

    Like reset.train (through the Trainer), the optimiser is torch's AdamW handed
    to DeepSpeed, not one from the config.
    """
    cfg = json.loads(ZERO3.read_text())
    cfg["bf16"] = {"enabled": bf16}
    cfg.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=1,
               train_batch_size=micro_batch * world, gradient_clipping=1.0)
    zero = cfg["zero_optimization"]
    zero.update(reduce_bucket_size=hidden * hidden, stage3_prefetch_bucket_size=int(0.9 * hidden * hidden),
                stage3_param_persistence_threshold=10 * hidden)
    cfg["zero_allow_untested_optimizer"] = True
    return cfg


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def process_group(backend: str):
    """(rank, world size) inside a process group; a plain `python -m` run becomes a one-process group.

    The environment is put back afterwards: a caller that imported this module (the tests)
    must not hand RANK/MASTER_PORT on to the processes it starts later.
    """
    import deepspeed
    import torch

    saved = {k: os.environ.get(k) for k in DIST_VARS}
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        deepspeed.init_distributed(dist_backend=backend)
        yield int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(shape: str = "llama-7b", layers: int | None = None, seq_len: int = 2048, micro_batch: int = 2,
        steps: int = 10, warmup: int = 3, device: str = "cuda", peak: float | None = None,
        gradient_checkpointing: bool = True) -> dict | None:
    if device == "cuda" and not cuda_available():
        return skipped("gpu_train_mfu", COMMANDS)
    import torch

    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with process_group("nccl" if on_gpu else "gloo") as (rank, world):
        return _measure(shape, layers, seq_len, micro_batch, steps, warmup, on_gpu, peak, gradient_checkpointing,
                        rank, world)


def _measure(shape, layers, seq_len, micro_batch, steps, warmup, on_gpu, peak, gradient_checkpointing, rank, world):
    import deepspeed
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(shape, layers=layers)
    config.use_cache = False
    cfg = deepspeed_config(micro_batch, world, config.hidden_size, bf16=on_gpu)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(0)
    if rank == 0:
        log(f"gpu_train: building a random {shape} ({config.num_hidden_layers} layers) under ZeRO-3 on "
            f"{world} process(es)")
    with deepspeed.zero.Init(config_dict_or_path=cfg, dtype=dtype):
        model = LlamaForCausalLM(config)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0, fused=on_gpu)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
    generator = torch.Generator().manual_seed(rank)

    def step():
        ids = torch.randint(0, config.vocab_size, (micro_batch, seq_len), generator=generator).to(engine.device)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    torch.distributed.barrier()
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if on_gpu:
        torch.cuda.synchronize()
    torch.distributed.barrier()
    seconds = time.perf_counter() - start
    peak_memory = torch.cuda.max_memory_allocated() / 2 ** 30 if on_gpu else None
    engine.destroy()
    if rank != 0:
        return None
    tokens_per_s = steps * micro_batch * seq_len * world / seconds
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak = peak or (peak_tflops(name) if on_gpu else None)
    total, _ = parameter_count(config)
    return {
        "name": "gpu_train_mfu", "device": name, "gpus": world if on_gpu else 0,
        "model": f"random {shape}, {config.num_hidden_layers} layers ({total / 1e9:.2f}B parameters)",
        "zero_stage": cfg["zero_optimization"]["stage"], "precision": "bf16" if on_gpu else "fp32",
        "gradient_checkpointing": gradient_checkpointing, "seq_len": seq_len, "micro_batch": micro_batch,
        "steps": steps, "seconds": round(seconds, 3), "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "tokens_per_s": round(tokens_per_s, 1), "tokens_per_s_per_gpu": round(tokens_per_s / max(world, 1), 1),
        "peak_bf16_tflops_per_gpu": peak,
        "mfu": round(tokens_per_s * flops_per_token(config, seq_len) / (world * peak * 1e12), 4) if peak else None,
        "peak_memory_gib": round(peak_memory, 2) if on_gpu else None,
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-7b")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers (one GPU: ~8)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=2, help="sequences per GPU and step (paper: 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per GPU, if not in the table")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    record = run(args.shape, args.layers, args.seq_len, args.micro_batch, args.steps, args.warmup, args.device,
                 args.peak_tflops, not args.no_gradient_checkpointing)
    if record is not None:
        emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
