"""Demo: wall time and peak memory of `make demo` (the README's main command) from a clean start.

A full demo takes many minutes, so `make bench` reports the recorded run in
benchmarks/recorded/demo.json instead of repeating it; `--rerun` measures
a new one and rewrites that record.

A rerun copies the checkout's source files (git's tracked and untracked,
non-ignored files) into a scratch directory, so results/demo starts empty and
the checkout's own results are never touched, then runs
`/usr/bin/time -v make demo VENV=<this .venv> CORES=2` there. Figures: wall
seconds (target: 12 minutes on 2 cores, issue 18), the largest single process's peak
RSS (from time -v), the peak RSS of the whole process tree (sampled every
second: with 2 cores two jobs can peak together), and per stage the job
seconds and the largest job's peak RSS from Snakemake's benchmark files.

Usage: python -m benchmarks.demo [--rerun] [--cores 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import REPO, emit, git_commit, log, machine

RECORD = REPO / "benchmarks" / "recorded" / "demo.json"
TARGET_S = 12 * 60


def source_files() -> list[str]:
    """The checkout's files as a fresh clone plus local edits would have them (ignored files left out)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def scratch_copy(dest: Path) -> None:
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)   # copy2 keeps mtimes: make sees the .venv stamp as current


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants, once a second."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self.loads = []   # the machine's 1-minute load average, for judging how busy it was
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, self.tree_rss_kb())
            self.loads.append(os.getloadavg()[0])

    def tree_rss_kb(self) -> int:
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            match = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
            rss[int(entry)] = int(match.group(1)) if match else 0
        tree, frontier = {self.pid}, [self.pid]
        while frontier:
            parent = frontier.pop()
            children = [p for p, pp in parents.items() if pp == parent and p not in tree]
            tree.update(children)
            frontier.extend(children)
        return sum(rss.get(p, 0) for p in tree)


def parse_time_v(text: str) -> dict:
    """Wall seconds, peak RSS (KiB) and exit status from GNU time -v output."""
    def field(label):
        match = re.search(rf"^\s*{re.escape(label)}:\s*(.+)$", text, re.MULTILINE)
        if not match:
            raise ValueError(f"/usr/bin/time -v output lacks {label!r}")
        return match.group(1).strip()

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": round(wall, 1), "max_rss_kb": int(field("Maximum resident set size (kbytes)")),
            "user_s": float(field("User time (seconds)")), "system_s": float(field("System time (seconds)")),
            "exit_status": int(field("Exit status"))}


def stage_table(bench_dir: Path) -> dict:
    """Per stage (first folder under benchmarks/runs/{exp}/): jobs, job seconds, largest job peak RSS (MiB)."""
    stages = {}
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with path.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]
        entry = stages.setdefault(stage, {"jobs": 0, "job_s": 0.0, "max_rss_mib": 0.0})
        entry["jobs"] += 1
        entry["job_s"] = round(entry["job_s"] + float(row["s"]), 1)
        if row.get("max_rss") not in (None, "", "NA", "-"):
            entry["max_rss_mib"] = max(entry["max_rss_mib"], round(float(row["max_rss"]), 1))
    return stages


def rerun(cores: int = 2, keep: Path | None = None) -> dict:
    """Measure `make demo` from a clean scratch copy and write the record."""
    work = keep or Path(tempfile.mkdtemp(prefix="reset-demo-"))
    if keep and work.exists() and any(work.iterdir()):
        raise SystemExit(f"--keep {work}: the directory must be empty or new")
    work.mkdir(parents=True, exist_ok=True)
    try:
        scratch_copy(work)
        venv = REPO / ".venv"
        # -o: never re-install into the shared .venv, whatever the copied files' dates say
        command = ["/usr/bin/time", "-v", "make", "-o", f"{venv}/.installed", "demo", f"VENV={venv}",
                   f"CORES={cores}"]
        log(f"demo: {' '.join(command)} in {work} (many minutes)")
        commit, start = git_commit(), time.time()
        with (work / "demo.stdout").open("w") as out, (work / "demo.stderr").open("w") as err:
            proc = subprocess.Popen(command, cwd=work, stdout=out, stderr=err)
            with TreeMemory(proc.pid) as memory:
                proc.wait()
        stderr = (work / "demo.stderr").read_text()
        timing = parse_time_v(stderr)
        if timing["exit_status"] != 0:
            raise RuntimeError(f"make demo failed (exit {timing['exit_status']}); output kept in {work}:\n"
                               f"{stderr[-3000:]}")
        record = {
            "command": f"make demo (CORES={cores}), from an empty results/demo",
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start)),
            "machine": machine(), **timing,
            "max_rss_mib": round(timing["max_rss_kb"] / 1024, 1),
            "peak_tree_rss_mib": round(memory.peak_kb / 1024, 1),
            "mean_load_1m": round(sum(memory.loads) / max(len(memory.loads), 1), 2),
            "stages": stage_table(work / "benchmarks" / "runs" / "demo"),
        }
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        return record
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run(rerun_demo: bool = False, cores: int = 2, keep: Path | None = None) -> dict:
    if rerun_demo:
        record = rerun(cores, keep)
        source = "measured now"
    elif RECORD.exists():
        record = json.loads(RECORD.read_text())
        source = f"recorded run ({RECORD.relative_to(REPO)}; --rerun to measure again)"
    else:
        return {"name": "demo", "skipped": f"no recorded run at {RECORD.relative_to(REPO)}; "
                                           "measure one with python -m benchmarks.demo --rerun"}
    return {"name": "demo", "source": source, "commit": record["commit"], "date": record["date"],
            "wall_s": record["wall_s"], "max_rss_mib": record["max_rss_mib"],
            "peak_tree_rss_mib": record["peak_tree_rss_mib"], "cpu_s": round(record["user_s"] + record["system_s"], 1),
            "cpus": record["machine"].get("cpus"), "mean_load_1m": record.get("mean_load_1m"),
            "stages": record["stages"], "target_s": TARGET_S, "ok": record["wall_s"] <= TARGET_S}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rerun", action="store_true", help="run make demo again (many minutes) and re-record")
    parser.add_argument("--cores", type=int, default=2, help="CORES for make demo")
    parser.add_argument("--keep", type=Path, help="run in this (new, empty) directory and keep it")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.rerun, args.cores, args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
