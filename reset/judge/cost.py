"""Cost of a judge step before any paid call, and the judges.max_usd cap."""

from __future__ import annotations

import math

from reset.judge.base import unique_pairs
from reset.judge.cache import JudgeCache, cache_dir_and_legacy
from reset.judge.prompt import judge_prompt
from reset.judge.settings import cache_key, judge_settings


class BudgetExceeded(RuntimeError):
    """The estimated cost of a judge step is above judges.max_usd."""

    exit_code = 3   # refused by its budget (reset/cli.py)


def _cache_exists(path) -> bool:
    directory, legacy = cache_dir_and_legacy(path)
    return directory.is_dir() or bool(legacy)


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
    cache = JudgeCache(cache_path, create=False) if cache_path and _cache_exists(cache_path) else None
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


