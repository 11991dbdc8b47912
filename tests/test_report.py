"""Tables, figures, provenance and the HTML report, on synthetic scored evaluation files.

The evaluation parquets are written here with known values, so every number in
the tables can be recomputed independently (plain pandas group-bys below).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reset import claims, report, tables
from reset.variants import KIND, STAGE2_START, TRAJECTORY_VARIANTS, TWO_STAGE, VARIANTS

SEEN = ["nq", "msmarco", "cnn_dailymail", "alpaca_eval", "vicuna_eval", "koala_eval"]
UNSEEN = ["bioasq", "searchqa", "wikisum"]
SEEDS = [1, 2]


def write_scored(root, variants=VARIANTS, seeds=SEEDS, points=(None,), rows=4, seed=0):
    """Scored eval parquets with random but known values (NaN where a metric does not apply)."""
    rng = np.random.default_rng(seed)
    for variant in variants:
        for s in seeds:
            for point in points:
                for dataset in SEEN + UNSEEN:
                    kind = KIND[dataset]
                    nan = [math.nan] * rows
                    frame = pd.DataFrame({
                        "id": [f"{dataset}-{i:012x}" for i in range(rows)], "dataset": dataset, "kind": kind,
                        "instruction": f"Answer the {dataset} task.", "question": "" if kind == "if" else "why?",
                        "context": "" if kind == "if" else "passage one\npassage two",
                        "references": [["ref a", "ref b"]] * rows,
                        "prediction": [f"answer {i}" for i in range(rows)],
                        "n_tokens": rng.integers(1, 48, rows), "finish_reason": "eos",
                        "if_score": rng.integers(1, 11, rows) / 10 if kind == "if" else nan,
                        "faithfulness": nan if kind == "if" else rng.random(rows),
                        "task": nan if kind == "if" else rng.random(rows),
                        "unigram_coverage": rng.random(rows) if kind == "extractive_qa" else nan,
                        "bigram_coverage": rng.random(rows) if kind == "extractive_qa" else nan,
                    })
                    if kind == "if":
                        frame.loc[0, "if_score"] = math.nan  # the judge gave no rating
                    parts = [variant, f"seed{s}"] + ([point] if point else []) + [f"{dataset}.parquet"]
                    path = root.joinpath(*parts)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    frame.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_scored(root / "eval")
    write_scored(root / "eval_trajectory", variants=TRAJECTORY_VARIANTS, points=("first", "best", "last"), seed=1)
    report.write_tables(root / "eval", list(VARIANTS), SEEDS, SEEN, UNSEEN, root / "tables", "synthetic")
    report.write_trajectory_table(root / "eval_trajectory", TRAJECTORY_VARIANTS, SEEDS, SEEN, UNSEEN,
                                  root / "tables" / "trajectory.csv", start_eval_dir=root / "eval")
    common = ["--eval-dir", str(root / "eval"), "--seeds", *map(str, SEEDS), "--seen", *SEEN, "--unseen", *UNSEEN]
    assert claims.main([*common, "--trajectory-dir", str(root / "eval_trajectory"), "--bootstrap-resamples", "200",
                        "--seed", "0", "--similarity-margin", "0.02", "--out-dir", str(root / "tables")]) == 0
    assert report.main(["examples", *common, "--variants", *VARIANTS, "--examples-per-set", "2", "--seed", "0",
                        "--out", str(root / "tables" / "examples.csv")]) == 0
    return root


def recompute(root, variant, dataset, column):
    """Per-seed means straight from the parquet files."""
    return [pd.read_parquet(root / "eval" / variant / f"seed{s}" / f"{dataset}.parquet")[column].mean()
            for s in SEEDS]


def test_main_table_has_every_variant_dataset_metric_and_macro(built):
    main = pd.read_csv(built / "tables" / "main_results.csv")
    assert list(main.columns) == ["variant", "dataset", "seen", "metric", "mean", "std", "n_seeds"]
    expected = set()
    for variant in VARIANTS:
        for dataset in SEEN + UNSEEN:
            for metric in (["if"] if KIND[dataset] == "if" else ["faithfulness", "task"]):
                expected.add((variant, dataset, metric))
        for metric in ("if", "faithfulness", "task"):
            expected |= {(variant, "macro_seen", metric), (variant, "macro_all", metric)}
        # the unseen sets are all context-dependent: no IF macro over them
        expected |= {(variant, "macro_unseen", "faithfulness"), (variant, "macro_unseen", "task")}
    got = set(zip(main.variant, main.dataset, main.metric, strict=True))
    assert got == expected and len(main) == len(expected)
    assert (main.n_seeds == 2).all()
    assert set(main[main.dataset.isin(UNSEEN)].seen) == {"unseen"}
    assert set(main[main.dataset.isin(SEEN)].seen) == {"seen"}
    assert dict(zip(main[main.dataset.str.startswith("macro")].dataset,
                    main[main.dataset.str.startswith("macro")].seen, strict=True)) == {
        "macro_seen": "seen", "macro_unseen": "unseen", "macro_all": "all"}


def test_main_table_numbers_recompute_from_parquets(built):
    main = pd.read_csv(built / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    columns = {"if": "if_score", "faithfulness": "faithfulness", "task": "task"}
    for variant in ("instruct", "base_cd_if"):
        for dataset in SEEN + UNSEEN:
            for metric in (["if"] if KIND[dataset] == "if" else ["faithfulness", "task"]):
                per_seed = recompute(built, variant, dataset, columns[metric])
                row = main.loc[(variant, dataset, metric)]
                assert row["mean"] == pytest.approx(np.mean(per_seed))
                assert row["std"] == pytest.approx(np.std(per_seed, ddof=1))
        # macro over the context-dependent unseen sets, per seed, then over seeds
        per_seed = np.mean([recompute(built, variant, d, "faithfulness") for d in UNSEEN], axis=0)
        assert main.loc[(variant, "macro_unseen", "faithfulness")]["mean"] == pytest.approx(per_seed.mean())
        assert main.loc[(variant, "macro_unseen", "faithfulness")]["std"] == pytest.approx(per_seed.std(ddof=1))
        per_seed = np.mean([recompute(built, variant, d, "task") for d in SEEN + UNSEEN if KIND[d] != "if"], axis=0)
        assert main.loc[(variant, "macro_all", "task")]["mean"] == pytest.approx(per_seed.mean())
        per_seed = np.mean([recompute(built, variant, d, "if_score") for d in SEEN if KIND[d] == "if"], axis=0)
        assert main.loc[(variant, "macro_seen", "if")]["mean"] == pytest.approx(per_seed.mean())


def test_missing_judge_rating_is_left_out_not_zero(built):
    frame = pd.read_parquet(built / "eval" / "instruct" / "seed1" / "alpaca_eval.parquet")
    assert frame["if_score"].isna().sum() == 1
    by_seed = pd.read_csv(built / "tables" / "main_results_by_seed.csv")
    row = by_seed[(by_seed.variant == "instruct") & (by_seed.seed == 1) & (by_seed.dataset == "alpaca_eval")]
    assert row["value"].item() == pytest.approx(frame["if_score"].dropna().mean())
    assert row["n"].item() == len(frame) - 1


def test_one_seed_has_no_std_and_a_failed_seed_drops_out(tmp_path):
    write_scored(tmp_path / "eval", variants=["instruct"], seeds=[3])
    rows = tables.read_eval(tmp_path / "eval", ["instruct"], [3], SEEN + UNSEEN,
                            columns=list(tables.METRIC_COLUMNS.values()))
    main, _ = tables.main_results(rows, ["instruct"], SEEN, UNSEEN)
    assert main["std"].isna().all() and (main["n_seeds"] == 1).all()
    assert tables.fmt(0.5, math.nan) == "0.500" and tables.fmt(0.5, 0.25) == "0.500 ± 0.250"
    # every rating of one set missing: that set has no value, so neither has the IF macro
    rows.loc[rows.dataset == "koala_eval", "if_score"] = math.nan
    main, _ = tables.main_results(rows, ["instruct"], SEEN, UNSEEN)
    main = main.set_index(["dataset", "metric"])
    assert main.loc[("koala_eval", "if"), "n_seeds"] == 0 and math.isnan(main.loc[("macro_all", "if"), "mean"])
    assert main.loc[("macro_all", "task"), "n_seeds"] == 1


def test_missing_eval_file_is_named(tmp_path):
    write_scored(tmp_path / "eval", variants=["instruct"], seeds=[1])
    (tmp_path / "eval" / "instruct" / "seed1" / "wikisum.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"instruct/seed1/wikisum\.parquet"):
        tables.read_eval(tmp_path / "eval", ["instruct"], [1], SEEN + UNSEEN, columns=["task"])


def test_two_stage_and_coverage_tables(built):
    main = pd.read_csv(built / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    stages = pd.read_csv(built / "tables" / "two_stage.csv")
    assert len(stages) == 3 * len(TWO_STAGE)
    for row in stages.itertuples():
        before = main.loc[(row.before, "macro_all", row.metric)]["mean"]
        after = main.loc[(row.after, "macro_all", row.metric)]["mean"]
        assert (row.before_mean, row.after_mean) == pytest.approx((before, after))
        assert row.delta == pytest.approx(after - before)
    coverage = pd.read_csv(built / "tables" / "coverage.csv")
    extractive = [d for d in SEEN + UNSEEN if KIND[d] == "extractive_qa"]
    assert set(coverage.dataset) == set(extractive)
    assert len(coverage) == len(VARIANTS) * len(extractive) * 2
    row = coverage[(coverage.variant == "instruct_mtl") & (coverage.dataset == "nq")
                   & (coverage.metric == "bigram_coverage")]
    assert row["mean"].item() == pytest.approx(np.mean(recompute(built, "instruct_mtl", "nq", "bigram_coverage")))
    lengths = pd.read_csv(built / "tables" / "lengths.csv")
    row = lengths[(lengths.variant == "base_cd") & (lengths.dataset == "searchqa")]
    assert row["mean"].item() == pytest.approx(np.mean(recompute(built, "base_cd", "searchqa", "n_tokens")))


def test_trajectory_table_covers_points(built):
    traj = pd.read_csv(built / "tables" / "trajectory.csv")
    macro = traj[traj.dataset == "macro_all"]
    for variant in TRAJECTORY_VARIANTS:
        for point in ("first", "best", "last"):
            metrics = set(macro[(macro.variant == variant) & (macro.point == point)].metric)
            assert metrics == {"if", "faithfulness", "task", "n_tokens"}
    per_seed = [pd.read_parquet(built / "eval_trajectory" / "base_cd" / f"seed{s}" / "last" / "nq.parquet")["task"]
                .mean() for s in SEEDS]
    row = traj[(traj.variant == "base_cd") & (traj.point == "last") & (traj.dataset == "nq")
               & (traj.metric == "task")]
    assert row["n_seeds"].item() == 2
    assert (row["mean"].item(), row["std"].item()) == pytest.approx((np.mean(per_seed), np.std(per_seed, ddof=1)))


def test_second_stage_starts_at_the_model_it_was_trained_from(built):
    """As the paper draws it: stage 2's first point is stage 1's best checkpoint (its main evaluation)."""
    traj = pd.read_csv(built / "tables" / "trajectory.csv")
    starts = set(zip(traj[traj.point == "start"].variant, strict=True))
    assert starts == {("base_cd_if",), ("instruct_cd",)}          # base_cd is a first stage: no start
    main = pd.read_csv(built / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    for after, before in STAGE2_START.items():
        for dataset, metric in (("macro_all", "faithfulness"), ("alpaca_eval", "if"), ("nq", "task")):
            row = traj[(traj.variant == after) & (traj.point == "start") & (traj.dataset == dataset)
                       & (traj.metric == metric)]
            assert row["mean"].item() == pytest.approx(main.loc[(before, dataset, metric), "mean"])
    assert tables.trajectory_points("base_cd_if", {("base_cd_if", "start")}) == ["start", "best", "last"]
    assert tables.trajectory_points("base_cd", {("base_cd_if", "start")}) == ["first", "best", "last"]


def test_example_generations_side_by_side(built):
    frame = pd.read_csv(built / "tables" / "examples.csv", keep_default_na=False)
    assert set(frame.dataset) == set(SEEN + UNSEEN)
    for dataset, by_set in frame.groupby("dataset"):
        assert by_set["id"].nunique() == 2 and len(by_set) == 2 * len(VARIANTS)
        assert set(by_set.variant) == set(VARIANTS)
        scored = pd.read_parquet(built / "eval" / "instruct_mtl" / f"seed{SEEDS[0]}" / f"{dataset}.parquet")
        row = by_set[by_set.variant == "instruct_mtl"].iloc[0]
        truth = scored.set_index("id").loc[row["id"]]
        assert row["prediction"] == truth["prediction"] and row["references"] == "ref a | ref b"
        column = "if_score" if KIND[dataset] == "if" else "faithfulness"
        if not (isinstance(truth[column], float) and math.isnan(truth[column])):
            assert float(row[column]) == pytest.approx(truth[column])
    # seeded: the same seed picks the same ids, and a set's pick does not depend on the other sets
    from reset.examples import pick

    ids = [f"x{i}" for i in range(50)]
    assert pick(ids, 3, 0, "nq") == pick(list(reversed(ids)), 3, 0, "nq") != pick(ids, 3, 1, "nq")
    assert len(pick(ids[:2], 3, 0, "nq")) == 2


def test_captions_have_one_source():
    """Every caption the report and the tables print comes from report/*.rst."""
    from reset import captions

    assert "best mean per column in bold" in captions.text("main_results")
    assert "<code>macro_seen</code>" in captions.html("main_results")
    assert r"\texttt{macro\_seen}" in captions.latex("main_results") and "``" not in captions.latex("main_results")
    for name in report.FIGURES:
        assert captions.text(name)
    with pytest.raises(FileNotFoundError, match="report/nothing.rst"):
        captions.rst("nothing")
    assert "SPEC" not in "".join(p.read_text() for p in captions.CAPTIONS_DIR.glob("*.rst"))


def test_markdown_latex_layout(built):
    md = (built / "tables" / "main_results.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(VARIANTS)
    header = lines[0]
    assert "*bioasq* Faith." in header and "alpaca_eval IF" in header and "macro all Task" in header
    assert header.index("koala_eval") < header.index("*bioasq*") < header.index("macro seen")
    assert all(line.count("|") == header.count("|") for line in lines)
    assert "**" in md and "±" in md
    tex = (built / "tables" / "main_results.tex").read_text()
    assert r"\multicolumn" in tex and r"\textit{bioasq}" in tex and r"instruct\_mtl\_reset\_s" in tex
    assert tex.count(r"\\") >= len(VARIANTS) + 3 and r"$\pm$" in tex
    assert r"\textbf{" in tex
    two = (built / "tables" / "two_stage.md").read_text()
    assert "CDIF" in two and "IFCD" in two and "base_cd_if" in two


def test_figures_and_html_report(built, tmp_path):
    from matplotlib.image import imread

    report.write_figures(built / "tables", built / "figures", "synthetic")
    assert report.main(["figure-trajectory", "--table", str(built / "tables" / "trajectory.csv"),
                        "--out-dir", str(built / "figures")]) == 0
    assert report.main(["figure-claims", "--table", str(built / "tables" / "claims.csv"), "--similarity-margin", "0.02",
                        "--out", str(built / "figures" / "claims_forest.png")]) == 0
    for name in ("tradeoff", "two_stage", "lengths", "trajectory", "trajectory_sets", "trajectory_lengths",
                 "claims_forest"):
        path = built / "figures" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(path)
        assert image.shape[0] > 400 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # not a blank canvas

    raw = tmp_path / "nq.json"
    raw.write_text('[{"question": "q"}]\n')
    config = {
        "experiment": "synthetic", "seeds": SEEDS,
        "models": {"base": {"source": "embedded:smollm2"}, "instruct": {"source": str(tmp_path)}},
        "datasets": {"nq": {"source": str(raw)}, "msmarco": {"source": "microsoft/ms_marco", "name": "v2.1"}},
        "data": {"split_seed": 0}, "sampling": {"source_seed": 1},
        "judges": {"if": {"provider": "openai", "model": "gpt-4", "base_url": None},
                   "if_supercharged": {"provider": "local", "model": "embedded:smollm2"},
                   "nli": {"model": "cross-encoder/nli-deberta-v3-base", "revision": "nli-rev"}},
        "evaluation": {"seen": SEEN, "unseen": UNSEEN},
    }
    prov_path = built / "provenance.json"
    assert report.main(["provenance", "--config-json", json.dumps(config), "--out", str(prov_path)]) == 0
    prov = json.loads(prov_path.read_text())
    nq = prov["datasets"]["nq"]["splits"]["all"]
    assert nq["kind"] == "local" and nq["files"][0]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert prov["datasets"]["msmarco"]["splits"]["all"]["kind"] == "hub"
    assert prov["models"]["instruct"]["kind"] == "local"
    assert {f["path"] for f in prov["models"]["instruct"]["files"]} >= {str(raw)}
    assert prov["models"]["judge:if"]["kind"] == "api"
    assert prov["report_host"]["packages"]["pandas"] == pd.__version__ and "packages" not in prov
    assert prov["models"]["nli"]["revision"] == "nli-rev"  # the NLI model's options reach its entry
    assert len(prov["git"]["commit"] or "") == 40
    assert list(prov["config"]) == list(config)  # the config as given, key order kept

    out = built / "report.html"
    report.write_html(built / "tables", built / "figures", prov_path, out, "synthetic")
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == len(report.FIGURES)
    assert "http://" not in page.replace("http://www.w3.org", "") and 'href="' not in page
    for needle in ("Main results", "Two-stage", "Checkpoint trajectories", "n-gram coverage", "Provenance",
                   prov["git"]["commit"], nq["files"][0]["sha256"], "instruct_mtl_reset_s", "<i>wikisum</i>",
                   "Example generations", "ref a | ref b", "5b_reset_if_unseen", "claims checked"):
        assert needle in page
    # the verdicts and their forest plot come first, before the raw tables
    assert page.index("Reproduction verdicts") < page.index("Figure 1.") < page.index("<h2>Main results")
    assert "Table 1.</b> Reproduction verdicts" in page
    assert page.count("Table 1.") == 1 and "Table 5." in page
    # the captions are the report/*.rst texts
    from reset import captions

    assert captions.html("main_results") in page and captions.html("trajectory_sets") in page


def test_tradeoff_axes_show_negative_faithfulness(built, tmp_path):
    from reset import figures

    main = pd.read_csv(built / "tables" / "main_results.csv")
    pick = (main.variant == "base_cd") & (main.dataset == "macro_all") & (main.metric == "faithfulness")
    main.loc[pick, ["mean", "std"]] = [-0.3, 0.1]  # SummaC-ZS = entail - contradict can be negative
    (x0, x1), (y0, y1) = figures.tradeoff(main, tmp_path / "t.png")
    assert x0 < -0.4 and x1 > 1.0 and y0 <= 0 and y1 > 1.0


def test_show_and_cli_help(built, capsys):
    assert report.show(built) == 0
    out = capsys.readouterr().out
    assert "IF score" in out and "faithfulness" in out and "bioasq*" in out and "instruct_mtl_reset_s" in out
    assert "Reproduction verdicts: 17 claims checked" in out and "5b_reset_if_unseen" in out
    assert "Report not built yet" in out or "Report:" in out
    assert report.show(built / "nowhere") == 1
    help_text = subprocess.run([sys.executable, "-m", "reset.report", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "provenance" in help_text.stdout


def _curation_summary(name, mode, source_seed, allow_truncated=False):
    pools = {pool: {"examples": 4, "candidates": 28, "cut_off": 9, "dropped_no_complete": 1, "dropped_no_score": 0,
                    "ranked": 3, "kept": 3, "kept_cut_off": 0} for pool in ("if_mix", "nq")}
    return {"name": name, "data": {"mode": mode, "source_seed": source_seed},
            "allow_truncated": allow_truncated, "pools": pools}


def test_captions_state_seen_unseen_and_how_the_reset_data_was_collected(built, tmp_path):
    shared = [_curation_summary(n, "shared", 1) for n in ("reset", "reset_s")]
    report.write_tables(built / "eval", list(VARIANTS), SEEDS, SEEN, UNSEEN, tmp_path / "tables", "x", shared)
    md = (tmp_path / "tables" / "main_results.md").read_text()
    assert "Seen sets: nq, msmarco, cnn_dailymail (training split fine-tuned on); alpaca_eval, vicuna_eval, " \
           "koala_eval (instruction following" in md
    assert "Unseen sets: bioasq, searchqa, wikisum." in md
    assert "ReSet data collected once, from instruct_mtl of seed 1" in md and "were not ranked" in md
    assert "Unseen sets: bioasq" in (tmp_path / "tables" / "coverage.tex").read_text()
    assert "ReSet data collected once" in (tmp_path / "tables" / "main_results.tex").read_text()

    seeded = [_curation_summary(n, "per_seed", s, True) for s in SEEDS for n in ("reset", "reset_s")]
    note = report.reset_data_note(seeded)
    assert note.startswith("ReSet data collected per seed") and "seeds 1, 2" in note and "were ranked" in note
    assert report.reset_data_note([{"name": "reset", "pools": {}}]).startswith("ReSet data collection mode not recorded")
    assert report.reset_data_note([]) == ""

    # the HTML report: caption and the per-pool counts of each curated set (verdicts come first in it)
    for name in ("claims.csv", "examples.csv"):
        shutil.copy(built / "tables" / name, tmp_path / "tables" / name)
    report.write_figures(tmp_path / "tables", tmp_path / "figures")
    assert report.main(["figure-claims", "--table", str(tmp_path / "tables" / "claims.csv"), "--similarity-margin",
                        "0.02", "--out", str(tmp_path / "figures" / "claims_forest.png")]) == 0
    prov = tmp_path / "provenance.json"
    prov.write_text(json.dumps({"config": {"evaluation": {"seen": SEEN, "unseen": UNSEEN}}}))
    paths = []
    for summary in seeded:
        path = tmp_path / "curated" / f"seed{summary['data']['source_seed']}" / f"{summary['name']}_summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
        paths.append(str(path))
    out = tmp_path / "report.html"
    assert report.main(["html", "--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"),
                        "--provenance", str(prov), "--experiment", "x", "--no-trajectory", "--out", str(out),
                        "--curation-summaries", *paths]) == 0
    page = out.read_text()
    assert "ReSet curated data" in page and "ReSet data collected per seed" in page
    assert "dropped: no complete" in page and "Unseen sets: bioasq, searchqa, wikisum." in page
    section = page[page.index("ReSet curated data"):page.index("Provenance")]
    assert section.count("<tr>") == 1 + len(seeded) * 2   # header + one row per set and pool
