"""Performance benchmarks: our fast paths against the reference implementations.

`make bench` (= `python -m benchmarks.run`) runs every benchmark and prints one
JSON line each. Speed is always a ratio of two timings taken in the same run on
the same machine, interleaved, so load from other work hits both sides alike.
Timed assertions never live in tests; tests/test_benchmarks_smoke.py only checks
that each entry point runs on minimal sizes.

Shared helpers live here: the repository root, the commit and machine a result
was measured on, thread pinning and the interleaved timing loop.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
# the real SmolLM2 model, converted once; shared with the tests (tests/conftest.py)
SMOLLM2_DIR = Path(os.environ.get("RESET_TEST_CACHE", CACHE / "test-models")) / "smollm2"


def git_commit() -> str:
    """HEAD of the checkout (with '+dirty' when tracked files differ), or 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    """What the figures were measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        info["mem_gib"] = round(mem_kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def set_threads(threads: int) -> None:
    """Pin torch (and the BLAS libraries it loads) to `threads` CPU threads."""
    import torch

    torch.set_num_threads(threads)


def thread_env(threads: int) -> dict:
    """Environment for a subprocess that should use `threads` CPU threads."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONWARNINGS="ignore")
    return env


def interleave(sides: dict, repeats: int) -> dict:
    """Time each side `repeats` times, alternating A B A B, so a load spike hits both.

    `sides` maps a name to a zero-argument callable returning seconds (the
    callable times only the part that counts). Returns {name: [seconds...]}.
    """
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run_once in sides.items():
            times[name].append(run_once())
    return times


def best(seconds: list[float]) -> float:
    """The fastest repeat: the one least disturbed by other work on the machine."""
    return min(seconds)


def summary(seconds: list[float]) -> dict:
    return {"best_s": round(min(seconds), 4), "median_s": round(statistics.median(seconds), 4),
            "runs_s": [round(s, 4) for s in seconds]}


class Timer:
    """`with Timer() as t: ...; t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def emit(record: dict, stream=None) -> None:
    """Print one benchmark result as one JSON line."""
    print(json.dumps(record, sort_keys=False), file=stream or sys.stdout, flush=True)


def log(message: str) -> None:
    """Progress for the human watching: stderr, so stdout stays JSON lines."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
