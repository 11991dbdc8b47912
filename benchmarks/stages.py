"""Job-seconds per stage of a finished run, before against after, and what duplicate models cost.

Reads Snakemake's benchmark files (benchmarks/runs/{exp}/**.tsv, one per job; the
`s` column is the job's wall seconds) and prints a Markdown table of jobs and
job-seconds per stage, the evaluation stages split into generation and scoring.
With a second directory it prints both runs side by side with the difference:
the before/after comparison of docs/performance.md is one command:

    python -m benchmarks.stages BEFORE/benchmarks/runs/demo --after AFTER/benchmarks/runs/demo

With --results (the run's results/{exp}) it also groups the evaluation jobs by the
digest of the model they evaluated (model_digest.json, or the files hashed now for a
run that predates it) and sums the job-seconds of every job but the dearest of each
group: what evaluating each distinct model once saves.

Usage: python -m benchmarks.stages BENCH_DIR [--after BENCH_DIR] [--results DIR --config config.yaml] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

# benchmark path prefix -> stage name, most specific first
STAGES = [
    ("eval_trajectory/*/*/best", "trajectory: best point (copy)"),
    ("eval_trajectory/*/*/*/generate_shard*", "trajectory: generation"),
    ("eval_trajectory/*/*/*/score", "trajectory: scoring"),
    ("eval/*/*/generate_shard*", "evaluation: generation"),
    ("eval/*/*/score", "evaluation: scoring"),
    ("train", "training"),
    ("sampling/shard*", "sampling sweep"),
    ("scores", "candidate scoring"),
    ("models", "model preparation"),
    ("report", "tables, figures, provenance, report"),
]


def stage_of(rel: Path) -> str:
    stem = rel.with_suffix("")
    for pattern, name in STAGES:
        parts = pattern.split("/")
        if len(stem.parts) >= len(parts) and all(Path(p).match(q) for p, q in zip(stem.parts[:len(parts)], parts, strict=True)):
            return name
    return "data, mixtures, curation, other"


def read_jobs(bench_dir) -> dict[str, float]:
    """{benchmark path relative to bench_dir: wall seconds of the job's last run}."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise SystemExit(f"{bench_dir}: no such benchmark directory (benchmarks/runs/<experiment>)")
    jobs = {}
    for path in sorted(bench_dir.rglob("*.tsv")):
        with path.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            jobs[str(path.relative_to(bench_dir))] = float(rows[-1]["s"])
    return jobs


def per_stage(jobs: dict[str, float]) -> dict[str, dict]:
    out = {}
    for rel, seconds in jobs.items():
        entry = out.setdefault(stage_of(Path(rel)), {"jobs": 0, "job_s": 0.0})
        entry["jobs"] += 1
        entry["job_s"] += seconds
    return out


def eval_model_dir(rel: str, results: Path, config: dict) -> Path | None:
    """The model directory an evaluation job's benchmark belongs to (None for other jobs)."""
    from reset.models import source_slug
    from reset.variants import VARIANTS

    parts = Path(rel).with_suffix("").parts
    if parts[0] == "eval" and len(parts) == 4:
        variant, seed = parts[1], parts[2]
        spec = VARIANTS[variant]
        if spec["data"] is None:
            role = spec["init"].split(":", 1)[1]
            return results / "models" / "pretrained" / source_slug(config["models"][role]["source"])
        return results / "models" / variant / seed
    if parts[0] == "eval_trajectory" and len(parts) == 5 and parts[3] in ("first", "last"):
        return results / "trajectory" / parts[1] / parts[2] / parts[3]
    return None


def duplicates(jobs: dict[str, float], results, config_path) -> dict:
    """Evaluation job-seconds spent on models already evaluated under another name."""
    import yaml

    from reset.digests import model_digest

    results, config = Path(results), yaml.safe_load(Path(config_path).read_text())
    digests, groups = {}, {}
    for rel, seconds in jobs.items():
        model = eval_model_dir(rel, results, config)
        if model is None:
            continue
        if model not in digests:
            digests[model] = model_digest(model)
        job = Path(rel).with_suffix("").name   # generate_shardN or score: the same job of another model
        groups.setdefault((digests[model], job), []).append((seconds, rel))
    saved, repeated = 0.0, []
    for (_, job), runs in sorted(groups.items()):
        if len(runs) > 1:
            runs.sort(reverse=True)
            saved += sum(s for s, _ in runs[1:])
            repeated.append({"job": job, "same_model": [r for _, r in runs],
                             "job_s": [round(s, 1) for s, _ in runs]})
    return {"distinct_models": len(set(digests.values())), "model_dirs": len(digests),
            "saved_job_s": round(saved, 1), "repeated": repeated}


def table(before: dict, after: dict | None = None) -> str:
    names = sorted(set(before) | set(after or {}), key=lambda n: -before.get(n, {"job_s": 0})["job_s"])
    total = {"jobs": sum(e["jobs"] for e in before.values()), "job_s": sum(e["job_s"] for e in before.values())}
    if after is None:
        lines = ["| stage | jobs | job-seconds |", "|---|---|---|"]
        for name in names:
            lines.append(f"| {name} | {before[name]['jobs']} | {before[name]['job_s']:.0f} |")
        lines.append(f"| **total** | {total['jobs']} | {total['job_s']:.0f} |")
        return "\n".join(lines)
    total_after = {"jobs": sum(e["jobs"] for e in after.values()), "job_s": sum(e["job_s"] for e in after.values())}
    lines = ["| stage | jobs | job-seconds before | job-seconds after | change |", "|---|---|---|---|---|"]
    empty = {"jobs": 0, "job_s": 0.0}
    for name, b, a in [(n, before.get(n, empty), after.get(n, empty)) for n in names] + \
            [("**total**", total, total_after)]:
        change = f"{100 * (a['job_s'] - b['job_s']) / b['job_s']:+.0f} %" if b["job_s"] else ""
        lines.append(f"| {name} | {b['jobs']} | {b['job_s']:.0f} | {a['job_s']:.0f} | {change} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_dir", type=Path, help="benchmarks/runs/<experiment> of a finished run (before)")
    parser.add_argument("--after", type=Path, help="the same of a second run, for a side-by-side table")
    parser.add_argument("--results", type=Path, help="results/<experiment> of the first run: count duplicate models")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"), help="its config (default config.yaml)")
    parser.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.bench_dir)
    before = per_stage(jobs)
    after = per_stage(read_jobs(args.after)) if args.after else None
    dup = duplicates(jobs, args.results, args.config) if args.results else None
    if args.json:
        print(json.dumps({"before": before, "after": after, "duplicates": dup}, indent=2))
        return 0
    print(table(before, after))
    if dup:
        print(f"\n{dup['model_dirs']} evaluated model directories hold {dup['distinct_models']} distinct models; "
              f"evaluating each once saves {dup['saved_job_s']:.0f} job-seconds:")
        for entry in dup["repeated"]:
            print(f"  {entry['job']}: {', '.join(entry['same_model'])} ({' + '.join(map(str, entry['job_s']))} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
