"""Smoke tests of the benchmark entry points at minimal sizes (never timed: speed lives in `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # the benchmarks package lives beside reset, not installed

from benchmarks import dedup, demo, gpu, gpu_sample, gpu_train, sampling, summac_zs, workflow  # noqa: E402
from benchmarks.run import fitting_layers  # noqa: E402

REFERENCE_PYTHON = summac_zs.REFERENCE_ENV / "bin" / "python"


def _has_reference_env() -> bool:
    return REFERENCE_PYTHON.exists() and subprocess.run(
        [str(REFERENCE_PYTHON), "-c", "import summac"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_reference_env(), reason="no summac reference env (scripts/summac_parity.sh --setup-only)")
def test_summac_both_sides_score_the_same():
    record = summac_zs.run(examples=2, rounds=1, shape="tiny", repeats=1)
    assert record["scores_equal"], record["max_abs_score_diff"]
    assert record["candidates"] == 14
    assert record["unique_pairs"] < record["pairs"]   # the greedy repeats share their pairs
    assert set(record["ratio_by_path"]) == {"per_example", "batched"}
    assert record["ratio"] == min(record["ratio_by_path"].values())


def test_summac_workload_is_sweep_shaped():
    rows = summac_zs.workload(3, rounds=2)
    assert len(rows) == 3 * 2 * 7
    counts = summac_zs.pair_counts(rows)
    assert counts["unique_candidates"] < counts["candidates"]
    assert all(r["prediction"].strip() for r in rows)


def test_workflow_dry_run_imports_nothing_heavy():
    record = workflow.run(repeats=1)
    assert record["jobs"] > 100
    assert record["heavy_imported_at_parse"] == []
    assert "reset.variants" in record["reset_modules_ms"]


def test_sampling_entry_point(smollm2_dir):
    record = sampling.run(examples=1, max_new_tokens=4, repeats=1)
    assert record["rows"] == 7
    assert record["greedy_match"]
    assert record["ours"]["tokens"][0] > 0 and record["naive"]["tokens"][0] > 0


def _write_run(results: Path, experiment: str = "t") -> None:
    import pandas as pd

    base = results / experiment
    (base / "scores" / "candidates").mkdir(parents=True)
    (base / "sampling").mkdir(parents=True)
    for name, (cands, unique) in {"if": (7, 5), "if_supercharged": (14, 10), "faithfulness": (7, 5),
                                  "task": (14, 12)}.items():
        (base / "scores" / "candidates" / f"{name}_dedup.json").write_text(
            json.dumps({"candidates": cands, "unique": unique, "saved": cands - unique}))
    context = "The bridge will close for repairs in May. A ferry will run every hour. Shops fear fewer visitors."
    subset = pd.DataFrame([{"id": "x1", "dataset": "cnn_dailymail", "kind": "summarization", "instruction": "",
                            "context": context, "question": "", "references": ["The bridge closes in May."],
                            "prompt": "p", "pool": "cnn_dailymail"}])
    subset.to_parquet(base / "sampling" / "subset.parquet")
    texts = ["The bridge closes in May for repairs."] * 3 + ["A ferry will run every hour instead of it.",
                                                             "The bridge closes in May for repairs. Shops are sad."]
    cands = pd.DataFrame([{"id": "x1", "dataset": "cnn_dailymail", "kind": "summarization", "pool": "cnn_dailymail",
                           "round": 1, "param": "temperature", "value": 0.1 * (i + 1), "setting_index": i,
                           "seed": i, "text": t, "n_tokens": 8, "finish_reason": "eos"} for i, t in enumerate(texts)])
    cands.to_parquet(base / "sampling" / "shard0.parquet")


def test_dedup_counts(tmp_path):
    _write_run(tmp_path)
    record = dedup.run("t", build_missing=False, results=tmp_path)
    assert record["judge_calls"]["if"]["saved"] == 2
    assert record["judge_calls_saved_share"] == round(6 / 21, 4)
    pairs = record["nli_pairs"]
    # 3 context sentences; answers with 1, 1, 1, 1, 2 sentences -> 18 pairs, 12 after candidate de-dup
    assert (pairs["pairs"], pairs["after_candidate_dedup"]) == (18, 12)
    assert pairs["after_pair_cache"] == 9   # the last answer's first sentence repeats the first answer


def test_dedup_missing_summaries_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="if_dedup.json"):
        dedup.run("absent", build_missing=False, results=tmp_path)


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs GNU time")
def test_demo_measurement_parts(tmp_path):
    grow = "x = bytearray(80 * 2**20); import time; time.sleep(2.5)"
    proc = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-c", grow], stderr=subprocess.PIPE, text=True)
    with demo.TreeMemory(proc.pid, interval=0.2) as memory:
        _, stderr = proc.communicate()
    timing = demo.parse_time_v(stderr)
    assert timing["exit_status"] == 0 and timing["wall_s"] >= 2
    assert timing["max_rss_kb"] > 80 * 1024
    assert memory.peak_kb > 80 * 1024
    (tmp_path / "train" / "base_cd").mkdir(parents=True)
    (tmp_path / "train" / "base_cd" / "seed1.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t900.5\n")
    (tmp_path / "report.tsv").write_text("s\th:m:s\tmax_rss\n1.0\t0:00:01\t100\n")
    assert demo.stage_table(tmp_path) == {"report": {"jobs": 1, "job_s": 1.0, "max_rss_mib": 100.0},
                                          "train": {"jobs": 1, "job_s": 12.5, "max_rss_mib": 900.5}}


def test_gpu_benchmarks_on_cpu():
    if gpu.cuda_available():
        pytest.skip("a CUDA device is present; make bench measures it")
    assert gpu_train.run()["skipped"].startswith("no CUDA device")
    assert gpu_sample.run()["skipped"].startswith("no CUDA device")
    # the same training code on CPU: ZeRO-3 over gloo, tiny shape, loss finite and falling
    import torch

    before = {k: os.environ.get(k) for k in gpu_train.DIST_VARS}
    record = gpu_train.run(shape="tiny", seq_len=32, steps=2, warmup=1, device="cpu")
    # the one-process group is gone and RANK/MASTER_PORT are not left for later subprocesses
    assert {k: os.environ.get(k) for k in gpu_train.DIST_VARS} == before
    assert not torch.distributed.is_initialized()
    assert record["zero_stage"] == 3 and record["tokens_per_s"] > 0
    assert record["loss_first_last"][1] < record["loss_first_last"][0]


def test_mfu_arithmetic():
    config = gpu.llama_config("llama-7b")
    total, matmul = gpu_train.parameter_count(config)
    assert 6.7e9 < total < 6.8e9   # LLaMA-7B has 6.74B parameters
    assert total - matmul == 32000 * 4096
    assert fitting_layers(8 * 80 * 2 ** 30) == 32
    assert 8 <= fitting_layers(80 * 2 ** 30) < 32
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and gpu.peak_tflops("Some GPU") is None


def test_run_prints_one_json_line_each():
    out = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "demo", "gpu_train_mfu"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["name"] for r in records] == ["environment", "demo", "gpu_train_mfu"]
    assert records[0]["commit"] != "" and records[0]["machine"]["cpus"] >= 1
