"""The OpenAI-compatible judge against a server we did not write: llama.cpp's server.

`python -m llama_cpp.server` (llama-cpp-python[server] 0.3.36, installed by `make test`)
serves the embedded SmolLM2 GGUF on loopback. `python -m reset.judge --provider openai`
judges a few items through it: every reply is parsed or the item is recorded missing with
the reason; a reply without a rating gets exactly `format_retries` follow-up turns (seen in
the server's own request log); `GET /models` is answered (`list_served_models`, which the
preflight's model check uses too); and when the server is killed and restarted mid-run the
run retries through the outage, keeps what it had judged and a re-run sends no request.
64 `max_tokens` and few items keep it to seconds of CPU.

The package is built with GGML_NATIVE=OFF (Makefile): a native build on a CPU with AMX, as
this machine has, crashed the server with a segfault on the first prompt longer than one token
(ggml's AMX matmul, ggml-org/llama.cpp#20824), which the judge saw as refused connections.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reset.judge import JudgeCache, list_served_models
from reset.models import embedded_gguf

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "RESET_LLAMA_CPP_KEY"   # llama.cpp's server takes any key unless started with one
ALIAS = "smollm2-judge"
QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name a primary colour.", "Red."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What do bees make?", "Bees make honey."),
]

try:
    import llama_cpp  # noqa: F401
    import llama_cpp.server  # noqa: F401
    MISSING = None
except ImportError as err:
    MISSING = f"llama-cpp-python[server] is not installed ({err}); `make test` installs it (Makefile)"

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1:port, its log in `log`; stopped by pid."""

    def __init__(self, port: int, log: Path):
        self.port, self.log, self.proc = port, log, None
        self.url = f"http://127.0.0.1:{port}/v1"

    def start(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf("smollm2")),
               "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024",
               "--n_threads", "2", "--verbose", "false"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "llama.cpp server did not start:\n" + self.log.read_text()[-3000:]
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def chat_requests(self) -> int:
        """POST /v1/chat/completions the server logged (uvicorn's access log)."""
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1\.1" 200', self.log.read_text()))


@pytest.fixture
def server(tmp_path):
    import llama_cpp

    if "AMX" in llama_cpp.llama_print_system_info().decode():
        pytest.fail("llama-cpp-python was built with ggml's AMX kernels, which crash on batched prompts; "
                    "rebuild it as the Makefile does (CMAKE_ARGS=-DGGML_NATIVE=OFF)")
    srv = LlamaServer(free_port(), tmp_path / "llama.log").start()
    try:
        yield srv
    finally:
        srv.kill()


def run_judge(srv, tmp_path, name, items, *extra, wait=True):
    items_path = tmp_path / f"{name}.items.jsonl"
    items_path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                                  for i, (q, a) in enumerate(items)))
    out, summary, log = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.summary.json", tmp_path / f"{name}.log"
    cmd = [sys.executable, "-m", "reset.judge", "--provider", "openai", "--base-url", srv.url, "--model", ALIAS,
           "--api-key-env", KEY_ENV, "--in", str(items_path), "--out", str(out), "--cache", str(tmp_path / "cache"),
           "--summary", str(summary), "--max-tokens", "64", "--concurrency", "1", "--timeout-s", "60",
           "--format-retries", "1", *extra]
    env = {**os.environ, KEY_ENV: "sk-local-llama", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    if not wait:
        return proc, out, summary, log
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    return ([json.loads(x) for x in out.read_text().splitlines()], json.loads(summary.read_text()), log.read_text())


def check_rows(rows, n):
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]
    for row in rows:
        if row["error"] is None:
            assert isinstance(row["rating"], int) and 1 <= row["rating"] <= 10 and row["score"] == row["rating"] / 10
        else:   # recorded missing, with the reason, never a silent 0
            assert row["rating"] is None and row["score"] is None
            assert row["error"].startswith("no_rating: no rating in the reply") and "1 follow-up" in row["error"]


def test_models_listed_replies_parsed_or_missing_and_one_follow_up_per_rating_less_reply(server, tmp_path):
    assert ALIAS in list_served_models(server.url, KEY_ENV)
    rows, summary, log = run_judge(server, tmp_path, "run1", QUESTIONS[:3], "--max-retries", "2")
    check_rows(rows, 3)
    # SmolLM2 rates some answers within 64 tokens (after the follow-up turn): the real server's
    # replies are parsed, not only recorded missing
    assert any(r["error"] is None for r in rows), rows
    # a reply without a rating costs exactly one follow-up turn, never a re-ask of the same prompt
    follow_ups = summary["retries"].get("no_rating", 0)
    assert summary["retries"] == ({"no_rating": follow_ups} if follow_ups else {})
    assert summary["requests"] == server.chat_requests() == 3 + follow_ups
    missing = [r for r in rows if r["error"]]
    assert summary["failures"] == ({"no_rating": len(missing)} if missing else {})
    assert follow_ups >= len(missing)
    # judged items are cached, missing ones are asked again on a re-run (and nothing else is)
    again_rows, again, _ = run_judge(server, tmp_path, "run2", QUESTIONS[:3])
    assert again["cache_hits"] == 3 - len(missing)
    assert server.chat_requests() == 3 + follow_ups + again["requests"]
    assert [r["rating"] for r in again_rows if r["id"] not in {m["id"] for m in missing}] == \
           [r["rating"] for r in rows if r["error"] is None]


def test_killed_and_restarted_server_mid_run_loses_nothing(server, tmp_path):
    proc, out, summary_path, log = run_judge(server, tmp_path, "run1", QUESTIONS, "--max-retries", "30",
                                             "--backoff-base-s", "0.5", "--backoff-max-s", "3", wait=False)
    try:
        deadline = time.monotonic() + 240
        while server.chat_requests() < 2:   # two replies in: kill the server mid-run
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        served_before = server.chat_requests()
        server.kill()
        time.sleep(2.0)                     # the judge meets connection errors and backs off
        server.start()                      # same port, same model
        assert proc.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    summary = json.loads(summary_path.read_text())
    check_rows(rows, len(QUESTIONS))
    assert summary["retries"].get("connection", 0) >= 1, summary   # the outage was retried, not fatal
    assert summary["failures"].get("connection", 0) == 0
    assert served_before >= 2 and summary["missing"] == sum(r["error"] is not None for r in rows)
    judged = {r["id"] for r in rows if r["error"] is None}
    assert len(JudgeCache(tmp_path / "cache", create=False).keys()) == len(judged)
    # a re-run pays only for what is missing
    before = server.chat_requests()
    _, again, _ = run_judge(server, tmp_path, "run2", QUESTIONS)
    assert again["cache_hits"] == len(judged) and server.chat_requests() == before + again["requests"]


def test_preflight_judge_check_against_the_server(server, monkeypatch):
    """The preflight's judge check reads llama.cpp's model list: the served alias passes, another fails."""
    import yaml

    from reset import preflight, settings

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    monkeypatch.setenv(KEY_ENV, "sk-local-llama")

    def judge_checks(model):
        judge = {"provider": "openai", "model": model, "base_url": server.url, "api_key_env": KEY_ENV,
                 "price_prompt_per_1k": 0.0, "price_completion_per_1k": 0.0}
        config = settings.merge(base, {"judges": {"if": judge, "if_supercharged": judge}})
        return {c.name: c for c in preflight.check_judges(preflight.Context(config=config))}

    served = judge_checks(ALIAS)
    assert served["if"].ok and served["if_supercharged"].ok and served["max_usd"].ok, served
    assert f"{ALIAS} served at {server.url}" in served["if"].message
    gone = judge_checks("gpt-4-0613")
    assert not gone["if"].ok and "does not serve 'gpt-4-0613'" in gone["if"].message
    assert ALIAS in gone["if"].message   # the error lists what the server does serve
