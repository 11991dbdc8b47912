"""Sampling sweep: `reset.inference.generate` against one `model.generate` call per candidate.

Both sides sample the ReSet decoding sweep (SPEC §5: per example one round of
7 settings, temperature 0.1..0.7 or top-k 5..100 at temperature 1.0, the
parameter drawn per example exactly as `reset.sample.plan_rows` draws it) for
the same prompts on the real SmolLM2-135M-Instruct (converted once under
.cache/test-models/smollm2, shared with the tests), in the same process with
the same threads, repeats alternating. The naive side is what a first script
would do: for every (example, setting) seed torch and call Hugging Face
`model.generate` on that one prompt.

Figures: generated tokens per second on both sides (EOS not counted) and their
ratio. As a check that both sides do the same work, one greedy row is decoded by
both and must give the same tokens.

Usage: python -m benchmarks.sampling [--examples N] [--max-new-tokens T] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks import REPO, SMOLLM2_DIR, emit, interleave, log, set_threads, summary

RAW = REPO / "resources" / "demo" / "raw"
TARGET_RATIO = 3.0
TEMPERATURES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
TOP_KS = [5, 10, 20, 50, 70, 90, 100]
TOPK_TEMPERATURE = 1.0


def smollm2_dir():
    """The real SmolLM2 model directory, converted from the embedded GGUF once."""
    from reset.models import prepare_model

    if not (SMOLLM2_DIR / "model.safetensors").exists():
        log(f"converting embedded:smollm2 -> {SMOLLM2_DIR} (once)")
        prepare_model("embedded:smollm2", SMOLLM2_DIR)
    return SMOLLM2_DIR


def _records(name: str) -> list:
    path = RAW / name
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue   # the demo files carry malformed rows on purpose (filter tests)
    return rows


def demo_prompts() -> list[dict]:
    """Prompts of the four ReSet pools from the shipped demo data, interleaved by kind."""
    from reset.prompts import render_prompt, task_instruction

    by_kind = {"if": [], "extractive_qa": [], "abstractive_qa": [], "summarization": []}
    for row in _records("dolly.jsonl"):
        if isinstance(row, dict) and row.get("instruction") and not row.get("context"):
            by_kind["if"].append(render_prompt("if", row["instruction"]))
    for row in _records("nq.json"):
        if isinstance(row, dict) and row.get("question") and row.get("ctxs"):
            context = "\n".join(c["text"] for c in row["ctxs"][:5] if isinstance(c, dict) and c.get("text"))
            by_kind["extractive_qa"].append(render_prompt("extractive_qa", task_instruction("extractive_qa"),
                                                          context, row["question"]))
    for row in _records("msmarco.jsonl"):
        passages = row.get("passages") if isinstance(row, dict) else None
        if isinstance(passages, dict) and passages.get("passage_text") and row.get("query"):
            context = "\n".join(passages["passage_text"][:5])
            by_kind["abstractive_qa"].append(render_prompt("abstractive_qa", task_instruction("abstractive_qa"),
                                                           context, row["query"]))
    for row in _records("cnn_dailymail.jsonl"):
        if isinstance(row, dict) and isinstance(row.get("article"), str) and row["article"]:
            by_kind["summarization"].append(render_prompt("summarization", task_instruction("summarization"),
                                                          row["article"]))
    out = []
    for i in range(max(len(v) for v in by_kind.values())):
        out.extend({"id": f"{kind}-{i}", "kind": kind, "prompt": rows[i]}
                   for kind, rows in by_kind.items() if i < len(rows))
    return out


def sweep_rows(n_examples: int, base_seed: int = 0) -> list[dict]:
    """One sweep round per example: 7 rows {prompt, setting, seed}, planned by reset.sample.plan_rows."""
    import pandas as pd

    from reset.sample import plan_rows

    examples = demo_prompts()[:n_examples]
    subset = pd.DataFrame([{"id": e["id"], "dataset": e["kind"], "kind": e["kind"], "pool": e["kind"],
                            "prompt": e["prompt"]} for e in examples])
    return plan_rows(subset, 1, TEMPERATURES, TOP_KS, TOPK_TEMPERATURE, base_seed=base_seed)


def naive_generate(model, tokenizer, rows, max_new_tokens: int) -> list[int]:
    """One Hugging Face generate call per row; returns the generated token counts (EOS not counted)."""
    import torch

    eos = set(_as_list(model.generation_config.eos_token_id)) | {tokenizer.eos_token_id}
    counts = []
    with torch.inference_mode():
        for row in rows:
            torch.manual_seed(row["seed"] % (2 ** 63))
            inputs = tokenizer(row["prompt"], return_tensors="pt").to(model.device)
            setting = row["setting"]
            kwargs = {"do_sample": setting["do_sample"], "max_new_tokens": max_new_tokens,
                      "pad_token_id": tokenizer.pad_token_id}
            if setting["do_sample"]:
                kwargs.update(temperature=setting["temperature"], top_k=setting["top_k"] or None, top_p=1.0)
            out = model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1]:].tolist()
            counts.append(sum(1 for t in out if t not in eos))
    return counts


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def greedy_match(model, tokenizer, prompt: str, max_new_tokens: int) -> bool:
    """Our greedy decoding and Hugging Face's give the same text for `prompt`."""
    from reset.inference import generate

    ours = generate(model, tokenizer, [prompt], [{"do_sample": False}], [0], max_new_tokens, 1)[0]["text"]
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    ids = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id)[0, inputs["input_ids"].shape[1]:]
    return ours == tokenizer.decode(ids, skip_special_tokens=True)


def _sync(model):
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize()


def measure(model, tokenizer, rows, max_new_tokens: int, repeats: int, batch_size: int) -> dict:
    """Tokens/s of reset.inference.generate and of the naive loop on `rows`, repeats interleaved."""
    from reset.inference import generate

    model.generation_config.top_p = None   # the sweep varies temperature and top-k only
    tokens = {"ours": [], "naive": []}

    def ours_once():
        _sync(model)
        start = time.perf_counter()
        out = generate(model, tokenizer, [r["prompt"] for r in rows], [r["setting"] for r in rows],
                       [r["seed"] for r in rows], max_new_tokens, batch_size)
        _sync(model)
        tokens["ours"].append(sum(o["n_tokens"] for o in out))
        return time.perf_counter() - start

    def naive_once():
        _sync(model)
        start = time.perf_counter()
        counts = naive_generate(model, tokenizer, rows, max_new_tokens)
        _sync(model)
        tokens["naive"].append(sum(counts))
        return time.perf_counter() - start

    matches = greedy_match(model, tokenizer, rows[0]["prompt"], min(max_new_tokens, 16))
    log(f"sampling: {len(rows)} rows ({len(rows) // 7} examples x 7 settings), {max_new_tokens} new tokens, "
        f"{repeats} repeats a side, on {model.device}")
    times = interleave({"naive": naive_once, "ours": ours_once}, repeats)
    rate = {side: max(n / s for n, s in zip(tokens[side], times[side], strict=True)) for side in times}
    return {
        "rows": len(rows), "max_new_tokens": max_new_tokens, "batch_size": batch_size,
        "params": sorted({r["param"] for r in rows}),
        "ours": {**summary(times["ours"]), "tokens": tokens["ours"], "tokens_per_s": round(rate["ours"], 1)},
        "naive": {**summary(times["naive"]), "tokens": tokens["naive"], "tokens_per_s": round(rate["naive"], 1)},
        "greedy_match": matches,
        "ratio": round(rate["ours"] / rate["naive"], 2), "target_ratio": TARGET_RATIO,
    }


def run(examples: int = 4, max_new_tokens: int = 48, threads: int = 1, repeats: int = 2,
        batch_size: int | None = None) -> dict:
    from reset.models import load_causal_lm, load_tokenizer

    set_threads(threads)
    model_dir = smollm2_dir()
    model = load_causal_lm(model_dir, device="cpu")
    tokenizer = load_tokenizer(model_dir)
    rows = sweep_rows(examples)
    figures = measure(model, tokenizer, rows, max_new_tokens, repeats, batch_size or len(rows))
    return {
        "name": "sampling_sweep",
        "baseline": "one transformers model.generate call per (example, setting)",
        "model": "SmolLM2-135M-Instruct (embedded:smollm2)", "device": "cpu", "threads": threads,
        "examples": examples, **figures,
        "ok": figures["greedy_match"] and figures["ratio"] >= TARGET_RATIO,
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=int, default=4, help="examples, one sweep round (7 settings) each")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="the demo's sampling.max_new_tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both sides)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side, interleaved")
    parser.add_argument("--batch-size", type=int, default=None, help="our rows per batch (default: all rows)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.examples, args.max_new_tokens, args.threads, args.repeats, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
