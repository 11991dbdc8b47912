"""IF judge (LLM-as-a-judge): rate answers to instructions on a 1-10 scale, score = rating / 10.

Two providers behind one interface:
  openai  any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp);
          key from the environment only; bounded concurrency; retries with exponential
          back-off and jitter on 429 / 5xx / time-outs / dropped connections / broken or
          rating-less replies, honouring Retry-After; a persistent SQLite cache.
  local   an in-process transformers model: the rating is the probability-weighted mean
          over the continuations " 1" ... " 10" after "Rating:" (always yields a score).

Judge a file (lines {id, question, answer} -> {id, rating, score, explanation, error}):
  python -m reset.judge --provider openai --base-url URL --model M --in IN.jsonl --out OUT.jsonl --cache DB
  python -m reset.judge --provider local --model-dir DIR --in IN.jsonl --out OUT.jsonl
Estimate the cost first (calls after de-duplication and cache hits, tokens, dollars):
  python -m reset.judge estimate --in IN.jsonl --provider openai --model M --price-prompt-per-1k 0.03 ... --out EST.json
  python -m reset.judge estimate --job if SETTINGS_JSON IN.jsonl [--job ...] --max-usd 100 --out EST.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- prompt

# The judge instructions of the paper's appendix (adopted from LLM-as-a-Judge),
# restated word for word because they are the evaluation protocol.
SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Begin your evaluation by providing a short explanation (strictly 1-2 short "
    "sentences). Be as objective as possible. After providing your explanation, please rate the "
    'response on a scale of 1 to 10 by strictly following this format: "rating", for example: '
    '"Rating: 5".'
)
ANSWER_START = "[The Start of Assistant's Answer]"
ANSWER_END = "[The End of Assistant's Answer]"


def judge_prompt(question: str, answer: str) -> list[dict]:
    """Chat messages (system + user) asking the judge to rate `answer` to `question`."""
    user = f"[Question]\n{question}\n\n{ANSWER_START}\nAnswer: {answer}\n{ANSWER_END}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_NUMBER = r"(\d+(?:\.\d+)?)"
_RATING_RE = re.compile(r"rating\W{0,3}(?:(?:of|is)\s*)?\**\s*\[*\s*" + _NUMBER, re.IGNORECASE)
_BRACKETS_RE = re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]")


def _rating_match(text: str):
    """The last 'Rating: N' match, else the last '[[N]]' match, else None."""
    for pattern in (_RATING_RE, _BRACKETS_RE):
        matches = list(pattern.finditer(text or ""))
        if matches:
            return matches[-1]
    return None


def parse_rating(text: str) -> int | None:
    """The judge's rating 1-10 from its reply: 'Rating: N' (last one wins), else '[[N]]'.

    Decimals are rounded half up (7.5 -> 8); anything else, or a value outside 1-10, is None.
    """
    match = _rating_match(text)
    if match is None:
        return None
    rating = math.floor(float(match.group(1)) + 0.5)
    return rating if 1 <= rating <= 10 else None


def explanation_of(text: str) -> str:
    """The reply without its rating: the text before the rating, or the whole reply."""
    match = _rating_match(text)
    before = text[: match.start()] if match else text
    before = re.sub(r"[\s*\[]*$", "", before).strip()
    return before or (text or "").strip()


# --------------------------------------------------------------------------- settings

DEFAULTS = {
    "provider": None,
    "model": None,
    "base_url": None,
    "api_key_env": "OPENAI_API_KEY",
    "temperature": 0.0,
    "max_tokens": 512,
    "concurrency": 4,
    "max_retries": 5,
    "timeout_s": 60.0,
    "backoff_base_s": 1.0,
    "backoff_max_s": 60.0,
    "price_prompt_per_1k": 0.0,
    "price_completion_per_1k": 0.0,
    # cost estimate
    "chars_per_token": 4.0,
    "expected_completion_tokens": 64,
    # local provider
    "batch_size": 8,
    "explain_tokens": 0,
    "max_input_tokens": 2048,
}
RETRY_AFTER_CAP_S = 600.0  # never sleep longer than this on one Retry-After


def judge_settings(judge_cfg: dict) -> dict:
    """A judge config (judges.if / judges.if_supercharged) with defaults filled in and checked."""
    unknown = sorted(set(judge_cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"judge config: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **{k: v for k, v in judge_cfg.items() if v is not None}}
    if cfg["provider"] not in ("openai", "local"):
        raise ValueError(f"judge config: provider must be 'openai' or 'local', got {cfg['provider']!r}")
    if not cfg["model"]:
        raise ValueError("judge config: 'model' is required")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(cfg["api_key_env"])):
        # never echo the value: it is most likely a pasted key
        raise ValueError("judge config: api_key_env must be the name of an environment variable holding the "
                         "API key (e.g. OPENAI_API_KEY), never the key itself; the value is not shown")
    return cfg


def cache_key(cfg: dict, messages: list[dict]) -> str:
    """What makes two judge calls the same: provider, model, prompt and decoding parameters."""
    if cfg["provider"] == "openai":
        params = {"temperature": cfg["temperature"], "max_tokens": cfg["max_tokens"]}
    else:
        params = {"method": "rating-probabilities-v1", "explain_tokens": cfg["explain_tokens"],
                  "max_input_tokens": cfg["max_input_tokens"]}
    payload = {"provider": cfg["provider"], "model": cfg["model"], "messages": messages, **params}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- cache


class JudgeCache:
    """Persistent key -> JSON value store (SQLite), safe to share between threads and processes.

    Claims keep two jobs that run at the same time from paying twice for one new prompt:
    the job that claims a key requests it, the other waits for its answer. A claim lapses
    when its holder releases it, when it expires, or (same host) when its process is gone.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                         "value TEXT NOT NULL, created REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                         "host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL)")
        self._db.commit()
        self.owner = uuid.uuid4().hex
        self._host = socket.gethostname()

    def claim(self, key: str, ttl_s: float) -> bool:
        """Take the right to request `key` for ttl_s seconds; False while another live holder has it."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")   # the check and the write in one locked transaction
            try:
                row = self._db.execute("SELECT owner, host, pid, expires FROM claims WHERE key = ?",
                                       (key,)).fetchone()
                if row is not None and row[0] != self.owner and row[3] > now and \
                        not (row[1] == self._host and not _process_alive(row[2])):
                    self._db.rollback()
                    return False
                self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                                 (key, self.owner, self._host, os.getpid(), now + ttl_s))
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return True

    def release(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
            self._db.commit()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM judgements WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judgements VALUES (?, ?, ?, ?)",
                             (key, model, json.dumps(value, ensure_ascii=False), time.time()))
            self._db.commit()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM judgements WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- items


def check_item(item, index: int) -> str | None:
    """Why an input item cannot be judged, or None when it is fine."""
    if not isinstance(item, dict):
        return f"item {index}: not an object"
    for key in ("question", "answer"):
        if not isinstance(item.get(key), str):
            return f"item {index} (id {item.get('id')!r}): {key!r} missing or not a string"
    if item.get("id") is None:
        return f"item {index}: 'id' missing"
    return None


def pair_key(question: str, answer: str) -> str:
    return hashlib.sha256(json.dumps([question, answer], ensure_ascii=False).encode("utf-8")).hexdigest()


def unique_pairs(items: list) -> dict[str, tuple[str, str]]:
    """Valid items de-duplicated on (question, answer), first occurrence order."""
    pairs = {}
    for i, item in enumerate(items):
        if check_item(item, i) is None:
            pairs.setdefault(pair_key(item["question"], item["answer"]), (item["question"], item["answer"]))
    return pairs


def result_row(item_id, rating=None, explanation="", error=None) -> dict:
    score = None if rating is None else rating / 10.0
    return {"id": item_id, "rating": rating, "score": score, "explanation": explanation, "error": error}


# --------------------------------------------------------------------------- judges


class JudgeFatalError(RuntimeError):
    """A problem no retry can fix (bad key, unknown model or URL): the run stops."""


class Judge:
    """Shared driver: validation, de-duplication, cache, stats, input-order results."""

    def __init__(self, cfg: dict, cache_path=None):
        self.cfg = cfg
        self.cache = JudgeCache(cache_path) if cache_path else None
        self._lock = threading.Lock()
        self.stats = {
            "provider": cfg["provider"], "model": cfg["model"], "items": 0, "unique": 0, "malformed": 0,
            "cache_hits": 0, "requests": 0, "retries": {}, "failures": {}, "judged": 0, "missing": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0,
        }

    # subclasses: judge the given unique pairs, return {pair key: (rating, explanation, error)}
    def _judge_pairs(self, pairs: dict[str, tuple[str, str]]) -> dict[str, tuple]:
        raise NotImplementedError

    # subclasses: turn a cache value back into (rating, explanation, error)
    def _from_cache(self, value: dict) -> tuple:
        raise NotImplementedError

    def judge(self, items: list[dict]) -> list[dict]:
        """Judge every item; results in input order, one per item (failures carry `error`)."""
        pairs = unique_pairs(items)
        self._count("items", len(items))
        self._count("unique", len(pairs))
        verdicts, pending = self._lookup(pairs)
        verdicts.update(self._judge_pairs(pending) if pending else {})
        rows = []
        for i, item in enumerate(items):
            problem = check_item(item, i)
            if problem is not None:
                self._count("malformed")
                rows.append(result_row(item.get("id") if isinstance(item, dict) else None,
                                       error=f"malformed input: {problem}"))
                continue
            rating, explanation, error = verdicts[pair_key(item["question"], item["answer"])]
            rows.append(result_row(item["id"], rating, explanation, error))
        self._count("judged", sum(r["error"] is None for r in rows))
        self._count("missing", sum(r["error"] is not None for r in rows))
        return rows

    def _lookup(self, pairs):
        """Split pairs into cached verdicts and pairs still to judge."""
        if self.cache is None:
            return {}, dict(pairs)
        verdicts, pending = {}, {}
        for key, (question, answer) in pairs.items():
            value = self.cache.get(cache_key(self.cfg, judge_prompt(question, answer)))
            if value is None:
                pending[key] = (question, answer)
            else:
                verdicts[key] = self._from_cache(value)
        self._count("cache_hits", len(verdicts))
        return verdicts, pending

    def _count(self, name: str, n=1, cause: str | None = None) -> None:
        with self._lock:
            if cause is None:
                self.stats[name] += n
            else:
                self.stats[name][cause] = self.stats[name].get(cause, 0) + n

    def summary(self) -> dict:
        out = json.loads(json.dumps(self.stats))
        out["retries_total"] = sum(out["retries"].values())
        out["failures_total"] = sum(out["failures"].values())
        out["usd"] = round(out["usd"], 6)
        return out

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class _Retryable(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(self, cause: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.cause, self.message, self.retry_after = cause, message, retry_after


class _ItemError(Exception):
    """One failed attempt that would fail again (e.g. HTTP 400): the item is missing."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause, self.message = cause, message


class OpenAIJudge(Judge):
    """Any OpenAI-compatible chat-completions endpoint, with our own retry loop."""

    FATAL = {401: "the API key was rejected", 403: "access denied", 404: "unknown model or URL"}

    def __init__(self, cfg: dict, cache_path=None):
        super().__init__(cfg, cache_path)
        self.client = None  # made on the first uncached call, so a fully cached re-run needs no key
        self._rng = random.Random()

    def _connect(self) -> None:
        import openai

        key = os.environ.get(self.cfg["api_key_env"])
        if not key:
            raise JudgeFatalError(f"judge: environment variable {self.cfg['api_key_env']} (api_key_env) is not "
                                  "set; the API key is read from the environment only")
        # the client must not retry on its own: retries, causes and back-off are counted here
        self.client = openai.OpenAI(api_key=key, base_url=self.cfg["base_url"], max_retries=0,
                                    timeout=float(self.cfg["timeout_s"]))
        self._openai = openai

    def _judge_pairs(self, pairs):
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from tqdm import tqdm

        if self.client is None:
            self._connect()
        verdicts = {}
        workers = max(1, min(int(self.cfg["concurrency"]), len(pairs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._judge_one, q, a): key for key, (q, a) in pairs.items()}
            try:
                for future in tqdm(as_completed(futures), total=len(futures), desc="IF judge", unit="call",
                                   mininterval=2.0):
                    verdicts[futures[future]] = future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return verdicts

    def _from_cache(self, value):
        return parse_rating(value["text"]), explanation_of(value["text"]), None

    def _judge_one(self, question: str, answer: str) -> tuple:
        messages = judge_prompt(question, answer)
        if self.cache is None:
            return self._request_with_retries(messages)
        key = cache_key(self.cfg, messages)
        cached = self._claim_or_wait(key)
        if cached is not None:   # another job was judging the same prompt and has answered
            self._count("cache_hits")
            return self._from_cache(cached)
        try:
            return self._request_with_retries(messages)
        finally:
            self.cache.release(key)

    def _claim_or_wait(self, key: str, poll_s: float = 0.5):
        """Claim `key` (returns None: go ahead) or wait for the cached answer of its holder."""
        attempts = int(self.cfg["max_retries"]) + 1
        # longer than the holder can take to succeed or give up, so a live holder keeps its claim
        ttl_s = attempts * (float(self.cfg["timeout_s"]) + float(self.cfg["backoff_max_s"])) + 60.0
        waited = False
        while not self.cache.claim(key, ttl_s):
            if not waited:
                log.info("another job is judging the same prompt; waiting for its answer")
                waited = True
            time.sleep(poll_s)
            value = self.cache.get(key)
            if value is not None:
                return value
        value = self.cache.get(key)   # the holder may have answered just before letting go
        if value is not None:
            self.cache.release(key)
        return value

    def _request_with_retries(self, messages) -> tuple:
        attempts = int(self.cfg["max_retries"]) + 1
        for attempt in range(1, attempts + 1):
            try:
                text, usage = self._request(messages)
                self._add_usage(usage)
                rating = parse_rating(text)
                if rating is None:
                    raise _Retryable("no_rating", f"no rating in the reply {text[:120]!r}")
            except _Retryable as err:
                if attempt == attempts:
                    self._count("failures", cause=err.cause)
                    error = f"{err.cause}: {err.message} (gave up after {attempts} attempts)"
                    log.warning("gave up on an item: %s", error)
                    return None, "", error
                self._count("retries", cause=err.cause)
                wait = self._backoff(attempt, err.retry_after)
                log.info("retry %d/%d in %.2fs: %s: %s", attempt, attempts - 1, wait, err.cause, err.message)
                time.sleep(wait)
                continue
            except _ItemError as err:
                self._count("failures", cause=err.cause)
                error = f"{err.cause}: {err.message} (not retried)"
                log.warning("gave up on an item: %s", error)
                return None, "", error
            if self.cache is not None:
                self.cache.put(cache_key(self.cfg, messages), self.cfg["model"], {"text": text, "usage": usage})
            return rating, explanation_of(text), None
        raise AssertionError("unreachable")

    def _request(self, messages) -> tuple[str, dict]:
        """One HTTP call; returns (reply text, usage) or raises _Retryable / _ItemError / JudgeFatalError."""
        openai = self._openai
        self._count("requests")
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.cfg["model"], messages=messages,
                temperature=float(self.cfg["temperature"]), max_tokens=int(self.cfg["max_tokens"]),
            )
            body = raw.text
        except openai.APITimeoutError:
            raise _Retryable("timeout", f"no reply within {self.cfg['timeout_s']}s") from None
        except openai.APIConnectionError as err:
            reason = err.__cause__ or err
            raise _Retryable("connection", f"{type(reason).__name__}: {reason}") from None
        except openai.APIStatusError as err:
            raise self._status_error(err) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise _Retryable("bad_json", f"the reply body is not JSON: {body[:80]!r}") from None
        try:
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as err:
            raise _Retryable("bad_response", f"no choices[0].message.content in the reply ({err})") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return text, {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                      "completion_tokens": int(usage.get("completion_tokens") or 0)}

    def _status_error(self, err) -> Exception:
        status = err.status_code
        detail = f"HTTP {status} from {self.cfg['base_url'] or 'the default endpoint'}: {_short(err.message)}"
        if status in self.FATAL:
            return JudgeFatalError(f"judge: {self.FATAL[status]} ({detail}; model {self.cfg['model']!r})")
        if status in (408, 409, 425, 429) or status >= 500:
            return _Retryable(f"http_{status}", detail, retry_after_seconds(err.response.headers))
        return _ItemError(f"http_{status}", detail)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with jitter; never shorter than the server's Retry-After."""
        base, cap = float(self.cfg["backoff_base_s"]), float(self.cfg["backoff_max_s"])
        delay = min(cap, base * 2 ** (attempt - 1))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S) + self._rng.uniform(0, base))
        return delay

    def _add_usage(self, usage: dict) -> None:
        cost = (usage["prompt_tokens"] * float(self.cfg["price_prompt_per_1k"])
                + usage["completion_tokens"] * float(self.cfg["price_completion_per_1k"])) / 1000
        self._count("prompt_tokens", usage["prompt_tokens"])
        self._count("completion_tokens", usage["completion_tokens"])
        self._count("usd", cost)


def retry_after_seconds(headers) -> float | None:
    """Seconds asked for by 'retry-after-ms' or 'retry-after' (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _short(text, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


class LocalJudge(Judge):
    """An in-process causal LM: rating = probability-weighted mean of " 1" ... " 10" after "Rating:"."""

    def __init__(self, cfg: dict, model_dir, cache_path=None, trust_remote_code: bool = False):
        super().__init__(cfg, cache_path)
        import torch

        from reset.inference import load_for_inference

        self.torch = torch
        self.model, self.tokenizer, self.device = load_for_inference(model_dir, trust_remote_code=trust_remote_code)
        self.stats.update({"truncated": 0, "rating_mass": 0.0})
        self.continuations = {k: tuple(self.tokenizer(f" {k}", add_special_tokens=False).input_ids)
                              for k in range(1, 11)}
        self.chains = _internal_chains(list(self.continuations.values()))
        max_positions = getattr(self.model.config, "max_position_embeddings", None) or 2048
        longest = max(len(c) for c in self.continuations.values())
        self.max_input = min(int(cfg["max_input_tokens"]), max_positions) - int(cfg["explain_tokens"]) - longest - 8
        self.overhead = len(self._encode(self._chat_text("", "")))
        self.shared = None   # KV cache of the system prompt every judge prompt starts with

    # ---------------------------------------------------------------- prompt text
    def _chat_text(self, question: str, answer: str) -> str:
        messages = judge_prompt(question, answer)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\nJudge: "

    def _encode(self, text: str) -> list[int]:
        # a chat template writes its own special tokens; plain text gets the tokenizer's (e.g. BOS)
        special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def _fit(self, question: str, answer: str) -> tuple[str, str]:
        """Shorten question and answer (from their ends) so the prompt fits the model."""
        budget = self.max_input - self.overhead
        q_ids = self.tokenizer(question, add_special_tokens=False).input_ids
        a_ids = self.tokenizer(answer, add_special_tokens=False).input_ids
        if len(q_ids) + len(a_ids) <= budget:
            return question, answer
        self._count("truncated")
        q_keep = min(len(q_ids), max(budget // 2, budget - len(a_ids)))
        a_keep = max(0, budget - q_keep)
        return self.tokenizer.decode(q_ids[:q_keep]), self.tokenizer.decode(a_ids[:a_keep])

    # ---------------------------------------------------------------- judging
    def _from_cache(self, value):
        return value["rating"], value["explanation"], None

    def _judge_pairs(self, pairs):
        from tqdm import tqdm

        keys = list(pairs)
        prompts = {k: self._chat_text(*self._fit(*pairs[k])) for k in keys}
        keys.sort(key=lambda k: len(prompts[k]))  # similar lengths batch together
        size = int(self.cfg["batch_size"])
        verdicts = {}
        for start in tqdm(range(0, len(keys), size), desc="IF judge (local)", unit="batch", mininterval=2.0):
            batch = keys[start:start + size]
            explanations = self._explain([prompts[k] for k in batch])
            prefixes = [prompts[k] + (e + "\n" if e else "") + "Rating:" for k, e in zip(batch, explanations, strict=True)]
            for key, explanation, probs in zip(batch, explanations, self._rating_probs(prefixes), strict=True):
                verdicts[key] = self._verdict(key, pairs[key], explanation, probs)
        return verdicts

    def _verdict(self, key, pair, explanation, probs) -> tuple:
        self._count("requests")
        mass = sum(probs.values())
        self._count("rating_mass", mass)
        if not mass > 0:
            self._count("failures", cause="no_rating_mass")
            return None, explanation, "no_rating_mass: the model puts no probability on ' 1' ... ' 10'"
        rating = round(sum(k * p for k, p in probs.items()) / mass, 4)
        if self.cache is not None:
            self.cache.put(cache_key(self.cfg, judge_prompt(*pair)), self.cfg["model"],
                           {"rating": rating, "explanation": explanation})
        return rating, explanation, None

    def _explain(self, prompts: list[str]) -> list[str]:
        """Greedy short explanations (explain_tokens > 0), cut before any 'Rating'."""
        n = int(self.cfg["explain_tokens"])
        if n <= 0:
            return [""] * len(prompts)
        torch = self.torch
        special = not getattr(self.tokenizer, "chat_template", None)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=n, do_sample=False, top_p=None, top_k=None,
                                      temperature=None, pad_token_id=self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [re.split(r"rating", t, maxsplit=1, flags=re.IGNORECASE)[0].strip() for t in texts]

    def _rating_probs(self, prefixes: list[str]) -> list[dict[int, float]]:
        """P(rating = k | prefix) for k = 1..10, from exact sequence log-probabilities.

        A continuation that is a prefix of another (" 1" of " 10") has the longer one's
        probability subtracted, so the ten events are disjoint.
        """
        torch = self.torch
        encoded = [self._encode(p) for p in prefixes]
        shared = self._shared_prefix()
        node_logprobs = [{} for _ in prefixes]  # per item: continuation prefix -> log-probs of the next token
        for chain in self.chains:
            rows = [ids + list(chain) for ids in encoded]
            keep = len(chain) + 1
            with torch.inference_mode():   # only question and answer run on the system prompt's cache
                logits = shared.last_logits(rows, self.tokenizer.pad_token_id, keep)
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for i in range(len(rows)):
                for j in range(keep):
                    node_logprobs[i].setdefault(chain[:j], logprobs[i, j])
        return [self._disjoint_probs(nodes) for nodes in node_logprobs]

    def _shared_prefix(self):
        """Token ids every judge prompt starts with (chat frame and system prompt), as a KV cache."""
        if self.shared is None:
            from reset.inference import SharedPrefix

            marker = "\x00QUESTION\x00"
            head = self._chat_text(marker, "").split(marker)[0]
            # the last tokens before the question may merge with its first word
            self.shared = SharedPrefix(self.model, self._encode(head)[:-2], self.device)
        return self.shared

    def _disjoint_probs(self, nodes) -> dict[int, float]:
        seq = {}
        for k, cont in self.continuations.items():
            seq[k] = math.exp(sum(float(nodes[cont[:j]][cont[j]]) for j in range(len(cont))))
        probs = {}
        for k, cont in self.continuations.items():
            longer = sum(seq[m] for m, other in self.continuations.items()
                         if len(other) > len(cont) and other[: len(cont)] == cont)
            probs[k] = max(0.0, seq[k] - longer)
        return probs

    def summary(self) -> dict:
        out = super().summary()
        scored = max(1, out["requests"])
        out["mean_rating_mass"] = round(out.pop("rating_mass") / scored, 4)
        return out


def _internal_chains(continuations: list[tuple]) -> list[tuple]:
    """Token paths whose next-token distributions cover every step of every continuation.

    The internal nodes of the continuations' trie are their proper prefixes; a chain is an
    internal node that is not itself a prefix of another internal node, and one forward
    pass over prefix + chain yields the distributions after every node along it.
    """
    internal = {cont[:j] for cont in continuations for j in range(len(cont))}
    return sorted(node for node in internal
                  if not any(len(other) > len(node) and other[: len(node)] == node for other in internal))


def make_judge(judge_cfg: dict, model_dir=None, cache_path=None, trust_remote_code: bool = False) -> Judge:
    """The judge for a config block (judges.if / judges.if_supercharged).

    provider 'local' needs `model_dir` (a prepared safetensors directory); 'openai' reads
    its key from the environment variable named by api_key_env. With `cache_path` every
    judgement is stored in SQLite and never requested again. trust_remote_code (local only)
    is for a model the config names under models.trust_remote_code.
    """
    cfg = judge_settings(judge_cfg)
    if cfg["provider"] == "openai":
        return OpenAIJudge(cfg, cache_path)
    if model_dir is None:
        raise ValueError(f"judge: provider 'local' (model {cfg['model']!r}) needs a model directory")
    return LocalJudge(cfg, model_dir, cache_path, trust_remote_code)


# --------------------------------------------------------------------------- cost


class BudgetExceeded(RuntimeError):
    """The estimated cost of a judge step is above judges.max_usd."""


def estimate_tokens(text: str, chars_per_token: float) -> int:
    return math.ceil(len(text) / chars_per_token)


def estimate_cost(items: list[dict], judge_cfg: dict, cache_path=None) -> dict:
    """Calls, tokens and dollars a judge step would cost, before any call is made.

    Calls = unique (question, answer) pairs minus those already in the cache at `cache_path`.
    Prompt tokens ~ characters / chars_per_token (default 4) of both messages plus 4 tokens of
    chat framing per message and 3 for the reply's start; completion tokens =
    expected_completion_tokens per call (a 1-2 sentence explanation and the rating);
    `usd_max` bounds the cost with every reply at max_tokens.
    """
    cfg = judge_settings(judge_cfg)
    pairs = unique_pairs(items)
    cache = JudgeCache(cache_path) if cache_path and Path(cache_path).exists() else None
    calls = prompt_tokens = cached = 0
    for question, answer in pairs.values():
        messages = judge_prompt(question, answer)
        if cache is not None and cache_key(cfg, messages) in cache:
            cached += 1
            continue
        calls += 1
        prompt_tokens += 3 + sum(4 + estimate_tokens(m["content"], float(cfg["chars_per_token"])) for m in messages)
    if cache is not None:
        cache.close()
    completion = calls * int(cfg["expected_completion_tokens"])
    completion_max = calls * int(cfg["max_tokens"])
    price_in, price_out = float(cfg["price_prompt_per_1k"]), float(cfg["price_completion_per_1k"])
    return {
        "provider": cfg["provider"], "model": cfg["model"],
        "items": len(items), "unique": len(pairs), "cached": cached, "calls": calls,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion,
        "usd": round((prompt_tokens * price_in + completion * price_out) / 1000, 6),
        "usd_max": round((prompt_tokens * price_in + completion_max * price_out) / 1000, 6),
        "price_prompt_per_1k": price_in, "price_completion_per_1k": price_out,
        "token_estimate": f"~{cfg['chars_per_token']} characters per token",
    }


def check_budget(estimate: dict, max_usd: float | None) -> None:
    """Raise BudgetExceeded when the estimate is above `max_usd` (None = no cap)."""
    if max_usd is not None and estimate["usd"] > max_usd:
        what = f"judge {estimate['model']!r}" if "model" in estimate else f"judges {', '.join(estimate['judges'])}"
        raise BudgetExceeded(
            f"{what}: estimated ${estimate['usd']:.2f} for {estimate['calls']} calls "
            f"({estimate['prompt_tokens']} prompt + {estimate['completion_tokens']} completion tokens) "
            f"exceeds judges.max_usd = ${max_usd:.2f}; raise the cap or shrink the run"
        )


# --------------------------------------------------------------------------- files


def read_items(path) -> list[dict]:
    """Items from JSONL (one {id, question, answer} per line) or parquet with those columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        missing = {"id", "question", "answer"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return frame.to_dict("records")
    from reset.io import read_jsonl

    return read_jsonl(path)


def write_results(items: list, results: list[dict], path) -> None:
    """Results (JSONL or parquet by extension); extra input fields besides question/answer are kept."""
    rows = []
    for item, result in zip(items, results, strict=True):
        extra = {k: v for k, v in item.items() if k not in ("question", "answer")} if isinstance(item, dict) else {}
        rows.append({**extra, **result})
    if Path(path).suffix == ".parquet":
        import pandas as pd

        from reset.io import write_parquet

        write_parquet(pd.DataFrame(rows, columns=list(rows[0]) if rows else list(result_row(None))), path)
    else:
        from reset.io import write_jsonl

        write_jsonl(rows, path)


# --------------------------------------------------------------------------- CLI


# flag -> (config key, type, help); every flag overrides the same key of --settings
_FLAGS = {
    "--provider": ("provider", str, "openai or local"),
    "--model": ("model", str, "model name sent to the API and recorded in the cache "
                              "(local: defaults to the model directory's SOURCE)"),
    "--base-url": ("base_url", str, "OpenAI-compatible base URL, e.g. http://host:8000/v1"),
    "--api-key-env": ("api_key_env", str, "name of the environment variable holding the API key "
                                          "(never the key itself)"),
    "--temperature": ("temperature", float, None),
    "--max-tokens": ("max_tokens", int, "longest reply"),
    "--concurrency": ("concurrency", int, "parallel requests"),
    "--max-retries": ("max_retries", int, "extra attempts per item"),
    "--timeout": ("timeout_s", float, "seconds per request"),
    "--backoff-base": ("backoff_base_s", float, "first back-off in seconds (doubles per retry, with jitter)"),
    "--backoff-max": ("backoff_max_s", float, "back-off cap in seconds (a longer Retry-After still wins)"),
    "--price-prompt-per-1k": ("price_prompt_per_1k", float, "USD per 1,000 prompt tokens"),
    "--price-completion-per-1k": ("price_completion_per_1k", float, "USD per 1,000 completion tokens"),
    "--chars-per-token": ("chars_per_token", float, "estimate: characters per token"),
    "--expected-completion-tokens": ("expected_completion_tokens", int, "estimate: reply tokens per call"),
    "--batch-size": ("batch_size", int, "local: items per forward pass"),
    "--explain-tokens": ("explain_tokens", int, "local: greedy explanation tokens before 'Rating:' (0 = none)"),
    "--max-input-tokens": ("max_input_tokens", int, "local: longest prompt; longer questions/answers are cut"),
}


def _judge_flags(parser) -> None:
    group = parser.add_argument_group("judge settings (the keys of judges.if in the config)")
    group.add_argument("--settings", default=None,
                       help="a judge config block as JSON (e.g. judges.if); the flags below override it")
    for flag, (key, kind, text) in _FLAGS.items():
        default = DEFAULTS[key]
        text = f"{text or key} [{key}; default {default}]" if default is not None else f"{text} [{key}]"
        group.add_argument(flag, type=kind, default=None, help=text,
                           **({"choices": ["openai", "local"]} if key == "provider" else {}))
    parser.add_argument("--cache", default=None, help="SQLite cache file (created if absent)")
    parser.add_argument("--max-usd", type=float, default=None,
                        help="refuse to start when the estimated cost exceeds this (judges.max_usd)")


def _cfg_from_args(args) -> dict:
    """--settings JSON, overridden by explicit flags; the model falls back to the model dir's SOURCE."""
    try:
        cfg = json.loads(args.settings) if args.settings else {}
    except ValueError as err:
        raise ValueError(f"--settings is not a JSON object: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError("--settings must be a JSON object (a judge config block)")
    for key, _, _ in _FLAGS.values():
        value = getattr(args, _dest(key))
        if value is not None:
            cfg[key] = value
    if not cfg.get("model") and getattr(args, "model_dir", None):
        source = Path(args.model_dir) / "SOURCE"
        cfg["model"] = source.read_text().strip() if source.exists() else str(args.model_dir)
    if not cfg.get("provider"):
        raise ValueError("--provider (or 'provider' in --settings) is required")
    if not cfg.get("model"):
        raise ValueError("--model (or 'model' in --settings, or --model-dir) is required")
    return cfg


def _dest(key: str) -> str:
    flag = next(f for f, (k, _, _) in _FLAGS.items() if k == key)
    return flag.lstrip("-").replace("-", "_")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reset.judge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="`python -m reset.judge estimate --help` shows the estimate command.")
    parser.add_argument("--in", dest="inputs", required=True, help="JSONL (or parquet) of {id, question, answer}")
    parser.add_argument("--out", required=True, help="JSONL (or parquet) of {id, rating, score, explanation, error}")
    parser.add_argument("--model-dir", default=None, help="local: prepared model directory")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="local: let the model's own Python code run (only for a model you trust)")
    parser.add_argument("--summary", default=None, help="also write the run summary here (JSON)")
    _judge_flags(parser)
    return parser


def _estimate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reset.judge estimate",
        description="Estimate calls, tokens and dollars of judge steps before any paid call; exits with "
                    "status 3 when the estimate exceeds --max-usd. Either one judge (--in and the judge "
                    "flags) or several (--job, repeated); with --job the total is what --max-usd caps.",
        epilog="example: estimate --job if \"$(cat if.json)\" if_items.jsonl --job if_supercharged "
               "'{\"provider\": \"openai\", \"model\": \"gpt-3.5-turbo\"}' s_items.jsonl --max-usd 100 --out est.json")
    parser.add_argument("--in", dest="inputs", nargs="+", default=None,
                        help="one or more JSONL (or parquet) files of {id, question, answer}")
    parser.add_argument("--job", nargs="+", action="append", default=None, metavar="LABEL SETTINGS_JSON PATH",
                        help="a judge step: its label, its judge config block as JSON, then its input files")
    parser.add_argument("--out", default=None, help="write the estimate here (JSON); stdout otherwise")
    _judge_flags(parser)
    return parser


def _estimate_jobs(args) -> dict:
    """Per-job estimates and their total."""
    estimates = {}
    for job in args.job:
        if len(job) < 3:
            raise ValueError(f"--job {' '.join(job)}: expected LABEL SETTINGS_JSON PATH [PATH ...]")
        label, settings, *paths = job
        try:
            cfg = json.loads(settings)
        except ValueError as err:
            raise ValueError(f"--job {label}: settings are not JSON ({err})") from None
        items = [item for path in paths for item in read_items(path)]
        estimates[label] = {**estimate_cost(items, cfg, cache_path=args.cache), "inputs": paths}
    total = {key: sum(e[key] for e in estimates.values())
             for key in ("items", "unique", "cached", "calls", "prompt_tokens", "completion_tokens")}
    for key in ("usd", "usd_max"):
        total[key] = round(sum(e[key] for e in estimates.values()), 6)
    return {"judges": estimates, **total}


def _estimate_main(argv) -> int:
    from reset.io import write_json

    parser = _estimate_parser()
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.job):
        parser.error("give either --in (one judge) or --job (one or more judges)")
    if args.job:
        estimate = _estimate_jobs(args)
    else:
        items = [item for path in args.inputs for item in read_items(path)]
        estimate = estimate_cost(items, _cfg_from_args(args), cache_path=args.cache)
    estimate["max_usd"] = args.max_usd
    estimate["within_budget"] = args.max_usd is None or estimate["usd"] <= args.max_usd
    if args.out:
        write_json(estimate, args.out)
    print(json.dumps(estimate, indent=2), file=sys.stdout if not args.out else sys.stderr)
    try:
        check_budget(estimate, args.max_usd)
    except BudgetExceeded as err:
        log.error("%s", err)
        return 3
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the HTTP stack logs every request at INFO; our retry lines say what matters
    for name in ("httpx", "httpx2", "openai", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_main(argv) -> int:
    from reset.io import write_json

    args = _run_parser().parse_args(argv)
    cfg = _cfg_from_args(args)
    items = read_items(args.inputs)
    log.info("judging %d items from %s with %s model %s", len(items), args.inputs, cfg["provider"], cfg["model"])
    if cfg["provider"] == "openai" and args.max_usd is not None:
        estimate = estimate_cost(items, cfg, cache_path=args.cache)
        log.info("estimate: %d calls, ~$%.4f (cap $%.2f)", estimate["calls"], estimate["usd"], args.max_usd)
        check_budget(estimate, args.max_usd)
    judge = make_judge(cfg, model_dir=args.model_dir, cache_path=args.cache, trust_remote_code=args.trust_remote_code)
    try:
        results = judge.judge(items)
    finally:
        judge.close()
    write_results(items, results, args.out)
    summary = judge.summary()
    log.info("summary: %d items, %d unique, %d requests, %d cache hits, retries %s, failures %s, %d missing",
             summary["items"], summary["unique"], summary["requests"], summary["cache_hits"],
             summary["retries"] or "none", summary["failures"] or "none", summary["missing"])
    print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    if args.summary:
        write_json(summary, args.summary)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    try:
        if argv[:1] == ["estimate"]:
            return _estimate_main(argv[1:])
        return _run_main(argv[1:] if argv[:1] == ["run"] else argv)
    except (JudgeFatalError, BudgetExceeded, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
