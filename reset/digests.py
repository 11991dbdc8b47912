"""Content digests of files and model directories.

A model directory's digest covers every file that decides what the model
computes (weights, config, generation config, tokenizer files) and nothing
that only describes how it was made (training_summary.json, SOURCE). It is
computed once, by the job that writes the directory, and stored beside the
weights as model_digest.json; jobs that read the model read that file instead
of hashing gigabytes again. Two directories with the same digest hold the same
model, so their evaluations are the same (reset.eval_store reuses them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DIGEST_FILE = "model_digest.json"
# files of a model directory that describe its making, not the model
NOT_MODEL_FILES = {DIGEST_FILE, "training_summary.json", "SOURCE", "points.json"}


def file_digest(path, algorithm: str = "sha256", block: int = 1 << 20) -> str:
    """Hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def json_digest(obj) -> str:
    """sha256 of a JSON value written canonically (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_files(model_dir) -> list[Path]:
    """The files of a model directory that make the model, sorted by name."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {root} does not exist")
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.name not in NOT_MODEL_FILES and not p.name.startswith("."))


def compute_model_digest(model_dir) -> dict:
    """{"digest": sha256 over the per-file digests, "files": {name: sha256}} of a model directory."""
    files = {p.name: file_digest(p) for p in model_files(model_dir)}
    if not any(name.endswith(".safetensors") for name in files):
        raise FileNotFoundError(f"{model_dir} holds no .safetensors weights to digest")
    return {"digest": json_digest(files), "files": files}


def write_model_digest(model_dir, record: dict | None = None) -> dict:
    """Compute (or take `record`, the digest of a directory with the same files) and store it in model_dir."""
    from reset.io import write_json

    record = record or compute_model_digest(model_dir)
    write_json(record, Path(model_dir) / DIGEST_FILE)
    return record


def model_digest(model_dir) -> str:
    """The stored digest of a model directory; computed (and logged) when the directory predates it."""
    path = Path(model_dir) / DIGEST_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())["digest"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}: not a model digest record (expected JSON with key 'digest'); "
                             "delete it to have it recomputed") from None
    log.warning("%s has no %s (written before digests were recorded): hashing its files now", model_dir, DIGEST_FILE)
    return compute_model_digest(model_dir)["digest"]
