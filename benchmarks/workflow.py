"""Workflow overhead: how long `snakemake -n` of the paper experiment takes, and what it imports.

Runs the dry run of the full paper experiment (experiments/paper.yaml: three
seeds, every shard) `--repeats` times and reports wall and CPU seconds (best
and median), the number of jobs in the DAG, and the modules the parse
imported, read from `python -X importtime`: none of the heavy libraries
(torch, transformers, pandas, ...) may load at parse time, because every
Snakemake invocation (each cluster job re-parses the Snakefile) pays for them.

Usage: python -m benchmarks.workflow [--repeats N] [--configfile experiments/paper.yaml]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time

from benchmarks import REPO, emit, log, summary

TARGET_S = 10.0
HEAVY = ("torch", "transformers", "pandas", "numpy", "pyarrow", "datasets", "deepspeed", "accelerate",
         "matplotlib", "tokenizers", "safetensors", "nltk", "rouge_score", "openai", "scipy", "sklearn")


def dry_run_command(configfile: str, importtime: bool = False) -> list[str]:
    python = [sys.executable] + (["-X", "importtime"] if importtime else [])
    return python + ["-m", "snakemake", "-n", "--configfile", configfile, "--cores", "1"]


def dry_run(configfile: str) -> tuple[float, float, str]:
    """One timed dry run: (wall seconds, child CPU seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(dry_run_command(configfile), cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n --configfile {configfile} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def job_count(stdout: str) -> int:
    """The `total` row of Snakemake's job table."""
    match = re.search(r"^total\s+(\d+)\s*$", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError("no 'total' row in the dry run's job table")
    return int(match.group(1))


def imported_modules(configfile: str) -> tuple[dict[str, int], dict[str, int]]:
    """Modules of one dry run under -X importtime: (Snakemake start-up, Snakefile parse and DAG).

    Each maps module -> cumulative import microseconds. importtime prints a
    module when its import finishes; the parse begins with the first `reset`
    module (rules/common.smk imports reset.variants before anything else of
    ours), so everything printed before it is Snakemake's own start-up
    (its plugins included) and everything after it is on us.
    """
    proc = subprocess.run(dry_run_command(configfile, importtime=True), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n under -X importtime failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    startup, parse = {}, {}
    for line in proc.stderr.splitlines():
        # "import time:  self [us] | cumulative | <indent>module", the indent showing nesting
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s+(\S+)\s*$", line)
        if not match:
            continue
        name = match.group(3)
        target = parse if parse or name.split(".")[0] == "reset" else startup
        target[name] = int(match.group(2))
    if not parse:
        raise RuntimeError("the dry run imported no `reset` module: is this the ReSet Snakefile?")
    return startup, parse


def heavy_of(modules: dict[str, int]) -> dict[str, float]:
    """Heavy top-level packages among `modules` -> their import milliseconds."""
    return {name: round(us / 1000, 1) for name, us in modules.items() if name in HEAVY}


def run(repeats: int = 3, configfile: str = "experiments/paper.yaml") -> dict:
    walls, cpus, jobs = [], [], None
    for i in range(repeats):
        log(f"workflow: snakemake -n --configfile {configfile} ({i + 1}/{repeats})")
        wall, cpu, stdout = dry_run(configfile)
        walls.append(wall)
        cpus.append(cpu)
        jobs = job_count(stdout)
    startup, parse = imported_modules(configfile)
    heavy_parse = heavy_of(parse)
    return {
        "name": "workflow_overhead",
        "configfile": configfile, "jobs": jobs,
        "wall": summary(walls), "cpu": summary(cpus),
        "modules_at_startup": len(startup), "modules_at_parse": len(parse),
        "heavy_imported_at_parse": sorted(heavy_parse),
        "heavy_imported_by_snakemake_startup_ms": heavy_of(startup),
        "reset_modules_ms": {n: round(us / 1000, 1) for n, us in parse.items() if n.split(".")[0] == "reset"},
        "target_s": TARGET_S,
        "ok": min(walls) <= TARGET_S and not heavy_parse,
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed dry runs")
    parser.add_argument("--configfile", default="experiments/paper.yaml", help="experiment to plan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.repeats, args.configfile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
