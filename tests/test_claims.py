"""Reproduction verdicts (reset.claims): the bootstrap against closed forms, the verdict rule,
and claims.csv recomputed from synthetic scored evaluation parquets."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_report import SEEDS, SEEN, UNSEEN, write_scored

from reset import claims, report
from reset.variants import KIND, TRAJECTORY_VARIANTS, VARIANTS

RESAMPLES = 300


def effects(values, keys, resamples, seed=0):
    boot, weights = claims.bootstrap(values, resamples, seed)
    return claims.macro_effect(boot, weights, keys, 0, 1)


def test_bootstrap_matches_closed_form_for_examples_and_seeds():
    """d[s, i] = delta + u_s + e_i: the resampled effect has mean delta + mean(u) + mean(e) and
    variance var(u)/S + var(e)/n (plug-in variances; seeds and examples are drawn independently)."""
    rng = np.random.default_rng(7)
    n, seeds, delta = 400, 5, 0.3
    e = rng.normal(0, 0.5, n)
    e -= e.mean()
    u = np.array([-0.2, -0.05, 0.0, 0.1, 0.15])
    u -= u.mean()
    a = rng.random((n, seeds))                                   # anything: it cancels in the pairing
    b = a + delta + u[None, :] + e[:, None]
    values = {("set", "m"): np.stack([a, b], axis=1)}            # [n, 2 models, S]
    got = effects(values, [("set", "m")], 20000)
    expected_sd = math.sqrt(np.mean(u ** 2) / seeds + np.mean(e ** 2) / n)
    assert got.mean() == pytest.approx(delta, abs=0.1 * expected_sd)
    assert got.std() == pytest.approx(expected_sd, rel=0.04)
    low, high, p, used = claims.interval(got)
    assert used == 20000 and p < 0.001
    # the percentile interval of a near-normal bootstrap is delta ± 1.96 se
    assert low == pytest.approx(delta - 1.96 * expected_sd, abs=0.15 * expected_sd)
    assert high == pytest.approx(delta + 1.96 * expected_sd, abs=0.15 * expected_sd)


def test_bootstrap_macro_over_sets_matches_closed_form():
    """The macro over D sets of independent example draws: variance sum(var_d / n_d) / D^2."""
    rng = np.random.default_rng(3)
    sizes, sds = [50, 200, 120], [0.4, 0.1, 0.25]
    values, variance = {}, 0.0
    for k, (n, sd) in enumerate(zip(sizes, sds, strict=True)):
        diff = rng.normal(0.05 * k, sd, n)
        a = rng.random((n, 1))
        values[(f"set{k}", "m")] = np.stack([a, a + diff[:, None]], axis=1)
        variance += np.mean((diff - diff.mean()) ** 2) / n
    truth = np.mean([v[:, 1, 0].mean() - v[:, 0, 0].mean() for v in values.values()])
    got = effects(values, list(values), 20000, seed=5)
    assert got.mean() == pytest.approx(truth, abs=0.02 * math.sqrt(variance))
    assert got.std() == pytest.approx(math.sqrt(variance) / len(sizes), rel=0.04)
    point, ones = claims.point_means(values)
    assert claims.macro_effect(point, ones, list(values), 0, 1)[0] == pytest.approx(truth)


def test_missing_scores_are_left_out_not_zero():
    values = {("set", "m"): np.array([[[0.2], [0.4]], [[np.nan], [0.8]], [[0.6], [np.nan]]])}
    point, ones = claims.point_means(values)
    # a: mean(0.2, 0.6) = 0.4; b: mean(0.4, 0.8) = 0.6
    assert claims.macro_effect(point, ones, [("set", "m")], 0, 1)[0] == pytest.approx(0.2)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    values = {("s", "m"): rng.random((30, 2, 3))}
    first = effects(values, [("s", "m")], 700, seed=11)
    assert np.array_equal(first, effects(values, [("s", "m")], 700, seed=11))
    assert not np.array_equal(first, effects(values, [("s", "m")], 700, seed=12))


@pytest.mark.parametrize(("rule", "low", "high", "expected"), [
    ("increase", 0.01, 0.2, "reproduced"),
    ("increase", -0.2, -0.01, "contradicted"),
    ("increase", -0.01, 0.2, "inconclusive"),
    ("decrease", -0.2, -0.01, "reproduced"),
    ("decrease", 0.01, 0.2, "contradicted"),
    ("decrease", -0.2, 0.0, "inconclusive"),       # touching 0 does not exclude it
    ("similar_or_better", -0.019, 0.3, "reproduced"),
    ("similar_or_better", -0.3, -0.021, "contradicted"),
    ("similar_or_better", -0.05, 0.01, "inconclusive"),
    ("increase", math.nan, math.nan, "inconclusive"),
])
def test_verdict_rule(rule, low, high, expected):
    assert claims.verdict(rule, low, high, margin=0.02) == expected


def test_claim_catalogue_is_consistent():
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids)) == 17
    assert {i.split("_")[0][0] for i in ids} == set("1234567")
    five = [c for c in claims.CLAIMS if c.id.startswith("5")]
    assert {(c.metric, c.group) for c in five} == {(m, g) for m in ("if", "faithfulness") for g in ("seen", "unseen")}
    for c in claims.CLAIMS:
        for label in (c.a, c.b):
            variant, _, point = label.partition("@")
            assert variant in VARIANTS and point in ("", "first", "best", "last")
            assert not point or variant in TRAJECTORY_VARIANTS
        assert c.rule in ("increase", "decrease", "similar_or_better") and c.group in claims.GROUPS
    assert [c.paper_value for c in claims.CLAIMS if not math.isnan(c.paper_value)] == [pytest.approx(0.26)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    write_scored(root / "eval", rows=6)
    write_scored(root / "eval_trajectory", variants=TRAJECTORY_VARIANTS, points=("first", "best", "last"), seed=1,
                 rows=6)
    report.write_tables(root / "eval", list(VARIANTS), SEEDS, SEEN, UNSEEN, root / "tables")
    argv = ["--eval-dir", str(root / "eval"), "--trajectory-dir", str(root / "eval_trajectory"),
            "--seeds", *map(str, SEEDS), "--seen", *SEEN, "--unseen", *UNSEEN, "--bootstrap-resamples", str(RESAMPLES),
            "--seed", "4", "--similarity-margin", "0.02", "--out-dir", str(root / "tables")]
    assert claims.main(argv) == 0
    return root, argv


def test_claims_csv_shape_and_effects_equal_main_table(run):
    root, _ = run
    frame = pd.read_csv(root / "tables" / "claims.csv")
    assert list(frame.columns) == claims.COLUMNS
    assert list(frame["claim"]) == [c.id for c in claims.CLAIMS]
    assert set(frame["verdict"]) <= set(claims.VERDICTS)
    main = pd.read_csv(root / "tables" / "main_results.csv").set_index(["variant", "dataset", "metric"])
    for claim, row in zip(claims.CLAIMS, frame.itertuples(), strict=True):
        if claim.needs_trajectory or claim.group not in ("all", "seen", "unseen"):
            continue
        if (claim.b, f"macro_{claim.group}", claim.metric) not in main.index:
            assert math.isnan(row.effect) and row.note.startswith("not tested")   # no unseen IF set
            continue
        expected = (main.loc[(claim.b, f"macro_{claim.group}", claim.metric), "mean"]
                    - main.loc[(claim.a, f"macro_{claim.group}", claim.metric), "mean"])
        assert row.effect == pytest.approx(expected)
        assert row.ci_low <= row.effect <= row.ci_high and 0 < row.p_value <= 1
        assert row.n_seeds == len(SEEDS)
    md = (root / "tables" / "claims.md").read_text()
    assert "17 claims checked" in md and "inconclusive" in md and "300 resamples" in md
    tex = (root / "tables" / "claims.tex").read_text()
    assert r"\label{tab:claims}" in tex and r"5b\_reset\_if\_unseen" in tex


def independent_recompute(root, claim, seen, unseen, seeds, resamples, seed):
    """docs/results.md's procedure written out plainly: per resample, draw seeds, then each set's
    examples (sets in evaluation.seen + unseen order), and recompute both macros."""
    datasets = [*seen, *unseen]
    column = {"if": "if_score", "faithfulness": "faithfulness", "task": "task"}[claim.metric]

    def frame(label, s, dataset):
        variant, _, point = label.partition("@")
        base = root / ("eval_trajectory" if point else "eval") / variant / f"seed{s}"
        return pd.read_parquet((base / point if point else base) / f"{dataset}.parquet").set_index("id")

    members = claims.group_sets(claim.group, claim.metric, seen, unseen)
    ids = {d: sorted(frame(claim.a, seeds[0], d).index) for d in datasets}
    # each model's scores in sorted-id order (NaN = no score)
    data = {(label, s, d): frame(label, s, d)[column].reindex(ids[d]).to_numpy()
            for label in (claim.a, claim.b) for s in seeds for d in datasets}
    rng = np.random.default_rng(seed)
    out = []
    assert resamples <= claims.CHUNK  # one chunk: the seed draw, then each set's draw
    seed_draw = rng.integers(0, len(seeds), size=(resamples, len(seeds))) if len(seeds) > 1 else None
    example_draw = {d: rng.integers(0, len(ids[d]), size=(resamples, len(ids[d]))) for d in datasets}
    for b in range(resamples):
        drawn_seeds = [seeds[k] for k in seed_draw[b]] if seed_draw is not None else seeds
        macros = []
        for label in (claim.a, claim.b):
            per_seed = [np.mean([np.nanmean(data[(label, s, d)][example_draw[d][b]]) for d in members])
                        for s in drawn_seeds]
            macros.append(np.mean(per_seed))
        out.append(macros[1] - macros[0])
    return np.quantile(out, [0.025, 0.975])


def test_interval_recomputes_from_parquets_by_the_documented_procedure(run):
    root, _ = run
    frame = pd.read_csv(root / "tables" / "claims.csv").set_index("claim")
    for claim in claims.CLAIMS:
        if claim.id not in ("1a_cdif_faithfulness", "3b_cd_extractive_task", "5a_reset_if_seen"):
            continue
        low, high = independent_recompute(root, claim, SEEN, UNSEEN, SEEDS, RESAMPLES, 4)
        assert (frame.loc[claim.id, "ci_low"], frame.loc[claim.id, "ci_high"]) == pytest.approx((low, high))


def test_clear_effects_are_reproduced_or_contradicted(tmp_path):
    write_scored(tmp_path / "eval", rows=40)
    write_scored(tmp_path / "eval_trajectory", variants=TRAJECTORY_VARIANTS, points=("first", "best", "last"),
                 seed=1, rows=40)

    def shift(variant, column, by, point=None):
        for s in SEEDS:
            for d in SEEN + UNSEEN:
                base = tmp_path / ("eval_trajectory" if point else "eval") / variant / f"seed{s}"
                path = (base / point if point else base) / f"{d}.parquet"
                frame = pd.read_parquet(path)
                reference = pd.read_parquet(tmp_path / "eval" / "base_cd" / f"seed{s}" / f"{d}.parquet")
                frame[column] = reference[column] + by       # base_cd + by: a paired shift
                frame.to_parquet(path, index=False)

    shift("base_cd_if", "faithfulness", -0.2)    # 1a claimed decrease: reproduced
    shift("base_cd_if", "if_score", -0.2)        # 1b claimed increase: contradicted
    frame = claims.check_claims(tmp_path / "eval", SEEDS, SEEN, UNSEEN, 200, 0, 0.02,
                                trajectory_dir=None).set_index("claim")
    assert frame.loc["1a_cdif_faithfulness", "verdict"] == "reproduced"
    assert frame.loc["1a_cdif_faithfulness", "effect"] == pytest.approx(-0.2)
    assert frame.loc["1b_cdif_if", "verdict"] == "contradicted"
    assert frame.loc["1a_cdif_faithfulness", "p_value"] == pytest.approx(2 / 201)
    # without trajectories the checkpoint claims are reported, not tested
    for claim in ("3a_cd_extractive_faithfulness", "3b_cd_extractive_task", "3c_cd_abstractive_faithfulness"):
        assert frame.loc[claim, "verdict"] == "inconclusive" and "trajectories" in frame.loc[claim, "note"]


def test_mismatched_examples_and_missing_files_are_named(tmp_path):
    write_scored(tmp_path / "eval", variants=["instruct_mtl", "instruct_mtl_reset"], rows=4)
    path = tmp_path / "eval" / "instruct_mtl_reset" / "seed2" / "wikisum.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "id"] = "wikisum-other"
    frame.to_parquet(path, index=False)
    five = [c for c in claims.CLAIMS if c.id.startswith("5")]
    with pytest.raises(ValueError, match=r"wikisum: instruct_mtl_reset seed 2 was evaluated on other examples"):
        claims.check_claims(tmp_path / "eval", SEEDS, SEEN, UNSEEN, 10, 0, 0.02, claims=five)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"instruct_mtl_reset/seed2/wikisum\.parquet"):
        claims.check_claims(tmp_path / "eval", SEEDS, SEEN, UNSEEN, 10, 0, 0.02, claims=five)


def test_cli_help_and_error_exit(tmp_path, capsys):
    done = subprocess.run([sys.executable, "-m", "reset.claims", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--bootstrap-resamples" in done.stdout and "paired bootstrap" in done.stdout
    argv = ["--eval-dir", str(tmp_path / "nowhere"), "--seeds", "1", "--seen", "nq", "--bootstrap-resamples", "100",
            "--seed", "0", "--similarity-margin", "0.02", "--out-dir", str(tmp_path / "tables")]
    done = subprocess.run([sys.executable, "-m", "reset.claims", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and "nowhere/base_cd/seed1/nq.parquet does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tables" / "claims.csv").exists()


def test_kinds_of_groups():
    assert claims.group_sets("extractive", "faithfulness", SEEN, UNSEEN) == ["nq", "bioasq", "searchqa"]
    assert claims.group_sets("abstractive", "faithfulness", SEEN, UNSEEN) == ["msmarco", "cnn_dailymail", "wikisum"]
    assert claims.group_sets("unseen", "if", SEEN, UNSEEN) == []
    assert all(KIND[d] == "if" for d in claims.group_sets("all", "if", SEEN, UNSEEN))


def test_report_says_why_verdicts_are_inconclusive():
    frame = pd.DataFrame({"verdict": ["inconclusive", "inconclusive", "reproduced", "inconclusive"],
                          "ci_low": [-0.1, -0.12, 0.1, math.nan], "ci_high": [0.1, 0.08, 0.3, math.nan],
                          "effect": [0.025, -0.025, 0.2, math.nan], "n_examples": [12, 12, 12, 0],
                          "n_seeds": [1, 1, 1, 1]})
    text = report.why_inconclusive(frame)
    # two of the three tested rows; interval 0.2 wide = half-width 0.1 = 4 x the effect -> 16 x the examples
    assert text.startswith("2 of 3 tested claims are inconclusive") and "median 0.200" in text
    assert "about 16× the examples" in text and "1 seed)" in text
    assert report.why_inconclusive(frame[frame.verdict == "reproduced"]) == ""
