"""The OpenAI-compatible judge: any chat-completions endpoint (OpenAI, vLLM, llama.cpp's server).

Two separate retry budgets per item: `max_retries` extra attempts of one request after a
transport or server error (HTTP 408/409/425/429/5xx, time-out, dropped connection, a body that
is not a completion), and `format_retries` follow-up turns after a reply without a rating: the
judge's reply is kept in the conversation and it is asked again for "Rating: N" (asking the
same prompt again at temperature 0 would only buy the same reply).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from email.utils import parsedate_to_datetime

from reset.judge.base import Judge, JudgeFatalError
from reset.judge.prompt import explanation_of, format_follow_up, judge_prompt, parse_rating
from reset.judge.settings import RETRY_AFTER_CAP_S, cache_key

log = logging.getLogger("reset.judge")


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
        ttl_s = float(self.cfg["claim_ttl_s"])   # renewed while we work on the prompt
        waited = False
        while not self.cache.claim(key, ttl_s):
            if not waited:
                log.info("another job is judging the same prompt; waiting for its answer")
                waited = True
            time.sleep(poll_s)
            value = self.cache.get(key)
            if value is not None:
                return value
        value = self.cache.get(key, fresh=True)   # the holder may have answered just before letting go
        if value is not None:
            self.cache.release(key)
        return value

    def _request_with_retries(self, messages) -> tuple:
        """Ask, then follow up after a reply without a rating; (rating, explanation, error)."""
        follow_ups = int(self.cfg["format_retries"])
        conversation, replies, usage = messages, [], {"prompt_tokens": 0, "completion_tokens": 0}
        for turn in range(follow_ups + 1):
            text, turn_usage, error = self._ask(conversation)
            if error is not None:
                return None, "", error
            replies.append(text)
            usage = {k: usage[k] + turn_usage[k] for k in usage}
            rating = parse_rating(text)
            if rating is not None:
                break
            if turn == follow_ups:
                self._count("failures", cause="no_rating")
                error = (f"no_rating: no rating in the reply {text[:120]!r} "
                         f"(gave up after {follow_ups} follow-up(s) asking for the format)")
                log.warning("gave up on an item: %s", error)
                return None, explanation_of(text), error
            self._count("retries", cause="no_rating")
            log.info("retry %d/%d (follow-up turn): no_rating: no rating in the reply %r", turn + 1, follow_ups,
                     text[:120])
            conversation = format_follow_up(conversation, text)
        # The rated reply is the verdict: a run whose judge needed a follow-up turn gives the same
        # rating and explanation as one whose judge rated at once. The cache keeps the earlier
        # rating-less turns for audit.
        if self.cache is not None:
            self.cache.put(cache_key(self.cfg, messages), self.cfg["model"],
                           {"text": text, "earlier_turns": replies[:-1], "usage": usage})
        return rating, explanation_of(text), None

    def _ask(self, messages) -> tuple:
        """One reply with up to max_retries retries on transport errors: (text, usage, error)."""
        attempts = int(self.cfg["max_retries"]) + 1
        for attempt in range(1, attempts + 1):
            try:
                text, usage = self._request(messages)
                self._add_usage(usage)
                return text, usage, None
            except _Retryable as err:
                if attempt == attempts:
                    self._count("failures", cause=err.cause)
                    error = f"{err.cause}: {err.message} (gave up after {attempts} attempts)"
                    log.warning("gave up on an item: %s", error)
                    return None, None, error
                self._count("retries", cause=err.cause)
                wait = self._backoff(attempt, err.retry_after)
                log.info("retry %d/%d in %.2fs: %s: %s", attempt, attempts - 1, wait, err.cause, err.message)
                time.sleep(wait)
            except _ItemError as err:
                self._count("failures", cause=err.cause)
                error = f"{err.cause}: {err.message} (not retried)"
                log.warning("gave up on an item: %s", error)
                return None, None, error
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




def list_served_models(base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 10.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at GET {base_url}/models.

    Sends the key from the environment variable `api_key_env` when it is set (a local server
    needs none). Raises JudgeFatalError naming the URL when the server cannot be reached or
    does not answer with a model list; never shows the key.
    """
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    key = os.environ.get(api_key_env)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body = reply.read()
    except urllib.error.HTTPError as err:
        raise JudgeFatalError(f"GET {url}: HTTP {err.code} {_short(err.reason)}") from None
    except (urllib.error.URLError, OSError) as err:
        raise JudgeFatalError(f"GET {url}: {_short(getattr(err, 'reason', err))}") from None
    try:
        data = json.loads(body)
        return [str(m["id"]) for m in data["data"]]
    except (ValueError, KeyError, TypeError):
        raise JudgeFatalError(f"GET {url}: not an OpenAI model list: {_short(body[:200])}") from None
