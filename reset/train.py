"""Full fine-tuning with response-only loss and perplexity-based checkpoint selection.

One job trains one model variant for one seed. It reads a training and a dev
parquet (columns `prompt` and `references`; the target is references[0]),
fine-tunes every weight of the start model with the Hugging Face Trainer and
saves a checkpoint every --save-steps optimiser steps. Each checkpoint is scored
by dev perplexity (exp of the mean negative log-likelihood of the response
tokens); the best one becomes the job's output model, and the first and last
ones are exported for the trajectory figures. A job that is killed restarts
from its last complete checkpoint when it is run again with the same inputs.

Single process on CPU (fp32); with GPUs, launch one process per GPU with
`python -m torch.distributed.run --nproc_per_node N -m reset.train ...
--deepspeed resources/deepspeed/zero3.json` (bf16, ZeRO stage 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import resource
import sys
import time
import warnings
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from reset.checkpoints import (
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    export_model,
    latest_complete_checkpoint,
    list_checkpoints,
    prepare_checkpoint_dir,
    remove_checkpoint,
    remove_checkpoint_dir,
    strip_training_state,
)
from reset.digests import compute_model_digest, file_digest, write_model_digest
from reset.io import atomic_dir, read_table, write_json
from reset.settings import Training, add_flags

log = logging.getLogger("reset.train")

IGNORE_INDEX = -100  # label of tokens that carry no loss (prompt, padding)


# ---------------------------------------------------------------- data


def read_pairs(path, max_examples: int | None = None, seed: int = 0):
    """(prompt, target) pairs of a parquet file; malformed rows are counted drops.

    With `max_examples`, a subset of that size is drawn with `seed`.
    """
    import numpy as np

    frame = read_table(path, ["prompt", "references"], "training/dev data file")
    pairs, dropped = [], Counter()
    for prompt, refs in zip(frame["prompt"], frame["references"], strict=True):
        problem = _row_problem(prompt, refs)
        if problem:
            dropped[problem] += 1
        else:
            pairs.append((prompt, refs[0]))
    read = len(frame)
    if max_examples is not None and len(pairs) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_examples, replace=False))
        pairs = [pairs[i] for i in keep]
    if not pairs:
        raise ValueError(f"{path}: no usable rows (read {read}, dropped {dict(dropped)})")
    return pairs, {"read": read, "usable": read - sum(dropped.values()), "used": len(pairs),
                   "dropped": dict(dropped)}


def _row_problem(prompt, refs) -> str | None:
    if not isinstance(prompt, str) or not prompt.strip():
        return "empty_prompt"
    if refs is None or isinstance(refs, str) or len(refs) == 0:
        return "no_reference"
    if not isinstance(refs[0], str) or not refs[0].strip():
        return "empty_reference"
    return None


def encode_pair(prompt_ids: list[int], target_ids: list[int], eos_id: int, max_length: int):
    """Token ids and labels of prompt + target + EOS; prompt tokens are labelled IGNORE_INDEX.

    Returns (example or None when no response token survives truncation, truncated?).
    """
    ids = prompt_ids + target_ids + [eos_id]
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids + [eos_id]
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None, truncated
    return {"input_ids": ids, "labels": labels}, truncated


def encode_pairs(tokenizer, pairs, max_length: int, desc: str, chunk: int = 1000):
    """Tokenise pairs in chunks; returns (examples, stats with truncation counts)."""
    import numpy as np
    from tqdm import tqdm

    examples, stats = [], Counter()
    bar = tqdm(total=len(pairs), desc=f"tokenising {desc}", unit="ex", disable=None, mininterval=5)
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        # the prompt is tokenised as it will be at generation time (special tokens included)
        prompts = tokenizer([p for p, _ in part]).input_ids
        targets = tokenizer([t for _, t in part], add_special_tokens=False).input_ids
        for prompt_ids, target_ids in zip(prompts, targets, strict=True):
            example, truncated = encode_pair(prompt_ids, target_ids, tokenizer.eos_token_id, max_length)
            stats["truncated"] += truncated
            if example is None:
                stats["dropped_prompt_too_long"] += 1
                continue
            # int32 arrays: a paper-scale mixture as Python int lists would take ~10x the memory, per rank
            example = {k: np.asarray(v, dtype=np.int32) for k, v in example.items()}
            examples.append(example)
            stats["tokens"] += len(example["input_ids"])
            stats["response_tokens"] += int((example["labels"] != IGNORE_INDEX).sum())
        bar.update(len(part))
    bar.close()
    if not examples:
        raise ValueError(f"{desc}: every example lost its response to truncation at {max_length} tokens")
    stats["examples"] = len(examples)
    log.info("%s: %d examples, %d truncated at %d tokens, %d dropped (prompt alone too long)",
             desc, len(examples), stats["truncated"], max_length, stats["dropped_prompt_too_long"])
    return examples, {k: int(stats[k]) for k in ("examples", "truncated", "dropped_prompt_too_long",
                                                  "tokens", "response_tokens")}


class PadCollator:
    """Right-pads a list of examples; padding is masked out of attention and loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples):
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ---------------------------------------------------------------- batch arithmetic


def accumulation_steps(effective_batch: int, per_device_batch: int, world_size: int) -> int:
    """Gradient accumulation so that per-device batch x accumulation x devices = effective batch."""
    for name, value in (("effective batch", effective_batch), ("per-device batch", per_device_batch),
                        ("number of devices", world_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    per_step = per_device_batch * world_size
    if effective_batch % per_step:
        raise ValueError(
            f"effective batch {effective_batch} is not divisible by per-device batch {per_device_batch} "
            f"x {world_size} device(s) = {per_step}; change training.per_device_batch or "
            f"training.effective_batch_cd / effective_batch_if"
        )
    return effective_batch // per_step


def planned_steps(n_examples: int, effective_batch: int, num_epochs: float = 1.0,
                  max_steps: int | None = None) -> int:
    """Optimiser steps of a job: full effective batches within `num_epochs` (<= 1), capped by max_steps."""
    if not 0 < num_epochs <= 1:
        raise ValueError(f"num_epochs must be in (0, 1], got {num_epochs}")
    steps = int(n_examples * num_epochs) // effective_batch
    if steps < 1:
        raise ValueError(f"{n_examples} training examples x {num_epochs} epoch(s) do not fill one "
                         f"effective batch of {effective_batch}")
    return min(steps, max_steps) if max_steps else steps


# ---------------------------------------------------------------- perplexity


def batch_nll(model, batch):
    """Summed negative log-likelihood of the labelled tokens of a batch, and their count."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, (targets != IGNORE_INDEX).sum()


def dev_perplexity(model, examples, batch_size: int, pad_id: int, device, rank: int = 0,
                   world_size: int = 1, autocast=nullcontext) -> dict:
    """exp(mean token NLL over response tokens) of `examples`, shared across `world_size` ranks.

    Every rank runs the same number of forward passes (ZeRO-3 gathers weights
    collectively); a rank that has run out of batches repeats one with weight 0.
    """
    import torch
    from tqdm import tqdm

    collate = PadCollator(pad_id)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    mine = batches[rank::world_size]
    rounds = math.ceil(len(batches) / world_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for step in tqdm(range(rounds), desc="dev perplexity", disable=None if rank == 0 else True):
            real = step < len(mine)
            idx = mine[step] if real else batches[0]
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx]).items()}
            with autocast():
                nll, n = batch_nll(model, batch)
            if real:
                total += nll.double()
                count += n.double()
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(total)
        dist.all_reduce(count)
    mean = (total / count).item()
    return {"perplexity": math.exp(mean) if mean < 700 else float("inf"), "nll": mean,
            "tokens": int(count.item()), "examples": len(examples)}


# ---------------------------------------------------------------- checkpoint records


def eval_records(log_history) -> list[dict]:
    """Dev evaluations from the Trainer's log history, one per step (latest wins)."""
    by_step = {}
    for entry in log_history:
        if "eval_perplexity" in entry:
            by_step[entry["step"]] = {"step": entry["step"], "perplexity": entry["eval_perplexity"],
                                      "nll": entry.get("eval_nll"), "tokens": entry.get("eval_tokens")}
    return [by_step[s] for s in sorted(by_step)]


def choose_best(records: list[dict]) -> dict:
    """The lowest-perplexity record; ties go to the earliest step; NaN counts as worst."""
    if not records:
        raise ValueError("no checkpoint was evaluated")

    def key(record):
        ppl = record["perplexity"]
        return (math.inf if ppl is None or math.isnan(ppl) else ppl, record["step"])

    return min(records, key=key)


def kept_points(records: list[dict], last_step: int | None = None) -> dict:
    """Steps of the first, best and last evaluated checkpoints."""
    best = choose_best(records)
    steps = [r["step"] for r in records]
    return {"first": min(steps), "best": best["step"], "last": max(steps) if last_step is None else last_step}


def job_fingerprint(args, world_size: int) -> dict:
    """What a checkpoint depends on: inputs and every setting that changes the training run."""
    model_files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                         for p in Path(args.model).iterdir() if p.is_file())
    settings = {k: v for k, v in vars(args).items()
                if k not in ("model", "train", "dev", "out", "trajectory_out", "checkpoint_dir", "threads",
                             "trust_remote_code", "logging_steps", "resumable")}
    if args.deepspeed:
        settings["deepspeed"] = json.loads(Path(args.deepspeed).read_text())
    fingerprint = {"model": hashlib.sha1(json.dumps(model_files).encode()).hexdigest(),
                   "train": file_digest(args.train, "sha1"), "dev": file_digest(args.dev, "sha1"),
                   "world_size": world_size, "settings": settings}
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from disk


# ---------------------------------------------------------------- trainer pieces


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _make_trainer_classes():
    """Trainer subclass and callbacks (built lazily: transformers is imported only when training)."""
    from transformers import Trainer, TrainerCallback

    class ResetTrainer(Trainer):
        """Trainer whose evaluation is response-token perplexity on the dev examples."""

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            model = self.model
            was_training = model.training
            model.eval()
            result = dev_perplexity(
                model, eval_dataset or self.eval_dataset, self.args.per_device_eval_batch_size,
                self.processing_class.pad_token_id, self.args.device, self.args.process_index,
                self.args.world_size, self.autocast_smart_context_manager,
            )
            if was_training:
                model.train()
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in result.items() if k != "examples"}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class CheckpointKeeper(TrainerCallback):
        """After each save: mark the checkpoint complete, keep first/best/latest, drop the rest.

        The last step's checkpoint holds the model only: nothing resumes from it
        (a re-run finding it complete just exports), so its optimiser state
        (12 bytes per parameter) is never written.
        """

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                args.save_only_model = True

        def on_save(self, args, state, control, **kwargs):
            _barrier()  # every rank's shards and RNG state are on disk
            if state.is_world_process_zero:
                root = Path(args.output_dir)
                current = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
                records = eval_records(state.log_history)
                record = next((r for r in records if r["step"] == state.global_step), None)
                write_json({"step": state.global_step, "eval": record}, current / COMPLETE_MARKER)
                keep = kept_points(records, state.global_step) if records else {"last": state.global_step}
                for step, path in list_checkpoints(root).items():
                    if step == state.global_step:
                        continue
                    if step in keep.values():
                        strip_training_state(path)
                    else:
                        remove_checkpoint(path)
            _barrier()

    class ProgressLog(TrainerCallback):
        """One readable line per logging step: step, loss, learning rate, elapsed time and ETA."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()
            self.start_step = state.global_step
            self.start_tokens = state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            done = state.global_step - self.start_step
            elapsed = time.time() - self.start
            if "loss" in logs:
                eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
                log.info("step %d/%d (%.0f%%) loss %.4f lr %.3g | elapsed %.0fs, eta %.0fs",
                         state.global_step, state.max_steps, 100 * state.global_step / state.max_steps,
                         logs["loss"], logs.get("learning_rate", float("nan")), elapsed, eta)
            if "eval_perplexity" in logs:
                log.info("step %d: dev perplexity %.4f (nll %.4f over %d response tokens)",
                         state.global_step, logs["eval_perplexity"], logs["eval_nll"], logs["eval_tokens"])

    return ResetTrainer, CheckpointKeeper, ProgressLog


def training_arguments(args, accumulation: int, steps: int, use_gpu: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(args.checkpoint_dir),
        per_device_train_batch_size=args.per_device_batch,
        per_device_eval_batch_size=args.per_device_batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=math.ceil(args.warmup_ratio * steps),
        max_steps=steps,
        eval_strategy="steps",
        eval_steps=args.save_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_only_model=not args.resumable,   # the last checkpoint is model-only either way (CheckpointKeeper)
        logging_steps=args.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        seed=args.seed,
        data_seed=args.seed,
        bf16=use_gpu,
        use_cpu=not use_gpu,
        activation_checkpointing=args.gradient_checkpointing,
        deepspeed=args.deepspeed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        log_level="info",
        log_level_replica="warning",
    )


# ---------------------------------------------------------------- export


def peak_memory_mb() -> dict:
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"gpu_allocated": gpu, "host_rss": rss}


def write_outputs(args, state, summary: dict) -> None:
    """Best model + summary, then trajectory first/, last/ and points.json; each atomically."""
    root = Path(args.checkpoint_dir)
    records = eval_records(state.log_history)
    points = kept_points(records, state.global_step)
    by_step = {r["step"]: r for r in records}
    paths = {"best": str(args.out), "first": str(Path(args.trajectory_out) / "first"),
             "last": str(Path(args.trajectory_out) / "last")}
    summary["checkpoints"] = {name: {"step": step, "perplexity": by_step.get(step, {}).get("perplexity"),
                                     "path": paths[name]} for name, step in points.items()}
    digests = {}   # step -> digest: the same checkpoint exported twice is hashed once
    with atomic_dir(args.out) as tmp:
        export_model(root / f"{CHECKPOINT_PREFIX}{points['best']}", tmp, args.model)
        digests[points["best"]] = write_model_digest(tmp)
        summary["model_digest"] = digests[points["best"]]["digest"]
        write_json(summary, tmp / "training_summary.json")
    for name in ("first", "last"):
        with atomic_dir(Path(args.trajectory_out) / name) as tmp:
            export_model(root / f"{CHECKPOINT_PREFIX}{points[name]}", tmp, args.model)
            if points[name] not in digests:
                digests[points[name]] = compute_model_digest(tmp)
            write_model_digest(tmp, digests[points[name]])
    write_json(summary["checkpoints"], Path(args.trajectory_out) / "points.json")


# ---------------------------------------------------------------- job


def load_data(args, tokenizer):
    """Tokenised training and dev examples, with what was read, dropped and truncated."""
    train_pairs, train_read = read_pairs(args.train, args.max_train_examples, seed=args.seed)
    dev_pairs, dev_read = read_pairs(args.dev, args.max_dev_examples, seed=0)
    train, train_stats = encode_pairs(tokenizer, train_pairs, args.max_seq_length, f"train {args.train}")
    dev, dev_stats = encode_pairs(tokenizer, dev_pairs, args.max_seq_length, f"dev {args.dev}")
    return train, dev, {"train": {**train_read, **train_stats}, "dev": {**dev_read, **dev_stats}}


def finished_state(checkpoint: Path | None, steps: int):
    """The Trainer state of `checkpoint` if it is the job's last step (then only the export is left)."""
    from transformers import TrainerState

    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state if state.global_step >= steps else None


def fit(args, targs, tokenizer, train, dev, resume):
    """Run the Trainer; returns (state, this session's runtime and tokens, first step of the session)."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    from reset.models import load_causal_lm

    # DeepSpeed keeps fp32 master weights itself; otherwise the weights stay fp32 under bf16 autocast
    dtype = torch.bfloat16 if args.deepspeed and torch.cuda.is_available() else torch.float32
    model = load_causal_lm(args.model, dtype=dtype, trust_remote_code=args.trust_remote_code)
    ResetTrainer, CheckpointKeeper, ProgressLog = _make_trainer_classes()
    progress = ProgressLog()
    trainer = ResetTrainer(
        model=model, args=targs, train_dataset=train, eval_dataset=dev,
        data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer,
        callbacks=[CheckpointKeeper(), progress],
    )
    if targs.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # ProgressLog writes the readable lines instead
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    _barrier()
    state = trainer.state
    return state, result.metrics["train_runtime"], state.num_input_tokens_seen - progress.start_tokens, \
        progress.start_step


def run(args) -> dict | None:
    """Train one job; returns the summary on the main process (None on the others)."""
    import torch
    import transformers

    from reset.models import load_tokenizer

    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()  # no \r-bars in log files
    transformers.set_seed(args.seed)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_gpu = torch.cuda.is_available()
    if args.deepspeed and not use_gpu:
        log.warning("DeepSpeed without a GPU: ZeRO-3 runs on CPU over gloo in fp32 (slow; for checking the path)")
        if world_size > 1:
            import deepspeed  # on CPU, accelerate leaves DeepSpeed's own process group to us

            deepspeed.init_distributed(dist_backend="gloo")
    accumulation = accumulation_steps(args.effective_batch, args.per_device_batch, world_size)

    tokenizer = load_tokenizer(args.model, padding_side="right", trust_remote_code=args.trust_remote_code)
    train, dev, data_stats = load_data(args, tokenizer)
    steps = planned_steps(len(train), args.effective_batch, args.num_epochs, args.max_steps)
    log.info("%d optimiser steps of %d examples (%d per device x %d accumulation x %d device(s)), lr %g, seed %d",
             steps, args.effective_batch, args.per_device_batch, accumulation, world_size,
             args.learning_rate, args.seed)

    # TrainingArguments before the model: under ZeRO-3 the weights are sharded while loading
    targs = training_arguments(args, accumulation, steps, use_gpu)
    if targs.world_size != world_size:
        raise RuntimeError(f"Trainer sees {targs.world_size} processes, WORLD_SIZE says {world_size}")
    with targs.main_process_first(local=False, desc="checkpoint directory"):
        if targs.process_index == 0:
            prepare_checkpoint_dir(args.checkpoint_dir, job_fingerprint(args, world_size), steps)
    resume = latest_complete_checkpoint(args.checkpoint_dir)
    state = finished_state(resume, steps)
    if state is not None:
        log.info("%s holds the last step; exporting it without training", resume)
        runtime, session_tokens, start_step = 0.0, 0, state.global_step
    else:
        if resume is not None:
            log.info("resuming from %s", resume)
        state, runtime, session_tokens, start_step = fit(args, targs, tokenizer, train, dev, resume)
    if targs.process_index != 0:
        return None

    records = eval_records(state.log_history)
    best = choose_best(records)
    summary = {
        "model_init": str(args.model), "train_data": str(args.train), "dev_data": str(args.dev),
        "seed": args.seed, "learning_rate": args.learning_rate, "effective_batch": args.effective_batch,
        "per_device_batch": args.per_device_batch, "gradient_accumulation_steps": accumulation,
        "world_size": world_size, "max_seq_length": args.max_seq_length, "planned_steps": steps,
        "steps": state.global_step, "save_steps": args.save_steps,
        "train_loss": [{"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate"),
                        "grad_norm": e.get("grad_norm")} for e in state.log_history if "loss" in e],
        "eval": records, "best_step": best["step"], "best_perplexity": best["perplexity"],
        "tokens_seen": state.num_input_tokens_seen,
        "train_examples": data_stats["train"], "dev_examples": data_stats["dev"],
        "truncated_examples": {"train": data_stats["train"]["truncated"], "dev": data_stats["dev"]["truncated"]},
        "resumed_from_step": start_step if resume else None,
        "train_runtime_s": runtime,
        "tokens_per_s": session_tokens / runtime if runtime > 0 else None,
        "peak_memory_mb": peak_memory_mb(),
        "device": "cuda" if use_gpu else "cpu", "precision": "bf16" if use_gpu else "fp32",
        "deepspeed": str(args.deepspeed) if args.deepspeed else None,
        "zero_stage": targs.hf_deepspeed_config.config["zero_optimization"]["stage"] if args.deepspeed else None,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    summary["wall_time_s"] = time.time() - started
    write_outputs(args, state, summary)
    remove_checkpoint_dir(args.checkpoint_dir)
    log.info("best checkpoint: step %d, dev perplexity %.4f -> %s", best["step"], best["perplexity"], args.out)
    return summary


# Training keys a rule resolves per variant (or hands to the launcher) instead of passing as such.
JOB_SPECIFIC = ("learning_rate", "reset_learning_rate", "effective_batch_cd", "effective_batch_if", "deepspeed_config")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reset.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--model", required=True, type=Path, help="start model (Hugging Face directory, safetensors)")
    io.add_argument("--train", required=True, type=Path, help="training parquet (prompt, references)")
    io.add_argument("--dev", required=True, type=Path, help="dev parquet for checkpoint selection")
    io.add_argument("--out", required=True, type=Path,
                    help="output directory: best checkpoint + training_summary.json")
    io.add_argument("--trajectory-out", required=True, type=Path,
                    help="output directory for the first/ and last/ checkpoints")
    io.add_argument("--checkpoint-dir", required=True, type=Path,
                    help="Trainer checkpoints (kept across kills for resuming; removed after success)")
    hp = p.add_argument_group("this job's learning rate, batch and seed (picked per variant from the training keys)")
    hp.add_argument("--learning-rate", type=float, required=True,
                    help="training.learning_rate, or training.reset_learning_rate for a ReSet job")
    hp.add_argument("--effective-batch", type=int, required=True,
                    help="training.effective_batch_cd or _if: examples per optimiser step = per-device batch x "
                         "accumulation x devices")
    hp.add_argument("--seed", type=int, required=True)
    add_flags(p, Training, exclude=JOB_SPECIFIC, group_title="training keys (docs/config.md)")
    run_group = p.add_argument_group("runtime")
    run_group.add_argument("--deepspeed", type=Path, default=None,
                           help="DeepSpeed config (ZeRO-3) for GPU jobs launched with torch.distributed.run; "
                                "also runs on CPU over gloo in fp32, to check the path without a GPU")
    run_group.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    run_group.add_argument("--trust-remote-code", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    # DeepSpeed calls deprecated torch.distributed aliases on every step; one line each would flood the log
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    for flag in ("effective_batch", "per_device_batch", "save_steps", "max_seq_length", "logging_steps"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least 1")
    run(args)
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
