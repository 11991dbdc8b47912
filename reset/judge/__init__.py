"""IF judge (LLM-as-a-judge): rate answers to instructions on a 1-10 scale, score = rating / 10.

Two providers behind one interface:
  openai  any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp);
          key from the environment only; bounded concurrency; retries with exponential
          back-off and jitter on 429 / 5xx / time-outs / dropped connections / broken
          replies, honouring Retry-After; a follow-up turn after a reply without a rating;
          a persistent cache that many jobs on many hosts can share.
  local   an in-process transformers model: the rating is the probability-weighted mean
          over the continuations " 1" ... " 10" after "Rating:" (always yields a score).

The package, by concern:
  prompt        the judge prompt of the paper and the parsing of replies
  settings      the judge config keys, their defaults, the cache key
  cache         the cache directory: per-process shards, claims, compaction
  base          input checks, de-duplication, the shared driver (Judge)
  openai_judge  the OpenAI-compatible judge and its retry policy; list_served_models
  local         the local in-process judge
  cost          cost estimate and the judges.max_usd cap
  files         reading items and writing results (JSONL or parquet)
  cli           `python -m reset.judge` (judge a file, `estimate`, `compact`)
"""

from __future__ import annotations

from reset.judge.base import Judge, JudgeFatalError, check_item, pair_key, result_row, unique_pairs
from reset.judge.cache import JudgeCache, compact
from reset.judge.cli import main
from reset.judge.cost import BudgetExceeded, check_budget, estimate_cost, estimate_tokens
from reset.judge.files import read_items, write_results
from reset.judge.prompt import (
    ANSWER_END,
    ANSWER_START,
    FORMAT_REMINDER,
    SYSTEM_PROMPT,
    explanation_of,
    judge_prompt,
    parse_rating,
)
from reset.judge.settings import DEFAULTS, cache_key, judge_settings

__all__ = [
    "ANSWER_END", "ANSWER_START", "DEFAULTS", "FORMAT_REMINDER", "SYSTEM_PROMPT", "BudgetExceeded", "Judge",
    "JudgeCache", "JudgeFatalError", "cache_key", "check_budget", "check_item", "compact", "estimate_cost",
    "estimate_tokens", "explanation_of", "judge_prompt", "judge_settings", "list_served_models", "main",
    "make_judge", "pair_key", "parse_rating", "read_items", "result_row", "unique_pairs", "write_results",
]


def list_served_models(base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 10.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at GET {base_url}/models (see openai_judge)."""
    from reset.judge.openai_judge import list_served_models as served

    return served(base_url, api_key_env, timeout_s)


def make_judge(judge_cfg: dict, model_dir=None, cache_path=None, trust_remote_code: bool = False) -> Judge:
    """The judge for a config block (judges.if / judges.if_supercharged).

    provider 'local' needs `model_dir` (a prepared safetensors directory); 'openai' reads
    its key from the environment variable named by api_key_env. With `cache_path` every
    judgement is stored in the cache directory and never requested again. trust_remote_code (local only)
    is for a model the config names under models.trust_remote_code.
    """
    cfg = judge_settings(judge_cfg)
    if cfg["provider"] == "openai":
        from reset.judge.openai_judge import OpenAIJudge

        return OpenAIJudge(cfg, cache_path)
    if model_dir is None:
        raise ValueError(f"judge: provider 'local' (model {cfg['model']!r}) needs a model directory")
    from reset.judge.local import LocalJudge

    return LocalJudge(cfg, model_dir, cache_path, trust_remote_code)


