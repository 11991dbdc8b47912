"""Judge settings (the keys of judges.if / judges.if_supercharged) and the cache key they imply."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from reset.settings import REQUIRED
from reset.settings import Judge as JudgeKeys

# one definition per key: reset/settings.py (Judge), with its doc and whether it changes outputs
DEFAULTS = {f.name: None if f.default is REQUIRED else f.default for f in dataclasses.fields(JudgeKeys)}
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
    for key in ("max_retries", "format_retries"):
        if int(cfg[key]) < 0:
            raise ValueError(f"judge config: {key} must be >= 0, got {cfg[key]!r}")
    if not float(cfg["claim_ttl_s"]) > 0:
        raise ValueError(f"judge config: claim_ttl_s must be > 0, got {cfg['claim_ttl_s']!r}")
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
