"""Shared fixtures: the real embedded model (converted once, cached) and a tiny random LLaMA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub: code that would download must fail fast instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# Converted models are cached between test runs (git-ignored); RESET_TEST_CACHE moves it.
CACHE = Path(os.environ.get("RESET_TEST_CACHE", REPO / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory (the real small model)."""
    from reset.models import prepare_model

    out = CACHE / "smollm2"
    if not (out / "model.safetensors").exists():
        prepare_model("embedded:smollm2", out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_dir) -> Path:
    """A 2-layer randomly initialised LLaMA with SmolLM2's tokenizer (seconds to train)."""
    from reset.models import build_tiny_llama

    out = CACHE / "tiny-llama"
    if not (out / "model.safetensors").exists():
        build_tiny_llama(out, smollm2_dir, seed=0)
    return out


@pytest.fixture(scope="session")
def e2e_run(tiny_llama_dir, tmp_path_factory):
    """(workdir, results dir, reviewer-path dry-run text) of the finished tiny end-to-end run.

    Shared by every test file that needs a finished run; tests must not change it (dry runs only).
    """
    from e2e_support import finished_run

    return finished_run(tiny_llama_dir, tmp_path_factory)
