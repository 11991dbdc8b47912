"""`python -m reset.judge`: judge a file, estimate a judge step's cost, compact a judge cache.

Judge a file (lines {id, question, answer} -> {id, rating, score, explanation, error}):
  python -m reset.judge --provider openai --base-url URL --model M --in IN.jsonl --out OUT.jsonl --cache DIR
  python -m reset.judge --provider local --model-dir DIR --in IN.jsonl --out OUT.jsonl
Estimate the cost first (calls after de-duplication and cache hits, tokens, dollars):
  python -m reset.judge estimate --in IN.jsonl --provider openai --model M --price-prompt-per-1k 0.03 ... --out EST.json
  python -m reset.judge estimate --job if SETTINGS_JSON IN.jsonl [--job ...] --max-usd 100 --out EST.json
Fold a cache's shards into one (when no judge job runs):
  python -m reset.judge compact --cache DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from reset.judge.cache import compact
from reset.judge.cost import BudgetExceeded, check_budget, estimate_cost
from reset.judge.files import read_items, write_results
from reset.settings import Judge as JudgeKeys
from reset.settings import add_flags

log = logging.getLogger("reset.judge")


def _judge_flags(parser) -> None:
    """One flag per judge key, named after it (`timeout_s` is --timeout-s), from reset/settings.py."""
    group = parser.add_argument_group("judge settings (the keys of judges.if in the config; docs/config.md)")
    group.add_argument("--settings", default=None,
                       help="a judge config block as JSON (e.g. judges.if); the flags below override it")
    add_flags(group, JudgeKeys)
    # a flag left out must not override --settings: the definitions' defaults apply in judge_settings()
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(JudgeKeys)})
    parser.add_argument("--cache", default=None,
                        help="judge cache directory, shared by every job (created if absent; a path ending in "
                             ".sqlite names the directory without the suffix and reads that older cache)")
    parser.add_argument("--max-usd", type=float, default=None,
                        help="refuse to start when the estimated cost exceeds this (judges.max_usd)")


def _cfg_from_args(args) -> dict:
    """--settings JSON, overridden by explicit flags; the model falls back to the model dir's SOURCE."""
    try:
        cfg = json.loads(args.settings) if args.settings else {}
    except ValueError as err:
        raise ValueError(f"--settings is not a JSON object: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError("--settings must be a JSON object (a judge config block)")
    for f in dataclasses.fields(JudgeKeys):
        value = getattr(args, f.name)
        if value is not None:
            cfg[f.name] = value
    if not cfg.get("model") and getattr(args, "model_dir", None):
        source = Path(args.model_dir) / "SOURCE"
        cfg["model"] = source.read_text().strip() if source.exists() else str(args.model_dir)
    if not cfg.get("provider"):
        raise ValueError("--provider (or 'provider' in --settings) is required")
    if not cfg.get("model"):
        raise ValueError("--model (or 'model' in --settings, or --model-dir) is required")
    return cfg


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reset.judge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="`python -m reset.judge estimate --help` and `python -m reset.judge "
                                            "compact --help` show the other commands.")
    parser.add_argument("--in", dest="inputs", required=True, help="JSONL (or parquet) of {id, question, answer}")
    parser.add_argument("--out", required=True, help="JSONL (or parquet) of {id, rating, score, explanation, error}")
    parser.add_argument("--model-dir", default=None, help="local: prepared model directory")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="local: let the model's own Python code run (only for a model you trust)")
    parser.add_argument("--summary", default=None, help="also write the run summary here (JSON)")
    _judge_flags(parser)
    return parser


def _estimate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reset.judge estimate",
        description="Estimate calls, tokens and dollars of judge steps before any paid call; exits with "
                    "status 3 when the estimate exceeds --max-usd. Either one judge (--in and the judge "
                    "flags) or several (--job, repeated); with --job the total is what --max-usd caps.",
        epilog="example: estimate --job if \"$(cat if.json)\" if_items.jsonl --job if_supercharged "
               "'{\"provider\": \"openai\", \"model\": \"gpt-6.1-terra\"}' s_items.jsonl --max-usd 100 --out est.json")
    parser.add_argument("--in", dest="inputs", nargs="+", default=None,
                        help="one or more JSONL (or parquet) files of {id, question, answer}")
    parser.add_argument("--job", nargs="+", action="append", default=None, metavar="LABEL SETTINGS_JSON PATH",
                        help="a judge step: its label, its judge config block as JSON, then its input files")
    parser.add_argument("--out", default=None, help="write the estimate here (JSON); stdout otherwise")
    _judge_flags(parser)
    return parser


def _estimate_jobs(args) -> dict:
    """Per-job estimates and their total."""
    estimates = {}
    for job in args.job:
        if len(job) < 3:
            raise ValueError(f"--job {' '.join(job)}: expected LABEL SETTINGS_JSON PATH [PATH ...]")
        label, settings, *paths = job
        try:
            cfg = json.loads(settings)
        except ValueError as err:
            raise ValueError(f"--job {label}: settings are not JSON ({err})") from None
        items = [item for path in paths for item in read_items(path)]
        estimates[label] = {**estimate_cost(items, cfg, cache_path=args.cache), "inputs": paths}
    total = {key: sum(e[key] for e in estimates.values())
             for key in ("items", "unique", "cached", "calls", "prompt_tokens", "completion_tokens")}
    for key in ("usd", "usd_max"):
        total[key] = round(sum(e[key] for e in estimates.values()), 6)
    return {"judges": estimates, **total}


def _estimate_main(argv) -> int:
    from reset.io import write_json

    parser = _estimate_parser()
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.job):
        parser.error("give either --in (one judge) or --job (one or more judges)")
    if args.job:
        estimate = _estimate_jobs(args)
    else:
        items = [item for path in args.inputs for item in read_items(path)]
        estimate = estimate_cost(items, _cfg_from_args(args), cache_path=args.cache)
    estimate["max_usd"] = args.max_usd
    estimate["within_budget"] = args.max_usd is None or estimate["usd"] <= args.max_usd
    if args.out:
        write_json(estimate, args.out)
    print(json.dumps(estimate, indent=2), file=sys.stdout if not args.out else sys.stderr)
    try:
        check_budget(estimate, args.max_usd)
    except BudgetExceeded as err:
        log.error("%s", err)
        return 3
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the HTTP stack logs every request at INFO; our retry lines say what matters
    for name in ("httpx", "httpx2", "openai", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_main(argv) -> int:
    from reset.io import write_json

    args = _run_parser().parse_args(argv)
    cfg = _cfg_from_args(args)
    items = read_items(args.inputs)
    log.info("judging %d items from %s with %s model %s", len(items), args.inputs, cfg["provider"], cfg["model"])
    if cfg["provider"] == "openai" and args.max_usd is not None:
        estimate = estimate_cost(items, cfg, cache_path=args.cache)
        log.info("estimate: %d calls, ~$%.4f (cap $%.2f)", estimate["calls"], estimate["usd"], args.max_usd)
        check_budget(estimate, args.max_usd)
    from reset.judge import make_judge

    judge = make_judge(cfg, model_dir=args.model_dir, cache_path=args.cache, trust_remote_code=args.trust_remote_code)
    try:
        results = judge.judge(items)
    finally:
        judge.close()
    write_results(items, results, args.out)
    summary = judge.summary()
    log.info("summary: %d items, %d unique, %d requests, %d cache hits, retries %s, failures %s, %d missing",
             summary["items"], summary["unique"], summary["requests"], summary["cache_hits"],
             summary["retries"] or "none", summary["failures"] or "none", summary["missing"])
    print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    if args.summary:
        write_json(summary, args.summary)
    return 0


def _compact_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reset.judge compact",
        description="Fold every shard of a judge cache (and a judge.sqlite of an earlier version) into one "
                    "shard. Run it when no judge job uses the cache: it refuses while a claim is live or a "
                    "shard was written recently.")
    parser.add_argument("--cache", required=True, help="the judge cache directory")
    parser.add_argument("--quiet-s", type=float, default=600.0,
                        help="refuse when a shard was written less than this many seconds ago [600]")
    parser.add_argument("--force", action="store_true", help="compact even when a job seems to be running")
    args = parser.parse_args(argv)
    result = compact(args.cache, quiet_s=args.quiet_s, force=args.force)
    log.info("compacted %s: %d judgements from %d shard(s) and %d SQLite cache(s) into %s", result["cache"],
             result["entries"], result["shards_folded"], len(result["sqlite_migrated"]), result["shard"])
    print(json.dumps(result, indent=2))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    # errors end the run through reset.cli.run_cli: one line and the exit code of docs/judge.md
    if argv[:1] == ["estimate"]:
        return _estimate_main(argv[1:])
    if argv[:1] == ["compact"]:
        return _compact_main(argv[1:])
    return _run_main(argv[1:] if argv[:1] == ["run"] else argv)

