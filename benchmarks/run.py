"""Run every benchmark (`make bench`) and print one JSON line each.

The first line describes the run (commit, machine); then one line per
benchmark with its figures, its ratio where it has a baseline, its target and
`ok`. A benchmark that fails prints {"name", "error"} and the others still run;
the exit status is 1 when any benchmark failed or missed its target.

  summac_zs            our SummaC-ZS vs the summac package (parity env), CPU
  workflow_overhead    snakemake -n of the paper experiment; heavy imports at parse time
  sampling_sweep       reset.sample.generate vs one model.generate per candidate, SmolLM2, CPU
  dedup                judge calls and NLI pairs saved by de-duplication, on the demo
  demo                 wall time and peak memory of make demo (recorded; --rerun-demo)
  preflight_paper      python -m reset.preflight of the paper config on local hub mirrors, all checks
  gpu_train_mfu        LLaMA-7B shape, ZeRO-3, bf16: tokens/s and MFU (CUDA only)
  gpu_sampling_sweep   the sampling benchmark on a LLaMA-7B shape (CUDA only)

Usage: python -m benchmarks.run [--only NAME ...] [--quick] [--rerun-demo] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import REPO, emit, git_commit, log, machine

NAMES = ["summac_zs", "workflow_overhead", "sampling_sweep", "dedup", "demo", "preflight_paper", "gpu_train_mfu",
         "gpu_sampling_sweep"]


def gpu_train_record(quick: bool) -> dict:
    """The training benchmark as its own torchrun job over every local GPU (or its skip record)."""
    from benchmarks import gpu_train
    from benchmarks.gpu import cuda_available

    if not cuda_available():
        return gpu_train.run()   # the skip record
    import torch

    gpus = torch.cuda.device_count()
    memory = sum(torch.cuda.get_device_properties(i).total_memory for i in range(gpus))
    layers = fitting_layers(memory)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "benchmarks.gpu_train", "--layers", str(layers)] + (["--steps", "3"] if quick else [])
    log(f"gpu_train: {' '.join(command)}")
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"gpu_train failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fitting_layers(total_memory: int, bytes_per_param: int = 16, budget: float = 0.6) -> int:
    """LLaMA-7B layers whose ZeRO-3 training state (~16 bytes a parameter) fits the GPUs' memory: 32 at most."""
    from benchmarks.gpu import llama_config
    from benchmarks.gpu_train import parameter_count

    outer, _ = parameter_count(llama_config("llama-7b", layers=0))
    per_layer = parameter_count(llama_config("llama-7b", layers=1))[0] - outer
    fit = int((total_memory * budget / bytes_per_param - outer) // per_layer)
    return max(1, min(32, fit))


def benchmark(name: str, quick: bool, rerun_demo: bool) -> dict:
    """Run one benchmark at full size (or the smallest sizes with quick) and return its record."""
    if name == "summac_zs":
        from benchmarks import summac_zs

        return summac_zs.run(examples=2, rounds=1, shape="tiny", repeats=1) if quick else summac_zs.run()
    if name == "workflow_overhead":
        from benchmarks import workflow

        return workflow.run(repeats=1 if quick else 3)
    if name == "sampling_sweep":
        from benchmarks import sampling

        return sampling.run(examples=1, max_new_tokens=4, repeats=1) if quick else sampling.run()
    if name == "dedup":
        from benchmarks import dedup

        try:
            return dedup.run(build_missing=not quick)
        except FileNotFoundError as exc:
            if not quick:
                raise
            return {"name": "dedup", "skipped": str(exc)}
    if name == "demo":
        from benchmarks import demo

        return demo.run(rerun_demo=rerun_demo)
    if name == "preflight_paper":
        from benchmarks import preflight

        return preflight.run(repeats=1 if quick else 3)
    if name == "gpu_train_mfu":
        return gpu_train_record(quick)
    if name == "gpu_sampling_sweep":
        from benchmarks import gpu_sample

        return gpu_sample.run(examples=1, max_new_tokens=8, repeats=1) if quick else gpu_sample.run()
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(NAMES)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="smallest sizes: checks the entry points, not speed")
    parser.add_argument("--rerun-demo", action="store_true", help="measure make demo again (many minutes)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    records = [{"name": "environment", "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                      time.gmtime()),
                "machine": machine(), "quick": args.quick}]
    emit(records[0])
    failed = False
    for name in args.only or NAMES:
        start = time.time()
        try:
            record = benchmark(name, args.quick, args.rerun_demo)
        except Exception as exc:   # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            record = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
        record["bench_s"] = round(time.time() - start, 1)
        emit(record)
        records.append(record)
        # quick sizes check that the entry points run; their speed figures mean nothing
        failed |= "error" in record or (not args.quick and record.get("ok") is False)
    if args.out:
        with args.out.open("a") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
