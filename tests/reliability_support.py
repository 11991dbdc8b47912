"""Helpers shared by the reliability tests (tests/test_reliability_*.py).

Snakemake runs in a subprocess in a temporary working directory, with
config.yaml overlaid by a YAML file the test writes; shipped raw files are
referenced by absolute paths so nothing is written inside the repository.
Processes that a test kills are started in their own session, so SIGKILL goes
to the whole process group (Snakemake and the jobs it spawned), as on a crashed
node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"


def env(**extra) -> dict:
    out = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out.update({k: str(v) for k, v in extra.items()})
    return out


def shipped_datasets() -> dict:
    """config.yaml's datasets block with the shipped raw files made absolute."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    return {name: {**spec, "source": str(REPO / spec["source"])} for name, spec in base["datasets"].items()}


def write_overlay(path: Path, overlay: dict) -> Path:
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def snakemake_cmd(workdir, *configfiles, args=()) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(REPO / "config.yaml"), *map(str, configfiles), "--cores", "2", *map(str, args)]


def snakemake(workdir, *configfiles, args=(), timeout=900, extra_env=None) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, *configfiles, args=args), capture_output=True, text=True,
                          timeout=timeout, env=env(**(extra_env or {})))


def start(cmd, logfile: Path, cwd=REPO, extra_env=None) -> subprocess.Popen:
    """Start a command in its own process group, stdout and stderr into `logfile`."""
    fh = open(logfile, "ab")  # noqa: SIM115 - closed by the child's exit; the parent keeps no handle
    try:
        return subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env(**(extra_env or {})),
                                start_new_session=True)
    finally:
        fh.close()


def kill_when(proc: subprocess.Popen, condition, timeout: float = 600, poll: float = 0.05) -> float:
    """SIGKILL the process group of `proc` as soon as `condition()` holds; returns the seconds waited.

    Fails if the process ends on its own first (the crash would then prove nothing).
    """
    started = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before the kill point was reached")
        if time.monotonic() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"kill point not reached within {timeout}s")
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    _reap_group(proc.pid)
    return time.monotonic() - started


def _reap_group(pgid: int, timeout: float = 30) -> None:
    """Wait until no process of the killed group is left (children die with the group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still alive {timeout}s after SIGKILL")


def leftovers(root: Path) -> list[Path]:
    """Temporary siblings written by reset.io's atomic writers that outlived a job."""
    return sorted(p for p in Path(root).rglob(".*.tmp"))


def tail(path: Path, lines: int = 40) -> str:
    path = Path(path)
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
