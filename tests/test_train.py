"""Training stage: response-only loss, batch arithmetic, checkpoint selection, seeding,
resume after SIGKILL, the ZeRO-3 path (two CPU ranks over gloo) and the Snakemake rule.

Everything trains the tiny random LLaMA (seconds per run)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reset import checkpoints as C
from reset import train as T

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---------------------------------------------------------------- helpers


def arithmetic_rows(n, seed, start=0):
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({
            "id": f"ex-{start + i}",
            "prompt": ("Below is an instruction that describes a task.\n\n### Instruction:\n"
                       f"Add {a} and {b}.\n\n### Response:\n"),
            "references": [f"{a} plus {b} is {a + b}.", "unused second reference"],
        })
    return rows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_data")
    train = arithmetic_rows(60, seed=1)
    train.append({"id": "bad-1", "prompt": "P", "references": []})          # no reference
    train.append({"id": "bad-2", "prompt": "", "references": ["x"]})       # empty prompt
    pd.DataFrame(train).to_parquet(out / "train.parquet")
    pd.DataFrame(arithmetic_rows(10, seed=2, start=1000)).to_parquet(out / "dev.parquet")
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from reset.models import load_tokenizer

    return load_tokenizer(tiny_llama_dir, padding_side="right")


def cli(model, data, out, seed=1, **overrides):
    """Arguments of `python -m reset.train` for a small run under `out`."""
    opts = {"--learning-rate": 3e-3, "--effective-batch": 4, "--per-device-batch": 2, "--seed": seed,
            "--max-seq-length": 64, "--max-steps": 6, "--save-steps": 2, "--logging-steps": 1,
            "--max-dev-examples": 8, "--threads": 1, **overrides}
    argv = ["--model", str(model), "--train", str(data / "train.parquet"), "--dev", str(data / "dev.parquet"),
            "--out", str(out / "model"), "--trajectory-out", str(out / "trajectory"),
            "--checkpoint-dir", str(out / "checkpoints")]
    for flag, value in opts.items():
        if value is True:
            argv.append(flag)
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def summary_of(out):
    return json.loads((out / "model" / "training_summary.json").read_text())


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def recomputed_perplexity(model_dir, data, max_dev=8, max_length=64):
    """Dev perplexity of an exported model, computed from scratch."""
    from reset.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir, padding_side="right")
    pairs, _ = T.read_pairs(data / "dev.parquet", max_dev, seed=0)
    examples, _ = T.encode_pairs(tok, pairs, max_length, "dev")
    model = load_causal_lm(model_dir)
    return T.dev_perplexity(model, examples, 3, tok.pad_token_id, "cpu")["perplexity"]


@pytest.fixture(scope="module")
def trained(tiny_llama_dir, data_dir, tmp_path_factory):
    """One finished single-process run (seed 1)."""
    out = tmp_path_factory.mktemp("run_seed1")
    assert T.main(cli(tiny_llama_dir, data_dir, out)) == 0
    return out


# ---------------------------------------------------------------- loss masking


def test_encode_pair_labels_only_the_response(tokenizer):
    prompt = "### Instruction:\nSay hi.\n\n### Response:\n"
    target = "Hello there, friend."
    prompt_ids = tokenizer(prompt).input_ids
    target_ids = tokenizer(target, add_special_tokens=False).input_ids
    example, truncated = T.encode_pair(prompt_ids, target_ids, tokenizer.eos_token_id, 512)
    assert not truncated
    assert example["input_ids"] == prompt_ids + target_ids + [tokenizer.eos_token_id]
    assert example["labels"][:len(prompt_ids)] == [T.IGNORE_INDEX] * len(prompt_ids)
    labelled = [t for t in example["labels"] if t != T.IGNORE_INDEX]
    assert labelled == target_ids + [tokenizer.eos_token_id]
    assert tokenizer.decode(labelled) == target + tokenizer.eos_token


def test_truncation_is_counted_and_prompt_only_examples_dropped(tokenizer):
    prompt_ids, target_ids = list(range(10, 20)), list(range(30, 40))
    example, truncated = T.encode_pair(prompt_ids, target_ids, 2, 15)
    assert truncated and len(example["input_ids"]) == 15
    assert example["labels"] == [T.IGNORE_INDEX] * 10 + list(range(30, 35))
    assert T.encode_pair(prompt_ids, target_ids, 2, 10) == (None, True)
    pairs = [("short prompt\n", "ok"), ("a much longer prompt " * 20, "answer")]
    examples, stats = T.encode_pairs(tokenizer, pairs, 24, "t")
    assert stats["examples"] == 1 and stats["truncated"] == 1 and stats["dropped_prompt_too_long"] == 1
    assert len(examples) == 1


def test_collator_masks_padding(tokenizer):
    batch = T.PadCollator(tokenizer.pad_token_id)([
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tokenizer.pad_token_id, tokenizer.pad_token_id]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_training_loss_is_mean_nll_of_response_tokens_only(tiny_llama_dir, tokenizer, data_dir):
    """The loss the Trainer optimises equals the response-token NLL computed example by example."""
    import torch
    import torch.nn.functional as F

    from reset.models import load_causal_lm

    model = load_causal_lm(tiny_llama_dir)
    pairs, _ = T.read_pairs(data_dir / "dev.parquet")
    pairs = [pairs[0], (pairs[1][0] + "Extra context makes this prompt longer.\n", pairs[1][1])]
    examples, _ = T.encode_pairs(tokenizer, pairs, 128, "t")
    batch = T.PadCollator(tokenizer.pad_token_id)(examples)
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # really padded
    with torch.no_grad():
        batch_loss = model(**batch).loss.item()
        total, count = 0.0, 0
        for example in examples:  # unpadded, one at a time, loss only after the prompt
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)[None]
            logits = model(input_ids=ids).logits[0, :-1]
            targets = torch.as_tensor(example["labels"][1:], dtype=torch.long)
            keep = targets != T.IGNORE_INDEX
            total += F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
        nll, n = T.batch_nll(model, batch)
    n_response = sum(len(tokenizer(t, add_special_tokens=False).input_ids) + 1 for _, t in pairs)
    assert count == n_response == int(n)
    assert batch_loss == pytest.approx(total / count, rel=1e-5)
    assert nll.item() == pytest.approx(total, rel=1e-5)
    ppl = T.dev_perplexity(model, examples, 1, tokenizer.pad_token_id, "cpu")
    assert ppl["tokens"] == count and ppl["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


# ---------------------------------------------------------------- batch arithmetic


@pytest.mark.parametrize("effective, per_device, world, accumulation", [
    (16, 2, 8, 1), (32, 2, 8, 2), (32, 4, 8, 1), (4, 2, 1, 2), (8, 2, 1, 4), (8, 1, 2, 4),
])
def test_accumulation_steps(effective, per_device, world, accumulation):
    assert T.accumulation_steps(effective, per_device, world) == accumulation
    assert per_device * accumulation * world == effective


@pytest.mark.parametrize("effective, per_device, world", [(16, 3, 1), (4, 2, 4), (8, 16, 1), (0, 1, 1)])
def test_accumulation_steps_rejects_indivisible(effective, per_device, world):
    with pytest.raises(ValueError, match="effective batch|at least 1"):
        T.accumulation_steps(effective, per_device, world)


def test_planned_steps_never_exceed_one_epoch():
    assert T.planned_steps(100, 16) == 6
    assert T.planned_steps(100, 16, max_steps=4) == 4
    assert T.planned_steps(100, 16, max_steps=50) == 6  # the cap never adds a second epoch
    assert T.planned_steps(100, 10, num_epochs=0.5) == 5
    with pytest.raises(ValueError, match="effective batch of 32"):
        T.planned_steps(20, 32)
    with pytest.raises(ValueError, match="num_epochs"):
        T.planned_steps(100, 10, num_epochs=2)


def test_trainer_sees_the_computed_batch(trained):
    summary = summary_of(trained)
    assert summary["gradient_accumulation_steps"] == 2 and summary["world_size"] == 1
    assert summary["per_device_batch"] * summary["gradient_accumulation_steps"] == summary["effective_batch"] == 4


# ---------------------------------------------------------------- data reading


def test_read_pairs_counts_bad_rows_and_subsets_with_seed(data_dir, tmp_path):
    pairs, stats = T.read_pairs(data_dir / "train.parquet")
    assert stats == {"read": 62, "usable": 60, "used": 60, "dropped": {"no_reference": 1, "empty_prompt": 1}}
    assert pairs[0][1].endswith(".") and "plus" in pairs[0][1]  # target = references[0]
    a, _ = T.read_pairs(data_dir / "train.parquet", 10, seed=3)
    b, _ = T.read_pairs(data_dir / "train.parquet", 10, seed=3)
    c, _ = T.read_pairs(data_dir / "train.parquet", 10, seed=4)
    assert a == b and len(a) == 10 and a != c
    pd.DataFrame({"prompt": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet.*references"):
        T.read_pairs(tmp_path / "bad.parquet")


# ---------------------------------------------------------------- checkpoint selection


def test_choose_best_lowest_perplexity_earliest_on_ties():
    records = [{"step": 2, "perplexity": 9.0}, {"step": 4, "perplexity": 5.0},
               {"step": 6, "perplexity": 5.0}, {"step": 8, "perplexity": float("nan")}]
    assert T.choose_best(records)["step"] == 4
    assert T.kept_points(records) == {"first": 2, "best": 4, "last": 8}
    assert T.choose_best([{"step": 2, "perplexity": float("nan")}, {"step": 4, "perplexity": 7.0}])["step"] == 4
    with pytest.raises(ValueError):
        T.choose_best([])


def test_best_checkpoint_is_the_lowest_perplexity_one(trained, data_dir):
    summary = summary_of(trained)
    ppl = {r["step"]: r["perplexity"] for r in summary["eval"]}
    assert sorted(ppl) == [2, 4, 6] and summary["steps"] == 6
    assert summary["best_step"] == min(ppl, key=lambda s: (ppl[s], s))
    assert summary["best_perplexity"] == min(ppl.values())
    assert ppl[6] < ppl[2]  # the tiny model does learn the task
    points = summary["checkpoints"]
    assert (points["first"]["step"], points["last"]["step"]) == (2, 6)
    assert json.loads((trained / "trajectory" / "points.json").read_text()) == points
    # the exported weights are the ones that were scored
    assert recomputed_perplexity(trained / "model", data_dir) == pytest.approx(summary["best_perplexity"], rel=1e-4)
    assert recomputed_perplexity(trained / "trajectory" / "first", data_dir) == pytest.approx(ppl[2], rel=1e-4)
    assert recomputed_perplexity(trained / "trajectory" / "last", data_dir) == pytest.approx(ppl[6], rel=1e-4)


def test_outputs_are_hf_dirs_and_checkpoints_are_cleaned(trained, tiny_llama_dir):
    from reset.models import load_causal_lm

    for d in (trained / "model", trained / "trajectory" / "first", trained / "trajectory" / "last"):
        names = {p.name for p in d.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not names & {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"}
        load_causal_lm(d)
    assert not (trained / "checkpoints").exists()
    # same architecture and settings as the start model (the Trainer's use_cache=False is undone)
    start = json.loads((tiny_llama_dir / "config.json").read_text())
    assert json.loads((trained / "model" / "config.json").read_text()) == start
    summary = summary_of(trained)
    assert [e["step"] for e in summary["train_loss"]] == [1, 2, 3, 4, 5, 6]
    assert summary["tokens_seen"] > 6 * 4 * 10 and summary["tokens_per_s"] > 0
    assert summary["train_examples"]["dropped"] == {"no_reference": 1, "empty_prompt": 1}
    assert summary["truncated_examples"] == {"train": 0, "dev": 0}
    assert summary["dev_examples"]["used"] == 8
    assert summary["peak_memory_mb"]["host_rss"] > 0 and summary["wall_time_s"] > 0
    assert summary["resumed_from_step"] is None and summary["precision"] == "fp32"


# ---------------------------------------------------------------- seeds


def test_same_seed_same_weights_other_seed_differs(tiny_llama_dir, data_dir, trained, tmp_path):
    import torch

    assert T.main(cli(tiny_llama_dir, data_dir, tmp_path / "again", seed=1)) == 0
    assert T.main(cli(tiny_llama_dir, data_dir, tmp_path / "other", seed=2)) == 0
    first, again, other = (weights(d / "model") for d in (trained, tmp_path / "again", tmp_path / "other"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert summary_of(tmp_path / "again")["eval"] == summary_of(trained)["eval"]


# ---------------------------------------------------------------- resume


def test_killed_run_resumes_from_its_last_complete_checkpoint(tiny_llama_dir, data_dir, tmp_path):
    """SIGKILL a real run after its first checkpoint; the re-run picks up there and ends where an
    uninterrupted run ends."""
    import torch

    opts = {"--max-steps": 14, "--save-steps": 2, "--logging-steps": 2}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "reset.train", *cli(tiny_llama_dir, data_dir, out, **opts)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / "checkpoint-2" / C.COMPLETE_MARKER
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model").exists()
    resume_from = C.latest_complete_checkpoint(out / "checkpoints")
    step = C.checkpoint_step(resume_from)
    assert 2 <= step < 14
    # a checkpoint that was being written when the job died has no marker and must not be used
    half = out / "checkpoints" / "checkpoint-12"
    shutil.rmtree(half, ignore_errors=True)
    half.mkdir()
    (half / "trainer_state.json").write_text("{broken")

    rerun = subprocess.run([sys.executable, "-m", "reset.train", *cli(tiny_llama_dir, data_dir, out, **opts)],
                           env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {resume_from}" in rerun.stderr
    assert "removing incomplete checkpoint" in rerun.stderr
    resumed = summary_of(out)
    assert resumed["resumed_from_step"] == step and resumed["steps"] == 14
    assert [r["step"] for r in resumed["eval"]] == list(range(2, 15, 2))  # evaluations before the kill kept

    full = tmp_path / "uninterrupted"
    assert T.main(cli(tiny_llama_dir, data_dir, full, **opts)) == 0
    a, b = weights(out / "trajectory" / "last"), weights(full / "trajectory" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: RNG, optimiser, data order restored
    assert [r["step"] for r in summary_of(full)["eval"]] == [r["step"] for r in resumed["eval"]]


def test_job_killed_while_exporting_only_exports_on_rerun(tiny_llama_dir, data_dir, trained, tmp_path,
                                                         monkeypatch, caplog):
    """The last checkpoint is lean (model only); a re-run that finds it complete exports without training."""
    import torch

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while exporting")

    with monkeypatch.context() as patch:
        patch.setattr(T, "write_outputs", killed)
        with pytest.raises(KeyboardInterrupt):
            T.main(cli(tiny_llama_dir, data_dir, tmp_path))
    checkpoints = tmp_path / "checkpoints"
    last = C.latest_complete_checkpoint(checkpoints)
    assert C.checkpoint_step(last) == 6 and not (last / "optimizer.pt").exists()
    assert not (checkpoints / "checkpoint-2" / "optimizer.pt").exists()  # kept for export only
    with caplog.at_level("INFO", logger="reset.train"):
        assert T.main(cli(tiny_llama_dir, data_dir, tmp_path)) == 0
    assert "holds the last step; exporting it without training" in caplog.text
    summary, reference = summary_of(tmp_path), summary_of(trained)
    assert summary["resumed_from_step"] == 6 and summary["eval"] == reference["eval"]
    assert summary["train_loss"] == reference["train_loss"]
    a, b = weights(tmp_path / "model"), weights(trained / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoints.exists()


def test_changed_inputs_do_not_resume_stale_checkpoints(tmp_path):
    root = tmp_path / "ck"
    for step in (2, 4):
        d = root / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text("{}")
        (d / C.COMPLETE_MARKER).write_text("{}")
    (root / "checkpoint-6").mkdir()  # incomplete
    C.prepare_checkpoint_dir(root, {"a": 1})  # no fingerprint yet: unknown provenance, start fresh
    assert C.latest_complete_checkpoint(root) is None and not C.list_checkpoints(root)
    d = root / "checkpoint-2"
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    (d / C.COMPLETE_MARKER).write_text("{}")
    (root / "checkpoint-4").mkdir()
    C.prepare_checkpoint_dir(root, {"a": 1})  # same job: keep complete, drop incomplete
    assert C.latest_complete_checkpoint(root) == d and sorted(C.list_checkpoints(root)) == [2]
    C.prepare_checkpoint_dir(root, {"a": 2})  # different job: start fresh
    assert C.latest_complete_checkpoint(root) is None


# ---------------------------------------------------------------- DeepSpeed ZeRO-3


def test_zero3_config_leaves_batch_and_precision_to_the_trainer():
    cfg = json.loads((REPO / "resources" / "deepspeed" / "zero3.json").read_text())
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert cfg[key] == "auto"
    assert cfg["bf16"]["enabled"] == "auto"
    assert "optimizer" not in cfg and "scheduler" not in cfg  # the Trainer's AdamW and cosine schedule


def test_zero3_two_ranks_match_single_process(tiny_llama_dir, data_dir, trained, tmp_path):
    """The real ZeRO-3 path: two CPU ranks over gloo, per-device 2 x 2 ranks = effective 4.
    Same data order and effective batch as the single-process run (2 x 2 accumulation)."""
    out = tmp_path / "zero3"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "reset.train", *cli(tiny_llama_dir, data_dir, out),
           "--deepspeed", str(REPO / "resources" / "deepspeed" / "zero3.json")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    zero, single = summary_of(out), summary_of(trained)
    assert zero["world_size"] == 2 and zero["gradient_accumulation_steps"] == 1 and zero["zero_stage"] == 3
    assert [e["loss"] for e in zero["train_loss"]] == pytest.approx([e["loss"] for e in single["train_loss"]],
                                                                    rel=1e-3)
    assert [r["perplexity"] for r in zero["eval"]] == pytest.approx([r["perplexity"] for r in single["eval"]],
                                                                   rel=1e-3)
    assert zero["eval"][0]["tokens"] == single["eval"][0]["tokens"]  # dev shards add up to the whole set
    # the gathered ZeRO-3 weights are a complete model that scores as recorded
    assert recomputed_perplexity(out / "model", data_dir) == pytest.approx(zero["best_perplexity"], rel=1e-4)


# ---------------------------------------------------------------- the Snakemake rule


def snakemake(workdir, *args, training=None, timeout=900):
    """Run the workflow in `workdir` as experiment "trtest" (config.yaml + training overrides)."""
    overlay = workdir / "overlay.yaml"
    overlay.write_text(json.dumps({"experiment": "trtest", "training": training or {}}))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(REPO / "config.yaml"), str(overlay), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def rule_workdir(tmp_path, tiny_llama_dir, data_dir):
    """A work directory whose pretrained models, mixtures and curated set already exist."""
    from reset.models import source_slug

    res = tmp_path / "results" / "trtest"
    pretrained = res / "models" / "pretrained" / source_slug("embedded:smollm2")
    shutil.copytree(tiny_llama_dir, pretrained)
    for mixture in ("cd", "if", "mtl"):
        d = res / "data" / "mixtures" / mixture
        d.mkdir(parents=True)
        shutil.copy(data_dir / "train.parquet", d / "train.parquet")
        shutil.copy(data_dir / "dev.parquet", d / "dev.parquet")
    (res / "curated").mkdir()
    shutil.copy(data_dir / "train.parquet", res / "curated" / "reset.parquet")
    # the shipped raw files, read by the preflight that gates every training job
    (tmp_path / "resources").symlink_to(REPO / "resources")
    return tmp_path


def shell_commands(output):
    """The train rule's shell commands in the output of `snakemake -n -p`."""
    lines = [line.strip() for line in output.splitlines() if "reset.train" in line and "--out" in line]
    return [line.removeprefix("Shell command:").strip() for line in lines]


def test_rule_wires_variants_and_gpu_launcher(rule_workdir):
    res = "results/trtest"
    plan = snakemake(rule_workdir, "-n", "-p", f"{res}/models/base_cd_if/seed1/training_summary.json",
                     f"{res}/models/instruct_mtl_reset/seed1/training_summary.json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    cmds = {c.split("--out ")[1].split()[0].split("/")[3]: c for c in shell_commands(plan.stdout)}
    assert set(cmds) == {"base_cd", "base_cd_if", "instruct_mtl", "instruct_mtl_reset"}
    assert f"--model {res}/models/base_cd/seed1 " in cmds["base_cd_if"]  # stage 2 starts from stage 1's best
    assert f"--model {res}/models/instruct_mtl/seed1 " in cmds["instruct_mtl_reset"]
    assert f"--train {res}/curated/reset.parquet --dev {res}/data/mixtures/mtl/dev.parquet" in cmds[
        "instruct_mtl_reset"]
    tr = yaml.safe_load((REPO / "config.yaml").read_text())["training"]
    assert f"--effective-batch {tr['effective_batch_cd']} " in cmds["base_cd"]
    for variant in ("base_cd_if", "instruct_mtl", "instruct_mtl_reset"):
        assert f"--effective-batch {tr['effective_batch_if']} " in cmds[variant]
    assert f"--learning-rate {tr['learning_rate']} " in cmds["instruct_mtl"]
    assert f"--learning-rate {tr['reset_learning_rate']} " in cmds["instruct_mtl_reset"]
    assert tr["reset_learning_rate"] < tr["learning_rate"]
    assert all(c.startswith("python -m reset.train ") and "--deepspeed" not in c for c in cmds.values())
    gpu = snakemake(rule_workdir, "-n", "-p", f"{res}/models/base_cd/seed1/training_summary.json",
                    "--set-resources", "train:gpu=8")
    assert gpu.returncode == 0, gpu.stderr[-3000:]
    (cmd,) = shell_commands(gpu.stdout)
    assert cmd.startswith("python -m torch.distributed.run --standalone --nproc_per_node 8 -m reset.train "
                          "--deepspeed resources/deepspeed/zero3.json ")


def test_rule_trains_two_stages(rule_workdir):
    """The real rule: base_cd then base_cd_if from base_cd's best checkpoint."""
    res = rule_workdir / "results" / "trtest"
    run = snakemake(rule_workdir, "-c2", "results/trtest/models/base_cd_if/seed1/training_summary.json",
                    training={"max_steps": 2, "save_steps": 1, "max_seq_length": 64, "learning_rate": 1e-3,
                              "effective_batch_cd": 2, "effective_batch_if": 4, "per_device_batch": 2,
                              "max_dev_examples": 4, "max_train_examples": 16})
    assert run.returncode == 0, run.stderr[-4000:]
    for variant in ("base_cd", "base_cd_if"):
        summary = json.loads((res / "models" / variant / "seed1" / "training_summary.json").read_text())
        ppl = {r["step"]: r["perplexity"] for r in summary["eval"]}
        assert sorted(ppl) == [1, 2] and summary["best_perplexity"] == min(ppl.values())
        assert (res / "trajectory" / variant / "seed1" / "first" / "model.safetensors").exists()
        assert not (res / "checkpoints" / variant / "seed1").exists()
        assert (rule_workdir / "logs" / "trtest" / "train" / variant / "seed1.log").exists()
    cd_if = json.loads((res / "models" / "base_cd_if" / "seed1" / "training_summary.json").read_text())
    assert cd_if["model_init"] == "results/trtest/models/base_cd/seed1" and cd_if["effective_batch"] == 4
