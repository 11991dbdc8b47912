"""Preflight against hub-shaped local mirrors, sentencepiece-only tokenizers and a loopback judge server.

Every fixture is laid out like the real artefact it stands for (benchmarks/preflight.py
builds them): the script-only hub repository of yizhongw/self_instruct, its
refs/convert/parquet branch (a folder per config, no README), parquet repositories
whose README lists configs and splits, LLaMA and ALBERT repositories whose tokenizer
is only a sentencepiece model trained here, pickled or safetensors weights. The paper
config with its hub ids replaced by such mirrors passes; each broken fixture fails with
a message naming the source and the cause.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks (the fixture builders) live beside reset

from chat_server import ChatServer  # noqa: E402

from benchmarks import preflight as mirrors  # noqa: E402
from reset import data, preflight  # noqa: E402
from reset.jsonstream import JsonStreamError, array_to_jsonl, iter_json_array  # noqa: E402

KEY_ENV = "RESET_TEST_JUDGE_KEY"
FAKE_KEY = "sk-test-value-never-shown-0123456789"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def judge_server():
    with ChatServer(models=mirrors.PAPER_JUDGES) as server:
        yield server


@pytest.fixture(scope="module")
def paper(tmp_path_factory, judge_server):
    """(config of experiments/paper.yaml on local mirrors, the mirrors' root)."""
    root = tmp_path_factory.mktemp("mirrors")
    overlay = mirrors.build_paper_mirrors(root, judge_server.url)
    for judge in ("if", "if_supercharged"):
        overlay["judges"][judge]["api_key_env"] = KEY_ENV
    (root / "mirrors.yaml").write_text(yaml.safe_dump(overlay))
    config = preflight.load_config([str(REPO / "config.yaml"), str(REPO / "experiments" / "paper.yaml"),
                                    str(root / "mirrors.yaml")])
    return config, root


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def checks(report, kind=None, name=None):
    return [c for c in report["checks"] if (kind is None or c["kind"] == kind) and (name is None or c["name"] == name)]


def only(report, kind, name):
    found = checks(report, kind, name)
    assert len(found) == 1, found
    return found[0]


def with_changes(config, **changes):
    """A deep copy of config with dotted keys replaced, e.g. **{"judges.nli.ent_idx": 2}."""
    config = json.loads(json.dumps(config))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = config
        for key in path:
            node = node[key]
        node[last] = value
    return config


def run(config, tmp_path, **kwargs):
    return preflight.run_checks(config, results_dir=str(tmp_path / "results"), **kwargs)


# ---------------------------------------------------------------- the paper on mirrors


def test_paper_config_on_mirrors_passes_every_check(paper, tmp_path):
    config, _ = paper
    report = run(config, tmp_path)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["ok"], failed
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"dataset", "model", "nli", "judge", "disk"}
    names = {c["name"] for c in checks(report, "dataset")}
    assert names == set(config["datasets"])
    assert len(checks(report, "dataset", "nq")) == 2  # the train and eval files of the split mapping
    # the mirrors' commits are resolved (provenance records them)
    assert only(report, "dataset", "dolly")["commit"] == mirrors.fake_commit("databricks/databricks-dolly-15k")
    assert only(report, "nli", "nli")["commit"] == mirrors.fake_commit("tals/albert-xlarge-vitaminc-mnli")
    assert "'SUPPORTS' (ent_idx=0)" in only(report, "nli", "nli")["message"]
    assert "gpt-6.1-sol served" in only(report, "judge", "if")["message"]
    assert FAKE_KEY not in json.dumps(report)


def test_cli_merges_config_files_in_order_and_writes_the_report(paper, tmp_path):
    config, root = paper
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), KEY_ENV: FAKE_KEY}
    proc = subprocess.run([sys.executable, "-m", "reset.preflight", "--configfile", "config.yaml",
                           "experiments/paper.yaml", str(root / "mirrors.yaml"), "--out", str(out),
                           "--results-dir", str(tmp_path / "results")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and set(report) >= {"ok", "checks"}
    assert all(set(c) >= {"kind", "name", "ok", "message"} for c in report["checks"])
    assert FAKE_KEY not in proc.stderr + proc.stdout + out.read_text()
    # the last file wins: its dolly source replaced the paper's hub id
    assert str(root) in only(report, "dataset", "dolly")["message"]


def test_failed_preflight_leaves_no_report_a_job_would_take_as_passed(paper, tmp_path):
    config, _ = paper
    broken = with_changes(config, **{"datasets.sharegpt.source": str(tmp_path / "missing.json")})
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    out = tmp_path / "preflight.json"
    proc = subprocess.run([sys.executable, "-m", "reset.preflight", "--config-json", path.read_text(),
                           "--out", str(out), "--results-dir", str(tmp_path / "results")],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1
    assert not out.exists()
    report = json.loads((tmp_path / "preflight.failed.json").read_text())
    assert not report["ok"]
    assert "missing.json: no such file" in only(report, "dataset", "sharegpt")["message"]


# ---------------------------------------------------------------- dataset repositories


def test_script_only_repository_is_refused_naming_the_script(tmp_path):
    repo = mirrors.script_only_repo(tmp_path)
    with pytest.raises(data.DataError, match="self_instruct.py"):
        data.load_source(str(repo), name="self_instruct", split="train")
    report = run({"datasets": {"self_instruct": {"source": str(repo), "name": "self_instruct"}}}, tmp_path)
    check = only(report, "dataset", "self_instruct")
    assert not check["ok"]
    assert str(repo) in check["message"] and "loading script self_instruct.py" in check["message"]


def test_convert_branch_has_no_config_names_but_its_file_reads(tmp_path):
    repo = mirrors.convert_parquet_repo(tmp_path)
    report = run({"datasets": {"self_instruct": {"source": str(repo), "name": "self_instruct"}}}, tmp_path)
    check = only(report, "dataset", "self_instruct")
    assert not check["ok"] and "BuilderConfig 'self_instruct' not found" in check["message"], check
    with pytest.raises(data.DataError, match="self_instruct"):
        data.load_source(str(repo), name="self_instruct", split="train")
    # the data file itself is the fix (docs/datasets.md)
    parquet = repo / "self_instruct" / "train" / "0000.parquet"
    ds = data.load_source(str(parquet))
    assert {"prompt", "completion"} <= set(ds.column_names) and len(ds) > 0
    assert only(run({"datasets": {"self_instruct": {"source": str(parquet)}}}, tmp_path),
                "dataset", "self_instruct")["ok"]


def test_readme_configs_and_splits_read_like_the_hub(tmp_path):
    repo = mirrors.config_repo(tmp_path, "abisee/cnn_dailymail", "cnn_dailymail",
                               {"1.0.0": ["train"], "3.0.0": ["train", "test"]})
    ds = data.load_source(str(repo), name="3.0.0", split="test")
    assert "article" in ds.column_names and len(ds) > 0
    with pytest.raises(data.DataError, match="'9.9.9'"):
        data.load_source(str(repo), name="9.9.9", split="test")
    good = {"source": {"train": str(repo), "eval": str(repo)}, "name": "3.0.0", "split": {"train": "train",
                                                                                          "eval": "test"}}
    assert all(c["ok"] for c in run({"datasets": {"cnn_dailymail": good}}, tmp_path)["checks"] if
               c["kind"] == "dataset")
    bad = {**good, "split": {"train": "train", "eval": "validation"}}
    found = checks(run({"datasets": {"cnn_dailymail": bad}}, tmp_path), "dataset", "cnn_dailymail")
    assert [c["ok"] for c in found] == [True, False]
    assert "[eval]" in found[1]["message"] and "validation" in found[1]["message"]


def test_missing_field_fails_naming_the_field(tmp_path):
    repo = mirrors.dolly_repo(tmp_path, drop_field="response")
    check = only(run({"datasets": {"dolly": {"source": str(repo)}}}, tmp_path), "dataset", "dolly")
    assert not check["ok"]
    assert "'response' missing" in check["message"] and str(repo) in check["message"]


def test_mirror_commit_must_match_the_pinned_revision(tmp_path):
    repo = mirrors.dolly_repo(tmp_path)
    mirrors.mark_download(repo, "a" * 40)
    ok = run({"datasets": {"dolly": {"source": str(repo), "revision": "a" * 40}}}, tmp_path)
    assert only(ok, "dataset", "dolly")["ok"] and only(ok, "dataset", "dolly")["commit"] == "a" * 40
    check = only(run({"datasets": {"dolly": {"source": str(repo), "revision": "b" * 40}}}, tmp_path),
                 "dataset", "dolly")
    assert not check["ok"] and "mirror is at commit aaaa" in check["message"]
    with pytest.raises(data.DataError, match="pins revision bbbb"):
        data.load_source(str(repo), split="train", revision="b" * 40)


def test_revision_placeholder_is_rejected(tmp_path):
    report = run({"datasets": {"wikisum": {"source": "d0rj/wikisum", "revision": "UNPINNED-d0rj/wikisum"}}},
                 tmp_path)
    check = only(report, "dataset", "wikisum")
    assert not check["ok"] and "placeholder" in check["message"]


# ---------------------------------------------------------------- models


def test_pickled_weights_need_allow_pickle_weights(paper, tmp_path):
    config, _ = paper
    report = run(with_changes(config, **{"models.instruct.allow_pickle_weights": False}), tmp_path)
    check = only(report, "model", "instruct")
    assert not check["ok"] and "pytorch_model.bin" in check["message"]
    assert "allow_pickle_weights: true" in check["message"]


def test_model_without_a_tokenizer_fails_naming_the_tokenizer(tmp_path):
    repo = mirrors.llama_repo(tmp_path / "no-tokenizer", tokenizer=False)
    report = run({"models": {"base": {"source": str(repo)}}}, tmp_path)
    check = only(report, "model", "base")
    assert not check["ok"] and "holds no tokenizer file" in check["message"] and str(repo) in check["message"]


def test_custom_code_needs_trust_remote_code(paper, tmp_path):
    config, _ = paper
    repo = tmp_path / "custom"
    shutil.copytree(config["models"]["base"]["source"], repo)
    cfg = json.loads((repo / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (repo / "config.json").write_text(json.dumps(cfg))
    check = only(run({"models": {"base": {"source": str(repo)}}}, tmp_path), "model", "base")
    assert not check["ok"] and "models.trust_remote_code" in check["message"]


def test_missing_sentencepiece_is_named(paper, tmp_path):
    """transformers needs sentencepiece + protobuf to convert tokenizer.model; without them the check says so."""
    config, _ = paper
    source = config["models"]["base"]["source"]
    script = (
        "import sys, json\n"
        "sys.modules['sentencepiece'] = None\n"  # as if the package were not installed
        "sys.modules['google.protobuf'] = None\n"
        "from reset import preflight\n"
        f"r = preflight.run_checks({{'models': {{'base': {{'source': {source!r}}}}}}}, results_dir={str(tmp_path)!r})\n"
        "print(json.dumps(r))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = only(json.loads(proc.stdout.splitlines()[-1]), "model", "base")
    assert not check["ok"]
    assert "sentencepiece" in check["message"] and "protobuf" in check["message"], check["message"]


def test_nli_labels_are_checked_at_the_configured_indices(paper, tmp_path):
    config, _ = paper
    report = run(with_changes(config, **{"judges.nli.ent_idx": 2}), tmp_path)
    check = only(report, "nli", "nli")
    assert not check["ok"]
    assert "ent_idx=2 is 'NOT ENOUGH INFO'" in check["message"] and "REFUTES" in check["message"]


def test_nli_label_words():
    assert "SUPPORTS" in preflight.check_nli_labels({0: "SUPPORTS", 1: "REFUTES"}, 0, 1)
    assert preflight.check_nli_labels({"0": "entailment", "1": "neutral", "2": "contradiction"}, 0, 2)
    with pytest.raises(preflight.Failure, match="LABEL_0"):
        preflight.check_nli_labels({0: "LABEL_0", 1: "LABEL_1"}, 0, 1)
    with pytest.raises(preflight.Failure, match="con_idx=5 is not a label index"):
        preflight.check_nli_labels({0: "entailment", 1: "contradiction"}, 0, 5)


# ---------------------------------------------------------------- judges


def test_judge_model_the_server_does_not_serve_fails_naming_it(paper, judge_server, tmp_path):
    config, _ = paper
    report = run(with_changes(config, **{"judges.if.model": "gpt-4-0613"}), tmp_path)
    check = only(report, "judge", "if")
    assert not check["ok"]
    assert "does not serve 'gpt-4-0613'" in check["message"] and "gpt-6.1-sol" in check["message"]
    assert any(path.endswith("/v1/models") for path in judge_server.listings)


def test_judge_key_variable_unset_is_named_and_no_value_is_shown(paper, monkeypatch, tmp_path):
    config, _ = paper
    monkeypatch.delenv(KEY_ENV)
    report = run(config, tmp_path)
    check = only(report, "judge", "if")
    assert not check["ok"] and f"{KEY_ENV} is not set" in check["message"]


def test_judge_prices_and_budget(paper, tmp_path):
    config, _ = paper
    report = run(with_changes(config, **{"judges.if_supercharged.price_prompt_per_1k": None}), tmp_path)
    assert "prices are not set" in only(report, "judge", "if_supercharged")["message"]
    report = run(with_changes(config, **{"judges.max_usd": 5}), tmp_path)
    check = only(report, "judge", "max_usd")
    assert not check["ok"] and "exceeds judges.max_usd" in check["message"]


def test_chat_server_answers_404_for_an_unknown_model(judge_server):
    import urllib.error
    import urllib.request

    body = json.dumps({"model": "gpt-3.5-turbo-0613", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(judge_server.url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 404
    # like llama.cpp's server: the list answers, /models/{id} does not
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(judge_server.url + "/models/gpt-6.1-sol", timeout=10)


# ---------------------------------------------------------------- without network


PAPER_HUB = {"datasets": {"dolly": {"source": "databricks/databricks-dolly-15k", "revision": "c" * 40}},
             "models": {"base": {"source": "huggyllama/llama-7b", "revision": "d" * 40}}}


def test_offline_hub_checks_fail_fast_saying_the_hub_cannot_be_reached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    report = run(PAPER_HUB, tmp_path)
    assert time.monotonic() - start < 30
    for kind, name in (("dataset", "dolly"), ("model", "base")):
        check = only(report, kind, name)
        assert not check["ok"] and "the hub cannot be reached" in check["message"]


def test_unreachable_endpoint_fails_fast(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    report = run(PAPER_HUB, tmp_path)
    assert time.monotonic() - start < 30
    assert "the hub cannot be reached" in only(report, "dataset", "dolly")["message"]


def test_hanging_hub_is_cut_off_by_the_timeout(tmp_path):
    """A server that accepts connections and never answers: the check fails after --timeout, never hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        # a fresh process: huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when it is imported
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(PYTHONPATH=str(REPO), HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}")
        script = ("import json, time\n"
                  "import datasets, transformers\n"  # imports are not what is timed
                  "from reset import preflight\n"
                  "start = time.monotonic()\n"
                  f"r = preflight.run_checks({{'datasets': {PAPER_HUB['datasets']!r}}}, results_dir={str(tmp_path)!r},"
                  " timeout=2)\n"
                  "print(json.dumps({'seconds': time.monotonic() - start, 'report': r}))\n")
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.splitlines()[-1])
        assert out["seconds"] < 15
        assert "no answer within 2 s" in only(out["report"], "dataset", "dolly")["message"]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


# ---------------------------------------------------------------- cluster and disk


def test_gres_parsing_and_requested_resources():
    assert preflight.parse_gres_gpus("gpu:8") == 8
    assert preflight.parse_gres_gpus("gpu:a100:4(S:0-1),gpu:v100:2") == 4
    assert preflight.parse_gres_gpus("(null)") == 0
    rules = preflight.requested_resources({"default": {"slurm_partition": "cpu", "gpu": 0},
                                           "rules": {"train": {"gpu": 8, "slurm_partition": "gpu"},
                                                     "sample": {"gpu": 1}}})
    assert rules == [("default", "cpu", 0), ("train", "gpu", 8), ("sample", "cpu", 1)]
    # a profile's expression counts as its first attempt asks
    assert preflight.requested_resources({"default": {"gpu": "min(2 * attempt, 8)"}}) == [("default", None, 2)]


def test_cluster_check_reads_sinfo(tmp_path, monkeypatch):
    """With the Slurm executor the partitions and GPUs of the profile are checked against sinfo's answer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sinfo = bin_dir / "sinfo"  # prints what `sinfo -h -o "%P|%G"` prints on a two-partition cluster
    sinfo.write_text("#!/bin/sh\nprintf 'cpu*|(null)\\ngpu|gpu:a100:4(S:0-1)\\n'\n")
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    resources = {"default": {"slurm_partition": "cpu"},
                 "rules": {"train": {"gpu": 8, "slurm_partition": "gpu"}, "sample": {"gpu": 1, "slurm_partition": "gpu"},
                           "eval_score": {"gpu": 1, "slurm_partition": "a100"}}}
    found = {c.name: c for c in preflight.check_cluster("slurm", resources)}
    assert found["default"].ok and found["sample"].ok
    assert not found["train"].ok and "asks for 8 GPU(s)" in found["train"].message
    assert not found["eval_score"].ok and "partition 'a100' does not exist" in found["eval_score"].message
    assert preflight.check_cluster("local", resources) == []


def test_disk_check_compares_free_space_with_the_checkpoints(paper, tmp_path):
    config, _ = paper
    ctx = preflight.Context(config=config)
    preflight.check_models(ctx)
    estimate = preflight.estimated_run_bytes(ctx)
    assert estimate and estimate > 0
    ctx.weights_bytes = {k: v * 10**9 for k, v in ctx.weights_bytes.items()}  # as if the models were 7B
    check = preflight.check_disk(ctx, str(tmp_path))[0]
    assert not check.ok and "checkpoints need about" in check.message


# ---------------------------------------------------------------- big JSON arrays


def test_json_array_stream_equals_json_loads_at_any_chunk_size(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "a.json"
    for trial in range(60):
        values = [rng.choice([{"q": "x" * rng.randint(0, 40), "ctxs": [{"text": "é\"\\n"}]}, 12345678901, -0.5e3,
                              1.25e-7, "s", [], {}, None, True]) for _ in range(rng.randint(0, 25))]
        path.write_text(("\ufeff" if trial % 5 == 0 else "") + json.dumps(values, indent=rng.choice([None, 2])))
        for chunk in (1, 2, 7, 4096):
            assert list(iter_json_array(path, chunk)) == values, (trial, chunk)


@pytest.mark.parametrize("text, where", [
    ("[1,2", "1: column 5: file ends inside"),
    ('{"a": 1}', "expected a JSON array"),
    ("[1 2]", "expected ',' or ']'"),
    ('[\n\n {"a": tru}]', "3: column 8: not valid JSON"),
    ("[1] x", "extra data"),
])
def test_json_array_stream_errors_name_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(JsonStreamError, match=where.replace("[", r"\[")):
        list(iter_json_array(path, 2))


def test_big_array_is_read_without_holding_it(tmp_path):
    path = tmp_path / "big.json"
    row = {"question": "who wrote it", "answers": ["someone"], "ctxs": [{"text": "passage " * 40}] * 5}
    with open(path, "w") as fh:
        fh.write("[")
        for i in range(8000):
            fh.write(("," if i else "") + json.dumps({**row, "id": i}))
        fh.write("]")
    size = path.stat().st_size
    assert size > 10 * 2**20
    for chunk, bound in ((1 << 20, 8 * 2**20), (1 << 16, size / 20)):  # a few chunks, never the file
        tracemalloc.start()
        n = sum(1 for _ in iter_json_array(path, chunk))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n == 8000
        assert peak < bound, f"peak {peak} bytes for a {size}-byte file in chunks of {chunk}"
    assert array_to_jsonl(path, tmp_path / "big.jsonl") == 8000


def test_load_source_streams_big_arrays_into_the_same_rows(monkeypatch):
    source = str(REPO / "resources" / "demo" / "raw" / "sharegpt.json")
    whole = data.load_source(source).to_list()
    monkeypatch.setattr(data, "STREAM_ARRAY_BYTES", 0)  # every array counts as big
    streamed = data.load_source(source).to_list()
    assert streamed == whole


# ---------------------------------------------------------------- the Snakemake rule

GPU_AND_PAID_RULES = {"train", "sample", "eval_generate", "eval_score", "eval_trajectory_generate",
                      "eval_trajectory_score", "score_faithfulness", "judge_candidates"}


def snakemake(workdir, overlay, *args):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(REPO / "config.yaml"), str(overlay), "--cores", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def demo_overlay(path, **sources):
    """The demo config with its shipped files made absolute (the workdir is elsewhere)."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    datasets = {name: {**spec, "source": str(REPO / spec["source"])} for name, spec in base["datasets"].items()}
    for name, source in sources.items():
        datasets[name]["source"] = source
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    return path


def test_rule_writes_the_report_and_every_gpu_and_paid_job_waits_for_it(tmp_path):
    overlay = demo_overlay(tmp_path / "demo.yaml")
    plan = snakemake(tmp_path, overlay, "-n", "-p")
    assert plan.returncode == 0, plan.stderr[-3000:]
    inputs, rule = {}, None
    for line in plan.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif rule and line.strip().startswith("input:"):
            inputs.setdefault(rule, []).append(line)
    for name in GPU_AND_PAID_RULES - {"judge_candidates"}:  # the demo judges locally, no paid job...
        assert name in inputs and all("results/demo/preflight.json" in i for i in inputs[name]), name
    assert all("results/demo/preflight.json" in i for i in inputs["judge_candidates"])  # ...but it still waits
    assert not any("preflight.json" in i for i in inputs.get("prepare_dataset", []))  # CPU data jobs do not

    start = time.monotonic()
    done = snakemake(tmp_path, overlay, "results/demo/preflight.json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "demo" / "preflight.json").read_text())
    assert report["ok"] and {c["kind"] for c in report["checks"]} == {"dataset", "model", "nli", "disk"}
    print(f"demo preflight through snakemake: {time.monotonic() - start:.1f} s")


def test_rule_fails_without_an_output_when_a_check_fails(tmp_path):
    overlay = demo_overlay(tmp_path / "broken.yaml", sharegpt=str(tmp_path / "not-downloaded.json"))
    result = snakemake(tmp_path, overlay, "results/demo/preflight.json")
    assert result.returncode != 0
    results = tmp_path / "results" / "demo"
    assert not (results / "preflight.json").exists()
    report = json.loads((results / "preflight.failed.json").read_text())
    assert "not-downloaded.json: no such file" in only(report, "dataset", "sharegpt")["message"]
    log = (tmp_path / "logs" / "demo" / "preflight.log").read_text()
    assert "FAIL dataset  sharegpt" in log


def test_provenance_records_the_commits_the_preflight_resolved(tmp_path):
    from reset.provenance import collect

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    report = {"ok": True, "checks": [
        {"kind": "dataset", "name": "dolly", "ok": True, "message": "", "commit": "1" * 40},
        {"kind": "model", "name": "base", "ok": True, "message": "", "commit": "2" * 40},
        {"kind": "nli", "name": "nli", "ok": True, "message": "", "commit": "3" * 40},
        {"kind": "disk", "name": "results", "ok": True, "message": ""}]}
    path = tmp_path / "preflight.json"
    path.write_text(json.dumps(report))
    prov = collect(config, REPO, preflight=path)
    assert prov["datasets"]["dolly"]["resolved_commit"] == "1" * 40
    assert prov["models"]["base"]["resolved_commit"] == "2" * 40
    assert prov["models"]["nli"]["resolved_commit"] == "3" * 40
    assert "resolved_commit" not in prov["datasets"]["nq"] and "resolved_commit" not in prov["models"]["instruct"]
