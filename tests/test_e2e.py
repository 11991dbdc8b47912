"""End to end: the whole Snakemake DAG on a tiny random LLaMA, two seeds, toy sizes.

The tiny model stands in for the base and instruct models, both IF judges and
the NLI model. Snakemake runs in a subprocess in a temporary directory with
config.yaml overlaid by tests/e2e_config.yaml. The test then checks that every
table row and figure exists, that the main table's numbers are recomputable
from the scored evaluation parquets, and that the report is self-contained.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from e2e_support import EXP, SENTINEL_KEY, e2e_config_path, failure_report, snakemake

from reset import report
from reset.variants import KIND, STAGE2_START, TRAJECTORY_VARIANTS, VARIANTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(e2e_run):
    return e2e_run


def test_reviewer_path_builds_only_what_the_table_needs(run):
    _, _, plan = run
    assert "tables" in plan and "eval_score" in plan and "train" in plan
    for rule in ("eval_trajectory_generate", "figures", "provenance", "report"):
        assert f" {rule} " not in f" {' '.join(plan.split())} ", f"{rule} is planned for main_results.csv alone"


def test_every_table_row_and_figure_exists(run):
    _, results, _ = run
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    seen, unseen = config["evaluation"]["seen"], config["evaluation"]["unseen"]
    main = pd.read_csv(results / "tables" / "main_results.csv")
    assert list(main.columns) == ["variant", "dataset", "seen", "metric", "mean", "std", "n_seeds"]
    expected = {(v, d, m) for v in VARIANTS for d in seen + unseen
                for m in (["if"] if KIND[d] == "if" else ["faithfulness", "task"])}
    expected |= {(v, macro, m) for v in VARIANTS for macro in ("macro_seen", "macro_all")
                 for m in ("if", "faithfulness", "task")}
    expected |= {(v, "macro_unseen", m) for v in VARIANTS for m in ("faithfulness", "task")}
    assert set(zip(main.variant, main.dataset, main.metric, strict=True)) == expected
    assert (main["n_seeds"] == 2).all(), main[main["n_seeds"] != 2]
    assert main["mean"].notna().all() and main["std"].notna().all()
    for name in ("main_results", "two_stage", "coverage"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 100
    assert len(pd.read_csv(results / "tables" / "two_stage.csv")) == 6
    coverage = pd.read_csv(results / "tables" / "coverage.csv")
    assert set(coverage.dataset) == {d for d in seen + unseen if KIND[d] == "extractive_qa"}
    traj = pd.read_csv(results / "tables" / "trajectory.csv")
    points = {(v, p) for v in TRAJECTORY_VARIANTS for p in ("first", "best", "last")}
    points |= {(v, "start") for v in STAGE2_START}   # a second stage starts at stage 1's best
    assert set(zip(traj.variant, traj.point, strict=True)) == points
    for name in ("tradeoff", "two_stage", "trajectory", "trajectory_sets", "trajectory_lengths", "lengths",
                 "claims_forest"):
        assert (results / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    examples = pd.read_csv(results / "tables" / "examples.csv")
    assert set(examples.dataset) == set(seen + unseen) and set(examples.variant) == set(VARIANTS)


def test_claims_recompute_from_the_main_table(run):
    _, results, _ = run
    claims = pd.read_csv(results / "tables" / "claims.csv")
    assert len(claims) == 17 and set(claims.verdict) <= {"reproduced", "contradicted", "inconclusive"}
    main = pd.read_csv(results / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    for row in claims.itertuples():
        group = row.datasets.split(":")[0]
        if "@" in row.variant_a or group not in ("all", "seen", "unseen") or math.isnan(row.effect):
            continue
        expected = (main.loc[(row.variant_b, f"macro_{group}", row.metric), "mean"]
                    - main.loc[(row.variant_a, f"macro_{group}", row.metric), "mean"])
        assert row.effect == pytest.approx(expected, abs=1e-12)
        assert row.ci_low <= row.effect + 1e-12 and row.effect <= row.ci_high + 1e-12
    assert claims.loc[claims.claim.str.startswith("3"), "effect"].notna().all()   # trajectories were evaluated


def test_main_table_recomputes_from_eval_parquets(run):
    _, results, _ = run
    main = pd.read_csv(results / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    column = {"if": "if_score", "faithfulness": "faithfulness", "task": "task"}
    per_seed = {}
    for (variant, dataset, metric), row in main.iterrows():
        if dataset.startswith("macro_"):
            continue
        values = [pd.read_parquet(results / "eval" / variant / f"seed{s}" / f"{dataset}.parquet")[column[metric]]
                  .dropna().mean() for s in (1, 2)]
        per_seed[(variant, dataset, metric)] = values
        assert row["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert row["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    groups = {"macro_seen": config["evaluation"]["seen"], "macro_unseen": config["evaluation"]["unseen"]}
    groups["macro_all"] = groups["macro_seen"] + groups["macro_unseen"]
    for (variant, dataset, metric), row in main.iterrows():
        if not dataset.startswith("macro_"):
            continue
        members = [per_seed[(variant, d, metric)] for d in groups[dataset] if (variant, d, metric) in per_seed]
        macro = np.mean(members, axis=0)
        assert row["mean"] == pytest.approx(macro.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(macro.std(ddof=1), abs=1e-12)


def test_eval_parquets_cover_the_eval_splits(run):
    _, results, _ = run
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for dataset in config["evaluation"]["seen"] + config["evaluation"]["unseen"]:
        split = pd.read_parquet(results / "data" / dataset / "eval.parquet")
        for variant in VARIANTS:
            scored = pd.read_parquet(results / "eval" / variant / "seed2" / f"{dataset}.parquet")
            assert list(scored["id"]) == list(split["id"])
            assert {"prediction", "n_tokens", "finish_reason", "if_score", "faithfulness", "task"} <= set(scored)
    # zero-shot `instruct` is the same pretrained model for every seed: greedy outputs agree
    a = pd.read_parquet(results / "eval" / "instruct" / "seed1" / "nq.parquet")
    b = pd.read_parquet(results / "eval" / "instruct" / "seed2" / "nq.parquet")
    assert list(a["prediction"]) == list(b["prediction"])


def test_report_is_self_contained_and_snakemake_report_works(run, tmp_path):
    workdir, results, _ = run
    page = (results / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(report.FIGURES)
    assert page.index("Reproduction verdicts") < page.index("<h2>Main results")
    for needle in ("Main results", "Two-stage", "Checkpoint trajectories", "Provenance", "sha256",
                   "Example generations", "claims checked",
                   "Configuration used", "instruct_mtl_reset_s"):
        assert needle in page
    prov = json.loads((results / "provenance.json").read_text())
    assert prov["config"]["experiment"] == EXP and prov["seeds"]["training"] == [1, 2]
    assert all(split["kind"] == "local" and split["files"] for entry in prov["datasets"].values()
               for split in entry["splits"].values())
    shown = subprocess.run([sys.executable, "-m", "reset.report", "show", str(results)],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "Report:" in shown.stdout and "macro all" in shown.stdout
    # nothing left to do, and Snakemake's own report builds from the report() outputs
    again = snakemake(workdir, e2e_config_path(workdir), "--dry-run", "--quiet", "rules")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout
    html = tmp_path / "snakemake_report.html"
    made = snakemake(workdir, e2e_config_path(workdir), "--report", str(html))
    assert made.returncode == 0, made.stderr[-3000:]
    assert html.stat().st_size > 10_000


EVAL_RULES = ("eval_generate", "eval_score", "eval_trajectory_generate", "eval_trajectory_score")


def test_tables_are_byte_identical_without_the_evaluation_store(run, tmp_path):
    """The run evaluated each distinct model once (zero-shot `instruct` is one model for both seeds,
    `base_cd` and `instruct_cd` of a seed are one model); evaluating every variant for itself, with
    the store turned off, writes every table byte for byte the same."""
    workdir, results, _ = run
    logs = workdir / "logs" / EXP
    reused = {str(p.relative_to(logs)) for p in logs.rglob("*.log") if "reused:" in p.read_text(errors="replace")}
    assert {"eval/instruct/seed1/generate_shard0.log", "eval/instruct/seed2/generate_shard0.log"} & reused
    assert {"eval/instruct/seed1/score.log", "eval/instruct/seed2/score.log"} & reused
    summaries = [json.loads((results / "eval" / v / "seed1" / "summary.json").read_text())["store"]
                 for v in ("base_cd", "instruct_cd")]
    # one scoring key for the twins; at least one of them reused it (both do when a third model of the
    # run, say a trajectory point, generated the same text first: scores follow the generations)
    assert summaries[0]["key"] == summaries[1]["key"] and any(s["reused"] for s in summaries)

    copy = tmp_path / "without_store"   # the shared run stays as it is
    shutil.copytree(workdir, copy, symlinks=True)
    shutil.rmtree(copy / "results" / EXP / "eval_store")
    result = snakemake(copy, e2e_config_path(copy), "--forcerun", *EVAL_RULES, env={"RESET_EVAL_STORE": "0"})
    assert result.returncode == 0, failure_report(result, copy)
    assert not (copy / "results" / EXP / "eval_store").exists()
    assert not any("reused:" in p.read_text(errors="replace") for p in (copy / "logs" / EXP / "eval").rglob("*.log"))
    tables = sorted(p.name for p in (results / "tables").iterdir())
    assert "main_results.csv" in tables and "trajectory.csv" in tables
    for name in tables:
        assert (copy / "results" / EXP / "tables" / name).read_bytes() == (results / "tables" / name).read_bytes(), name


def test_every_computing_job_leaves_a_sidecar_the_report_gathers(run):
    _, results, _ = run
    sidecars = {p.relative_to(results).as_posix(): json.loads(p.read_text())
                for p in results.rglob("*.provenance.json")}
    jobs = {side["job"] for side in sidecars.values()}
    assert {"reset.models prepare", "reset.data prepare", "reset.data mixture", "reset.train", "reset.sample subset",
            "reset.sample sweep", "reset.judge", "reset.curate score", "reset.curate select",
            "reset.evaluate generate", "reset.evaluate score"} <= jobs, jobs
    for variant in VARIANTS:
        if VARIANTS[variant]["data"]:
            assert f"models/{variant}/seed1.provenance.json" in sidecars
    train = sidecars["models/instruct_mtl/seed1.provenance.json"]
    assert train["settings"]["seed"] == 1 and train["read"]["models"] and train["read"]["datasets"]
    assert {m.get("source") for m in train["read"]["models"]} != {None}
    for rel, side in sidecars.items():
        assert side["wall_seconds"] >= 0 and side["host"]["hostname"] and side["settings_hash"], rel
        assert SENTINEL_KEY not in json.dumps(side), rel
    prov = json.loads((results / "provenance.json").read_text())
    assert {j["sidecar"] for j in prov["jobs"]} == set(sidecars)
    assert "packages" in prov["report_host"] and "hardware" in prov["report_host"]
    page = (results / "report.html").read_text()
    assert "<h3>Jobs</h3>" in page and train["settings_hash"] in page and "Report host" in page


GOLDEN = Path(__file__).parent / "golden" / "e2e_outputs.json"


def test_curated_sets_and_main_table_keep_their_bytes(run):
    """Refactoring keeps results: the curated sets and main_results.csv match the recorded digests.

    A change meant to alter them (a new filter, a fixed metric) updates tests/golden/e2e_outputs.json
    in the same commit (RESET_UPDATE_GOLDEN=1 rewrites it from this run) and says why.
    """
    import hashlib
    import os

    _, results, _ = run
    golden = json.loads(GOLDEN.read_text())
    now = {rel: hashlib.sha256((results / rel).read_bytes()).hexdigest() for rel in golden["sha256"]}
    if os.environ.get("RESET_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({**golden, "sha256": now}, indent=2) + "\n")
    changed = sorted(rel for rel in now if now[rel] != golden["sha256"][rel])
    assert not changed, f"{', '.join(changed)} changed bytes (see this test's docstring if that is intended)"
