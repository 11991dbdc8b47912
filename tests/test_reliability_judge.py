"""Crash and resume of the paid judge step: kill -9 mid-run, re-run, no finished call is paid twice.

`python -m reset.judge` (provider openai) talks to the loopback chat-completions
server of tests/chat_server.py, which answers every request a little slowly so
the run can be SIGKILLed part-way. Finished judgements are in the SQLite cache;
the re-run must take them from there (cache hits), send requests only for the
items that had no answer yet (the server's own request log proves it), and end
with exactly the ratings of an uninterrupted run. The fault injection of single
runs (429, 5xx, bad JSON, no rating, [[N]], slow, dropped) is tests/test_judge_faults.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from chat_server import ChatServer, Fault, answer_block, rating_for
from reliability_support import REPO, env, kill_when, leftovers, start, tail

from reset.judge import JudgeCache, cache_key, judge_prompt, judge_settings

KEY_ENV = "RESET_RELIABILITY_JUDGE_KEY"
FAKE_KEY = "sk-FAKE-reliability-3b9d1c7e"
N_ITEMS = 40


def items():
    # the last four repeat earlier answers: de-duplicated, never asked twice
    out = [{"id": f"q{i}", "question": f"Explain idea {i}.", "answer": f"Idea {i} means tok{i:03d}."}
           for i in range(N_ITEMS)]
    return out + [{**out[i], "id": f"dup{i}"} for i in range(4)]


def token(user_text: str) -> str:
    return user_text.split("means ")[1].split(".")[0]


def judge_cmd(server, root, items_path):
    return [sys.executable, "-m", "reset.judge", "--provider", "openai", "--base-url", server.url,
            "--model", "judge-m", "--api-key-env", KEY_ENV, "--in", str(items_path), "--out", str(root / "out.jsonl"),
            "--cache", str(root / "cache"), "--summary", str(root / "summary.json"),
            "--concurrency", "2", "--timeout-s", "10", "--max-retries", "2", "--backoff-base-s", "0.01"]


def cached_tokens(db) -> set[str]:
    """Which items have a finished judgement in the cache (read the way a new process would)."""
    cfg = judge_settings({"provider": "openai", "model": "judge-m"})
    by_key = {cache_key(cfg, judge_prompt(i["question"], i["answer"])): token(i["answer"] + ".") for i in items()}
    return {by_key[k] for k in JudgeCache(db, create=False).keys()}


@pytest.fixture
def items_path(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items()))
    return path


def test_killed_judge_run_resumes_from_its_cache_without_paying_twice(tmp_path, items_path):
    with ChatServer() as server:
        server.fault_on("", Fault.slow(0.1), forever=True)  # every reply takes 0.1 s
        cmd = judge_cmd(server, tmp_path, items_path)
        proc = start(cmd, tmp_path / "run1.log", extra_env={KEY_ENV: FAKE_KEY})
        kill_when(proc, lambda: len(server.requests) >= 12)
        first = list(server.requests)
        # dead run: the output file never appeared, the cache holds what finished before the kill
        assert not (tmp_path / "out.jsonl").exists() and leftovers(tmp_path) == []
        finished = cached_tokens(tmp_path / "cache")
        asked_first = {token(r["user_text"]) for r in first}
        assert finished <= asked_first and 0 < len(finished) < N_ITEMS, (len(finished), len(asked_first))

        log2 = tmp_path / "run2.log"
        with open(log2, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                  env=env(**{KEY_ENV: FAKE_KEY}), timeout=300)
        assert proc.returncode == 0, tail(log2)
        second = server.requests[len(first):]

    asked_again = [token(r["user_text"]) for r in second]
    # no finished item is requested again, every other unique item exactly once
    assert not finished & set(asked_again), sorted(finished & set(asked_again))
    assert sorted(asked_again) == sorted({f"tok{i:03d}" for i in range(N_ITEMS)} - finished)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cache_hits"] == len(finished) and summary["requests"] == len(second)
    assert summary["unique"] == N_ITEMS and summary["missing"] == 0
    log = log2.read_text()
    assert f"{len(second)} requests, {len(finished)} cache hits" in log, tail(log2)
    # the same ratings an uninterrupted run gives (the server's rating is a function of the answer)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [i["id"] for i in items()]
    for item, row in zip(items(), rows, strict=True):
        expected = rating_for(answer_block(judge_prompt(item["question"], item["answer"])[1]["content"]))
        assert (row["rating"], row["error"]) == (expected, None), row


def test_third_run_is_free(tmp_path, items_path):
    """Once everything is judged, a re-run sends nothing and needs no key at all."""
    with ChatServer() as server:
        cmd = judge_cmd(server, tmp_path, items_path)
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env(**{KEY_ENV: FAKE_KEY}))
        assert done.returncode == 0, done.stderr[-2000:]
        before = len(server.requests)
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env())  # no key in the environment
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(server.requests) == before == N_ITEMS
    assert json.loads((tmp_path / "summary.json").read_text())["cache_hits"] == N_ITEMS


def test_missing_key_is_a_clear_error_and_no_output(tmp_path, items_path):
    with ChatServer() as server:
        proc = subprocess.run(judge_cmd(server, tmp_path, items_path), capture_output=True, text=True, cwd=REPO,
                              env={k: v for k, v in env().items() if k != KEY_ENV})
        assert server.requests == []
    assert proc.returncode == 2
    assert f"environment variable {KEY_ENV} (api_key_env) is not set" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_key_given_as_api_key_env_is_refused_and_not_echoed(tmp_path, items_path):
    with ChatServer() as server:
        cmd = judge_cmd(server, tmp_path, items_path)
        cmd[cmd.index("--api-key-env") + 1] = FAKE_KEY
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env())
        assert server.requests == []
    assert proc.returncode == 2 and "api_key_env must be the name of an environment variable" in proc.stderr
    assert FAKE_KEY not in proc.stderr + proc.stdout and FAKE_KEY[8:] not in proc.stderr
