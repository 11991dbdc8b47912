"""Per-seed data collection (sampling.per_seed) end to end through curation, for two seeds.

Snakemake runs the real rules on the tiny random LLaMA (tests/e2e_config.yaml)
with sampling.per_seed: true, building only the curated sets and the cost
estimate: each seed's instruct_mtl is trained, samples, is judged and curated
under its own seed{n}/ directories, and one estimate covers both seeds' items.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from e2e_support import e2e_config, failure_report, snakemake

SEEDS = (1, 2)
EXP = "e2e_per_seed"


@pytest.fixture(scope="module")
def run(tiny_llama_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("per_seed")
    configfile = e2e_config(tiny_llama_dir, workdir)
    overlay = yaml.safe_load(configfile.read_text())
    overlay["experiment"] = EXP
    overlay["seeds"] = list(SEEDS)
    overlay["sampling"]["per_seed"] = True
    overlay["training"]["max_steps"] = 1   # the test is about the data collection, not the training
    configfile.write_text(yaml.safe_dump(overlay, sort_keys=False))
    results = workdir / "results" / EXP
    targets = [f"results/{EXP}/curated/seed{n}/{name}.parquet" for n in SEEDS for name in ("reset", "reset_s")]
    result = snakemake(workdir, configfile, *targets, f"results/{EXP}/judge_cost_estimate.json", timeout=1500)
    assert result.returncode == 0, failure_report(result, workdir)
    return workdir, configfile, results


def test_each_seed_samples_from_its_own_mtl_checkpoint(run):
    _, _, results = run
    assert not (results / "curated" / "reset.parquet").exists() and not (results / "sampling" / "shard0.parquet").exists()
    shards = {n: pd.read_parquet(results / "sampling" / f"seed{n}" / "shard0.parquet") for n in SEEDS}
    subset = pd.read_parquet(results / "sampling" / "subset.parquet")
    for frame in shards.values():   # the same prompts for both seeds, every one sampled
        assert set(frame["id"]) == set(subset["id"])
    a, b = (shards[n].sort_values(["id", "round", "setting_index"]).reset_index(drop=True) for n in SEEDS)
    assert (a[["id", "round", "setting_index", "seed"]] == b[["id", "round", "setting_index", "seed"]]).all().all()
    assert (a["text"] != b["text"]).any(), "two differently trained models sampled identical candidates"
    for n in SEEDS:
        log = (run[0] / "logs" / EXP / "sampling" / f"seed{n}" / "shard0.log").read_text()
        assert f"models/instruct_mtl/seed{n}" in log or (results / "models" / "instruct_mtl" / f"seed{n}").is_dir()


def test_each_seed_is_judged_and_curated_on_its_own_candidates(run):
    _, _, results = run
    for n in SEEDS:
        texts = set(pd.read_parquet(results / "sampling" / f"seed{n}" / "shard0.parquet")["text"])
        for name, judge in (("reset", "if"), ("reset_s", "if_supercharged")):
            judged = pd.read_parquet(results / "scores" / "candidates" / f"seed{n}" / f"{judge}.parquet")
            assert set(judged["text"]) <= texts
            curated = pd.read_parquet(results / "curated" / f"seed{n}" / f"{name}.parquet")
            assert len(curated) > 0 and {r[0] for r in curated["references"]} <= texts
            summary = json.loads((results / "curated" / f"seed{n}" / f"{name}_summary.json").read_text())
            assert summary["data"] == {"mode": "per_seed", "source_seed": n}
            # the tiny random model never stops by itself: the switch lets its cut-off answers through, counted
            assert summary["allow_truncated"] is True
            assert summary["curated_cut_off"] == int((curated["finish_reason"] == "length").sum())
            assert sum(p["cut_off"] for p in summary["pools"].values()) == summary["cut_off_candidates"]


def test_one_cost_estimate_covers_every_seeds_judge_items(run):
    _, _, results = run
    estimate = json.loads((results / "judge_cost_estimate.json").read_text())
    for judge in ("if", "if_supercharged"):
        job = estimate["judges"][judge]
        paths = [results / "scores" / "candidates" / f"seed{n}" / f"{judge}_items.parquet" for n in SEEDS]
        assert [p.split("/")[-2] for p in job["inputs"]] == [f"seed{n}" for n in SEEDS]
        items = pd.concat([pd.read_parquet(p) for p in paths])
        assert job["items"] == len(items)                               # calls x seeds ...
        assert job["unique"] == len(items.drop_duplicates(["question", "answer"]))   # ... less de-duplication
        assert job["calls"] == job["unique"] - job["cached"]            # ... less the cache


def test_each_seeds_reset_variants_train_on_their_own_set(run):
    workdir, configfile, _ = run
    plan = snakemake(workdir, configfile, "-n", "-p",
                     *[f"results/{EXP}/models/{v}/seed2/training_summary.json"
                       for v in ("instruct_mtl_reset", "instruct_reset", "instruct_mtl_reset_s")])
    assert plan.returncode == 0, plan.stderr[-3000:]
    commands = [line for line in plan.stdout.splitlines() if "reset.train" in line]
    assert len(commands) == 3
    for command in commands:
        assert f"results/{EXP}/curated/seed2/" in command and "curated/seed1" not in command
    assert any(f"--model results/{EXP}/models/instruct_mtl/seed2 " in c for c in commands)
    # nothing of the data collection is rebuilt
    assert "rule curate" not in plan.stdout and "rule sample" not in plan.stdout
