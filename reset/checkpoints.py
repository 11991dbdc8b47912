"""Trainer checkpoint files: which are complete, which a job resumes from, which it keeps,
and the export of a checkpoint as a plain Hugging Face model directory.

A checkpoint directory is `checkpoint-N` under a job's checkpoint directory; it
counts as complete only once COMPLETE_MARKER is written into it (after every
rank's files are on disk). FINGERPRINT_FILE records the job configuration the
checkpoints belong to, so a changed job starts from scratch instead of resuming
someone else's optimiser state.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from reset.io import write_json

log = logging.getLogger("reset.train")

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "reset_complete.json"  # written only once a checkpoint is fully on disk
FINGERPRINT_FILE = "fingerprint.json"
# Trainer files that are not part of a Hugging Face model directory.
TRAINER_ONLY_FILES = {"optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json",
                      "training_args.bin", "latest", "zero_to_fp32.py", COMPLETE_MARKER}


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    if path.is_dir() and name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit():
        return int(name[len(CHECKPOINT_PREFIX):])
    return None


def list_checkpoints(checkpoint_dir) -> dict[int, Path]:
    """Every checkpoint-N directory, complete or not."""
    out = {}
    root = Path(checkpoint_dir)
    if root.is_dir():
        for path in root.iterdir():
            step = checkpoint_step(path)
            if step is not None:
                out[step] = path
    return out


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def latest_complete_checkpoint(checkpoint_dir) -> Path | None:
    """The highest-step checkpoint that was fully written and still holds its training state."""
    complete = {s: p for s, p in list_checkpoints(checkpoint_dir).items()
                if is_complete(p) and (p / "trainer_state.json").is_file()}
    return complete[max(complete)] if complete else None


def remove_checkpoint(path: Path) -> None:
    """Drop the completeness marker first, so a half-removed checkpoint never counts as complete."""
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def strip_training_state(path: Path) -> None:
    """Keep only the model files of a checkpoint that is kept for export, not for resuming."""
    for item in path.iterdir():
        if item.name == COMPLETE_MARKER:
            continue
        if item.is_dir():
            shutil.rmtree(item)  # DeepSpeed's global_stepN shards
        elif item.name in TRAINER_ONLY_FILES or item.name.startswith("rng_state"):
            item.unlink()


def holds_optimizer_state(path: Path) -> bool:
    """Whether a checkpoint can be resumed from: the Trainer's optimiser file, or DeepSpeed's shards."""
    return (path / "optimizer.pt").is_file() or (path / "latest").is_file()


def prepare_checkpoint_dir(checkpoint_dir, fingerprint: dict, steps: int | None = None) -> None:
    """Start fresh if the checkpoints belong to another job configuration; drop incomplete ones.

    With `steps` (the job's planned optimiser steps): a latest checkpoint before the last step
    that holds no optimiser state (training.resumable: false) cannot be resumed from without
    changing the result, so every checkpoint goes and the job trains from step 0.
    """
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / FINGERPRINT_FILE
    old = json.loads(marker.read_text()) if marker.is_file() else None
    checkpoints = list_checkpoints(root)
    if old != fingerprint and checkpoints:
        log.warning("%s holds checkpoints of a different job configuration; starting from scratch", root)
        for path in checkpoints.values():
            remove_checkpoint(path)
        checkpoints = {}
    for step, path in checkpoints.items():
        if not is_complete(path):
            log.warning("removing incomplete checkpoint %s (step %d)", path, step)
            remove_checkpoint(path)
    latest = latest_complete_checkpoint(root)
    if steps is not None and latest is not None and checkpoint_step(latest) < steps \
            and not holds_optimizer_state(latest):
        log.warning("%s holds no optimiser state (training.resumable: false): training again from step 0", latest)
        for path in list_checkpoints(root).values():
            remove_checkpoint(path)
    write_json(fingerprint, marker)



def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (free, same bytes) where the file system allows it, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_model(checkpoint: Path, out_dir: Path, start_model: Path) -> None:
    """The Hugging Face model files of a checkpoint (weights, config, tokenizer) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(checkpoint.iterdir()):
        if item.is_file() and item.name not in TRAINER_ONLY_FILES and not item.name.startswith(("rng_state", ".")) \
                and item.suffix not in (".pt", ".pth", ".bin", ".py"):
            link_or_copy(item, out_dir / item.name)
    if not list(out_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{checkpoint} holds no .safetensors weights to export")
    # the Trainer switches the KV cache off for training; generation wants the start model's setting back
    config = json.loads((out_dir / "config.json").read_text())
    start = json.loads((Path(start_model) / "config.json").read_text())
    config["use_cache"] = start.get("use_cache", True)
    write_json(config, out_dir / "config.json")  # a new file: the checkpoint's link is left alone


def remove_checkpoint_dir(checkpoint_dir) -> None:
    """After success: the job's checkpoints, and its variant directory once empty."""
    root = Path(checkpoint_dir)
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.parent.rmdir()
    except OSError:
        pass  # other seeds' checkpoints are still there


