"""Model digests and the evaluation store: a model evaluated under a second name is copied, byte for byte."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time

import pytest
from test_evaluate import SETS, write_eval_sets

from reset import evaluate
from reset.digests import DIGEST_FILE, compute_model_digest, model_digest, write_model_digest
from reset.eval_store import Store

JUDGE = {"provider": "local", "model": "tiny-llama", "batch_size": 4}


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory):
    return write_eval_sets(tmp_path_factory.mktemp("data"), 2)


@pytest.fixture(scope="module")
def twins(tiny_llama_dir, tmp_path_factory):
    """Two directories holding the same model under different names and histories."""
    root = tmp_path_factory.mktemp("models")
    a, b = root / "base_cd", root / "instruct_cd"
    for path, history in ((a, "trained from base"), (b, "trained from instruct")):
        shutil.copytree(tiny_llama_dir, path)
        (path / DIGEST_FILE).unlink(missing_ok=True)
        (path / "training_summary.json").write_text(json.dumps({"model_init": history}))
        (path / "SOURCE").write_text(history)
        write_model_digest(path)
    return a, b


def nli_cfg(model_dir):
    return {"backend": "lm", "model_dir": str(model_dir), "ent_idx": 0, "con_idx": 1, "max_length": 256,
            "max_chunks": 10, "batch_size": 8}


def test_model_digest_covers_the_model_not_its_history(twins, tmp_path):
    a, b = twins
    assert model_digest(a) == model_digest(b)                      # read from model_digest.json
    assert json.loads((a / DIGEST_FILE).read_text()) == compute_model_digest(a)
    assert "training_summary.json" not in compute_model_digest(a)["files"]
    changed = tmp_path / "changed"
    shutil.copytree(a, changed)
    config = json.loads((changed / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3                                  # changes what the model computes
    (changed / "config.json").write_text(json.dumps(config))
    assert compute_model_digest(changed)["digest"] != model_digest(a)
    (changed / DIGEST_FILE).unlink()
    assert model_digest(changed) == compute_model_digest(changed)["digest"]   # older directory: hashed once now
    (changed / DIGEST_FILE).write_text("not json")
    with pytest.raises(ValueError, match="model_digest.json: not a model digest record"):
        model_digest(changed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        compute_model_digest(empty)


def test_written_models_carry_their_digest(smollm2_dir, tmp_path):
    from reset.models import build_tiny_llama

    build_tiny_llama(tmp_path / "tiny", smollm2_dir, seed=3)
    stored = json.loads((tmp_path / "tiny" / DIGEST_FILE).read_text())
    assert stored == compute_model_digest(tmp_path / "tiny")


def test_reuse_is_byte_identical_to_computing(twins, eval_sets, tmp_path, caplog):
    """The twin's outputs from the store are the bytes it would have computed itself."""
    a, b = twins
    store = tmp_path / "store"
    caplog.set_level(logging.INFO, logger="reset.evaluate")
    out = {name: tmp_path / name for name in ("a", "b_reused", "b_computed")}

    assert not evaluate.generate_with_store(store, a, eval_sets, 0, 1, 8, 4, out["a"] / "gen.parquet")
    start = time.time()
    assert evaluate.generate_with_store(store, b, eval_sets, 0, 1, 8, 4, out["b_reused"] / "gen.parquet")
    assert time.time() - start < 5 and "reused" in caplog.text and str(out["a"] / "gen.parquet") in caplog.text
    evaluate.generate_shard(b, eval_sets, 0, 1, 8, 4, out["b_computed"] / "gen.parquet")
    assert (out["b_reused"] / "gen.parquet").read_bytes() == (out["b_computed"] / "gen.parquet").read_bytes()
    # different settings are a different key: computed, not reused
    assert not evaluate.generate_with_store(store, b, eval_sets, 0, 1, 6, 4, tmp_path / "other.parquet")

    datasets = SETS + ["bioasq"]
    cache = tmp_path / "judge.sqlite"
    first = evaluate.score_with_store(store, [out["a"] / "gen.parquet"], datasets, out["a"], JUDGE, a, cache,
                                      nli_cfg(a), summary_path=out["a"] / "summary.json")
    assert first["store"]["reused"] is False
    again = evaluate.score_with_store(store, [out["b_reused"] / "gen.parquet"], datasets, out["b_reused"], JUDGE,
                                      b, cache, nli_cfg(b), summary_path=out["b_reused"] / "summary.json")
    assert again["store"]["reused"] is True and again["store"]["produced_for"] == str(out["a"])
    assert json.loads((out["b_reused"] / "summary.json").read_text())["datasets"] == first["datasets"]
    evaluate.score_generations([out["b_computed"] / "gen.parquet"], datasets, out["b_computed"], JUDGE, b,
                               tmp_path / "fresh-judge.sqlite", nli_cfg(b))
    for dataset in datasets:
        reused = (out["b_reused"] / f"{dataset}.parquet").read_bytes()
        assert reused == (out["b_computed"] / f"{dataset}.parquet").read_bytes(), dataset
    # a copy, not a link: the output has its own modification time (Snakemake compares them)
    assert (out["b_reused"] / "nq.parquet").stat().st_ino != (out["a"] / "nq.parquet").stat().st_ino


def test_the_store_can_be_turned_off(twins, eval_sets, tmp_path, monkeypatch):
    a, _ = twins
    monkeypatch.setenv("RESET_EVAL_STORE", "0")
    args = ["generate", "--model", str(a), "--data", *map(str, eval_sets), "--max-new-tokens", "4",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "g.parquet")]
    assert evaluate.main(args) == 0
    assert not (tmp_path / "store").exists()


def test_a_second_job_with_the_same_key_waits_for_the_first(tmp_path):
    store = Store(tmp_path / "store")
    source = tmp_path / "out.parquet"
    source.write_bytes(b"computed once")
    seen = {}

    def second():
        with store.claim("generate", "k"):
            seen["entry"] = store.lookup("generate", "k")
            seen["at"] = time.time()

    with store.claim("generate", "k"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()            # blocked on the lock while the first computes
        store.publish("generate", "k", {"shard.parquet": source}, {"why": "test"}, str(source))
        published = time.time()
    thread.join(10)
    assert seen["entry"]["produced_for"] == str(source) and seen["at"] >= published
    # publishing the same key again keeps the first entry
    other = tmp_path / "other.parquet"
    other.write_bytes(b"second")
    store.publish("generate", "k", {"shard.parquet": other}, {}, str(other))
    assert (tmp_path / "store" / "generate" / "k" / "shard.parquet").read_bytes() == b"computed once"


@pytest.mark.parametrize("module,args,message", [
    ("reset.evaluate", ["generate", "--model", "no-model", "--data", "missing.parquet", "--max-new-tokens", "4",
                        "--out", "o.parquet"], "missing.parquet does not exist"),
    ("reset.evaluate", ["score", "--generations", "g.parquet", "--datasets", "nq", "--judge-provider", "openai",
                        "--out-dir", "o"], "judges.if.model is required"),
    ("reset.evaluate", ["score", "--generations", "bad.parquet", "--datasets", "nq", "--judge-provider", "local",
                        "--judge-model", "m", "--out-dir", "o"], "bad.parquet: cannot read"),
    ("reset.sample", ["sweep", "--subset", "missing.parquet", "--model", "m", "--temperatures", "0.5",
                      "--top-ks", "5", "--max-new-tokens", "4", "--out", "o.parquet"], "missing.parquet does not exist"),
    ("reset.sample", ["sweep", "--subset", "bad.parquet", "--model", "m", "--temperatures", "0.5",
                      "--top-ks", "5", "--max-new-tokens", "4", "--out", "o.parquet"], "bad.parquet: cannot read"),
])
def test_bad_input_is_one_line_and_exit_code_2(module, args, message, tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_stage_table_and_duplicate_models(twins, tmp_path, capsys):
    """benchmarks.stages: job-seconds per stage, before/after, and the seconds spent on twin models."""
    import yaml

    from benchmarks import stages

    def bench(root, rel, seconds):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")

    before, after, results = tmp_path / "before", tmp_path / "after", tmp_path / "results"
    for root, twin_s in ((before, 40.0), (after, 1.0)):
        bench(root, "eval/base_cd/seed1/generate_shard0.tsv", 50.0)
        bench(root, "eval/instruct_cd/seed1/generate_shard0.tsv", twin_s)
        bench(root, "eval/base_cd/seed1/score.tsv", 20.0)
        bench(root, "train/base_cd/seed1.tsv", 30.0)
        bench(root, "eval_trajectory/base_cd/seed1/best/copy.tsv", 1.0)
        bench(root, "data/nq.tsv", 2.0)
    for variant, model in zip(("base_cd", "instruct_cd"), twins, strict=True):
        shutil.copytree(model, results / "models" / variant / "seed1")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"base": {"source": "x"}, "instruct": {"source": "x"}}}))

    table = stages.per_stage(stages.read_jobs(before))
    assert table["evaluation: generation"] == {"jobs": 2, "job_s": 90.0}
    assert table["trajectory: best point (copy)"]["jobs"] == 1 and table["training"]["job_s"] == 30.0
    assert stages.main([str(before), "--after", str(after), "--results", str(results), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "| evaluation: generation | 2 | 90 | 51 | -43 % |" in out
    assert "2 evaluated model directories hold 1 distinct models; evaluating each once saves 40 job-seconds" in out
