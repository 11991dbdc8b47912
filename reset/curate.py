"""ReSet curation: judge inputs, candidate scores, weighted ranking and the curated sets.

Candidates are the rows of the sampling shards (one per example x round x
setting). Identical candidates of one example, the same (id, text), are scored
once: every scoring step works on the unique pairs and writes a small
`*_dedup.json` saying how many candidates it saw and how many calls that saved.

Subcommands:
  items   unique IF candidates as judge input {id, question, answer, text}
          (the judge itself runs as `python -m reset.judge`); cut-off candidates
          are left out unless --allow-truncated (they could never be ranked)
  score   faithfulness (span coverage / SummaC-ZS) or task score (EM / ROUGE-L)
          of the unique candidates
  select  weighted ranking and the curated set:
            total = task + if_weight * (1_IF * if_score + 1_CD * faithfulness)
          top-1 per example (ties: lowest round, then lowest setting index),
          then `--per-pool` examples per pool (highest chosen total first).
          A candidate cut off at the generation cap (finish_reason "length") is
          left out of the ranking unless --allow-truncated: training appends EOS
          to the chosen text, so a cut-off answer would teach stopping mid-sentence.
          A candidate without a needed score (e.g. the IF judge failed) is left
          out of the ranking, never counted as 0. An example left with no
          complete candidate, or with no scored one, is dropped; the summary
          counts both, per pool, and records how the data was collected
          (--data-mode, --source-seed).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from reset.faithfulness import add_nli_flags
from reset.variants import CONTEXT_KINDS, EXAMPLE_COLUMNS

log = logging.getLogger(__name__)

CANDIDATE_REQUIRED = ["id", "dataset", "kind", "pool", "round", "param", "value", "setting_index",
                      "seed", "text", "n_tokens", "finish_reason"]
SUBSET_REQUIRED = [*EXAMPLE_COLUMNS, "pool"]
PAIR = ["id", "text"]
# exclusion reason of a candidate that stopped at max_new_tokens, and the two drop reasons of an example
CUT_OFF = "cut off at max_new_tokens"
NO_COMPLETE = "no complete candidate"
NO_SCORE = "no scored candidate"


# ---------------------------------------------------------------- reading


def _read(paths, required, what):
    from reset.io import read_tables

    return read_tables(paths, required, what)


def read_candidates(paths, max_round=None):
    """All sampled candidates (optionally rounds 1..max_round); a row must not appear twice."""
    cands = _read(paths, CANDIDATE_REQUIRED, "candidate shard")
    cands["text"] = cands["text"].fillna("").astype(str)
    dup = cands.duplicated(["id", "round", "setting_index"])
    if dup.any():
        first = cands.loc[dup, ["id", "round", "setting_index"]].iloc[0].tolist()
        raise ValueError(f"candidate shards overlap: (id, round, setting) {first} appears twice "
                         "(were shards of different runs mixed?)")
    if max_round is not None:
        have = int(cands["round"].max()) if len(cands) else 0
        if have < max_round:
            raise ValueError(f"candidates hold {have} sampling round(s) but {max_round} are needed "
                             "(sampling.rounds must be >= curation.reset_s.rounds)")
        cands = cands[cands["round"] <= max_round]
    return cands.reset_index(drop=True)


def read_subset(path):
    subset = _read([path], SUBSET_REQUIRED, "sampling subset")
    if not subset["id"].is_unique:
        raise ValueError(f"{path}: example ids are not unique")
    return subset.set_index("id", drop=False)


def is_cut_off(cands):
    """Candidates that stopped at the generation cap instead of the model's EOS."""
    return cands["finish_reason"].astype(str) == "length"


def unique_pairs(cands):
    """One row per distinct (id, text), first occurrence kept; and how many candidates that saved."""
    unique = cands.drop_duplicates(PAIR).reset_index(drop=True)
    return unique, {"candidates": len(cands), "unique": len(unique), "saved": len(cands) - len(unique)}


# ---------------------------------------------------------------- judge inputs and scores


def judge_items(cands, subset):
    """IF candidates as judge items {id, question, answer, text}, one per unique (id, text)."""
    from reset.evaluate import judge_question

    unique, counts = unique_pairs(cands[cands["kind"] == "if"])
    rows = []
    for row in unique.itertuples(index=False):
        example = subset.loc[row.id]
        rows.append({"id": row.id, "question": judge_question(example), "answer": row.text, "text": row.text})
    return rows, counts


def task_scores(unique, subset):
    from tqdm.auto import tqdm

    from reset.metrics import task_score

    out = []
    for row in tqdm(unique.itertuples(index=False), total=len(unique), desc="task score", mininterval=5):
        out.append(task_score(row.kind, row.text, list(subset.loc[row.id, "references"])))
    return out


def faithfulness_of(unique, subset, nli, max_chunks):
    from reset.faithfulness import faithfulness_scores

    rows = [{"id": r.id, "kind": r.kind, "context": subset.loc[r.id, "context"],
             "question": subset.loc[r.id, "question"], "prediction": r.text}
            for r in unique.itertuples(index=False)]
    return faithfulness_scores(rows, nli, max_chunks=max_chunks)


# ---------------------------------------------------------------- ranking


def attach_scores(cands, if_scores, faithfulness, task):
    """Candidates with columns if_score, if_rating, if_error, faithfulness, task (NaN = not applicable or missing)."""
    import pandas as pd

    out = cands.copy()
    for frame, cols, what in ((task, ["task"], "task"), (faithfulness, ["faithfulness"], "faithfulness"),
                              (if_scores, ["if_score", "if_rating", "if_error"], "IF judge")):
        if frame is None:
            for col in cols:
                out[col] = math.nan if col != "if_error" else None
            continue
        if frame.duplicated(PAIR).any():
            raise ValueError(f"{what} scores hold a (id, text) pair twice")
        out = out.merge(frame[PAIR + cols], on=PAIR, how="left", validate="many_to_one")
    out["if_score"] = pd.to_numeric(out["if_score"], errors="coerce")
    return out


def missing_reason(row, allow_truncated=False) -> str | None:
    """Why a candidate cannot be ranked (cut off, or a needed score is missing), or None."""
    if not allow_truncated and row["finish_reason"] == "length":
        return CUT_OFF
    if _nan(row["task"]):
        return "no task score"
    if row["kind"] == "if":
        if _nan(row["if_score"]):
            error = row.get("if_error")
            return f"IF judge: {error}" if isinstance(error, str) and error else "IF judge: no score"
    elif _nan(row["faithfulness"]):
        return "no faithfulness score"
    return None


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def weighted_total(kind, task, if_score, faithfulness, if_weight):
    """score = s_task + w * (1_IF * s_IF + 1_CD * s_faith)."""
    return task + if_weight * (if_score if kind == "if" else faithfulness)


def rank(cands, if_weight, allow_truncated=False):
    """Add total, excluded (reason or None) and chosen (top-1 per example; ties: lowest round, setting).

    Cut-off candidates are excluded unless allow_truncated.
    """
    out = cands.sort_values(["id", "round", "setting_index"]).reset_index(drop=True)
    reasons = [missing_reason(row, allow_truncated) for row in out.to_dict("records")]
    out["excluded"] = reasons
    out["total"] = [
        math.nan if reason else weighted_total(k, t, s, f, if_weight)
        for reason, k, t, s, f in zip(reasons, out["kind"], out["task"], out["if_score"], out["faithfulness"],
                                      strict=True)
    ]
    out["chosen"] = False
    ranked = out[out["excluded"].isna()]
    # the first row of the highest total wins: rows are in (round, setting_index) order
    best = ranked.loc[ranked.groupby("id", sort=False)["total"].idxmax()] if len(ranked) else ranked
    out.loc[best.index, "chosen"] = True
    return out


def dropped_reasons(ranked) -> dict:
    """{id: reason} of the examples without a chosen candidate: no complete candidate, or no scored one."""
    out = {}
    for ex_id, group in ranked.groupby("id", sort=True):
        if group["chosen"].any():
            continue
        out[ex_id] = NO_COMPLETE if (group["excluded"] == CUT_OFF).all() else NO_SCORE
    return out


def pool_counts(ranked, dropped, pools) -> dict:
    """Per pool: examples, candidates, cut-off candidates and the examples dropped for each reason."""
    counts = {}
    for pool in pools:
        rows = ranked[ranked["pool"] == pool]
        ids = set(rows["id"])
        counts[pool] = {
            "examples": len(ids), "candidates": len(rows), "cut_off": int(is_cut_off(rows).sum()),
            "dropped_no_complete": sum(1 for i in ids if dropped.get(i) == NO_COMPLETE),
            "dropped_no_score": sum(1 for i in ids if dropped.get(i) == NO_SCORE),
        }
    return counts


def select_per_pool(chosen, per_pool, pools):
    """Keep `per_pool` chosen examples per pool: the highest totals (ties: id)."""
    keep, counts = [], {}
    for pool in pools:
        rows = chosen[chosen["pool"] == pool].sort_values(["total", "id"], ascending=[False, True])
        keep.append(rows.head(per_pool))
        counts[pool] = {"ranked": len(rows), "kept": min(per_pool, len(rows))}
        if len(rows) < per_pool:
            log.warning("pool %s: only %d ranked examples for %d places", pool, len(rows), per_pool)
    import pandas as pd

    return pd.concat(keep, ignore_index=True), counts


def curated_frame(kept, subset):
    """Unified schema: references = [chosen text], the gold answers move to gold_references."""
    rows = []
    for row in kept.to_dict("records"):
        example = subset.loc[row["id"]]
        rows.append({
            "id": row["id"], "dataset": example["dataset"], "kind": example["kind"],
            "instruction": example["instruction"], "context": example["context"], "question": example["question"],
            "references": [row["text"]], "prompt": example["prompt"],
            "gold_references": list(example["references"]), "pool": row["pool"],
            "round": row["round"], "param": row["param"], "value": row["value"],
            "setting_index": row["setting_index"], "total": row["total"], "task": row["task"],
            "if_score": row["if_score"], "faithfulness": row["faithfulness"],
            "n_tokens": row["n_tokens"], "finish_reason": row["finish_reason"],
        })
    import pandas as pd

    return pd.DataFrame(rows)


# ---------------------------------------------------------------- CLI


def cmd_items(args) -> None:
    import pandas as pd

    from reset.io import write_json, write_parquet

    cands = read_candidates(args.candidates, args.max_round)
    cut = is_cut_off(cands) & (cands["kind"] == "if")
    if not args.allow_truncated:
        cands = cands[~is_cut_off(cands)]
    items, counts = judge_items(cands, read_subset(args.subset))
    write_parquet(pd.DataFrame(items, columns=["id", "question", "answer", "text"]), args.out)
    write_json({"step": "if_judge_items", "max_round": args.max_round, "allow_truncated": args.allow_truncated,
                "cut_off": int(cut.sum()), "cut_off_skipped": 0 if args.allow_truncated else int(cut.sum()),
                **counts}, args.summary)
    log.info("%d IF candidates -> %d judge items (%d saved by de-duplication; %d cut-off candidates %s)",
             counts["candidates"], counts["unique"], counts["saved"], int(cut.sum()),
             "kept" if args.allow_truncated else "not judged")


def cmd_score(args) -> None:
    import time

    from reset.io import write_json, write_parquet

    cands = read_candidates(args.candidates)
    subset = read_subset(args.subset)
    if args.metric == "faithfulness":
        cands = cands[cands["kind"].isin(CONTEXT_KINDS)]
    unique, counts = unique_pairs(cands)
    start = time.time()
    if args.metric == "task":
        values = task_scores(unique, subset)
    else:
        nli = None
        if (unique["kind"] != "extractive_qa").any():
            from reset.faithfulness import load_nli_from, nli_options

            if args.nli_model is None:
                raise ValueError("abstractive QA / summarisation candidates need --nli-model for SummaC-ZS")
            if args.threads > 0:
                import torch

                torch.set_num_threads(args.threads)
            nli = load_nli_from(nli_options(args))
        values = faithfulness_of(unique, subset, nli, args.nli_max_chunks)
    frame = unique[["id", "dataset", "kind", "text"]].copy()
    frame[args.metric] = values
    write_parquet(frame, args.out)
    write_json({"step": args.metric, **counts, "seconds": round(time.time() - start, 3),
                "mean": float(frame[args.metric].mean()) if len(frame) else None}, args.summary)
    log.info("%s: %d candidates, %d unique scored (%d saved)", args.metric, counts["candidates"],
             counts["unique"], counts["saved"])


def cmd_select(args) -> None:
    import pandas as pd

    from reset.io import write_json, write_parquet

    cands = read_candidates(args.candidates, args.rounds)
    subset = read_subset(args.subset)
    if_scores = pd.read_parquet(args.if_scores) if args.if_scores else None
    if if_scores is not None:
        # reset.judge writes rating / score / error; name them for the candidates table
        if_scores = if_scores.rename(columns={"rating": "if_rating", "score": "if_score", "error": "if_error"})
    scored = attach_scores(cands, if_scores, pd.read_parquet(args.faithfulness), pd.read_parquet(args.task))
    ranked = rank(scored, args.if_weight, args.allow_truncated)
    chosen = ranked[ranked["chosen"]]
    reasons = dropped_reasons(ranked)
    dropped = sorted(reasons)
    pools = list(dict.fromkeys(subset["pool"]))
    kept, per_pool = select_per_pool(chosen, args.per_pool, pools)
    counts = pool_counts(ranked, reasons, pools)
    for pool in pools:
        kept_pool = kept[kept["pool"] == pool]
        per_pool[pool] = {**counts[pool], **per_pool[pool], "kept_cut_off": int(is_cut_off(kept_pool).sum())}
    if kept.empty:
        raise ValueError(f"{args.name}: no example has a complete, scored candidate ({len(ranked)} candidates, "
                         f"{int(is_cut_off(ranked).sum())} cut off at max_new_tokens); raise sampling.max_new_tokens, "
                         "or set curation.allow_truncated: true to rank cut-off answers")
    curated = curated_frame(kept, subset)
    write_parquet(ranked, args.candidates_out)
    write_parquet(curated, args.out)
    excluded = ranked["excluded"].dropna()
    summary = {
        "name": args.name, "rounds": args.rounds, "if_weight": args.if_weight, "per_pool": args.per_pool,
        "data": {"mode": args.data_mode, "source_seed": args.source_seed},
        "allow_truncated": args.allow_truncated,
        "candidates": len(ranked), "examples": int(ranked["id"].nunique()), "curated": len(curated),
        "cut_off_candidates": int(is_cut_off(ranked).sum()), "curated_cut_off": int(is_cut_off(kept).sum()),
        "excluded_candidates": len(excluded),
        "excluded_by_reason": {k.split(":")[0]: int(v) for k, v in excluded.str.split(":").str[0].value_counts().items()},
        "dropped_examples": len(dropped),
        "dropped_by_reason": {reason: sum(1 for r in reasons.values() if r == reason) for reason in (NO_COMPLETE, NO_SCORE)},
        "dropped_ids": dropped[:50], "pools": per_pool,
        "chosen_param": {k: int(v) for k, v in kept["param"].value_counts().items()} if len(kept) else {},
        "mean_total": float(kept["total"].mean()) if len(kept) else None,
    }
    write_json(summary, args.summary)
    log.info("%s: %d examples, %d candidates (%d excluded, %d of them cut off), %d examples dropped "
             "(%d without a complete candidate), %d curated", args.name, summary["examples"], summary["candidates"],
             summary["excluded_candidates"], summary["excluded_by_reason"].get(CUT_OFF, 0), len(dropped),
             summary["dropped_by_reason"][NO_COMPLETE], len(curated))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.curate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    it = sub.add_parser("items", help="unique IF candidates as IF judge input")
    it.add_argument("--candidates", nargs="+", required=True, type=Path, help="sampling shard parquets")
    it.add_argument("--subset", required=True, type=Path, help="sampling/subset.parquet")
    it.add_argument("--max-round", type=int, default=None, help="only rounds 1..N (default: all)")
    it.add_argument("--allow-truncated", action="store_true",
                    help="also judge candidates cut off at max_new_tokens (curation.allow_truncated)")
    it.add_argument("--out", required=True, type=Path)
    it.add_argument("--summary", required=True, type=Path, help="de-duplication counts (JSON)")

    sc = sub.add_parser("score", help="faithfulness or task score of the unique candidates")
    sc.add_argument("metric", choices=["faithfulness", "task"])
    sc.add_argument("--candidates", nargs="+", required=True, type=Path)
    sc.add_argument("--subset", required=True, type=Path)
    sc.add_argument("--out", required=True, type=Path)
    sc.add_argument("--summary", required=True, type=Path, help="de-duplication counts and timing (JSON)")
    add_nli_flags(sc)
    sc.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")

    se = sub.add_parser("select", help="weighted top-1 ranking and the curated set")
    se.add_argument("--name", required=True, help="reset or reset_s (recorded in the summary)")
    se.add_argument("--candidates", nargs="+", required=True, type=Path)
    se.add_argument("--subset", required=True, type=Path)
    se.add_argument("--if-scores", type=Path, help="IF judge results per (id, text)")
    se.add_argument("--faithfulness", required=True, type=Path)
    se.add_argument("--task", required=True, type=Path)
    se.add_argument("--rounds", type=int, default=1, help="rank candidates of rounds 1..N")
    se.add_argument("--per-pool", type=int, required=True, help="curated examples per pool")
    se.add_argument("--if-weight", type=float, default=2.0)
    se.add_argument("--allow-truncated", action="store_true",
                    help="rank candidates cut off at max_new_tokens too (curation.allow_truncated; default: excluded)")
    se.add_argument("--data-mode", choices=["shared", "per_seed"], default="shared",
                    help="recorded in the summary: one collection for all seeds, or one per seed (sampling.per_seed)")
    se.add_argument("--source-seed", type=int, default=None,
                    help="recorded in the summary: seed of the instruct_mtl checkpoint that sampled the candidates")
    se.add_argument("--out", required=True, type=Path, help="curated parquet (unified schema)")
    se.add_argument("--candidates-out", required=True, type=Path, help="every candidate with scores and `chosen`")
    se.add_argument("--summary", required=True, type=Path)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        {"items": cmd_items, "score": cmd_score, "select": cmd_select}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
