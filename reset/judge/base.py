"""What every judge shares: input checks, de-duplication, the cache lookup, counts, results in input order."""

from __future__ import annotations

import hashlib
import json
import threading

from reset.judge.cache import JudgeCache
from reset.judge.prompt import judge_prompt
from reset.judge.settings import cache_key


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



class JudgeFatalError(RuntimeError):
    """A problem no retry can fix (bad key, unknown model or URL): the run stops."""

    exit_code = 2   # a configuration error (reset/cli.py)


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


