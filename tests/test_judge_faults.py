"""Fault tolerance of the OpenAI-compatible judge, end to end through its CLI, against a
real chat-completions server on loopback that misbehaves on purpose (tests/chat_server.py).

Every item must end judged, or missing with its reason after bounded retries; the run must
finish; retries and failures must be counted by cause in the log and the summary; a cached
re-run must not send a single request; and the API key must not leak into any file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chat_server import ChatServer, Fault, answer_block, rating_for

from reset.judge import judge_prompt

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "RESET_FAULT_TEST_KEY"
FAKE_KEY = "sk-FAKE-5f0c9e1d-NEVER-WRITE-ME"
MAX_RETRIES = 3
FORMAT_RETRIES = 2

# answer token -> faults the server injects on requests for that answer, in order
TRANSIENT = {
    "tok429": [Fault.http(429, retry_after=1)],
    "tok500": [Fault.http(500)],
    "tok503": [Fault.http(503), Fault.http(503)],
    "tokbadjson": [Fault.bad_json()],
    "toknorating": [Fault.no_rating()],
    "tokbrackets": [Fault.brackets()],
    "tokslow": [Fault.slow(3.0)],
    "tokdrop": [Fault.drop()],
    "tokok": [],
}
# answer token -> a fault that never goes away, and the error the item must end with
PERMANENT = {
    "toknever": (Fault.no_rating(), "no_rating", f"gave up after {FORMAT_RETRIES} follow-up(s)"),
    "tokflaky": (Fault.http(500), "http_500", f"gave up after {MAX_RETRIES + 1} attempts"),
    "tok400": (Fault.http(400), "http_400", "not retried"),
}


def make_items():
    items = [{"id": f"id-{tok}", "question": "Rate this.", "answer": f"An answer {tok}."}
             for tok in [*TRANSIENT, *PERMANENT]]
    items.append({"id": "id-dup", "question": "Rate this.", "answer": "An answer tokok."})
    return items


def expected_rating(item):
    return rating_for(answer_block(judge_prompt(item["question"], item["answer"])[1]["content"]))


def plan(server):
    for tok, faults in TRANSIENT.items():
        if faults:
            server.fault_on(tok, *faults)
    for tok, (fault, _, _) in PERMANENT.items():
        server.fault_on(tok, fault, forever=True)


def run_judge(server, tmp_path, items_path, name, *extra):
    out, summary, logfile = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.summary.json", tmp_path / f"{name}.log"
    cmd = [sys.executable, "-m", "reset.judge", "--provider", "openai", "--base-url", server.url,
           "--model", "judge-m", "--in", str(items_path), "--out", str(out), "--cache", str(tmp_path / "cache"),
           "--api-key-env", KEY_ENV, "--timeout-s", "0.5", "--max-retries", str(MAX_RETRIES),
           "--format-retries", str(FORMAT_RETRIES),
           "--backoff-base-s", "0.01", "--backoff-max-s", "0.05", "--concurrency", "4",
           "--summary", str(summary), *extra]
    env = {**os.environ, KEY_ENV: FAKE_KEY}
    env.pop("OPENAI_API_KEY", None)
    start = time.monotonic()
    with open(logfile, "w") as log:  # like a Snakemake log: stdout and stderr together
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, timeout=120)
    elapsed = time.monotonic() - start
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    stats = json.loads(summary.read_text()) if summary.exists() else {}
    return proc.returncode, rows, stats, logfile.read_text(), elapsed


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in make_items()))
    return path


def test_every_fault_ends_judged_or_missing_with_reason(tmp_path, items_file):
    items = make_items()
    with ChatServer() as server:
        plan(server)
        code, rows, stats, log, elapsed = run_judge(server, tmp_path, items_file, "run1")
        requests = list(server.requests)

    assert code == 0, log
    assert elapsed < 60  # bounded: tiny back-off, one 1 s Retry-After, 0.5 s time-outs
    assert [r["id"] for r in rows] == [i["id"] for i in items]
    for item, row in zip(items, rows, strict=True):
        tok = item["answer"].split()[-1].rstrip(".")
        if tok in PERMANENT:
            _, cause, how = PERMANENT[tok]
            assert row["rating"] is None and row["score"] is None
            assert row["error"].startswith(f"{cause}:") and how in row["error"], row
        else:
            rating = expected_rating(item)
            assert (row["rating"], row["score"], row["error"]) == (rating, rating / 10, None), row

    # retries and failures by cause: every injected fault is accounted for, nothing else
    assert stats["retries"] == {"http_429": 1, "http_500": 1 + MAX_RETRIES, "http_503": 2, "bad_json": 1,
                                "no_rating": 1 + FORMAT_RETRIES, "timeout": 1, "connection": 1}
    assert stats["failures"] == {"no_rating": 1, "http_500": 1, "http_400": 1}
    unique = len(TRANSIENT) + len(PERMANENT)
    assert (stats["items"], stats["unique"], stats["judged"], stats["missing"]) == (len(items), unique, 10, 3)
    assert stats["requests"] == len(requests) == unique + stats["retries_total"]
    # the same counts are in the step's log: one summary line, one line per retry and per give-up
    (line,) = [x for x in log.splitlines() if "summary:" in x]
    retries_part, failures_part = line.split(" retries ")[1].split(", failures ")
    for cause, n in stats["retries"].items():
        assert f"'{cause}': {n}" in retries_part, (cause, line)
    for cause, n in stats["failures"].items():
        assert f"'{cause}': {n}" in failures_part, (cause, line)
    assert f"{stats['requests']} requests" in line and "3 missing" in line
    for cause, n in stats["retries"].items():
        assert sum("retry " in x and f": {cause}: " in x for x in log.splitlines()) == n, cause
    assert sum("gave up" in x and "WARNING" in x for x in log.splitlines()) == 3

    # Retry-After: 1 was honoured between the 429 and the retry of that item
    times = [r["time"] for r in requests if "tok429" in r["user_text"]]
    assert len(times) == 2 and times[1] - times[0] >= 1.0
    # the client never sent more than --concurrency requests at once
    assert server.max_in_flight <= 4


def test_cached_rerun_sends_no_request_and_retries_only_missing(tmp_path, items_file):
    with ChatServer() as server:
        plan(server)
        code, first, _, log, _ = run_judge(server, tmp_path, items_file, "run1")
        assert code == 0, log
        judged = [i for i, row in zip(make_items(), first, strict=True) if row["error"] is None]
        clean = tmp_path / "judged.jsonl"
        clean.write_text("".join(json.dumps(i) + "\n" for i in judged))

        before = len(server.requests)
        code, rows, stats, log, _ = run_judge(server, tmp_path, clean, "run2")
        assert code == 0, log
        assert len(server.requests) == before  # the server's log proves nothing was sent
        assert stats["requests"] == 0 and stats["cache_hits"] == len(judged) - 1  # one duplicate pair
        assert [(r["id"], r["rating"]) for r in rows] == [(r["id"], r["rating"]) for r in first if r["error"] is None]

        # over all items again: only the items that ended missing are asked again
        code, rows, stats, log, _ = run_judge(server, tmp_path, items_file, "run3")
        assert code == 0, log
        asked = {r["user_text"].split("An answer ")[1].split(".")[0] for r in server.requests[before:]}
        assert asked == set(PERMANENT)
        assert stats["cache_hits"] == len(TRANSIENT)


def test_api_key_never_reaches_a_file(tmp_path, items_file):
    with ChatServer() as server:
        plan(server)
        code, _, _, log, _ = run_judge(server, tmp_path, items_file, "run1")
        # the key was really used on the wire
        assert {r["headers"].get("authorization") for r in server.requests} == {f"Bearer {FAKE_KEY}"}
    assert code == 0, log
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"run1.jsonl", "run1.summary.json", "run1.log"} <= {p.name for p in written}
    assert any(p.parent.name == "shards" for p in written)
    for path in written:  # outputs, summary, log, the cache's shards and claims
        data = path.read_bytes()
        assert FAKE_KEY.encode() not in data and FAKE_KEY[8:].encode() not in data, path.name


def test_rejected_key_stops_the_run_with_a_clear_error(tmp_path, items_file):
    with ChatServer() as server:
        server.fault_on("An answer", Fault.http(401), forever=True)
        code, rows, _, log, elapsed = run_judge(server, tmp_path, items_file, "run1")
    assert code == 2 and rows == []
    assert "the API key was rejected" in log and "HTTP 401" in log
    assert FAKE_KEY not in log and elapsed < 60


def test_two_jobs_at_once_pay_once_for_each_prompt(tmp_path):
    """Two judge runs share a cache and start together on the same new items (as parallel
    evaluation jobs do): every prompt reaches the server once, both runs get every rating."""
    import threading

    items = [{"id": f"p{i}", "question": "Rate this.", "answer": f"Shared answer number {i}."} for i in range(10)]
    path = tmp_path / "shared.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    with ChatServer() as server:
        server.fault_on("Shared answer", Fault.slow(0.4), forever=True)   # slow replies: the runs overlap
        results = {}

        def run(name):
            results[name] = run_judge(server, tmp_path, path, name, "--timeout-s", "10", "--concurrency", "2")

        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        requests = list(server.requests)

    for name, (code, rows, _, log, _) in results.items():
        assert code == 0, log
        assert [r["rating"] for r in rows] == [expected_rating(item) for item in items], name
    assert sorted(r["user_text"] for r in requests) == sorted({r["user_text"] for r in requests})
    assert len(requests) == len(items)
    stats_a, stats_b = results["a"][2], results["b"][2]
    assert stats_a["requests"] + stats_b["requests"] == len(items)
    assert stats_a["cache_hits"] + stats_b["cache_hits"] == len(items)
    assert any("waiting for its answer" in results[name][3] for name in results)
