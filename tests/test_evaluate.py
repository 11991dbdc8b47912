"""Evaluation generation (sharded, greedy) and scoring, with the tiny random LLaMA as model, judge and NLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from reset import evaluate
from reset.prompts import render_prompt, task_instruction
from reset.variants import KIND

CONTEXT = ("The Eiffel Tower stands in Paris. It was completed in 1889 by the company of Gustave Eiffel. "
           "The tower is 330 metres tall and is made of wrought iron.")
SETS = ["nq", "msmarco", "cnn_dailymail", "alpaca_eval", "wikisum"]


def example(dataset, i):
    kind = KIND[dataset]
    if kind == "if":
        instruction, context, question, refs = f"Write two lines about the number {i}.", "", "", [f"Two lines {i}."]
    else:
        instruction, context = task_instruction(kind), CONTEXT
        question = "" if kind == "summarization" else "When was the tower completed?"
        refs = ["1889"] if kind == "extractive_qa" else ["The tower was completed in 1889."]
    return {"id": f"{dataset}-{i:012d}", "dataset": dataset, "kind": kind, "instruction": instruction,
            "context": context, "question": question, "references": refs,
            "prompt": render_prompt(kind, instruction, context, question)}


def write_eval_sets(root, rows_per_set: int) -> list:
    """One {dataset}/eval.parquet per set in SETS under root, rows_per_set examples each."""
    paths = []
    for dataset in SETS:
        path = root / dataset / "eval.parquet"
        path.parent.mkdir()
        pd.DataFrame([example(dataset, i) for i in range(rows_per_set)]).to_parquet(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory):
    return write_eval_sets(tmp_path_factory.mktemp("data"), 3)


def test_shards_partition_rows(eval_sets):
    rows = evaluate.read_eval_sets(eval_sets)
    shards = [evaluate.shard_rows(rows, k, 4) for k in range(4)]
    ids = [i for shard in shards for i in shard["id"]]
    assert sorted(ids) == sorted(rows["id"]) and len(ids) == len(set(ids))
    assert all(set(shard["dataset"]) for shard in shards if len(shard))
    with pytest.raises(ValueError, match="outside"):
        evaluate.shard_rows(rows, 4, 4)


def test_sharded_generation_equals_unsharded(eval_sets, tiny_llama_dir, tmp_path):
    whole = evaluate.generate_shard(tiny_llama_dir, eval_sets, 0, 1, 12, 4, tmp_path / "whole.parquet")
    parts = [evaluate.generate_shard(tiny_llama_dir, eval_sets, k, 2, 12, 5, tmp_path / f"shard{k}.parquet")
             for k in range(2)]
    merged = pd.concat(parts).set_index("id").loc[whole["id"]]
    assert list(merged["prediction"]) == list(whole["prediction"])  # greedy: batch and shard independent
    written = pd.read_parquet(tmp_path / "shard1.parquet")
    assert set(evaluate.REQUIRED + evaluate.GENERATED) <= set(written.columns)
    assert written["n_tokens"].between(0, 12).all()
    assert set(written["finish_reason"]) <= {"eos", "length"}
    assert (written.loc[written["finish_reason"] == "length", "n_tokens"] == 12).all()


def test_scores_by_kind(eval_sets, tiny_llama_dir, tmp_path):
    rows = evaluate.shard_rows(evaluate.read_eval_sets(eval_sets), 0, 1)
    # chosen predictions with known scores for the text metrics
    predictions = {
        "nq-000000000000": "1889", "nq-000000000001": "in 1889 by the company", "nq-000000000002": "in 1999",
    }
    rows["prediction"] = [predictions.get(i, "The tower in Paris was completed in 1889.") for i in rows["id"]]
    rows.loc[rows["dataset"] == "alpaca_eval", "prediction"] = ["One. Two.", "", "A line\nand another"]
    rows["n_tokens"] = 5
    rows["finish_reason"] = "eos"
    shards = [tmp_path / "g0.parquet", tmp_path / "g1.parquet"]
    rows.iloc[::2].to_parquet(shards[0], index=False)
    rows.iloc[1::2].to_parquet(shards[1], index=False)
    nli_cfg = {"backend": "lm", "model_dir": tiny_llama_dir, "ent_idx": 0, "con_idx": 1, "max_length": 256,
               "max_chunks": 10, "batch_size": 8}
    judge_cfg = {"provider": "local", "model": "tiny-llama", "batch_size": 4}
    cache = tmp_path / "judge"
    out = tmp_path / "scored"
    scored, summary = evaluate.score_generations(shards, SETS + ["bioasq"], out, judge_cfg, tiny_llama_dir, cache,
                                                 nli_cfg, summary_path=out / "summary.json")
    nq = pd.read_parquet(out / "nq.parquet").set_index("id")
    assert list(nq["faithfulness"]) == [1.0, 1.0, 0.0]        # span coverage
    assert list(nq["task"]) == [1.0, 0.0, 0.0]                # exact match
    assert nq.loc["nq-000000000002", "unigram_coverage"] == pytest.approx(0.5)   # "in" yes, "1999" no
    assert nq.loc["nq-000000000001", "bigram_coverage"] == pytest.approx(1.0)
    assert nq["if_score"].isna().all()
    for dataset in ("msmarco", "cnn_dailymail", "wikisum"):
        frame = pd.read_parquet(out / f"{dataset}.parquet")
        assert frame["faithfulness"].between(-1, 1).all()       # SummaC-ZS: entail - contradict
        assert frame["task"].between(0, 1).all() and frame["task"].gt(0).all()  # ROUGE-L vs the reference
        assert frame["unigram_coverage"].isna().all() and frame["if_score"].isna().all()
    alpaca = pd.read_parquet(out / "alpaca_eval.parquet")
    assert alpaca["if_score"].between(0.1, 1.0).all() and alpaca["if_error"].isna().all()
    assert (alpaca["if_score"] == alpaca["if_rating"] / 10).all()
    assert alpaca[["faithfulness", "task", "unigram_coverage"]].isna().all().all()
    empty = pd.read_parquet(out / "bioasq.parquet")
    assert len(empty) == 0 and "faithfulness" in empty.columns  # a set with no rows still gets its file
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"] == len(rows) == len(scored)
    assert saved["datasets"]["nq"]["faithfulness"] == pytest.approx(2 / 3)
    assert saved["if_judge"]["unique"] == 3 and saved["if_judge"]["cache_hits"] == 0
    assert cache.exists()
    # a second scoring run is answered from the judge cache
    _, again = evaluate.score_generations(shards, SETS + ["bioasq"], tmp_path / "again", judge_cfg, tiny_llama_dir,
                                          cache, nli_cfg)
    assert again["if_judge"]["cache_hits"] == 3
    assert pd.read_parquet(tmp_path / "again" / "alpaca_eval.parquet")["if_score"].tolist() == \
        alpaca["if_score"].tolist()


def test_bad_inputs_are_named(eval_sets, tmp_path):
    broken = tmp_path / "broken.parquet"
    pd.DataFrame([{"id": "x", "dataset": "nq"}]).to_parquet(broken, index=False)
    with pytest.raises(ValueError, match=r"broken\.parquet: missing column\(s\) kind"):
        evaluate.read_eval_sets([broken])
    rows = evaluate.read_eval_sets(eval_sets)
    rows["prediction"], rows["n_tokens"], rows["finish_reason"] = "x", 1, "eos"
    twice = tmp_path / "twice.parquet"
    rows.to_parquet(twice, index=False)
    with pytest.raises(ValueError, match="shards overlap"):
        evaluate.read_generations([twice, twice])
    with pytest.raises(ValueError, match="not in --datasets"):
        evaluate.score_generations([twice], ["nq"], tmp_path / "o", {"provider": "local", "model": "m"}, None,
                                   None, {"max_chunks": 1})


def test_copy_and_cli(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"id": ["a"], "task": [math.pi]}).to_parquet(src / "nq.parquet", index=False)
    assert evaluate.main(["copy", "--src-dir", str(src), "--datasets", "nq", "--out-dir", str(tmp_path / "dst")]) == 0
    assert pd.read_parquet(tmp_path / "dst" / "nq.parquet")["task"].item() == math.pi
    with pytest.raises(FileNotFoundError, match="wikisum"):
        evaluate.copy_scored(src, ["wikisum"], tmp_path / "dst")
    for command in ([], ["generate"], ["score"]):
        result = subprocess.run([sys.executable, "-m", "reset.evaluate", *command, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0 and "usage" in result.stdout


def test_trajectory_point_at_the_best_step_reuses_the_main_evaluation(eval_sets, tmp_path):
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"first": {"step": 1}, "best": {"step": 4}, "last": {"step": 4}}))
    assert evaluate.same_as_best(points, "last") == 4 and evaluate.same_as_best(points, "first") is None
    best = tmp_path / "best"
    best.mkdir()
    gen = best / "shard0.parquet"
    pd.DataFrame({"id": ["a"], "prediction": ["p"]}).to_parquet(gen, index=False)
    for dataset in ("nq", "wikisum"):
        pd.DataFrame({"id": [dataset], "task": [0.5]}).to_parquet(best / f"{dataset}.parquet", index=False)
    (best / "summary.json").write_text(json.dumps({"rows": 2}))
    common = ["--points", str(points), "--point", "last", "--reuse"]
    # the model directory does not exist: a copy must not need it
    assert evaluate.main(["generate", "--model", str(tmp_path / "no-model"), "--data", *map(str, eval_sets),
                          "--max-new-tokens", "4", "--out", str(tmp_path / "g.parquet"), *common, str(gen)]) == 0
    assert (tmp_path / "g.parquet").read_bytes() == gen.read_bytes()
    assert evaluate.main(["score", "--generations", str(tmp_path / "g.parquet"), "--datasets", "nq", "wikisum",
                          "--out-dir", str(tmp_path / "scored"),
                          "--summary", str(tmp_path / "scored" / "summary.json"), *common, str(best)]) == 0
    assert pd.read_parquet(tmp_path / "scored" / "wikisum.parquet")["id"].item() == "wikisum"
    summary = json.loads((tmp_path / "scored" / "summary.json").read_text())
    assert summary["step"] == 4 and summary["rows"] == 2 and summary["reused_from"] == str(best)
    # a different step generates for real (and so needs the model): a bad-input exit, not a traceback
    from reset.cli import run_cli

    assert run_cli(evaluate.main, ["generate", "--model", str(tmp_path / "no-model"), "--data",
                                   *map(str, eval_sets), "--max-new-tokens", "4", "--out", str(tmp_path / "g1.parquet"),
                                   "--points", str(points), "--point", "first", "--reuse", str(gen)],
                   prog="reset.evaluate", sidecar=False) == 2
    assert not (tmp_path / "g1.parquet").exists()
    points.write_text(json.dumps({"best": {"step": 4}}))
    with pytest.raises(ValueError, match="no step recorded for the 'first'"):
        evaluate.same_as_best(points, "first")


def test_scoring_over_budget_exits_3_before_any_work(eval_sets, tmp_path, monkeypatch):
    """A paid judge over judges.max_usd stops the scoring job first: no NLI, no request, no output."""
    from chat_server import ChatServer

    from reset.cli import run_cli

    rows = pd.concat([pd.read_parquet(p) for p in eval_sets])
    rows["prediction"], rows["n_tokens"], rows["finish_reason"] = "An answer.", 3, "stop"
    rows.to_parquet(tmp_path / "g.parquet", index=False)
    monkeypatch.setenv("RESET_TEST_JUDGE_KEY", "sk-test-0123456789")
    with ChatServer() as server:
        code = run_cli(evaluate.main, [
            "score", "--generations", str(tmp_path / "g.parquet"), "--datasets", *SETS,
            "--out-dir", str(tmp_path / "scored"), "--judge-provider", "openai", "--judge-model", "m",
            "--judge-base-url", server.url, "--judge-api-key-env", "RESET_TEST_JUDGE_KEY",
            "--judge-price-prompt-per-1k", "10", "--max-usd", "0.0001",
            "--nli-model", str(tmp_path / "no-nli-model")], prog="reset.evaluate", sidecar=False)
        assert code == 3 and server.requests == []
    assert not (tmp_path / "scored").exists() or not any((tmp_path / "scored").iterdir())
