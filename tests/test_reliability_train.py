"""Crash and resume of training: kill -9 after a checkpoint, re-run, same model as an uninterrupted run.

`python -m reset.train` runs in a subprocess on the tiny random LLaMA. One run
goes through uninterrupted; another is SIGKILLed (whole process group) as soon
as its first checkpoint after step 2 is marked complete, then started again
with the same command. The re-run must resume from the last complete
checkpoint instead of step 0, leave no partial output while dead, and end with
the same best checkpoint, bit-identical weights (best, first and last) and the
same dev perplexities as the uninterrupted run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from reliability_support import REPO, env, kill_when, leftovers, start, tail

from reset.prompts import render_prompt

STEPS, SAVE = 20, 2  # 40 usable examples, 2 per step: one epoch


# rows far longer than --max-seq-length: a long response is cut (kept), a long prompt leaves no
# response token (dropped); both are counted
LONG_RESPONSE, LONG_PROMPT = {5, 17, 29}, {11, 23}
FILLER = "Numbers have names and parities, and both are worth knowing. " * 30


def write_split(path, n, offset=0):
    rows = []
    for i in range(offset, offset + n):
        instruction = f"Write the number {i} in words and say whether it is even."
        response = f"Number {i} is {'even' if i % 2 == 0 else 'odd'}."
        if i in LONG_PROMPT:
            instruction += " " + FILLER
        if i in LONG_RESPONSE:
            response += " " + FILLER
        rows.append({"prompt": render_prompt("if", instruction), "references": [response]})
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    return write_split(root / "train.parquet", 42), write_split(root / "dev.parquet", 4, offset=100)


def train_cmd(model, data, root):
    train, dev = data
    return [sys.executable, "-m", "reset.train", "--model", str(model), "--train", str(train), "--dev", str(dev),
            "--out", str(root / "model"), "--trajectory-out", str(root / "trajectory"),
            "--checkpoint-dir", str(root / "checkpoints"), "--learning-rate", "1e-3", "--effective-batch", "2",
            "--per-device-batch", "2", "--seed", "3", "--max-seq-length", "96", "--save-steps", str(SAVE),
            "--max-steps", str(STEPS), "--logging-steps", "1", "--threads", "1"]


def complete_steps(checkpoints):
    return sorted(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/reset_complete.json"))


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tiny_llama_dir, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-clean")
    proc = subprocess.run(train_cmd(tiny_llama_dir, data, root), capture_output=True, text=True, cwd=REPO,
                          env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_over_long_training_examples_are_truncated_and_counted(uninterrupted):
    summary = json.loads((uninterrupted / "model" / "training_summary.json").read_text())
    n_long = len(LONG_RESPONSE) + len(LONG_PROMPT)
    assert summary["truncated_examples"] == {"train": n_long, "dev": 0}
    assert summary["train_examples"]["dropped_prompt_too_long"] == len(LONG_PROMPT)
    assert summary["train_examples"]["examples"] == 42 - len(LONG_PROMPT)


def test_killed_training_resumes_from_its_last_checkpoint_and_ends_identical(tiny_llama_dir, data, uninterrupted,
                                                                            tmp_path):
    cmd = train_cmd(tiny_llama_dir, data, tmp_path)
    log = tmp_path / "train.log"
    proc = start(cmd, log)
    checkpoints = tmp_path / "checkpoints"
    kill_when(proc, lambda: any(step >= 2 * SAVE for step in complete_steps(checkpoints)))
    killed_at = max(complete_steps(checkpoints))
    assert killed_at < STEPS, "the job finished before it could be killed"
    # dead job: no output directory that Snakemake could take as complete, no temporary files left over
    assert not (tmp_path / "model").exists() and not (tmp_path / "trajectory" / "last").exists()
    assert not (tmp_path / "model" / "training_summary.json").exists()

    second = tmp_path / "resume.log"
    proc = subprocess.run(cmd, stdout=open(second, "w"), stderr=subprocess.STDOUT, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, tail(second)
    text = second.read_text()
    assert f"resuming from {checkpoints}/checkpoint-" in text, tail(second)
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    resumed = summary["resumed_from_step"]
    assert resumed is not None and resumed >= killed_at and resumed % SAVE == 0, summary["resumed_from_step"]
    assert summary["steps"] == STEPS
    # the resumed run did not repeat the steps done before the kill (its own log shows steps after it only)
    done_again = [int(m) for m in re.findall(rf"step (\d+)/{STEPS} \(", text)]
    assert done_again and min(done_again) == resumed + 1 and max(done_again) == STEPS, done_again
    assert not checkpoints.exists() and leftovers(tmp_path) == []

    clean = json.loads((uninterrupted / "model" / "training_summary.json").read_text())
    assert summary["best_step"] == clean["best_step"]
    assert [r["step"] for r in summary["eval"]] == [r["step"] for r in clean["eval"]]
    # CPU training resumes bit for bit: RNG, optimiser, scheduler and data order come back from the checkpoint
    assert [r["perplexity"] for r in summary["eval"]] == [r["perplexity"] for r in clean["eval"]]
    for model in ("model", "trajectory/first", "trajectory/last"):
        a, b = weights(tmp_path / model), weights(uninterrupted / model)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[name], b[name]) for name in a), model


def test_incomplete_checkpoint_is_discarded_not_resumed(tiny_llama_dir, data, uninterrupted, tmp_path):
    """A checkpoint without its completeness marker (killed while saving) is removed, not trusted."""
    cmd = train_cmd(tiny_llama_dir, data, tmp_path)
    proc = start(cmd, tmp_path / "train.log")
    checkpoints = tmp_path / "checkpoints"
    kill_when(proc, lambda: any(step >= SAVE for step in complete_steps(checkpoints)))
    latest = max(complete_steps(checkpoints))
    # simulate a kill in the middle of writing the next checkpoint: files present, marker absent
    fake = checkpoints / f"checkpoint-{latest + SAVE}"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"half written")
    (fake / "trainer_state.json").write_text("{")
    second = tmp_path / "resume.log"
    proc = subprocess.run(cmd, stdout=open(second, "w"), stderr=subprocess.STDOUT, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, tail(second)
    text = second.read_text()
    assert f"removing incomplete checkpoint {fake}" in text, tail(second)
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == latest
    clean = json.loads((uninterrupted / "model" / "training_summary.json").read_text())
    assert summary["best_step"] == clean["best_step"]


def test_non_resumable_checkpoints_hold_the_model_only_and_a_killed_job_starts_again(tiny_llama_dir, data,
                                                                                    uninterrupted, tmp_path):
    """training.resumable: false (the demo): no optimiser state is written; a killed job cannot resume
    without changing its result, so it trains again from step 0 and ends identical to a resumable run."""
    cmd = train_cmd(tiny_llama_dir, data, tmp_path) + ["--no-resumable"]
    proc = start(cmd, tmp_path / "train.log")
    checkpoints = tmp_path / "checkpoints"
    kill_when(proc, lambda: any(step >= 2 * SAVE for step in complete_steps(checkpoints)))
    killed_at = max(complete_steps(checkpoints))
    assert killed_at < STEPS, "the job finished before it could be killed"
    latest = checkpoints / f"checkpoint-{killed_at}"
    assert (latest / "model.safetensors").is_file() and not (latest / "optimizer.pt").exists()

    second = tmp_path / "rerun.log"
    proc = subprocess.run(cmd, stdout=open(second, "w"), stderr=subprocess.STDOUT, cwd=REPO, env=env(), timeout=600)
    assert proc.returncode == 0, tail(second)
    assert f"{latest} holds no optimiser state (training.resumable: false): training again from step 0" \
        in second.read_text(), tail(second)
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] is None and summary["steps"] == STEPS
    clean = json.loads((uninterrupted / "model" / "training_summary.json").read_text())
    assert [r["perplexity"] for r in summary["eval"]] == [r["perplexity"] for r in clean["eval"]]
    for model in ("model", "trajectory/first", "trajectory/last"):
        a, b = weights(tmp_path / model), weights(uninterrupted / model)
        assert all(torch.equal(a[name], b[name]) for name in a), model
