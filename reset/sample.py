"""Batched generation and the ReSet decoding sweep.

`generate` is the one generation function of the pipeline (evaluation uses it
too): rows are batched across prompts and decoding settings with left padding
and a KV cache, finished rows leave the batch, and every row samples from its
own seeded random stream, so a row's output does not depend on what else is in
its batch. That is what makes sharding and re-runs reproducible.

The sweep (docs/reset.md): for every example of the sampling subset and every round,
pick temperature or top-k at random and enumerate its 7 values. Top-k samples
use `--topk-temperature`; temperature samples have top-k disabled.

Subcommands:
  subset   draw the seeded per-pool subset (results/{exp}/sampling/subset.parquet)
  sweep    sample one shard of the sweep (results/{exp}/sampling/shard{i}.parquet)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# the two hyper-parameters the sweep varies; a round enumerates one of them
PARAMS = ("temperature", "top_k")
CANDIDATE_COLUMNS = ["id", "dataset", "kind", "pool", "round", "param", "value", "setting_index",
                     "seed", "text", "n_tokens", "finish_reason", "prompt_truncated"]


# ---------------------------------------------------------------- generation


def generate(model, tokenizer, prompts, settings, seeds, max_new_tokens, batch_size):
    """Generate one completion per (prompt, setting, seed) row.

    A setting is {"do_sample": False} (greedy) or
    {"do_sample": True, "temperature": t, "top_k": k} with k = 0 for no top-k.
    Returns, in input order, dicts {text, n_tokens, finish_reason, prompt_truncated}, where
    finish_reason is "eos" (the model stopped) or "length" (max_new_tokens hit),
    n_tokens counts generated tokens without the EOS token, and prompt_truncated
    says the prompt did not fit the model's positions and lost its middle (logged).
    """
    import torch
    from tqdm.auto import tqdm

    n = len(prompts)
    if not (len(settings) == len(seeds) == n):
        raise ValueError(f"generate: {n} prompts, {len(settings)} settings and {len(seeds)} seeds must match")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("generate: max_new_tokens and batch_size must be >= 1")
    settings = [_check_setting(s, i) for i, s in enumerate(settings)]
    if n == 0:
        return []
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    encoded, cut = fit_context(encoded, context_limit(model, max_new_tokens))
    if cut:
        log.warning("%d of %d prompts are longer than the model's context window allows with %d new tokens; "
                    "their middle was cut out (head and tail kept)", len(cut), n, max_new_tokens)
    # similar lengths together keeps padding small; equal prompts end up side by side
    order = sorted(range(n), key=lambda i: (len(encoded[i]), prompts[i]))
    eos_ids = _eos_ids(model, tokenizer)
    results = [None] * n
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="generate", unit="batch", mininterval=5):
            tokens = _generate_batch(
                model, [encoded[i] for i in batch], [settings[i] for i in batch],
                [seeds[i] for i in batch], max_new_tokens, eos_ids, tokenizer.pad_token_id,
            )
            for i, (ids, hit_eos) in zip(batch, tokens, strict=True):
                results[i] = {
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "n_tokens": len(ids),
                    "finish_reason": "eos" if hit_eos else "length",
                    "prompt_truncated": i in cut,
                }
    return results


def context_limit(model, max_new_tokens):
    """The longest prompt that leaves room for max_new_tokens in the model's positions (None: no limit known)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if not positions:
        return None
    if positions - max_new_tokens < 16:
        raise ValueError(f"generate: max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                         f"model's {positions} positions")
    return positions - max_new_tokens


def fit_context(encoded, limit):
    """Cut the middle out of prompts longer than `limit` tokens, keeping the first quarter and the end.

    The start holds the template header and the instruction, the end the question and
    "### Response:"; a long context loses its middle. Returns (prompts, indices cut).
    """
    if limit is None:
        return encoded, set()
    out, cut = [], set()
    for i, ids in enumerate(encoded):
        if len(ids) > limit:
            head = limit // 4
            ids = ids[:head] + ids[len(ids) - (limit - head):]
            cut.add(i)
        out.append(ids)
    return out, cut


def _check_setting(setting, index):
    if not isinstance(setting, dict) or "do_sample" not in setting:
        raise ValueError(f"generate: setting {index} must be a dict with 'do_sample', got {setting!r}")
    if not setting["do_sample"]:
        return {"do_sample": False, "temperature": 1.0, "top_k": 0}
    temperature = float(setting.get("temperature", 1.0))
    top_k = int(setting.get("top_k", 0) or 0)
    if temperature <= 0:
        raise ValueError(f"generate: setting {index} samples at temperature {temperature}; use do_sample=False for greedy")
    if top_k < 0:
        raise ValueError(f"generate: setting {index} has top_k {top_k} < 0")
    return {"do_sample": True, "temperature": temperature, "top_k": top_k}


def _eos_ids(model, tokenizer):
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    if not ids:
        raise ValueError("generate: the tokenizer and model define no EOS token")
    return sorted(ids)


def _generate_batch(model, encoded, settings, seeds, max_new_tokens, eos_ids, pad_id):
    """Decode one batch; returns [(token ids without EOS, stopped at EOS?)] in batch order."""
    import torch

    device = model.device
    rows = len(encoded)
    logits, cache, mask, positions = _prefill(model, encoded, pad_id, device)
    sampler = _RowSampler(settings, seeds, device)
    eos = torch.tensor(eos_ids, device=device)
    out = [[] for _ in range(rows)]
    stopped = [False] * rows
    alive = list(range(rows))  # batch rows still decoding, in cache order
    for step in range(max_new_tokens):
        next_tokens = sampler.pick(logits, alive)
        is_eos = torch.isin(next_tokens, eos).tolist()
        for row, token, done in zip(alive, next_tokens.tolist(), is_eos, strict=True):
            if done:
                stopped[row] = True
            else:
                out[row].append(token)
        keep = [k for k, done in enumerate(is_eos) if not done]
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions, next_tokens = mask[index], positions[index], next_tokens[index]
            alive = [alive[k] for k in keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        positions = positions + 1
        logits = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    return list(zip(out, stopped, strict=True))


def _prefill(model, encoded, pad_id, device):
    """Run the prompts once (each distinct prompt once) and expand the cache to the batch rows."""
    import torch
    from transformers import DynamicCache

    unique = {}
    row_to_unique = [unique.setdefault(tuple(ids), len(unique)) for ids in encoded]
    prompts = list(unique)
    width = max(len(p) for p in prompts)
    if pad_id is None:
        raise ValueError("generate: the tokenizer has no pad token (load it with reset.models.load_tokenizer)")
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, ids in enumerate(prompts):
        if ids:
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            mask[r, width - len(ids):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    index = torch.tensor(row_to_unique, device=device)
    if len(prompts) < len(encoded) or row_to_unique != list(range(len(encoded))):
        cache.batch_select_indices(index)
        logits, mask, positions = logits[index], mask[index], positions[index]
    return logits, cache, mask, positions[:, -1]


class _RowSampler:
    """Turns next-token logits into tokens, each row with its own setting and random stream.

    Sampling rows draw one uniform number per step from a CPU torch.Generator
    seeded with the row's seed and invert the CDF of their own distribution, so
    the draw sequence of a row is fixed by its seed alone.
    """

    def __init__(self, settings, seeds, device):
        import torch

        self.device = device
        self.sample = [s["do_sample"] for s in settings]
        self.temperature = torch.tensor([s["temperature"] for s in settings], dtype=torch.float64, device=device)
        self.top_k = torch.tensor([s["top_k"] for s in settings], dtype=torch.long, device=device)
        self.generators = [
            torch.Generator().manual_seed(int(seed) % (2 ** 63)) if s["do_sample"] else None
            for s, seed in zip(settings, seeds, strict=True)
        ]

    def pick(self, logits, alive):
        import torch

        logits = logits.double()
        tokens = logits.argmax(dim=-1)
        rows = [k for k, row in enumerate(alive) if self.sample[row]]
        if not rows:
            return tokens
        batch_rows = [alive[k] for k in rows]
        index = torch.tensor(rows, device=logits.device)
        which = torch.tensor(batch_rows, device=logits.device)
        chosen = logits[index] / self.temperature[which, None]
        chosen = _apply_top_k(chosen, self.top_k[which])
        probs = torch.softmax(chosen, dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=self.generators[row], dtype=torch.float64) for row in batch_rows])
        u = u.to(logits.device)[:, None] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
        tokens[index] = picked
        return tokens


def _apply_top_k(logits, top_k):
    """Keep each row's k highest logits (ties at the k-th value kept); k = 0 keeps all."""
    import torch

    k_max = int(top_k.max())
    if k_max == 0:
        return logits
    k_max = min(k_max, logits.shape[-1])
    top = torch.topk(logits, k_max, dim=-1).values
    kth = top.gather(1, (top_k.clamp(min=1, max=k_max) - 1)[:, None])
    kth = torch.where(top_k[:, None] > 0, kth, torch.full_like(kth, float("-inf")))
    return logits.masked_fill(logits < kth, float("-inf"))


# ---------------------------------------------------------------- seeds and the sweep plan


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (example id, round, setting...), stable across runs and machines."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def sweep_settings(param, temperatures, top_ks, topk_temperature):
    """The settings one round enumerates: [(value, generate() setting)]."""
    if param == "temperature":
        return [(float(t), {"do_sample": True, "temperature": float(t), "top_k": 0}) for t in temperatures]
    if param == "top_k":
        return [(int(k), {"do_sample": True, "temperature": float(topk_temperature), "top_k": int(k)})
                for k in top_ks]
    raise ValueError(f"unknown sweep parameter {param!r}; expected one of {PARAMS}")


def round_param(example_id, round_no, base_seed=0) -> str:
    """The hyper-parameter an example's round varies, drawn at random but fixed by (id, round)."""
    return PARAMS[derive_seed(base_seed, example_id, round_no, "param") % len(PARAMS)]


def shard_of(position: int, shards: int) -> int:
    """Examples go round-robin to shards by their position in the subset."""
    return position % shards


def plan_rows(subset, rounds, temperatures, top_ks, topk_temperature, base_seed=0, shard=None, shards=1):
    """Every candidate to sample (one row per example x round x setting), optionally one shard's."""
    rows = []
    for position, ex in enumerate(subset.to_dict("records")):
        if shard is not None and shard_of(position, shards) != shard:
            continue
        for round_no in range(1, rounds + 1):
            param = round_param(ex["id"], round_no, base_seed)
            for index, (value, setting) in enumerate(sweep_settings(param, temperatures, top_ks, topk_temperature)):
                rows.append({
                    "id": ex["id"], "dataset": ex["dataset"], "kind": ex["kind"], "pool": ex["pool"],
                    "round": round_no, "param": param, "value": float(value), "setting_index": index,
                    "seed": derive_seed(base_seed, ex["id"], round_no, param, index),
                    "prompt": ex["prompt"], "setting": setting,
                })
    return rows


# ---------------------------------------------------------------- subset


def draw_subset(pools: dict, per_pool: int, seed: int):
    """Seeded draw of `per_pool` examples from each pool (all of a smaller pool, with a warning)."""
    import numpy as np
    import pandas as pd

    parts, report = [], {}
    for pool, frame in pools.items():
        frame = frame.drop_duplicates("id").sort_values("id").reset_index(drop=True)
        take = min(per_pool, len(frame))
        if take < per_pool:
            log.warning("pool %s holds %d examples, fewer than the %d asked for; taking all", pool, len(frame), per_pool)
        rng = np.random.default_rng(derive_seed(seed, "subset", pool) % (2 ** 32))
        picked = frame.iloc[np.sort(rng.choice(len(frame), size=take, replace=False))].copy()
        picked["pool"] = pool
        parts.append(picked)
        report[pool] = {"available": len(frame), "drawn": take}
    return pd.concat(parts, ignore_index=True), report


def _read_pool(name, paths):
    from reset.io import read_tables

    return read_tables(paths, ["id", "dataset", "kind", "prompt", "references"], f"training split of pool {name}")


# ---------------------------------------------------------------- CLI


def cmd_subset(args) -> None:
    from reset.io import write_json, write_parquet

    pools = {}
    for spec in args.pool:
        name, paths = spec[0], spec[1:]
        if not paths:
            raise SystemExit(f"--pool {name}: give at least one parquet file")
        if name in pools:
            raise SystemExit(f"--pool {name} given twice")
        pools[name] = _read_pool(name, paths)
    subset, report = draw_subset(pools, args.per_pool, args.seed)
    write_parquet(subset, args.out)
    if args.report:
        write_json({"per_pool": args.per_pool, "seed": args.seed, "pools": report}, args.report)
    log.info("subset: %d examples from %d pools -> %s", len(subset), len(pools), args.out)


def cmd_sweep(args) -> None:
    import pandas as pd
    import torch

    from reset.io import read_table, write_parquet
    from reset.models import load_causal_lm, load_tokenizer

    if not 0 <= args.shard < args.shards:
        raise SystemExit(f"--shard {args.shard} is outside 0..{args.shards - 1}")
    subset = read_table(args.subset, ["id", "dataset", "kind", "pool", "prompt"], "sampling subset")
    rows = plan_rows(subset, args.rounds, args.temperatures, args.top_ks, args.topk_temperature,
                     base_seed=args.seed, shard=args.shard, shards=args.shards)
    log.info("shard %d/%d: %d candidates from %d examples", args.shard, args.shards, len(rows),
             len({r["id"] for r in rows}))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(args.model, device=device, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    outs = generate(model, tokenizer, [r["prompt"] for r in rows], [r["setting"] for r in rows],
                    [r["seed"] for r in rows], args.max_new_tokens, args.batch_size)
    for row, out in zip(rows, outs, strict=True):
        row.update(out)
    frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    frame = frame.astype({"round": "int64", "setting_index": "int64", "seed": "int64", "n_tokens": "int64",
                          "prompt_truncated": "bool"})
    write_parquet(frame, args.out)
    log.info("wrote %d candidates -> %s", len(frame), args.out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("subset", help="seeded per-pool subset of the training data for ReSet")
    sp.add_argument("--pool", nargs="+", action="append", required=True, metavar=("NAME", "PARQUET"),
                    help="a pool and its parquet files (the IF pool lists the four IF train splits)")
    sp.add_argument("--per-pool", type=int, required=True, help="examples drawn per pool")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, type=Path)
    sp.add_argument("--report", type=Path, help="JSON with available/drawn counts per pool")
    sw = sub.add_parser("sweep", help="sample one shard of the decoding sweep")
    sw.add_argument("--subset", required=True, type=Path)
    sw.add_argument("--model", required=True, type=Path, help="model directory (instruct_mtl checkpoint)")
    sw.add_argument("--shard", type=int, default=0)
    sw.add_argument("--shards", type=int, default=1)
    sw.add_argument("--rounds", type=int, default=1)
    sw.add_argument("--temperatures", type=float, nargs="+", required=True)
    sw.add_argument("--top-ks", type=int, nargs="+", required=True)
    sw.add_argument("--topk-temperature", type=float, default=1.0)
    sw.add_argument("--max-new-tokens", type=int, required=True)
    sw.add_argument("--batch-size", type=int, default=16)
    sw.add_argument("--seed", type=int, default=0, help="base seed mixed into every derived seed")
    sw.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    sw.add_argument("--trust-remote-code", action="store_true",
                    help="let the model's own Python code run (only for a model you trust)")
    sw.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    {"subset": cmd_subset, "sweep": cmd_sweep}[args.command](args)
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
