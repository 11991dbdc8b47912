"""The ReSet decoding sweep (generation itself is reset.inference.generate).

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
SUBSET_COLUMNS = ["id", "dataset", "kind", "pool", "prompt"]   # what the sweep reads of a subset row
CANDIDATE_COLUMNS = ["id", "dataset", "kind", "pool", "round", "param", "value", "setting_index",
                     "seed", "text", "n_tokens", "finish_reason", "prompt_truncated"]


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
    import pandas as pd

    frames = []
    for path in paths:
        frame = _read_parquet(path)
        missing = {"id", "dataset", "kind", "prompt", "references"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: pool {name} lacks columns {sorted(missing)}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _read_parquet(path):
    """A parquet file; a missing or unreadable one is an error naming it."""
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return pd.read_parquet(path)
    except Exception as err:   # pyarrow's errors do not say which file
        raise ValueError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------- CLI


def cmd_subset(args) -> None:
    from reset.io import write_json, write_parquet

    pools = {}
    for spec in args.pool:
        name, paths = spec[0], spec[1:]
        if not paths:
            raise ValueError(f"--pool {name}: give at least one parquet file")
        if name in pools:
            raise ValueError(f"--pool {name} given twice")
        pools[name] = _read_pool(name, paths)
    subset, report = draw_subset(pools, args.per_pool, args.seed)
    write_parquet(subset, args.out)
    if args.report:
        write_json({"per_pool": args.per_pool, "seed": args.seed, "pools": report}, args.report)
    log.info("subset: %d examples from %d pools -> %s", len(subset), len(pools), args.out)


def cmd_sweep(args) -> None:
    import pandas as pd
    import torch

    from reset.inference import generate, load_for_inference
    from reset.io import write_parquet

    if not 0 <= args.shard < args.shards:
        raise ValueError(f"--shard {args.shard} is outside 0..{args.shards - 1}")
    subset = _read_parquet(args.subset)
    missing = sorted(set(SUBSET_COLUMNS) - set(subset.columns))
    if missing:
        raise ValueError(f"{args.subset}: missing column(s) {', '.join(missing)} of a sampling subset "
                         "(written by `python -m reset.sample subset`)")
    rows = plan_rows(subset, args.rounds, args.temperatures, args.top_ks, args.topk_temperature,
                     base_seed=args.seed, shard=args.shard, shards=args.shards)
    log.info("shard %d/%d: %d candidates from %d examples", args.shard, args.shards, len(rows),
             len({r["id"] for r in rows}))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_for_inference(args.model, trust_remote_code=args.trust_remote_code)
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
    try:
        {"subset": cmd_subset, "sweep": cmd_sweep}[args.command](args)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError) as err:
        # bad input: one line naming the file, pool or flag (exit code 2, as argparse's usage errors)
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
