"""The shipped demo raw files go through every filter, and the Snakemake data rules work offline."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from reset.data import prepare_dataset, write_prepared
from reset.variants import DATASETS, IF_EVAL, IF_TRAIN, KIND, SPLITS

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

# Every drop reason the demo files are written to exercise.
EXPECTED_DROPS = {
    "dolly": {"has_context", "duplicate", "empty_instruction", "empty_response", "missing_response"},
    "sharegpt": {"short_response", "duplicate", "missing_conversations", "no_human_gpt_pair"},
    "self_instruct": {"duplicate", "empty_instruction", "empty_response", "missing_completion"},
    "oasst1": {"prompter_message", "few_quality_ratings", "low_quality", "missing_text", "no_labels",
               "other_language", "parent_not_found", "parent_not_prompter"},
    "alpaca_eval": {"seen_in_training", "duplicate", "missing_instruction", "over_eval_cap"},
    "vicuna_eval": {"seen_in_training", "bad_turns", "over_eval_cap"},
    "koala_eval": {"seen_in_training", "empty_instruction", "over_eval_cap"},
    "nq": {"answer_not_in_passages", "missing_ctxs", "no_answer"},
    "bioasq": {"answer_not_in_passages", "empty_question", "over_eval_cap"},
    "searchqa": {"answer_not_in_passages", "missing_answers", "over_eval_cap"},
    "msmarco": {"no_well_formed_answer", "duplicate", "missing_passages"},
    "cnn_dailymail": {"duplicate", "empty_highlights"},
    "wikisum": {"empty_summary", "missing_article", "over_eval_cap"},
}


def settings(dataset):
    data, cfg = CONFIG["data"], CONFIG["datasets"][dataset]
    cap = None
    if "eval" in SPLITS[dataset]:
        cap = cfg.get("eval_cap") or data["eval_cap_if" if KIND[dataset] == "if" else "eval_cap_context"]
    return {"split_seed": data["split_seed"], "dev_fraction": data["dev_fraction"], "dev_min": data["dev_min"],
            "eval_fraction": data["eval_fraction"], "eval_cap": cap, "max_passages": data["max_passages"],
            "lang": cfg.get("lang", "en")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-data")
    reports = {}
    cwd = os.getcwd()
    os.chdir(REPO)  # sources in config.yaml are relative to the repository
    try:
        for dataset in IF_TRAIN + [d for d in DATASETS if d not in IF_TRAIN]:
            seen = [out / d / f"{s}.parquet" for d in IF_TRAIN for s in SPLITS[d]] if dataset in IF_EVAL else []
            splits, report = prepare_dataset(dataset, CONFIG["datasets"][dataset]["source"], settings(dataset), seen)
            write_prepared(splits, report, out / dataset)
            reports[dataset] = report
    finally:
        os.chdir(cwd)
    return out, reports


@pytest.mark.parametrize("dataset", DATASETS)
def test_demo_file_exercises_its_filters(prepared, dataset):
    out, reports = prepared
    report = reports[dataset]
    assert report["read"] == report["kept"] + sum(report["dropped"].values())
    assert set(report["dropped"]) == EXPECTED_DROPS[dataset]
    assert set(report["splits"]) == set(SPLITS[dataset]) and all(n > 0 for n in report["splits"].values())
    written = json.loads((out / dataset / "filter_report.json").read_text())
    assert written == json.loads(json.dumps(report))


def test_demo_sizes_are_enough_for_the_pipeline(prepared):
    _, reports = prepared
    for dataset in IF_TRAIN + ["nq", "msmarco", "cnn_dailymail"]:
        assert reports[dataset]["splits"]["train"] >= 14, dataset
    for dataset, report in reports.items():
        if SPLITS[dataset] == ["eval"]:
            # at least six examples survive the filters before the eval cap
            assert report["kept"] + report["dropped"].get("over_eval_cap", 0) >= 6, dataset


def test_demo_contexts_are_short(prepared):
    import pyarrow.parquet as pq

    out, _ = prepared
    for dataset in DATASETS:
        for split in SPLITS[dataset]:
            for row in pq.read_table(out / dataset / f"{split}.parquet").to_pylist():
                assert len(row["context"].split()) < 120, (dataset, row["id"])


# ---------------------------------------------------------------- Snakemake


def snakemake(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    exe = Path(sys.executable).parent / "snakemake"
    return subprocess.run([str(exe), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_paper_dry_run_needs_no_network():
    targets = [f"results/paper/data/{d}/filter_report.json" for d in DATASETS]
    targets += [f"results/paper/data/mixtures/{m}/train.parquet" for m in ("if", "cd", "mtl")]
    proc = snakemake("-n", *targets, "--configfile", "experiments/paper.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("prepare_dataset", "prepare_dataset_cd", "prepare_dataset_eval", "build_mixture"):
        assert rule in proc.stdout, proc.stdout


def test_snakemake_prepares_one_dataset_offline():
    experiment = f"pytest-data-{uuid.uuid4().hex[:8]}"
    try:
        proc = snakemake("-c1", f"results/{experiment}/data/wikisum/filter_report.json",
                         "--config", f"experiment={experiment}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((REPO / "results" / experiment / "data" / "wikisum" / "filter_report.json").read_text())
        assert report["kept"] == CONFIG["data"]["eval_cap_context"]
        assert (REPO / "logs" / experiment / "data" / "wikisum.log").exists()
        assert (REPO / "benchmarks" / "runs" / experiment / "data" / "wikisum.tsv").exists()
    finally:
        for root in ("results", "logs", "benchmarks/runs"):
            shutil.rmtree(REPO / root / experiment, ignore_errors=True)
