"""The finished tiny end-to-end run that several test files share (fixture e2e_run in conftest.py).

The whole Snakemake DAG on a tiny random LLaMA, two seeds, toy sizes: config.yaml overlaid by
tests/e2e_config.yaml, with the model sources and the shipped raw files filled in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
EXP = "e2e"


def e2e_config(tiny_llama_dir, tmp_path) -> Path:
    """The overlay with the tiny model filled in and the shipped raw files made absolute."""
    overlay = yaml.safe_load((REPO / "tests" / "e2e_config.yaml").read_text())
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    tiny = str(tiny_llama_dir)
    for role in ("base", "instruct"):
        overlay["models"][role]["source"] = tiny
    for judge in ("if", "if_supercharged", "nli"):
        overlay["judges"][judge]["model"] = tiny
    overlay["datasets"] = {
        name: {**spec, "source": str(REPO / spec["source"])} for name, spec in base["datasets"].items()
    }
    overlay.setdefault("training", {})["deepspeed_config"] = str(REPO / base["training"]["deepspeed_config"])
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def snakemake(workdir, configfile, *args, timeout=1500, env=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           **(env or {})}
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "config.yaml"), str(configfile), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def failure_report(result, workdir) -> str:
    logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
    tails = "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:]) for p in logs)
    return f"snakemake failed ({result.returncode})\n{result.stderr[-6000:]}\n{tails}"


def finished_run(tiny_llama_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    configfile = e2e_config(tiny_llama_dir, workdir)
    # the reviewer path: the main table needs neither the trajectories nor figures nor the report
    plan = snakemake(workdir, configfile, f"results/{EXP}/tables/main_results.csv", "--dry-run", "--quiet", "rules")
    assert plan.returncode == 0, failure_report(plan, workdir)
    result = snakemake(workdir, configfile)
    assert result.returncode == 0, failure_report(result, workdir)
    return workdir, workdir / "results" / EXP, plan.stdout + plan.stderr


def e2e_config_path(workdir) -> Path:
    return workdir / "e2e.yaml"
