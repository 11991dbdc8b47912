"""IF judge: prompt, parsing, cache keys, cost estimate, the OpenAI client against a real
loopback server, and the local in-process judge (tiny random LLaMA and the real SmolLM2)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from chat_server import ChatServer, Fault, answer_block, rating_for

from reset.judge import (
    SYSTEM_PROMPT,
    BudgetExceeded,
    JudgeCache,
    cache_key,
    check_budget,
    estimate_cost,
    judge_prompt,
    judge_settings,
    make_judge,
    parse_rating,
)

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "RESET_TEST_JUDGE_KEY"


def expected_rating(question, answer):
    """The rating the loopback server gives to this pair."""
    return rating_for(answer_block(judge_prompt(question, answer)[1]["content"]))


def openai_cfg(server, **extra):
    return {"provider": "openai", "model": "judge-m", "base_url": server.url, "api_key_env": KEY_ENV,
            "timeout_s": 5, "backoff_base_s": 0.01, "max_retries": 2, **extra}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-not-a-real-key")


ITEMS = [
    {"id": "a", "question": "Name a primary colour.", "answer": "Red."},
    {"id": "b", "question": "Name a primary colour.", "answer": "Blue is one."},
    {"id": "c", "question": "What is 2 + 2?", "answer": "4"},
    {"id": "a-dup", "question": "Name a primary colour.", "answer": "Red."},
]


# --------------------------------------------------------------------------- prompt and parsing


def test_prompt_restates_the_paper_protocol():
    system, user = judge_prompt("Why is the sky blue?", "Rayleigh scattering.")
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert SYSTEM_PROMPT.startswith("Please act as an impartial judge and evaluate the quality of the response")
    assert "strictly 1-2 short sentences" in SYSTEM_PROMPT and SYSTEM_PROMPT.endswith('"Rating: 5".')
    text = user["content"]
    assert user["role"] == "user" and text.startswith("[Question]\nWhy is the sky blue?")
    start, end = text.index("[The Start of Assistant's Answer]"), text.index("[The End of Assistant's Answer]")
    assert start < text.index("Rayleigh scattering.") < end


@pytest.mark.parametrize("reply, rating", [
    ("Clear and correct.\nRating: 7", 7),
    ("Rating: 10", 10),
    ("**Rating:** 8", 8),
    ("Good answer. [[9]]", 9),
    ("Rating: [[3]]", 3),
    ("Rating: 6/10", 6),
    ("Rating: 7.5", 8),
    ("A rating 5 would be too high. Rating: 2", 2),
    ("Rating: 0", None),
    ("Rating: 11", None),
    ("I cannot decide.", None),
    ("", None),
])
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_cache_key_depends_on_model_prompt_and_parameters():
    cfg = judge_settings({"provider": "openai", "model": "m"})
    msgs = judge_prompt("q", "a")
    key = cache_key(cfg, msgs)
    assert key == cache_key(dict(cfg), judge_prompt("q", "a"))
    assert key != cache_key({**cfg, "model": "m2"}, msgs)
    assert key != cache_key({**cfg, "temperature": 0.5}, msgs)
    assert key != cache_key({**cfg, "max_tokens": 100}, msgs)
    assert key != cache_key(cfg, judge_prompt("q", "b"))
    # concurrency, retries and prices do not change what is asked
    assert key == cache_key({**cfg, "concurrency": 9, "max_retries": 0, "price_prompt_per_1k": 1.0}, msgs)


def test_settings_reject_unknown_keys_and_providers():
    with pytest.raises(ValueError, match="unknown key.*temprature"):
        judge_settings({"provider": "openai", "model": "m", "temprature": 0})
    with pytest.raises(ValueError, match="provider"):
        judge_settings({"provider": "anthropic", "model": "m"})
    with pytest.raises(ValueError, match="needs a model directory"):
        make_judge({"provider": "local", "model": "embedded:smollm2"})


# --------------------------------------------------------------------------- cost estimate


def test_estimate_counts_unique_calls_tokens_and_dollars():
    cfg = {"provider": "openai", "model": "m", "price_prompt_per_1k": 0.03, "price_completion_per_1k": 0.06,
           "expected_completion_tokens": 50, "max_tokens": 512}
    est = estimate_cost(ITEMS + [{"id": "bad", "question": "q"}], cfg)
    assert (est["items"], est["unique"], est["calls"], est["cached"]) == (5, 3, 3, 0)
    by_hand = sum(3 + sum(4 + math.ceil(len(m["content"]) / 4) for m in judge_prompt(i["question"], i["answer"]))
                  for i in ITEMS[:3])
    assert est["prompt_tokens"] == by_hand
    assert est["completion_tokens"] == 150
    assert est["usd"] == pytest.approx((by_hand * 0.03 + 150 * 0.06) / 1000, abs=1e-6)
    assert est["usd_max"] == pytest.approx((by_hand * 0.03 + 3 * 512 * 0.06) / 1000, abs=1e-6)
    check_budget(est, None)
    check_budget(est, 1.0)
    with pytest.raises(BudgetExceeded, match=r"exceeds judges.max_usd = \$0.01"):
        check_budget(est, 0.01)


def test_judge_results_dedup_and_cache_against_loopback_server(tmp_path, api_key):
    cache = tmp_path / "judge.sqlite"
    with ChatServer() as server:
        judge = make_judge(openai_cfg(server), cache_path=cache)
        rows = judge.judge(ITEMS)
        judge.close()
        assert len(server.requests) == 3  # the duplicate pair is judged once
        assert [r["id"] for r in rows] == ["a", "b", "c", "a-dup"]
        for item, row in zip(ITEMS, rows, strict=True):
            rating = expected_rating(item["question"], item["answer"])
            assert (row["rating"], row["score"], row["error"]) == (rating, rating / 10, None)
            assert row["explanation"].startswith("The answer has")
        assert rows[0]["rating"] == rows[3]["rating"]
        body = server.requests[0]["body"]
        assert body["model"] == "judge-m" and body["temperature"] == 0 and body["max_tokens"] == 512
        assert body["messages"][0]["content"] == SYSTEM_PROMPT
        assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-not-a-real-key"
        stats = judge.summary()
        assert (stats["requests"], stats["unique"], stats["judged"], stats["missing"]) == (3, 3, 4, 0)
        assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0

        # the estimate sees the cache: nothing left to pay for, one new pair costs one call
        cfg = openai_cfg(server, price_prompt_per_1k=1.0)
        assert estimate_cost(ITEMS, cfg, cache_path=cache)["calls"] == 0
        more = ITEMS + [{"id": "d", "question": "What is 3 + 3?", "answer": "6"}]
        est = estimate_cost(more, cfg, cache_path=cache)
        assert (est["calls"], est["cached"]) == (1, 3) and est["usd"] > 0


def test_malformed_items_are_counted_missing_not_fatal(api_key):
    items = [{"id": 1, "question": "q", "answer": None}, {"question": "q", "answer": "a"},
             {"id": 3, "question": "q", "answer": "a"}]
    with ChatServer() as server:
        judge = make_judge(openai_cfg(server))
        rows = judge.judge(items)
    assert rows[0]["rating"] is None and "'answer' missing or not a string" in rows[0]["error"]
    assert rows[1]["rating"] is None and "'id' missing" in rows[1]["error"]
    assert rows[2]["error"] is None and rows[2]["rating"] == expected_rating("q", "a")
    assert judge.stats["malformed"] == 2 and len(server.requests) == 1


def test_concurrency_is_bounded(api_key):
    items = [{"id": i, "question": "q", "answer": f"slow answer {i}"} for i in range(8)]
    with ChatServer() as server:
        server.fault_on("slow answer", *[Fault.slow(0.2)] * 8)
        judge = make_judge(openai_cfg(server, concurrency=3))
        rows = judge.judge(items)
    assert all(r["error"] is None for r in rows)
    assert server.max_in_flight == 3


# --------------------------------------------------------------------------- CLI


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "reset.judge", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


def write_items(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_cli_help():
    for args in (["--help"], ["estimate", "--help"]):
        out = run_cli(*args)
        assert out.returncode == 0 and "--max-usd" in out.stdout and "--in" in out.stdout


def test_estimate_cli_writes_json_and_enforces_the_cap(tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS)
    common = ["estimate", "--in", src, "--provider", "openai", "--model", "gpt-x", "--price-prompt-per-1k", "0.03",
              "--price-completion-per-1k", "0.06"]
    ok = run_cli(*common, "--out", tmp_path / "est.json", "--max-usd", "5")
    assert ok.returncode == 0, ok.stderr
    est = json.loads((tmp_path / "est.json").read_text())
    assert est["calls"] == 3 and est["within_budget"] is True and est["usd"] > 0
    over = run_cli(*common, "--out", tmp_path / "est2.json", "--max-usd", "0.0001")
    assert over.returncode == 3
    assert "exceeds judges.max_usd" in over.stderr
    assert json.loads((tmp_path / "est2.json").read_text())["within_budget"] is False


def test_estimate_cli_sums_several_judge_jobs(tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS)
    strong = {"provider": "openai", "model": "gpt-4", "price_prompt_per_1k": 0.03, "price_completion_per_1k": 0.06}
    weak = {"provider": "openai", "model": "gpt-3.5", "price_prompt_per_1k": 0.0015,
            "price_completion_per_1k": 0.002, "base_url": None}
    out = run_cli("estimate", "--job", "if", json.dumps(strong), src, "--job", "if_supercharged", json.dumps(weak),
                  src, src, "--out", tmp_path / "est.json", "--max-usd", "1")
    assert out.returncode == 0, out.stderr
    est = json.loads((tmp_path / "est.json").read_text())
    assert set(est["judges"]) == {"if", "if_supercharged"}
    assert est["judges"]["if"]["calls"] == 3 and est["judges"]["if_supercharged"]["items"] == 8
    assert est["judges"]["if_supercharged"]["calls"] == 3  # two copies of the file de-duplicate
    assert est["calls"] == 6
    assert est["usd"] == pytest.approx(est["judges"]["if"]["usd"] + est["judges"]["if_supercharged"]["usd"])
    assert est["judges"]["if"]["usd"] > 10 * est["judges"]["if_supercharged"]["usd"]
    over = run_cli("estimate", "--job", "if", json.dumps(strong), src, "--max-usd", "0.0001")
    assert over.returncode == 3 and "judges if: estimated" in over.stderr
    bad = run_cli("estimate", "--job", "if", "{not json", src)
    assert bad.returncode == 2 and "--job if: settings are not JSON" in bad.stderr


def test_cli_settings_json_with_flag_overrides(tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS[:1])
    with ChatServer() as server:
        settings = json.dumps({"provider": "openai", "model": "from-settings", "base_url": server.url,
                               "api_key_env": KEY_ENV, "max_tokens": 77})
        out = run_cli("--settings", settings, "--model", "from-flag", "--in", src, "--out", tmp_path / "o.jsonl",
                      env={KEY_ENV: "sk-x"})
        assert out.returncode == 0, out.stderr
        body = server.requests[0]["body"]
    assert body["model"] == "from-flag" and body["max_tokens"] == 77
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["rating"] == expected_rating(ITEMS[0]["question"], ITEMS[0]["answer"])


def test_cli_refuses_to_start_over_budget(tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS)
    with ChatServer() as server:
        out = run_cli("--provider", "openai", "--base-url", server.url, "--model", "m", "--in", src,
                      "--out", tmp_path / "out.jsonl", "--api-key-env", KEY_ENV, "--price-prompt-per-1k", "10",
                      "--max-usd", "0.01", env={KEY_ENV: "sk-x"})
    assert out.returncode == 3 and "exceeds judges.max_usd" in out.stderr
    assert server.requests == [] and not (tmp_path / "out.jsonl").exists()


def test_cli_without_key_names_the_variable(tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    with ChatServer() as server:
        out = subprocess.run([sys.executable, "-m", "reset.judge", "--provider", "openai", "--base-url", server.url,
                              "--model", "m", "--in", str(src), "--out", str(tmp_path / "o.jsonl"),
                              "--api-key-env", KEY_ENV], capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 2 and f"environment variable {KEY_ENV}" in out.stderr
    assert server.requests == []


# --------------------------------------------------------------------------- local judge


def naive_rating_probs(judge, prefix):
    """P(' k') by one unpadded forward per continuation; ' 1' excludes ' 10'."""
    import torch

    ids = judge._encode(prefix)
    seq = {}
    for k, cont in judge.continuations.items():
        x = torch.tensor([ids + list(cont)])
        with torch.inference_mode():
            logp = torch.log_softmax(judge.model(input_ids=x).logits[0].float(), -1)
        seq[k] = math.exp(sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(cont)))
    seq[1] -= seq[10]
    return seq


def test_local_rating_probs_are_exact_sequence_probabilities(tiny_llama_dir):
    judge = make_judge({"provider": "local", "model": "tiny"}, model_dir=tiny_llama_dir)
    # " 10" is several tokens in this vocabulary, so the multi-token path is exercised
    assert len(judge.continuations[10]) > 1
    prefixes = [judge._chat_text("Short?", "Yes.") + "Rating:",
                judge._chat_text("A much longer question " * 5, "An answer " * 9) + "Rating:",
                "A prompt without the judge's system prompt. Rating:"]
    batched = judge._rating_probs(prefixes)  # one batch: two on the system prompt's KV cache, one whole
    shared = judge._shared_prefix()
    assert len(shared.ids) > 50
    assert [shared.covers(judge._encode(p)) for p in prefixes] == [True, True, False]
    for prefix, probs in zip(prefixes, batched, strict=True):
        naive = naive_rating_probs(judge, prefix)
        assert set(probs) == set(range(1, 11))
        for k in range(1, 11):
            assert probs[k] == pytest.approx(naive[k], rel=1e-3, abs=1e-9)


def test_local_judge_scores_every_item_in_order(tiny_llama_dir, tmp_path):
    cfg = {"provider": "local", "model": "tiny", "batch_size": 2}
    judge = make_judge(cfg, model_dir=tiny_llama_dir, cache_path=tmp_path / "c.sqlite")
    rows = judge.judge(ITEMS)
    judge.close()
    assert [r["id"] for r in rows] == ["a", "b", "c", "a-dup"]
    for row in rows:
        assert row["error"] is None and 1 <= row["rating"] <= 10
        assert row["score"] == pytest.approx(row["rating"] / 10)
    assert rows[0]["rating"] == rows[3]["rating"]
    assert judge.stats["requests"] == 3
    # one item at a time gives the same ratings as padded batches
    single = make_judge({**cfg, "batch_size": 1}, model_dir=tiny_llama_dir).judge(ITEMS)
    assert [r["rating"] for r in single] == pytest.approx([r["rating"] for r in rows], abs=1e-3)
    # the cache answers a re-run without the model doing any work
    again = make_judge(cfg, model_dir=tiny_llama_dir, cache_path=tmp_path / "c.sqlite")
    assert again.judge(ITEMS) == rows and again.stats["requests"] == 0 and again.stats["cache_hits"] == 3


def test_local_judge_explains_then_rates_and_truncates(tiny_llama_dir):
    cfg = {"provider": "local", "model": "tiny", "explain_tokens": 4, "max_input_tokens": 256}
    judge = make_judge(cfg, model_dir=tiny_llama_dir)
    long_item = {"id": "long", "question": "Summarise: " + "word " * 400, "answer": "text " * 400}
    rows = judge.judge([ITEMS[0], long_item])
    assert all(r["error"] is None and 1 <= r["rating"] <= 10 for r in rows)
    assert isinstance(rows[0]["explanation"], str)  # a random model "explains" with blank lines
    assert judge.stats["truncated"] == 1


def test_local_cli_and_cache_file(tiny_llama_dir, tmp_path):
    src = write_items(tmp_path / "items.jsonl", ITEMS)
    out = run_cli("--provider", "local", "--model-dir", tiny_llama_dir, "--in", src, "--out",
                  tmp_path / "out.jsonl", "--summary", tmp_path / "summary.json", "--cache", tmp_path / "c.db")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "a-dup"] and all(r["rating"] for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["provider"] == "local" and summary["requests"] == 3 and summary["missing"] == 0
    assert summary["model"].startswith("tiny-llama")  # read from the model directory's SOURCE
    cache = JudgeCache(tmp_path / "c.db")
    assert cache_key(judge_settings({"provider": "local", "model": summary["model"]}),
                     judge_prompt(ITEMS[2]["question"], ITEMS[2]["answer"])) in cache


def test_smollm2_prefers_a_correct_answer_to_gibberish(smollm2_dir):
    """Behaviour of the real small model: the demo's judge must carry some signal."""
    judge = make_judge({"provider": "local", "model": "embedded:smollm2"}, model_dir=smollm2_dir)
    good, bad = judge.judge([
        {"id": "good", "question": "What is the capital of France?", "answer": "The capital of France is Paris."},
        {"id": "bad", "question": "What is the capital of France?", "answer": "qwerty zxcv banana banana 17"},
    ])
    assert good["rating"] > bad["rating"] + 0.2
    assert judge.summary()["mean_rating_mass"] > 0.3  # the model does answer with a number after "Rating:"
    explaining = make_judge({"provider": "local", "model": "embedded:smollm2", "explain_tokens": 8},
                            model_dir=smollm2_dir)
    (row,) = explaining.judge([{"id": "x", "question": "Name a primary colour.", "answer": "Red."}])
    assert row["explanation"].strip() and "rating" not in row["explanation"].lower()
    assert 1 <= row["rating"] <= 10


def test_cache_claims_lapse_with_their_holder(tmp_path):
    """A claim blocks another job only while its holder lives and it has not expired."""
    import time

    path = tmp_path / "cache"
    first, second = JudgeCache(path), JudgeCache(path)
    assert first.claim("k", ttl_s=60) and first.claim("k", ttl_s=60)   # taking one's own claim again is fine
    assert not second.claim("k", ttl_s=60)                              # a live holder keeps it
    first.release("k")
    assert second.claim("k", ttl_s=60)
    second.release("k")

    assert first.claim("expired", ttl_s=-1)                              # expired at once
    assert second.claim("expired", ttl_s=60)

    # a holder killed mid-request (kill -9: no release) does not block the re-run on this host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    orphan = {"owner": "gone", "host": first._host, "pid": pid, "expires": time.time() + 3600}
    (path / "claims" / "orphan").write_text(json.dumps(orphan))
    assert second.claim("orphan", ttl_s=60)
    # on another host a pid means nothing: only the expiry frees the claim
    (path / "claims" / "far").write_text(json.dumps({**orphan, "host": "another-node"}))
    assert not second.claim("far", ttl_s=60)
    (path / "claims" / "far").write_text(json.dumps({**orphan, "host": "another-node", "expires": time.time() - 1}))
    assert second.claim("far", ttl_s=60)
    first.close(), second.close()


def test_claims_are_renewed_while_held_and_lapse_after_the_holder_stops(tmp_path):
    import time

    holder, other = JudgeCache(tmp_path / "c"), JudgeCache(tmp_path / "c")
    other._host = "another-node"                       # as if on another host: no pid check
    assert holder.claim("k", ttl_s=0.6)
    time.sleep(1.5)                                    # past the first expiry: the renewal kept it
    assert not other.claim("k", ttl_s=0.6)
    holder._closing.set()                              # the holder stops renewing (as if killed)
    holder._renewer.join(timeout=5)
    time.sleep(0.8)
    assert other.claim("k", ttl_s=0.6)                 # lapsed by expiry
    other.close()


def test_cache_shards_survive_a_torn_line_and_old_sqlite_caches_are_read(tmp_path):
    """A half-written last line is never read; a judge.sqlite of the earlier version is read and compacted."""
    import sqlite3
    import time

    from reset.judge import compact

    old = tmp_path / "judge.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE judgements (key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, "
                   "created REAL NOT NULL)")
        db.execute("INSERT INTO judgements VALUES ('old', 'm', ?, ?)", (json.dumps({"text": "Rating: 3"}), time.time()))
    db.close()
    writer = JudgeCache(tmp_path / "judge")                # the new directory beside the old file
    assert writer.get("old") == {"text": "Rating: 3"}
    writer.put("new", "m", {"text": "Rating: 7"})
    shard = next((tmp_path / "judge" / "shards").glob("*.jsonl"))
    with open(shard, "a") as f:                        # a writer killed in the middle of a line
        f.write('{"key": "torn", "model": "m", "val')
    reader = JudgeCache(tmp_path / "judge.sqlite")         # the old name reaches the same cache
    assert reader.keys() == {"old", "new"}
    assert JudgeCache(tmp_path / "judge", create=False).get("new") == {"text": "Rating: 7"}
    writer.close(), reader.close()
    with pytest.raises(ValueError, match="a job may be running"):
        compact(tmp_path / "judge")
    result = compact(tmp_path / "judge", force=True)
    assert result["entries"] == 2 and result["shards_folded"] == 1 and not old.exists()
    assert (tmp_path / "judge.sqlite.migrated").exists()
    assert JudgeCache(tmp_path / "judge").keys() == {"old", "new"}
    assert len(list((tmp_path / "judge" / "shards").glob("*.jsonl"))) == 1


def test_a_killed_unreaped_process_counts_as_dead():
    """kill -9 leaves a zombie until its parent reaps it; its claims must not block anyone."""
    import signal
    import time

    from reset.judge.cache import _process_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert _process_alive(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    time.sleep(0.5)                       # dead, not yet reaped: a zombie
    assert not _process_alive(child.pid)
    child.wait()
    assert not _process_alive(child.pid)


def test_a_reply_without_rating_gets_a_follow_up_turn_not_the_same_prompt(api_key):
    """format_retries: the rating-less reply stays in the conversation and the format is asked for."""
    from reset.judge import FORMAT_REMINDER

    item = {"id": "x", "question": "Is this rated?", "answer": "An answer without luck."}
    with ChatServer() as server:
        server.fault_on("without luck", Fault.no_rating())          # the first reply only
        judge = make_judge(openai_cfg(server, format_retries=1))
        (row,) = judge.judge([item])
        first, second = (r["body"]["messages"] for r in server.requests)
    assert len(server.requests) == 2 and judge.stats["retries"] == {"no_rating": 1}
    assert first == judge_prompt(item["question"], item["answer"])
    assert second[:2] == first and second[2]["role"] == "assistant" and "cannot decide" in second[2]["content"]
    assert second[3] == {"role": "user", "content": FORMAT_REMINDER}
    assert row["rating"] == expected_rating(item["question"], item["answer"]) and row["error"] is None
    # the verdict is the rated reply: the same explanation as a judge that rated at once
    assert row["explanation"] and "cannot decide" not in row["explanation"]

    with ChatServer() as server:                                     # no budget for follow-ups: missing at once
        server.fault_on("without luck", Fault.no_rating(), forever=True)
        judge = make_judge(openai_cfg(server, format_retries=0, max_retries=4))
        (row,) = judge.judge([item])
    assert len(server.requests) == 1 and row["rating"] is None
    assert row["error"].startswith("no_rating:") and "0 follow-up(s)" in row["error"]


def test_list_served_models_names_the_url_when_there_is_no_model_list():
    from reset.judge import JudgeFatalError, list_served_models

    base = "http://127.0.0.1:1/v1"   # nothing listens there: no model list to read
    with pytest.raises(JudgeFatalError, match=re.escape(f"{base}/models")):
        list_served_models(base, KEY_ENV, timeout_s=5)
