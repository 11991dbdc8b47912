"""Evaluation: greedy generations of one model on every evaluation set, then their scores.

Subcommands:
  generate  one shard of the evaluation rows (all sets together) -> generations/shard{i}.parquet
            columns: the unified example schema + eval_index (row position in the input files),
            prediction, n_tokens, finish_reason
  score     every shard of one model -> one scored parquet per evaluation set, plus a summary:
              IF sets             if_score (IF judge rating / 10; NaN when the judge gave none)
              extractive QA       faithfulness = span coverage, task = EM, unigram/bigram coverage
              abstractive QA      faithfulness = SummaC-ZS on question + context, task = ROUGE-L
              summarisation       faithfulness = SummaC-ZS on the context, task = ROUGE-L
            every other cell is NaN (not applicable)
  copy      copy scored parquets (the best checkpoint's trajectory point is the main evaluation)

Trajectory points: `generate` and `score` take `--points points.json --point first|last
--reuse ...`; when that checkpoint is the best one (same training step, so the same
weights), the main evaluation's generations / scores are copied instead of recomputed.

Evaluation store (`--store DIR`, reset.eval_store): `generate` and `score` first look up their
key (model digest + data + settings; generation bytes + settings); a model evaluated before
under another name gets its outputs copied in seconds, and new outputs are published there.
RESET_EVAL_STORE=0 in the environment turns the store off (the outputs are the same).

Rows are assigned to shards round-robin in input order, so shards are balanced across
sets and the assignment depends only on the input files and the shard count.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from reset.faithfulness import add_nli_flags, nli_options
from reset.io import atomic_path, read_table, read_tables, write_json, write_parquet
from reset.settings import Judge, add_flags, from_args, output_only
from reset.variants import CONTEXT_KINDS, EXAMPLE_COLUMNS

log = logging.getLogger(__name__)

REQUIRED = EXAMPLE_COLUMNS
GENERATED = ["prediction", "n_tokens", "finish_reason"]
GREEDY = {"do_sample": False}


# ---------------------------------------------------------------- trajectory reuse


def same_as_best(points_path, point) -> int | None:
    """The training step when trajectory `point` is the best checkpoint (points.json of reset.train), else None."""
    points = json.loads(Path(points_path).read_text())
    for name in (point, "best"):
        if not isinstance(points.get(name), dict) or points[name].get("step") is None:
            raise ValueError(f"{points_path}: no step recorded for the {name!r} checkpoint")
    step = points[point]["step"]
    return int(step) if step == points["best"]["step"] else None


def _copy_file(src, dst):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# ---------------------------------------------------------------- generation


def read_eval_sets(paths):
    """Concatenate evaluation parquets, checking the unified schema and unique ids."""
    import pandas as pd

    frames = [read_table(path, REQUIRED, "evaluation set (unified example schema)") for path in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REQUIRED)
    duplicated = rows["id"][rows["id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"evaluation ids are not unique: {', '.join(map(str, duplicated.head(5)))}")
    return rows


def shard_rows(rows, shard: int, shards: int):
    """Every `shards`-th row from `shard` on; `eval_index` keeps each row's position in the whole input."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    rows = rows.assign(eval_index=range(len(rows)))
    return rows.iloc[shard::shards].reset_index(drop=True)


def generate_shard(model_dir, data_paths, shard, shards, max_new_tokens, batch_size, out,
                   trust_remote_code=False):
    """Greedy generations for one shard of the evaluation rows."""
    import pandas as pd

    from reset.inference import generate, load_for_inference

    rows = shard_rows(read_eval_sets(data_paths), shard, shards)
    log.info("shard %d/%d: %d rows from %d evaluation sets", shard, shards, len(rows), len(data_paths))
    if len(rows):
        model, tokenizer, _ = load_for_inference(model_dir, trust_remote_code=trust_remote_code)
        start = time.time()
        outputs = generate(model, tokenizer, rows["prompt"].tolist(), [GREEDY] * len(rows), [0] * len(rows),
                           max_new_tokens, batch_size)
        seconds = time.time() - start
        tokens = sum(o["n_tokens"] for o in outputs)
        log.info("generated %d tokens in %.1f s (%.1f tokens/s)", tokens, seconds, tokens / max(seconds, 1e-9))
    else:
        outputs = []
    rows = rows.copy()
    rows["prediction"] = [o["text"].strip() for o in outputs]
    rows["n_tokens"] = pd.Series([o["n_tokens"] for o in outputs], dtype="int64")
    rows["finish_reason"] = pd.Series([o["finish_reason"] for o in outputs], dtype="object")
    write_parquet(rows, out)
    return rows


# ---------------------------------------------------------------- scoring


def read_generations(paths):

    rows = read_tables(paths, REQUIRED + GENERATED, "generations shard")
    if "eval_index" in rows.columns:  # back to the order of the evaluation files
        rows = rows.sort_values("eval_index", kind="stable")
    duplicated = rows["id"][rows["id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"generation shards overlap: id(s) {', '.join(map(str, duplicated.head(5)))} "
                         "appear twice (were shards of different runs mixed?)")
    rows["prediction"] = rows["prediction"].fillna("").astype(str)
    return rows.reset_index(drop=True)


def judge_question(row) -> str:
    """What the IF judge sees as the user's question: the instruction (and its input, if any)."""
    context = (row.get("context") or "").strip()
    instruction = (row.get("instruction") or "").strip()
    return f"{instruction}\n\n{context}" if context else instruction


def text_scores(rows):
    """Task score and n-gram coverage (cheap, no model)."""
    from reset.metrics import ngram_coverage, task_score

    task, uni, bi = [], [], []
    for row in rows.itertuples():
        cd = row.kind in CONTEXT_KINDS
        task.append(task_score(row.kind, row.prediction, list(row.references)) if cd else math.nan)
        extractive = row.kind == "extractive_qa"
        uni.append(ngram_coverage(row.prediction, row.context, 1) if extractive else math.nan)
        bi.append(ngram_coverage(row.prediction, row.context, 2) if extractive else math.nan)
    return task, uni, bi


def faithfulness(rows, nli_cfg):
    """Faithfulness by kind; the NLI model is loaded only when a row needs SummaC-ZS."""
    from reset.faithfulness import faithfulness_scores, load_nli

    records = rows[["id", "kind", "context", "question", "prediction"]].to_dict("records")
    nli = None
    if any(r["kind"] in ("abstractive_qa", "summarization") for r in records):
        if not nli_cfg.get("model_dir"):
            raise ValueError("abstractive QA / summarisation rows need --nli-model-dir")
        nli = load_nli(nli_cfg["backend"], nli_cfg["model_dir"], ent_idx=nli_cfg["ent_idx"],
                       con_idx=nli_cfg["con_idx"], max_length=nli_cfg["max_length"],
                       batch_size=nli_cfg["batch_size"],
                       trust_remote_code=nli_cfg.get("trust_remote_code", False))
    scores = faithfulness_scores(records, nli, max_chunks=nli_cfg["max_chunks"])
    del nli
    return scores


def if_items(rows) -> tuple[list[int], list[dict]]:
    """Row positions of the IF rows and their judge items {id, question, answer}."""
    index = [i for i, kind in enumerate(rows["kind"]) if kind == "if"]
    items = [{"id": f"{rows.at[i, 'dataset']}/{rows.at[i, 'id']}", "question": judge_question(rows.loc[i]),
              "answer": rows.at[i, "prediction"]} for i in index]
    return index, items


def check_if_budget(rows, judge_cfg, cache_path, max_usd) -> None:
    """Refuse (BudgetExceeded, exit 3) when a paid judge's calls for these rows would cost over max_usd."""
    from reset.judge import check_budget, estimate_cost

    _, items = if_items(rows)
    if not items or judge_cfg["provider"] != "openai" or max_usd is None:
        return
    estimate = estimate_cost(items, judge_cfg, cache_path=cache_path)
    log.info("IF judge estimate: %d calls, ~$%.4f (cap $%.2f)", estimate["calls"], estimate["usd"], max_usd)
    check_budget(estimate, max_usd)


def if_scores(rows, judge_cfg, judge_model_dir, cache_path, trust_remote_code=False):
    """IF judge results for the IF rows (None for the others) and the judge's run summary."""
    from reset.judge import make_judge

    index, items = if_items(rows)
    results = [None] * len(rows)
    if not index:
        return results, {}
    judge = make_judge(judge_cfg, model_dir=judge_model_dir, cache_path=cache_path,
                       trust_remote_code=trust_remote_code)
    try:
        verdicts = judge.judge(items)
    finally:
        judge.close()
    for i, verdict in zip(index, verdicts, strict=True):
        results[i] = verdict
    summary = judge.summary()
    log.info("IF judge: %d items, %d requests, %d cache hits, retries %s, failures %s, %d missing",
             summary["items"], summary["requests"], summary["cache_hits"], summary["retries"] or "none",
             summary["failures"] or "none", summary["missing"])
    return results, summary


def score_generations(generation_paths, datasets, out_dir, judge_cfg, judge_model_dir, judge_cache,
                      nli_cfg, max_usd=None, summary_path=None, judge_trust_remote_code=False, extra=None):
    """Score every generation and write one parquet per evaluation set (+ a JSON summary).

    nli_cfg may hold trust_remote_code; judge_trust_remote_code is the local judge's (both
    only for models the config names under models.trust_remote_code).
    """
    import pandas as pd

    rows = read_generations(generation_paths)
    unknown = sorted(set(rows["dataset"]) - set(datasets))
    if unknown:
        raise ValueError(f"generations hold set(s) {', '.join(unknown)} not in --datasets {' '.join(datasets)}")
    log.info("scoring %d generations from %d shard(s)", len(rows), len(generation_paths))
    check_if_budget(rows, judge_cfg, judge_cache, max_usd)   # before any scoring work
    timings = {}
    start = time.time()
    rows["task"], rows["unigram_coverage"], rows["bigram_coverage"] = text_scores(rows)
    timings["text"] = time.time() - start
    start = time.time()
    rows["faithfulness"] = faithfulness(rows, nli_cfg)
    timings["faithfulness"] = time.time() - start
    start = time.time()
    verdicts, judge_summary = if_scores(rows, judge_cfg, judge_model_dir, judge_cache, judge_trust_remote_code)
    timings["if_judge"] = time.time() - start
    rows["if_score"] = [math.nan if v is None or v["score"] is None else float(v["score"]) for v in verdicts]
    rows["if_rating"] = [math.nan if v is None or v["rating"] is None else float(v["rating"]) for v in verdicts]
    rows["if_explanation"] = pd.Series([None if v is None else v["explanation"] for v in verdicts], dtype="object")
    rows["if_error"] = pd.Series([None if v is None else v["error"] for v in verdicts], dtype="object")
    for column in ("task", "unigram_coverage", "bigram_coverage", "faithfulness"):
        rows[column] = rows[column].astype(float)

    per_dataset = {}
    for dataset in datasets:
        frame = rows[rows["dataset"] == dataset].reset_index(drop=True)
        if frame.empty:
            log.warning("%s: no generations (empty evaluation split)", dataset)
            frame = rows.iloc[0:0]
        write_parquet(frame, Path(out_dir) / f"{dataset}.parquet")
        per_dataset[dataset] = _dataset_summary(frame)
    summary = {"rows": len(rows), "datasets": per_dataset, "if_judge": judge_summary,
               "seconds": {k: round(v, 2) for k, v in timings.items()}, **(extra or {})}
    if summary_path:
        write_json(summary, summary_path)
    return rows, summary


def _dataset_summary(frame) -> dict:
    out = {"rows": len(frame), "mean_tokens": float(frame["n_tokens"].mean()) if len(frame) else None,
           "hit_max_new_tokens": int((frame["finish_reason"] == "length").sum())}
    for column in ("if_score", "faithfulness", "task", "unigram_coverage", "bigram_coverage"):
        values = frame[column].dropna()
        if len(values):
            out[column] = float(values.mean())
    if len(frame) and frame["kind"].iloc[0] == "if":
        out["if_missing"] = int(frame["if_score"].isna().sum())
    return out


def copy_scored(src_dir, datasets, out_dir):
    """Copy scored parquets set by set (atomic), e.g. the main evaluation as the 'best' trajectory point."""
    for dataset in datasets:
        src = Path(src_dir) / f"{dataset}.parquet"
        if not src.exists():
            raise FileNotFoundError(f"{src} does not exist (scored evaluation of {dataset})")
        _copy_file(src, Path(out_dir) / f"{dataset}.parquet")


# ---------------------------------------------------------------- evaluation store


def store_enabled(store_dir) -> bool:
    """The store is used when a directory is given and RESET_EVAL_STORE is not 0/off/false."""
    return bool(store_dir) and os.environ.get("RESET_EVAL_STORE", "1").strip().lower() not in ("0", "off", "false")


def generate_with_store(store_dir, model_dir, data_paths, shard, shards, max_new_tokens, batch_size, out,
                        trust_remote_code=False) -> bool:
    """Generate one shard, or copy it from the store when the same model was evaluated so; True if reused."""
    from reset.eval_store import Store, copy_out, generation_key

    settings = {"shard": shard, "shards": shards, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    key, inputs = generation_key(model_dir, data_paths, settings)
    store = Store(store_dir)
    with store.claim("generate", key):
        hit = store.lookup("generate", key)
        if hit:
            copy_out(Path(hit["dir"]) / "shard.parquet", out)
            log.info("reused: %s is the same model (digest %s) as the one generated for %s; copied %s (no generation)",
                     model_dir, inputs["model"][:16], hit["produced_for"], hit["dir"])
            return True
        log.info("evaluation store: no entry for key %s (model digest %s); generating", key[:16], inputs["model"][:16])
        generate_shard(model_dir, data_paths, shard, shards, max_new_tokens, batch_size, out, trust_remote_code)
        store.publish("generate", key, {"shard.parquet": out}, inputs, str(out))
    return False


def score_with_store(store_dir, generation_paths, datasets, out_dir, judge_cfg, judge_model_dir, judge_cache,
                     nli_cfg, max_usd=None, summary_path=None, judge_trust_remote_code=False) -> dict:
    """Score, or copy the scores of the same generations from the store; returns the summary."""
    from reset.eval_store import Store, copy_out, score_key

    nli_settings = {k: nli_cfg.get(k) for k in ("backend", "ent_idx", "con_idx", "max_length", "max_chunks",
                                                  "batch_size")}
    # runtime-only judge keys (concurrency, retries, time-outs) change no score: not part of the key
    settings = {"datasets": list(datasets), "judge": output_only(Judge, judge_cfg), "nli": nli_settings}
    local_judge = judge_model_dir if judge_cfg.get("provider") == "local" else None
    key, inputs = score_key(generation_paths, settings, {"judge": local_judge, "nli": nli_cfg.get("model_dir")})
    store = Store(store_dir)
    with store.claim("score", key):
        hit = store.lookup("score", key)
        if hit:
            for dataset in datasets:
                copy_out(Path(hit["dir"]) / f"{dataset}.parquet", Path(out_dir) / f"{dataset}.parquet")
            summary = json.loads((Path(hit["dir"]) / "summary.json").read_text())
            summary["store"] = {"key": key, "reused": True, "produced_for": hit["produced_for"],
                                "entry": hit["dir"]}
            if summary_path:
                write_json(summary, summary_path)
            log.info("reused: generations identical to those scored for %s; copied the scores from %s (no scoring)",
                     hit["produced_for"], hit["dir"])
            return summary
        log.info("evaluation store: no entry for key %s; scoring", key[:16])
        _, summary = score_generations(generation_paths, datasets, out_dir, judge_cfg, judge_model_dir,
                                       judge_cache, nli_cfg, max_usd, summary_path, judge_trust_remote_code,
                                       extra={"store": {"key": key, "reused": False}})
        files = {f"{dataset}.parquet": Path(out_dir) / f"{dataset}.parquet" for dataset in datasets}
        with tempfile.TemporaryDirectory() as tmp:
            files["summary.json"] = Path(tmp) / "summary.json"
            write_json(summary, files["summary.json"])
            store.publish("score", key, files, inputs, str(out_dir))
    return summary


# ---------------------------------------------------------------- CLI


def _reuse_args(parser, what):
    g = parser.add_argument_group("trajectory points (copy the best checkpoint's results when it is the same step)")
    g.add_argument("--points", default=None, help="points.json of the training job (trajectory/.../points.json)")
    g.add_argument("--point", choices=["first", "last"], default=None)
    g.add_argument("--reuse", default=None, help=what)


def _reused(args) -> int | None:
    if not (args.points or args.point or args.reuse):
        return None
    if not (args.points and args.point and args.reuse):
        raise ValueError("--points, --point and --reuse go together")
    step = same_as_best(args.points, args.point)
    if step is not None:
        log.info("the %s checkpoint is the best one (step %d): reusing %s", args.point, step, args.reuse)
    return step


STORE_HELP = ("evaluation store directory (reset.eval_store): reuse the outputs of a model with the same "
              "digest, publish new ones; RESET_EVAL_STORE=0 in the environment turns it off")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="greedy generations for one shard of the evaluation sets")
    p.add_argument("--model", required=True, help="model directory (safetensors + tokenizer)")
    p.add_argument("--data", nargs="+", required=True, help="evaluation parquets (unified schema)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model's own Python code run (only for a model you trust)")
    p.add_argument("--out", required=True, help="generations parquet of this shard")
    p.add_argument("--store", default=None, help=STORE_HELP)
    _reuse_args(p, "the best checkpoint's generations of this shard")

    p = sub.add_parser("score", help="score the generations of one model, one parquet per evaluation set")
    p.add_argument("--generations", nargs="+", required=True, help="every shard's generations parquet")
    p.add_argument("--datasets", nargs="+", required=True, help="evaluation sets to write (one parquet each)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--summary", default=None, help="JSON summary (per-set means, judge statistics, timings)")
    add_flags(p, Judge, prefix="judge-", group_title="IF judge (the keys of judges.if)")
    p.add_argument("--judge-model-dir", default=None, help="prepared model directory of a local judge")
    p.add_argument("--judge-cache", default=None, help="judge cache directory (shared by every scoring job)")
    p.add_argument("--judge-trust-remote-code", action="store_true",
                   help="let a local judge's own Python code run (only for a model the config trusts)")
    p.add_argument("--max-usd", type=float, default=None, help="stop before a paid judge step above this")
    add_nli_flags(p)
    p.add_argument("--store", default=None, help=STORE_HELP)
    _reuse_args(p, "directory of the best checkpoint's scored parquets")

    p = sub.add_parser("copy", help="copy scored parquets of the given sets to another directory")
    p.add_argument("--src-dir", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


def run(args) -> None:
    if args.command == "generate":
        if _reused(args) is not None:
            _copy_file(args.reuse, args.out)
        elif store_enabled(args.store):
            generate_with_store(args.store, args.model, args.data, args.shard, args.shards, args.max_new_tokens,
                                args.batch_size, args.out, args.trust_remote_code)
        else:
            generate_shard(args.model, args.data, args.shard, args.shards, args.max_new_tokens, args.batch_size,
                           args.out, args.trust_remote_code)
    elif args.command == "score":
        step = _reused(args)
        if step is not None:
            copy_scored(args.reuse, args.datasets, args.out_dir)
            if args.summary:
                best = json.loads((Path(args.reuse) / "summary.json").read_text())
                write_json({**best, "reused_from": str(args.reuse), "step": step}, args.summary)
            return
        nli_cfg = nli_options(args)
        judge_cfg = from_args(Judge, args, prefix="judge-", where="judges.if").to_dict()
        if store_enabled(args.store):
            summary = score_with_store(args.store, args.generations, args.datasets, args.out_dir, judge_cfg,
                                       args.judge_model_dir, args.judge_cache, nli_cfg, args.max_usd, args.summary,
                                       args.judge_trust_remote_code)
        else:
            _, summary = score_generations(args.generations, args.datasets, args.out_dir, judge_cfg,
                                           args.judge_model_dir, args.judge_cache, nli_cfg, args.max_usd,
                                           args.summary, args.judge_trust_remote_code)
        log.info("summary: %s", json.dumps(summary["datasets"], sort_keys=True))
    else:
        copy_scored(args.src_dir, args.datasets, args.out_dir)


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
