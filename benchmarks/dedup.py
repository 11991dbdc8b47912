"""De-duplication: judge calls and NLI pairs saved by scoring identical candidates once.

Reads what the candidate-scoring rules of a run wrote under
results/{experiment}/scores/candidates/ (the `*_dedup.json` summaries) and,
for the NLI pairs, the sampled candidates themselves. When the demo has not
been run that far, builds just those outputs first with
`snakemake -c2 <the dedup summaries>` (turn off with --no-build).

Figures:
  judge calls   per IF judge: candidates, unique (id, text), calls saved
  scoring steps faithfulness and task: candidates, unique, saved
  NLI pairs     SummaC-ZS (premise sentence, answer sentence) pairs of the
                abstractive QA and summarisation candidates: all of them (a
                scorer going candidate by candidate), after de-duplicating
                candidates (what the rule feeds in), and after the NLI pair cache
                (what reaches the model)

Usage: python -m benchmarks.dedup [--experiment demo] [--no-build]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks import REPO, emit, log

JUDGES = ("if", "if_supercharged")
STEPS = ("faithfulness", "task")
SUMMAC_KINDS = ("abstractive_qa", "summarization")


RESULTS = REPO / "results"


def dedup_files(experiment: str, results: Path = RESULTS) -> dict[str, Path]:
    folder = results / experiment / "scores" / "candidates"
    return {name: folder / f"{name}_dedup.json" for name in JUDGES + STEPS}


def build(experiment: str, cores: int = 2) -> None:
    """Run the part of the workflow that writes the de-dup summaries (the demo config's experiment only)."""
    targets = [str(p.relative_to(REPO)) for p in dedup_files(experiment).values()]
    log(f"dedup: building {len(targets)} de-dup summaries with snakemake -c{cores} (the demo up to candidate scoring)")
    subprocess.run([sys.executable, "-m", "snakemake", f"-c{cores}", *targets], cwd=REPO, check=True)


def share(saved: int, total: int) -> float | None:
    return round(saved / total, 4) if total else None


def read_summaries(experiment: str, results: Path = RESULTS) -> dict:
    out = {}
    for name, path in dedup_files(experiment, results).items():
        data = json.loads(path.read_text())
        for key in ("candidates", "unique", "saved"):
            if key not in data:
                raise ValueError(f"{path}: no key {key!r} in the de-dup summary")
        out[name] = {"candidates": data["candidates"], "unique": data["unique"], "saved": data["saved"],
                     "saved_share": share(data["saved"], data["candidates"])}
    return out


def nli_pairs(experiment: str, results: Path = RESULTS, max_chunks: int = 100) -> dict:
    """SummaC-ZS sentence pairs of the run's candidates: all, after candidate de-dup, after the pair cache."""
    from reset.curate import PAIR, read_candidates, read_subset
    from reset.faithfulness import qa_premise, split_sentences

    folder = results / experiment / "sampling"
    shards = sorted(folder.glob("shard*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no candidate shards under {folder}")
    cands = read_candidates(shards)
    subset = read_subset(folder / "subset.parquet")
    cands = cands[cands["kind"].isin(SUMMAC_KINDS)]

    def pairs_of(frame):
        out = []
        for row in frame.itertuples(index=False):
            example = subset.loc[row.id]
            question = example["question"] if row.kind == "abstractive_qa" else ""
            premise = qa_premise(question or "", example["context"] or "")
            context, answer = split_sentences(premise)[:max_chunks], split_sentences(row.text)
            out.extend((c, a) for c in context for a in answer)
        return out

    every = pairs_of(cands)
    after_dedup = pairs_of(cands.drop_duplicates(PAIR))
    unique = len(set(every))
    return {"candidates": len(cands), "pairs": len(every), "after_candidate_dedup": len(after_dedup),
            "after_pair_cache": unique,
            "saved_by_candidate_dedup": share(len(every) - len(after_dedup), len(every)),
            "saved_in_total": share(len(every) - unique, len(every))}


def run(experiment: str = "demo", build_missing: bool = True, results: Path = RESULTS) -> dict:
    missing = [p for p in dedup_files(experiment, results).values() if not p.exists()]
    if missing:
        if not build_missing or experiment != "demo" or results != RESULTS:
            raise FileNotFoundError(f"de-dup summaries missing: {', '.join(str(p) for p in missing)} "
                                    "(run the demo up to candidate scoring first)")
        build(experiment)
    steps = read_summaries(experiment, results)
    judged = sum(steps[j]["candidates"] for j in JUDGES)
    saved = sum(steps[j]["saved"] for j in JUDGES)
    return {
        "name": "dedup", "experiment": experiment,
        "judge_calls": {j: steps[j] for j in JUDGES},
        "judge_calls_saved_share": share(saved, judged),
        "scoring_steps": {s: steps[s] for s in STEPS},
        "nli_pairs": nli_pairs(experiment, results),
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="demo", help="results/<experiment> to read")
    parser.add_argument("--no-build", action="store_true", help="fail instead of running the demo's missing part")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.experiment, build_missing=not args.no_build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
