"""reset.curate: de-duplication, weighted ranking, missing IF scores and the curated sets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from reset.curate import attach_scores, dropped_reasons, main, rank, unique_pairs, weighted_total
from reset.prompts import render_prompt

IF_WEIGHT = 2.0


def recompute_chosen(cands: pd.DataFrame, if_weight: float, allow_truncated: bool = False) -> pd.Series:
    """The chosen flags as the paper defines them, recomputed from a candidates file alone.

    total = task + w * (1_IF * if_score + 1_CD * faithfulness); top-1 per example;
    ties go to the lowest (round, setting_index); unscored candidates never win, nor do
    candidates cut off at max_new_tokens unless allow_truncated.
    """
    chosen = pd.Series(False, index=cands.index)
    for _, group in cands.groupby("id"):
        best, best_key = None, None
        for idx, row in group.iterrows():
            side = row["if_score"] if row["kind"] == "if" else row["faithfulness"]
            if pd.isna(row["task"]) or pd.isna(side):
                continue
            if row["finish_reason"] == "length" and not allow_truncated:
                continue
            total = row["task"] + if_weight * side
            key = (-total, row["round"], row["setting_index"])
            if best_key is None or key < best_key:
                best, best_key = idx, key
        if best is not None:
            chosen[best] = True
    return chosen


def _cand(ex_id, kind, round_no, index, text, pool="if_mix", finish_reason="eos"):
    return {"id": ex_id, "dataset": ex_id.split("-")[0], "kind": kind, "pool": pool, "round": round_no,
            "param": "temperature", "value": 0.1 * (index + 1), "setting_index": index, "seed": index,
            "text": text, "n_tokens": len(text.split()), "finish_reason": finish_reason}


def _scored(rows, task, if_score=None, faith=None, if_error=None):
    frame = pd.DataFrame(rows)
    frame["task"] = task
    frame["if_score"] = if_score if if_score is not None else math.nan
    frame["if_rating"] = math.nan
    frame["if_error"] = if_error
    frame["faithfulness"] = faith if faith is not None else math.nan
    return frame


# ---------------------------------------------------------------- ranking


def test_weighted_total_follows_the_paper_formula():
    assert weighted_total("if", 0.5, 0.8, math.nan, 2.0) == pytest.approx(0.5 + 2.0 * 0.8)
    assert weighted_total("summarization", 0.5, math.nan, 0.25, 2.0) == pytest.approx(1.0)
    assert weighted_total("extractive_qa", 1.0, math.nan, 0.0, 3.0) == 1.0


def test_the_weight_decides_between_task_and_judge_scores():
    rows = [_cand("dolly-a", "if", 1, 0, "high task"), _cand("dolly-a", "if", 1, 1, "high judge")]
    frame = _scored(rows, task=[0.9, 0.1], if_score=[0.2, 0.7])
    # 0.9 + 2 * 0.2 = 1.3 < 0.1 + 2 * 0.7 = 1.5; without the weight the task score wins
    assert rank(frame, 2.0).set_index("text")["chosen"].to_dict() == {"high task": False, "high judge": True}
    assert rank(frame, 0.0).set_index("text")["chosen"].to_dict() == {"high task": True, "high judge": False}
    cd = [_cand("nq-b", "extractive_qa", 1, 0, "x", "nq"), _cand("nq-b", "extractive_qa", 1, 1, "y", "nq")]
    frame = _scored(cd, task=[1.0, 0.0], faith=[0.0, 1.0], if_score=[0.99, 0.99])  # IF score ignored for CD
    assert rank(frame, 2.0)["chosen"].tolist() == [False, True]
    assert rank(frame, 0.5)["chosen"].tolist() == [True, False]


def test_ties_go_to_the_lowest_round_then_setting_index():
    rows = [_cand("dolly-a", "if", 2, 0, "r2s0"), _cand("dolly-a", "if", 1, 5, "r1s5"),
            _cand("dolly-a", "if", 1, 3, "r1s3"), _cand("dolly-a", "if", 1, 6, "worse")]
    ranked = rank(_scored(rows, task=[0.5, 0.5, 0.5, 0.4], if_score=[0.5, 0.5, 0.5, 0.5]), IF_WEIGHT)
    assert ranked.loc[ranked["chosen"], "text"].tolist() == ["r1s3"]
    assert ranked["chosen"].sum() == 1
    pd.testing.assert_series_equal(ranked["chosen"], recompute_chosen(ranked, IF_WEIGHT), check_names=False)


def test_a_missing_if_score_is_excluded_not_zero():
    rows = [_cand("dolly-a", "if", 1, 0, "judged"), _cand("dolly-a", "if", 1, 1, "judge failed"),
            _cand("dolly-c", "if", 1, 0, "only failures")]
    frame = _scored(rows, task=[0.1, 0.9, 0.5], if_score=[0.1, math.nan, math.nan],
                    if_error=[None, "no rating after 5 retries", "timeout"])
    ranked = rank(frame, IF_WEIGHT).set_index("text")
    assert ranked.loc["judged", "chosen"]
    assert not ranked.loc["judge failed", "chosen"]   # 0.9 + 2 * 0 would win if missing counted as 0
    assert ranked.loc["judge failed", "excluded"] == "IF judge: no rating after 5 retries"
    assert math.isnan(ranked.loc["judge failed", "total"])
    assert not ranked.loc["only failures", "chosen"]  # the example has no candidate left


def test_a_cut_off_candidate_is_not_ranked_unless_allowed():
    rows = [_cand("dolly-a", "if", 1, 0, "complete"), _cand("dolly-a", "if", 1, 1, "cut off mid", finish_reason="length"),
            _cand("dolly-b", "if", 1, 0, "all cut", finish_reason="length")]
    frame = _scored(rows, task=[0.1, 0.9, 0.5], if_score=[0.1, 0.9, 0.5])
    ranked = rank(frame, IF_WEIGHT).set_index("text")
    assert ranked.loc["complete", "chosen"] and not ranked.loc["cut off mid", "chosen"]
    assert ranked.loc["cut off mid", "excluded"] == "cut off at max_new_tokens"
    assert math.isnan(ranked.loc["cut off mid", "total"])
    assert not ranked.loc["all cut", "chosen"]
    assert dropped_reasons(ranked.reset_index()) == {"dolly-b": "no complete candidate"}
    # the switch keeps the old behaviour: the higher total wins, cut off or not
    allowed = rank(frame, IF_WEIGHT, allow_truncated=True).set_index("text")
    assert allowed.loc["cut off mid", "chosen"] and allowed.loc["all cut", "chosen"]
    assert allowed["excluded"].isna().all()
    # an example whose complete candidates lack a score is dropped for that reason, not for cut-offs
    mixed = _scored([_cand("dolly-c", "if", 1, 0, "x", finish_reason="length"), _cand("dolly-c", "if", 1, 1, "y")],
                    task=[0.5, 0.5], if_score=[0.5, math.nan], if_error=[None, "timeout"])
    assert dropped_reasons(rank(mixed, IF_WEIGHT)) == {"dolly-c": "no scored candidate"}


def test_unique_pairs_and_attach_scores_share_one_score_between_duplicates():
    rows = [_cand("dolly-a", "if", 1, i, t) for i, t in enumerate(["same", "same", "other", "same"])]
    rows.append(_cand("dolly-b", "if", 1, 0, "same"))
    cands = pd.DataFrame(rows)
    unique, counts = unique_pairs(cands)
    assert counts == {"candidates": 5, "unique": 3, "saved": 2}
    task = unique[["id", "text"]].assign(task=[0.1, 0.2, 0.3])
    ifs = unique[["id", "text"]].assign(if_score=[0.5, 0.6, 0.7], if_rating=[5, 6, 7], if_error=None)
    faith = pd.DataFrame(columns=["id", "text", "faithfulness"])
    out = attach_scores(cands, ifs, faith, task)
    assert out["task"].tolist() == [0.1, 0.1, 0.2, 0.1, 0.3]
    assert out["if_score"].tolist() == [0.5, 0.5, 0.6, 0.5, 0.7]
    with pytest.raises(ValueError, match="twice"):
        attach_scores(cands, ifs, faith, pd.concat([task, task]))


# ---------------------------------------------------------------- the CLIs end to end


def _subset():
    rows = []

    def add(ex_id, kind, pool, instruction="", context="", question="", refs=("gold",)):
        rows.append({"id": ex_id, "dataset": ex_id.split("-")[0], "kind": kind, "instruction": instruction,
                     "context": context, "question": question, "references": list(refs),
                     "prompt": render_prompt(kind, instruction, context, question), "pool": pool})

    add("dolly-1", "if", "if_mix", "Name a fruit.", refs=["An apple is a fruit."])
    add("oasst1-2", "if", "if_mix", "Say hello politely.", refs=["Hello, nice to meet you."])
    add("nq-3", "extractive_qa", "nq", context="The capital of France is Paris. It is large.",
        question="What is the capital of France?", refs=["Paris"])
    add("nq-4", "extractive_qa", "nq", context="Mount Everest is in Nepal.", question="Where is Everest?",
        refs=["Nepal"])
    add("msmarco-5", "abstractive_qa", "msmarco", context="Water boils at 100 degrees Celsius at sea level.",
        question="At what temperature does water boil?", refs=["Water boils at 100 degrees Celsius."])
    add("cnn_dailymail-6", "summarization", "cnn_dailymail",
        context="The city opened a new library on Monday. The library has ten thousand books.",
        refs=["A new library with ten thousand books opened."])
    return pd.DataFrame(rows)


TEXTS = {
    "dolly-1": ["An apple is a fruit.", "Banana.", "An apple is a fruit.", "I like cars.", "A pear.",
                "An apple is a fruit.", "Fruit"],
    "oasst1-2": ["Hello, nice to meet you.", "Hi.", "Hello!", "Go away.", "Hello, nice to meet you.",
                 "Greetings.", "Hey"],
    "nq-3": ["Paris", "Paris", "London", "the capital", "Paris is large", "France", "Paris"],
    "nq-4": ["Nepal", "India", "Nepal", "Everest", "in Nepal", "Nepal", "Tibet"],
    "msmarco-5": ["Water boils at 100 degrees Celsius.", "It boils at 50 degrees.", "100 C",
                  "Water boils at 100 degrees Celsius.", "Water freezes at zero degrees.", "Hot.", "Boiling"],
    "cnn_dailymail-6": ["A new library opened on Monday.", "The library has ten thousand books.",
                        "A zoo closed.", "A new library opened on Monday.", "Books.",
                        "The city opened a library.", "Library news"],
}


def _write_shards(tmp_path, subset):
    rows = []
    for ex in subset.to_dict("records"):
        for round_no in (1, 2):
            texts = TEXTS[ex["id"]] if round_no == 1 else TEXTS[ex["id"]][::-1]
            for index, text in enumerate(texts):
                rows.append({**_cand(ex["id"], ex["kind"], round_no, index, text, ex["pool"]),
                             "param": "top_k", "value": float([5, 10, 20, 50, 70, 90, 100][index])})
    frame = pd.DataFrame(rows)
    paths = []
    for shard, ids in enumerate([subset["id"][::2], subset["id"][1::2]]):
        path = tmp_path / "sampling" / f"shard{shard}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame[frame["id"].isin(ids)].to_parquet(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_llama_dir):
    """subset + shards -> judge items -> local IF judge -> faithfulness/task scores (real models, tiny)."""
    from reset.judge import main as judge_main

    tmp = tmp_path_factory.mktemp("curate")
    subset = _subset()
    subset_path = tmp / "sampling" / "subset.parquet"
    shards = _write_shards(tmp, subset)
    subset.to_parquet(subset_path)
    scores = tmp / "scores" / "candidates"
    paths = {"subset": str(subset_path), "shards": shards, "dir": tmp}
    assert main(["items", "--candidates", *shards, "--subset", str(subset_path), "--max-round", "2",
                 "--out", str(scores / "if_items.parquet"), "--summary", str(scores / "if_dedup.json")]) == 0
    assert judge_main(["--provider", "local", "--model", "tiny-llama", "--model-dir", str(tiny_llama_dir),
                       "--in", str(scores / "if_items.parquet"), "--out", str(scores / "if.parquet"),
                       "--cache", str(tmp / "cache" / "judge.sqlite")]) == 0
    for metric in ("task", "faithfulness"):
        assert main(["score", metric, "--candidates", *shards, "--subset", str(subset_path),
                     "--nli-backend", "lm", "--nli-model", str(tiny_llama_dir),
                     "--out", str(scores / f"{metric}.parquet"), "--summary", str(scores / f"{metric}_dedup.json")]) == 0
    return paths


def test_items_and_scores_are_per_unique_pair_with_dedup_counts(scored_run):
    scores = scored_run["dir"] / "scores" / "candidates"
    items = pd.read_parquet(scores / "if_items.parquet")
    # IF candidates: 2 examples x 2 rounds x 7; round 2 repeats round 1's texts
    unique_if = len(set(TEXTS["dolly-1"])) + len(set(TEXTS["oasst1-2"]))
    assert len(items) == unique_if
    assert not items.duplicated(["id", "text"]).any()
    assert set(items.loc[items["id"] == "dolly-1", "question"]) == {"Name a fruit."}
    assert json.loads((scores / "if_dedup.json").read_text())["saved"] == 28 - unique_if
    judged = pd.read_parquet(scores / "if.parquet")
    assert {"id", "text", "rating", "score", "error"} <= set(judged.columns)
    assert judged["score"].between(0.1, 1.0).all()
    task = pd.read_parquet(scores / "task.parquet")
    assert len(task) == sum(len(set(t)) for t in TEXTS.values())
    exact = task[(task["id"] == "nq-3")].set_index("text")["task"]
    assert exact["Paris"] == 1.0 and exact["London"] == 0.0
    faith = pd.read_parquet(scores / "faithfulness.parquet")
    assert set(faith["kind"]) == {"extractive_qa", "abstractive_qa", "summarization"}
    span = faith[faith["id"] == "nq-3"].set_index("text")["faithfulness"]
    assert span["Paris"] == 1.0 and span["London"] == 0.0
    assert faith["faithfulness"].notna().all()
    dedup = json.loads((scores / "faithfulness_dedup.json").read_text())
    assert dedup["candidates"] == 4 * 14 and dedup["saved"] == dedup["candidates"] - len(faith)


def _select(run, name, rounds, per_pool, if_scores, tag, shards=None, extra=()):
    out = run["dir"] / "curated"
    args = ["select", "--name", name, "--candidates", *(shards or run["shards"]), "--subset", run["subset"],
            "--if-scores", str(if_scores), "--faithfulness", str(run["dir"] / "scores/candidates/faithfulness.parquet"),
            "--task", str(run["dir"] / "scores/candidates/task.parquet"), "--rounds", str(rounds),
            "--per-pool", str(per_pool), "--if-weight", str(IF_WEIGHT),
            "--out", str(out / f"{tag}.parquet"), "--candidates-out", str(out / f"{tag}_candidates.parquet"),
            "--summary", str(out / f"{tag}_summary.json"), *extra]
    assert main(args) == 0
    return (pd.read_parquet(out / f"{tag}.parquet"), pd.read_parquet(out / f"{tag}_candidates.parquet"),
            json.loads((out / f"{tag}_summary.json").read_text()))


def test_select_writes_the_curated_set_and_the_flags_recompute(scored_run):
    if_scores = scored_run["dir"] / "scores/candidates/if.parquet"
    curated, cands, summary = _select(scored_run, "reset", 1, 2, if_scores, "reset")
    assert (cands.groupby(["id", "round"]).size() == 7).all() and set(cands["round"]) == {1}
    assert cands.groupby("id")["chosen"].sum().eq(1).all()
    pd.testing.assert_series_equal(cands["chosen"], recompute_chosen(cands, IF_WEIGHT), check_names=False)
    assert len(curated) == 6 and curated.groupby("pool").size().to_dict() == {
        "if_mix": 2, "nq": 2, "msmarco": 1, "cnn_dailymail": 1}
    chosen = cands[cands["chosen"]].set_index("id")
    for row in curated.to_dict("records"):
        assert list(row["references"]) == [chosen.loc[row["id"], "text"]]
        assert row["prompt"].endswith("### Response:\n")
    nq3 = curated.set_index("id").loc["nq-3"]
    assert list(nq3["gold_references"]) == ["Paris"] and list(nq3["references"]) == ["Paris"]
    assert summary["curated"] == 6 and summary["dropped_examples"] == 0

    # ReSet-S: two rounds, 14 candidates per example, fewer kept per pool (the best totals)
    curated_s, cands_s, _ = _select(scored_run, "reset_s", 2, 1, if_scores, "reset_s")
    assert (cands_s.groupby("id").size() == 14).all()
    pd.testing.assert_series_equal(cands_s["chosen"], recompute_chosen(cands_s, IF_WEIGHT), check_names=False)
    assert curated_s.groupby("pool").size().to_dict() == {"if_mix": 1, "nq": 1, "msmarco": 1, "cnn_dailymail": 1}
    best_if = cands_s[cands_s["chosen"] & (cands_s["pool"] == "if_mix")].sort_values("total").iloc[-1]
    assert curated_s.loc[curated_s["pool"] == "if_mix", "id"].item() == best_if["id"]


def test_select_drops_and_counts_examples_without_any_if_score(scored_run):
    judged = pd.read_parquet(scored_run["dir"] / "scores/candidates/if.parquet")
    failed = judged["id"] == "oasst1-2"
    judged.loc[failed, ["rating", "score"]] = None
    judged.loc[failed, "error"] = "no rating in the reply"
    broken = scored_run["dir"] / "scores/candidates/if_broken.parquet"
    judged.to_parquet(broken)
    curated, cands, summary = _select(scored_run, "reset", 1, 2, broken, "broken")
    assert "oasst1-2" not in set(curated["id"])
    assert summary["dropped_examples"] == 1 and summary["dropped_ids"] == ["oasst1-2"]
    assert summary["excluded_candidates"] == 7
    assert not cands.loc[cands["id"] == "oasst1-2", "chosen"].any()
    pd.testing.assert_series_equal(cands["chosen"], recompute_chosen(cands, IF_WEIGHT), check_names=False)


def _cut_off_shards(run):
    """The run's shards with every oasst1-2 candidate, dolly-1's "An apple..." and nq-3's "Paris" cut off."""
    paths = []
    for path in run["shards"]:
        frame = pd.read_parquet(path)
        cut = (frame["id"] == "oasst1-2") | ((frame["id"] == "dolly-1") & (frame["text"] == "An apple is a fruit.")) | (
            (frame["id"] == "nq-3") & (frame["text"] == "Paris"))
        frame.loc[cut, "finish_reason"] = "length"
        out = Path(path).with_name(Path(path).stem + "_cut.parquet")
        frame.to_parquet(out)
        paths.append(str(out))
    return paths


def test_cut_off_candidates_are_not_judged_ranked_or_curated_and_are_counted(scored_run):
    shards = _cut_off_shards(scored_run)
    scores = scored_run["dir"] / "scores" / "candidates"
    items_out, dedup = scores / "if_items_cut.parquet", scores / "if_dedup_cut.json"
    assert main(["items", "--candidates", *shards, "--subset", scored_run["subset"], "--max-round", "1",
                 "--out", str(items_out), "--summary", str(dedup)]) == 0
    items = pd.read_parquet(items_out)
    assert set(items["id"]) == {"dolly-1"} and "An apple is a fruit." not in set(items["text"])
    counts = json.loads(dedup.read_text())
    assert counts["cut_off"] == 7 + 3 and counts["cut_off_skipped"] == 10 and counts["allow_truncated"] is False
    assert main(["items", "--candidates", *shards, "--subset", scored_run["subset"], "--max-round", "1",
                 "--allow-truncated", "--out", str(items_out), "--summary", str(dedup)]) == 0
    assert set(pd.read_parquet(items_out)["id"]) == {"dolly-1", "oasst1-2"}

    if_scores = scores / "if.parquet"
    curated, cands, summary = _select(scored_run, "reset", 1, 2, if_scores, "cut", shards,
                                      ["--data-mode", "per_seed", "--source-seed", "2"])
    assert (curated["finish_reason"] == "eos").all() and summary["curated_cut_off"] == 0
    assert "oasst1-2" not in set(curated["id"])
    assert "An apple is a fruit." not in {r[0] for r in curated["references"]}
    assert list(curated.set_index("id").loc["nq-3", "references"]) != ["Paris"]
    pd.testing.assert_series_equal(cands["chosen"], recompute_chosen(cands, IF_WEIGHT), check_names=False)
    assert summary["allow_truncated"] is False
    assert summary["data"] == {"mode": "per_seed", "source_seed": 2}
    assert summary["cut_off_candidates"] == 7 + 3 + 3  # "Paris" is three of nq-3's seven
    assert summary["excluded_by_reason"]["cut off at max_new_tokens"] == 13
    assert summary["dropped_by_reason"] == {"no complete candidate": 1, "no scored candidate": 0}
    assert summary["dropped_ids"] == ["oasst1-2"]
    pools = summary["pools"]
    assert pools["if_mix"]["cut_off"] == 10 and pools["if_mix"]["dropped_no_complete"] == 1
    assert pools["if_mix"]["kept"] == 1 and pools["nq"]["cut_off"] == 3 and pools["nq"]["dropped_no_complete"] == 0
    assert pools["msmarco"] == {"examples": 1, "candidates": 7, "cut_off": 0, "dropped_no_complete": 0,
                                "dropped_no_score": 0, "ranked": 1, "kept": 1, "kept_cut_off": 0}

    # the switch: the old ranking, cut-off answers included and counted among the kept
    curated_a, cands_a, summary_a = _select(scored_run, "reset", 1, 2, if_scores, "cut_allowed", shards,
                                            ["--allow-truncated"])
    baseline, _, _ = _select(scored_run, "reset", 1, 2, if_scores, "baseline")
    assert summary_a["allow_truncated"] is True and summary_a["dropped_examples"] == 0
    assert list(curated_a["references"].map(list)) == list(baseline["references"].map(list))
    assert summary_a["curated_cut_off"] == int((curated_a["finish_reason"] == "length").sum())
    assert summary_a["data"] == {"mode": "shared", "source_seed": None}
    pd.testing.assert_series_equal(cands_a["chosen"], recompute_chosen(cands_a, IF_WEIGHT, True), check_names=False)


def test_select_fails_when_every_candidate_is_cut_off(scored_run):
    shards = []
    for path in scored_run["shards"]:
        frame = pd.read_parquet(path).assign(finish_reason="length")
        out = Path(path).with_name(Path(path).stem + "_allcut.parquet")
        frame.to_parquet(out)
        shards.append(str(out))
    out = scored_run["dir"] / "allcut"
    code = main(["select", "--name", "reset", "--candidates", *shards, "--subset", scored_run["subset"],
                 "--if-scores", str(scored_run["dir"] / "scores/candidates/if.parquet"),
                 "--faithfulness", str(scored_run["dir"] / "scores/candidates/faithfulness.parquet"),
                 "--task", str(scored_run["dir"] / "scores/candidates/task.parquet"),
                 "--per-pool", "1", "--out", str(out / "a.parquet"), "--candidates-out", str(out / "b.parquet"),
                 "--summary", str(out / "c.json")])
    assert code == 2 and not (out / "a.parquet").exists() and not (out / "c.json").exists()


def test_select_needs_the_rounds_it_ranks(scored_run):
    out = scored_run["dir"] / "x"
    code = main(["select", "--name", "reset_s", "--candidates", *scored_run["shards"], "--subset", scored_run["subset"],
                 "--faithfulness", str(scored_run["dir"] / "scores/candidates/faithfulness.parquet"),
                 "--task", str(scored_run["dir"] / "scores/candidates/task.parquet"), "--rounds", "3",
                 "--per-pool", "1", "--out", str(out / "a.parquet"), "--candidates-out", str(out / "b.parquet"),
                 "--summary", str(out / "c.json")])
    assert code == 2 and not (out / "a.parquet").exists()


def test_cost_estimate_over_the_judge_items_stops_above_max_usd(scored_run):
    """The judge_cost_estimate rule: reset.judge estimate over our items files, capped by judges.max_usd."""
    from reset.judge import main as judge_main

    items = scored_run["dir"] / "scores/candidates/if_items.parquet"
    paid = json.dumps({"provider": "openai", "model": "gpt-4-0613", "price_prompt_per_1k": 0.03,
                       "price_completion_per_1k": 0.06})
    out = scored_run["dir"] / "judge_cost_estimate.json"
    assert judge_main(["estimate", "--job", "if", paid, str(items), "--job", "if_supercharged", paid, str(items),
                       "--max-usd", "1000", "--out", str(out)]) == 0
    estimate = json.loads(out.read_text())
    unique_if = len(pd.read_parquet(items))
    assert estimate["judges"]["if"]["calls"] == unique_if and estimate["calls"] == 2 * unique_if
    assert 0 < estimate["usd"] < 1
    assert judge_main(["estimate", "--job", "if", paid, str(items), "--max-usd", "0.0001",
                       "--out", str(out)]) == 3


DEMO = Path(__file__).resolve().parents[1] / "results" / "demo" / "curated"


@pytest.mark.parametrize("name", ["reset", "reset_s"])
def test_demo_candidates_reproduce_their_chosen_flags(name):
    """On the demo's own output (when it has been built): 7 settings per example and round, flags recompute."""
    path = DEMO / f"{name}_candidates.parquet"
    if not path.exists():
        pytest.skip(f"{path} not built (snakemake -c2 results/demo/curated/{name}.parquet)")
    cands = pd.read_parquet(path)
    assert (cands.groupby(["id", "round"]).size() == 7).all()
    assert cands.groupby(["id", "round"])["param"].nunique().eq(1).all()
    summary = json.loads((DEMO / f"{name}_summary.json").read_text())
    allowed = summary.get("allow_truncated", True)  # summaries before the switch existed ranked cut-off answers
    pd.testing.assert_series_equal(cands["chosen"], recompute_chosen(cands, summary["if_weight"], allowed),
                                   check_names=False)
    curated = pd.read_parquet(DEMO / f"{name}.parquet")
    if not allowed:  # no cut-off answer becomes a training target
        assert (curated["finish_reason"] == "eos").all() and summary["curated_cut_off"] == 0
    chosen = cands[cands["chosen"]].set_index("id")["text"]
    assert all(list(refs) == [chosen[i]] for i, refs in zip(curated["id"], curated["references"], strict=True))
