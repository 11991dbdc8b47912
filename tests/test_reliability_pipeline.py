"""The whole DAG under faults and crashes: resume, determinism and secrets, with real processes.

Two tiny end-to-end runs of the real Snakefile (tiny random LLaMA, one seed, toy
sizes), each in its own temporary directory, with both IF judges on the
OpenAI-compatible provider pointed at a loopback chat-completions server
(tests/chat_server.py) and a recognisable fake API key in the environment only.

Run A goes through without a crash, but its server injects faults into the
candidate judge steps (429 + Retry-After, 500, 503, a non-JSON body, a reply
without a rating, a [[N]] rating, a slow reply past the time-out and a dropped
connection). Run B is SIGKILLed, Snakemake and jobs together, three times:
during training, during sampling (one shard written, the other not) and during
the paid judge step; after each kill it runs again (`snakemake --unlock`, then
the same command), and finally the whole DAG is built.

Then: A's judge steps counted every retry in their log and summary and ended
with every item judged; B resumed training from its checkpoint, did not redo the
finished sampling shard, paid no judge call twice; A and B have byte-identical
curated sets, candidates and tables; the key is in no file of either run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from chat_server import ChatServer, Fault
from reliability_support import (
    REPO,
    kill_when,
    leftovers,
    shipped_datasets,
    snakemake,
    snakemake_cmd,
    start,
    tail,
    write_overlay,
)

from reset.judge import JudgeCache, cache_key, judge_settings
from reset.settings import merge

EXP = "rel"
KEY_ENV = "RESET_RELIABILITY_API_KEY"
FAKE_KEY = "sk-FAKE-pipeline-9c2e4b71d05a"
CURATED = [f"results/{EXP}/curated/{name}.parquet" for name in ("reset", "reset_s")]
JUDGE_MODELS = {"if": "judge-strong", "if_supercharged": "judge-weak"}
# faults injected into run A's first requests (all transient: every item still ends judged)
FAULTS = {1: Fault.http(429, retry_after=1), 2: Fault.http(500), 3: Fault.http(503), 4: Fault.bad_json(),
          5: Fault.no_rating(), 6: Fault.brackets(), 7: Fault.slow(3.0), 8: Fault.drop()}
EVAL_FAULTS = {1: Fault.http(503), 3: Fault.http(500)}
RETRY_CAUSES = {"http_429", "http_500", "http_503", "bad_json", "no_rating", "timeout", "connection"}


def judge_block(name, url):
    return {"provider": "openai", "model": JUDGE_MODELS[name], "base_url": url, "api_key_env": KEY_ENV,
            "concurrency": 2, "max_retries": 4, "timeout_s": 1.5, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
            "price_prompt_per_1k": 0.001, "price_completion_per_1k": 0.002}


def overlay(url) -> dict:
    e2e = yaml.safe_load((REPO / "tests" / "e2e_config.yaml").read_text())
    tiny = str(REPO / ".cache" / "test-models" / "tiny-llama")
    return merge(e2e, {
        "experiment": EXP, "seeds": [1], "datasets": shipped_datasets(),
        "models": {"base": {"source": tiny}, "instruct": {"source": tiny}},
        # the paper's setting: checkpoints keep their optimiser state, so a killed training resumes
        "training": {"deepspeed_config": str(REPO / "resources" / "deepspeed" / "zero3.json"), "resumable": True},
        "sampling": {"shards": 2},
        "judges": {"if": judge_block("if", url), "if_supercharged": judge_block("if_supercharged", url),
                   "nli": {"model": tiny}},
        # fewer evaluation sets keep the scoring jobs short; every kind of set is still there
        "evaluation": {"trajectories": False, "seen": ["nq", "msmarco", "alpaca_eval"], "unseen": ["wikisum"]},
    })


def run_to_end(workdir, config, *targets, cores=2):
    result = snakemake(workdir, config, args=[*targets, "--cores", str(cores)], timeout=1800,
                       extra_env={KEY_ENV: FAKE_KEY})
    assert result.returncode == 0, failure(result, workdir)
    return result


def failure(result, workdir) -> str:
    logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-2:]
    return f"snakemake failed ({result.returncode})\n{result.stderr[-5000:]}\n" + "\n".join(
        f"--- {p}\n{tail(p, 30)}" for p in logs)


def crash(workdir, config, condition, *targets, cores=2, name="crash"):
    """Start Snakemake, SIGKILL its whole process group once `condition()` holds, then unlock the directory."""
    proc = start(snakemake_cmd(workdir, config, args=[*targets, "--cores", str(cores)]), workdir / f"{name}.out",
                 cwd=workdir, extra_env={KEY_ENV: FAKE_KEY})
    kill_when(proc, condition, timeout=1500)
    unlock = snakemake(workdir, config, args=["--unlock"])
    assert unlock.returncode == 0, unlock.stderr[-2000:]


def results(workdir) -> Path:
    return workdir / "results" / EXP


def cached_keys(workdir) -> set[str]:
    cache = results(workdir) / "cache" / "judge"
    if not cache.exists():
        return set()
    return JudgeCache(cache, create=False).keys()


def request_key(request, url) -> str:
    """The cache key of a request the server saw (which judge asked is told by the model name)."""
    judge = next(j for j, m in JUDGE_MODELS.items() if m == request["body"]["model"])
    return cache_key(judge_settings(judge_block(judge, url)), request["body"]["messages"])


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline-a")
    with ChatServer(models=list(JUDGE_MODELS.values())) as server:
        for n, fault in FAULTS.items():
            server.fault_at(n, fault)
        config = write_overlay(workdir / "overlay.yaml", overlay(server.url))
        run_to_end(workdir, config, *CURATED)  # candidate judging first: the faults land there
        first = len(server.requests)
        for n, fault in EVAL_FAULTS.items():  # then two in the evaluation's judge calls
            server.fault_at(first + n, fault)
        run_to_end(workdir, config)
        requests = list(server.requests)
    return workdir, requests


@pytest.fixture(scope="module")
def run_b(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline-b")
    res = results(workdir)
    events = {}
    with ChatServer(models=list(JUDGE_MODELS.values())) as server:
        server.fault_on("", Fault.slow(0.15), forever=True)  # slow enough to be killed mid-step
        config = write_overlay(workdir / "overlay.yaml", overlay(server.url))

        # 1. during training of instruct_mtl, right after its first checkpoint is complete
        checkpoints = res / "checkpoints" / "instruct_mtl" / "seed1"
        crash(workdir, config, lambda: any(checkpoints.glob("checkpoint-*/reset_complete.json")), *CURATED,
              name="crash-train")
        events["checkpoints_at_kill"] = sorted(p.parent.name for p in checkpoints.glob("*/reset_complete.json"))
        model = res / "models" / "instruct_mtl" / "seed1"
        events["model_after_train_kill"] = sorted(p.name for p in model.iterdir()) if model.exists() else []
        run_to_end(workdir, config, f"results/{EXP}/models/instruct_mtl/seed1/training_summary.json")

        # 2. during sampling: one shard written, the other still running (one core: shards run one by one;
        #    training is done by now, so the single core changes no thread count of a training job)
        #    the kill comes once the second shard's job has started: by then Snakemake has recorded the
        #    first one as complete (killed any earlier, it rightly re-runs a job it never saw finish)
        shards = [res / "sampling" / f"shard{i}.parquet" for i in range(2)]
        shard_logs = [workdir / "logs" / EXP / "sampling" / f"shard{i}.log" for i in range(2)]

        def second_shard_running():
            done = [s.exists() for s in shards]
            return sum(done) == 1 and shard_logs[done.index(False)].exists()

        crash(workdir, config, second_shard_running, *CURATED, cores=1, name="crash-sample")
        done = next(s for s in shards if s.exists())
        events["shard_done"] = (done, done.stat().st_mtime_ns, done.read_bytes())
        events["shard_missing"] = next(s for s in shards if not s.exists())

        # 3. during the paid judge step, after a few requests
        crash(workdir, config, lambda: len(server.requests) >= 6, *CURATED, name="crash-judge")
        events["requests_at_kill"] = list(server.requests)
        events["cached_at_kill"] = cached_keys(workdir)

        run_to_end(workdir, config, *CURATED)
        events["requests_after_resume"] = server.requests[len(events["requests_at_kill"]):]
        events["candidate_requests"] = list(server.requests)
        run_to_end(workdir, config)
        events["url"] = server.url
        events["all_requests"] = list(server.requests)
    return workdir, events


# ---------------------------------------------------------------- judge faults in the pipeline


def test_judge_steps_count_retries_in_log_and_summary_and_judge_every_item(run_a):
    workdir, requests = run_a
    assert {r["fault"] for r in requests[:len(FAULTS)]} == {f.kind for f in FAULTS.values()}
    retries, total = {}, 0
    for judge in JUDGE_MODELS:
        summary = json.loads((results(workdir) / "scores" / "candidates" / f"{judge}_summary.json").read_text())
        assert summary["missing"] == 0 and summary["failures"] == {}, summary
        assert summary["judged"] == summary["items"] > 0
        log = (workdir / "logs" / EXP / "scores" / "candidates" / f"{judge}.log").read_text()
        (line,) = [x for x in log.splitlines() if "summary:" in x]
        assert f"{summary['requests']} requests" in line and "0 missing" in line, line
        for cause, n in summary["retries"].items():
            assert f"'{cause}': {n}" in line, (cause, line)
            assert sum(f": {cause}: " in x and "retry " in x for x in log.splitlines()) == n, (judge, cause)
            retries[cause] = retries.get(cause, 0) + n
        total += summary["requests"]
    # every injected fault was retried once (the [[N]] reply is a valid rating), nothing else was
    assert retries == {cause: 1 for cause in RETRY_CAUSES}, retries
    scores = [pytest.importorskip("pandas").read_parquet(results(workdir) / "scores" / "candidates" / f"{j}.parquet")
              for j in JUDGE_MODELS]
    assert all(frame["error"].isna().all() and frame["rating"].notna().all() for frame in scores)
    # the cost estimate ran before any paid call and knew the calls
    estimate = json.loads((results(workdir) / "judge_cost_estimate.json").read_text())
    assert estimate["calls"] == total - sum(retries.values())


def test_evaluation_judge_counts_retries_in_log_and_summary(run_a):
    workdir, _ = run_a
    retries, scored = {}, 0
    for summary_path in sorted(results(workdir).glob("eval/*/seed1/summary.json")):
        summary = json.loads(summary_path.read_text())
        judge = summary["if_judge"]
        assert judge["missing"] == 0 and judge["failures"] == {}, summary_path
        variant = summary_path.parent.parent.name
        log = (workdir / "logs" / EXP / "eval" / variant / "seed1" / "score.log").read_text()
        if summary["store"]["reused"]:   # the same generations were scored for another variant: no judge call
            assert "reused: generations identical" in log and "IF judge:" not in log, log
            continue
        scored += 1
        (line,) = [x for x in log.splitlines() if "IF judge:" in x and "cache hits" in x]
        assert f"{judge['requests']} requests, {judge['cache_hits']} cache hits" in line, line
        for cause, n in judge["retries"].items():
            assert f"'{cause}': {n}" in line, line
            retries[cause] = retries.get(cause, 0) + n
    assert scored >= 1 and retries == {"http_503": 1, "http_500": 1}, retries


# ---------------------------------------------------------------- crash and resume


def test_killed_training_resumed_from_its_checkpoint(run_b):
    workdir, events = run_b
    # Snakemake may create the (empty) output directory; nothing of the model may be in it
    assert events["checkpoints_at_kill"] and events["model_after_train_kill"] == []
    log = (workdir / "logs" / EXP / "train" / "instruct_mtl" / "seed1.log").read_text()
    assert "resuming from" in log and "checkpoint-" in log, log[-3000:]
    summary = json.loads((results(workdir) / "models" / "instruct_mtl" / "seed1" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] is not None and summary["resumed_from_step"] >= 1


def test_killed_sampling_redid_only_the_unfinished_shard(run_b):
    workdir, events = run_b
    path, mtime, data = events["shard_done"]
    assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, "a finished shard was sampled again"
    assert events["shard_missing"].exists()
    assert leftovers(results(workdir)) == []


def test_killed_judging_paid_no_finished_call_twice(run_b):
    workdir, events = run_b
    url, cached = events["url"], events["cached_at_kill"]
    asked_again = {request_key(r, url) for r in events["requests_after_resume"]}
    assert cached, "nothing was judged before the kill: the crash came too early to prove anything"
    assert not cached & asked_again, f"{len(cached & asked_again)} finished judge calls were paid twice"
    hits = sum(json.loads((results(workdir) / "scores" / "candidates" / f"{j}_summary.json").read_text())["cache_hits"]
               for j in JUDGE_MODELS)
    assert hits >= len(cached)
    # over the candidate judge steps of run B every distinct prompt was sent once, apart from calls cut off
    # by the kill (evaluation scoring jobs running side by side may each ask for the same new prompt)
    keys = [request_key(r, url) for r in events["candidate_requests"]]
    repeated = {k for k in keys if keys.count(k) > 1}
    in_flight = {request_key(r, url) for r in events["requests_at_kill"]} - cached
    assert repeated <= in_flight, len(repeated - in_flight)


# ---------------------------------------------------------------- determinism


COMPARED = [
    "sampling/subset.parquet", "sampling/shard0.parquet", "sampling/shard1.parquet",
    "scores/candidates/if.parquet", "scores/candidates/if_supercharged.parquet",
    "scores/candidates/faithfulness.parquet", "scores/candidates/task.parquet",
    "curated/reset.parquet", "curated/reset_s.parquet",
    "curated/reset_candidates.parquet", "curated/reset_s_candidates.parquet",
    "tables/main_results.csv", "tables/main_results.md", "tables/main_results.tex",
    "tables/main_results_by_seed.csv", "tables/two_stage.csv", "tables/coverage.csv", "tables/lengths.csv",
]


@pytest.mark.parametrize("path", COMPARED)
def test_two_runs_give_byte_identical_outputs(run_a, run_b, path):
    a, b = results(run_a[0]) / path, results(run_b[0]) / path
    assert a.read_bytes() == b.read_bytes(), f"{path} differs between two runs of the same config"


def test_two_runs_give_byte_identical_models_and_evaluations(run_a, run_b):
    """Beyond the contract: every trained model (the resumed one included) and every scored evaluation."""
    a, b = results(run_a[0]), results(run_b[0])
    paths = sorted(p.relative_to(a) for pattern in ("models/*/seed1/model.safetensors", "eval/**/*.parquet")
                   for p in a.glob(pattern))
    assert len(paths) > 20
    differ = [str(p) for p in paths if (a / p).read_bytes() != (b / p).read_bytes()]
    assert differ == []


# ---------------------------------------------------------------- secrets


def test_api_key_leaves_no_trace_in_any_file(run_a, run_b):
    for workdir, requests in ((run_a[0], run_a[1]), (run_b[0], run_b[1]["all_requests"])):
        assert requests and {r["headers"].get("authorization") for r in requests} == {f"Bearer {FAKE_KEY}"}
        scanned = 0
        for root in ("results", ".snakemake", "logs", "benchmarks/runs"):
            for path in (workdir / root).rglob("*"):
                if path.is_file():
                    data = path.read_bytes()
                    assert FAKE_KEY.encode() not in data and FAKE_KEY[8:].encode() not in data, path
                    scanned += 1
        for path in workdir.glob("*.out"):  # Snakemake's own output of the killed runs
            assert FAKE_KEY[8:] not in path.read_text(errors="replace"), path
        assert scanned > 100
        provenance = json.loads((results(workdir) / "provenance.json").read_text())
        assert provenance["config"]["judges"]["if"]["api_key_env"] == KEY_ENV


def test_rerun_after_everything_is_done_does_nothing(run_b):
    workdir, _ = run_b
    config = workdir / "overlay.yaml"
    plan = subprocess.run(snakemake_cmd(workdir, config, args=["--dry-run", "--quiet", "rules"]),
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]
