"""The Slurm profile against a real one-node Slurm on this machine.

`scripts/slurm_local.sh` installs Debian's slurmctld, slurmd, slurm-client and
munge when missing (root, apt-get), writes a one-node cluster config under a
temp dir (no accounting database, two fake GPUs) and starts munged, slurmctld
and slurmd; every daemon is stopped by pid afterwards, also when a test fails.
Snakemake then submits real sbatch jobs through `profiles/slurm`, turned into
a CI overlay: GPU counts shrunk to what the node has (training to 0, because
nothing can compute on a fake GPU), CPUs and memory to the node's size,
`--slurm-status-command squeue --slurm-no-account` (without accounting `sacct`
cannot report jobs). Everything runs under `timeout -s KILL`.

The profile's own values are checked without Slurm, on a dry run of the paper
experiment: GPUs on the GPU rules, none on the CPU rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reset import report

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"
DAEMONS = ("munged", "slurmctld", "slurmd")
FAKE_GPUS = 2
START_TIMEOUT_S = 600  # includes apt-get on a fresh machine
RUN_TIMEOUT_S = int(os.environ.get("RESET_SLURM_RUN_TIMEOUT", 900))  # seconds for one snakemake run


# ---------------------------------------------------------------- helpers


def run(cmd, *, env=None, cwd=None, timeout_s: int) -> subprocess.CompletedProcess:
    """Run under `timeout -s KILL`: nothing here can hang the test suite."""
    return subprocess.run(
        ["timeout", "-s", "KILL", str(timeout_s), *map(str, cmd)],
        env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def rule_logs_tail(work: Path, n: int = 40) -> str:
    """The ends of the rule logs a failed run left (the job's own error is there, not in Slurm's logs)."""
    logs = sorted((work / "logs").rglob("*.log"), key=lambda f: f.stat().st_mtime)[-3:]
    return "\n".join(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]) for f in logs)


def skip_reason() -> str | None:
    """Why the real-Slurm tests cannot run here, or None."""
    if os.environ.get("RESET_SKIP_SLURM"):
        return "RESET_SKIP_SLURM is set"
    if not sys.platform.startswith("linux"):
        return "a local Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "needs root: it installs slurm and munge with apt-get and runs their daemons as root"
    if Path("/etc/slurm/slurm.conf").exists():
        return "/etc/slurm/slurm.conf exists: a system Slurm is configured, the test cluster would clash with it"
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(b)]
    if missing and not shutil.which("apt-get"):
        return f"{', '.join(missing)} not installed and no apt-get to install them"
    if not shutil.which("timeout"):
        return "coreutils `timeout` is missing"
    return None


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def daemon_pid(pid: int, name: str) -> bool:
    """True if pid is alive and is still the daemon `name` (never signal anything else)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def pids_from(text: str, run_dir: Path) -> dict[str, int]:
    """Daemon pids as the start script printed them, completed from its pid files."""
    pids = {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) pid (\d+)", text)}
    for name in DAEMONS:
        f = run_dir / f"{name}.pid"
        if name not in pids and f.is_file() and f.read_text().strip().isdigit():
            pids[name] = int(f.read_text())
    return pids


@dataclass
class Cluster:
    dir: Path
    env: dict  # SLURM_CONF and the venv's bin first on PATH
    gpus: int

    def squeue(self) -> dict[str, dict]:
        """Every job slurmctld still knows (finished ones stay MinJobAge seconds)."""
        out = run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%T"], env=self.env, timeout_s=30)
        assert out.returncode == 0, out.stdout
        jobs = {}
        for line in out.stdout.splitlines():
            jobid, name, state = line.strip().split("|")
            jobs[jobid] = {"name": name, "state": state}
        return jobs

    def job_info(self, jobid: str) -> str:
        out = run(["scontrol", "show", "job", jobid], env=self.env, timeout_s=30)
        assert out.returncode == 0, out.stdout
        return out.stdout

    def log_tail(self, n: int = 30) -> str:
        parts = []
        for name in ("slurmctld", "slurmd"):
            f = self.dir / "log" / f"{name}.log"
            if f.is_file():
                parts.append(f"--- {f}\n" + "\n".join(f.read_text().splitlines()[-n:]))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm():
    """A running one-node Slurm; all three daemons are stopped by pid afterwards."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="reset-slurm-", dir="/tmp"))
    state.chmod(0o755)  # munged wants its socket directory reachable by all
    ctld_port, slurmd_port = free_ports(2)
    env = {
        **os.environ,
        "RESET_SLURM_DIR": str(state),
        "RESET_SLURM_CTLD_PORT": str(ctld_port),
        "RESET_SLURM_SLURMD_PORT": str(slurmd_port),
        "RESET_SLURM_FAKE_GPUS": str(FAKE_GPUS),
    }
    pids: dict[str, int] = {}
    try:
        started = run(["bash", SCRIPT, "start"], env=env, timeout_s=START_TIMEOUT_S)
        gpus = FAKE_GPUS
        if started.returncode != 0 and "mknod failed" in started.stdout:
            # No CAP_MKNOD (unprivileged container): a cluster without GPUs.
            env["RESET_SLURM_FAKE_GPUS"] = "0"
            gpus = 0
            started = run(["bash", SCRIPT, "start"], env=env, timeout_s=START_TIMEOUT_S)
        pids = pids_from(started.stdout, state / "run")
        assert started.returncode == 0, f"slurm_local.sh start failed:\n{started.stdout}"
        assert set(pids) == set(DAEMONS), started.stdout
        cluster_env = {
            **env,
            "SLURM_CONF": str(state / "etc" / "slurm.conf"),
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
        yield Cluster(state, cluster_env, gpus)
    finally:
        pids.update(pids_from("", state / "run"))
        stopped = run(["bash", SCRIPT, "stop"], env=env, timeout_s=120)
        survivors = []
        for name, pid in pids.items():
            if daemon_pid(pid, name):
                survivors.append(f"{name} pid {pid}")
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout
        assert not survivors, f"slurm_local.sh stop left {survivors} running (killed now)"


def ci_profile(dest: Path, gpus: int) -> Path:
    """profiles/slurm shrunk to this node; returns the profile directory.

    Executor, retries and the attempt-scaled default resources stay as they are.
    Per-rule GPUs are capped at the node's fake GPUs, except training (it would
    launch one process per GPU, and nothing can compute on a fake one); CPUs per
    job become 1 and memory 1 GB per attempt (the node has 2 cores).
    """
    prof = yaml.safe_load(PROFILE.read_text())
    prof.update({
        "jobs": 8,
        "latency-wait": 5,
        "retries": 1,
        "slurm-status-command": "squeue",
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
    })
    for rule, res in prof["set-resources"].items():
        res = dict(res)
        if "gpu" in res:
            res["gpu"] = 0 if rule == "train" else min(res["gpu"], gpus)
        res.pop("gpu_model", None)
        for key in ("cpus_per_task", "cpus_per_gpu"):
            if key in res:
                res[key] = 1
        res["mem_mb"] = "1000 * attempt"
        prof["set-resources"][rule] = res
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


def submitted_jobs(log: str) -> dict[str, str]:
    """Slurm job id -> rule of every submission (a retry is a new one), from Snakemake's log."""
    found = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log)
    return dict(found)


# ---------------------------------------------------------------- without Slurm


def dry_run_resources(*args: str) -> dict[str, list[dict[str, str]]]:
    """rule -> resources of each of its jobs, from `snakemake -n` output."""
    out = run([SNAKEMAKE, "-n", "--profile", "profiles/slurm", *args], cwd=REPO, timeout_s=300)
    assert out.returncode == 0, out.stdout[-4000:]
    jobs: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in out.stdout.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m[1]
        elif rule and (m := re.match(r"\s+resources: (.*)", line)):
            pairs = dict(kv.split("=", 1) for kv in m[1].split(", "))
            jobs.setdefault(rule, []).append(pairs)
            rule = None
    return jobs


def test_profile_names_only_rules_of_the_workflow():
    """A misspelt rule under set-resources would be ignored silently by Snakemake."""
    out = run([SNAKEMAKE, "--list-rules"], cwd=REPO, timeout_s=120)
    assert out.returncode == 0, out.stdout
    rules = set(out.stdout.split())
    profile = yaml.safe_load(PROFILE.read_text())
    unknown = sorted(set(profile["set-resources"]) - rules)
    assert not unknown, f"profiles/slurm/config.yaml sets resources of unknown rules {unknown}"
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1


# Rules that get GPUs on the cluster, and how many per job.
GPU_RULES = {
    "train": 8,
    "sample": 1,
    "score_faithfulness": 1,
    "eval_generate": 1,
    "eval_score": 1,
    "eval_trajectory_generate": 1,
    "eval_trajectory_score": 1,
}


def test_paper_dry_run_puts_gpus_on_gpu_rules_only():
    jobs = dry_run_resources("--configfile", "experiments/paper.yaml")
    assert set(GPU_RULES) <= set(jobs), sorted(jobs)
    for rule, resources in jobs.items():
        for res in resources:
            gpus = int(res.get("gpu", 0))
            assert gpus == GPU_RULES.get(rule, 0), f"{rule}: {res}"
            if gpus:
                assert int(res["cpus_per_gpu"]) >= 1 and "cpus_per_task" not in res, f"{rule}: {res}"
            else:
                assert "cpus_per_gpu" not in res and "gpu_model" not in res, f"{rule}: {res}"
            assert int(res["runtime"]) >= 60 and int(res["mem_mb"]) >= 4000, f"{rule}: {res}"
    # the paper runs 3 seeds x 7 trained variants, one whole node each
    train = jobs["train"]
    assert len(train) == 21
    assert {(r["gpu"], r["cpus_per_gpu"], r["mem_mb"], r["runtime"]) for r in train} == {("8", "8", "256000", "1440")}
    # sampling is sharded into one-GPU jobs
    assert len(jobs["sample"]) == yaml.safe_load((REPO / "experiments" / "paper.yaml").read_text())["sampling"]["shards"]


def test_plugin_version_keeps_multi_gpu_jobs_in_one_task():
    from importlib.metadata import version

    major, minor, patch = (int(x) for x in version("snakemake-executor-plugin-slurm").split(".")[:3])
    assert (major, minor, patch) >= (2, 7, 1)


# ---------------------------------------------------------------- with a real Slurm


PROBE_SNAKEFILE = r"""
# Checks of the profile's Slurm semantics that the pipeline relies on.

# A chain, so the two shards are the only jobs in the queue while they run.
rule all:
    input:
        "retried.txt",


rule multi_gpu:
    # Training: one job, one task, holding all its GPUs.
    output:
        "multi_gpu.txt",
    resources:
        gpu=2,
    shell:
        "echo task $SLURM_JOB_ID $SLURM_PROCID gpus=$CUDA_VISIBLE_DEVICES >> {output}"


rule shard:
    # Sampling and evaluation shards: one GPU each, side by side.
    input:
        "multi_gpu.txt",
    output:
        "shard{i}.txt",
    resources:
        gpu=1,
    shell:
        "echo $SLURM_JOB_ID gpus=$CUDA_VISIBLE_DEVICES start=$(date +%s.%N) > {output}.tmp; "
        "sleep 6; echo end=$(date +%s.%N) >> {output}.tmp; mv {output}.tmp {output}"


rule retried:
    # Fails on its first attempt; the retry must come back with more memory.
    input:
        expand("shard{i}.txt", i=range(2)),
    output:
        "retried.txt",
    shell:
        "echo attempt mem_mb={resources.mem_mb} runtime={resources.runtime} >> attempts.txt; "
        "if [ $(wc -l < attempts.txt) -ge 2 ]; then cp attempts.txt {output}; else exit 3; fi"
"""


def test_gpu_jobs_and_retries_through_sbatch(slurm, tmp_path):
    if slurm.gpus < 2:
        pytest.skip("the node has no fake GPUs (mknod not permitted here)")
    work = tmp_path / "probe"
    work.mkdir()
    (work / "Snakefile").write_text(PROBE_SNAKEFILE)
    profile = ci_profile(tmp_path / "profile", slurm.gpus)
    out = run([SNAKEMAKE, "--profile", profile, "--directory", work, "-s", work / "Snakefile"],
              env=slurm.env, cwd=work, timeout_s=300)
    assert out.returncode == 0, out.stdout[-6000:] + "\n" + slurm.log_tail()

    jobs = slurm.squeue()
    ours = submitted_jobs(out.stdout)
    assert len(ours) == 5, out.stdout  # multi_gpu, 2 shards, retried twice
    for slurm_id in ours:
        assert slurm_id in jobs, f"sbatch job {slurm_id} unknown to squeue: {jobs}"

    # Multi-GPU: exactly one task ran, and it saw both GPUs.
    lines = (work / "multi_gpu.txt").read_text().splitlines()
    assert len(lines) == 1, lines
    job_id = lines[0].split()[1]
    assert lines[0].endswith("gpus=0,1"), lines
    assert re.search(r"TresPerJob=\S*gpu:2", slurm.job_info(job_id)), slurm.job_info(job_id)

    # Shards: separate jobs, one GPU each, distinct GPUs, overlapping in time.
    shards = []
    for i in range(2):
        first, second = (work / f"shard{i}.txt").read_text().splitlines()
        sid, gpu, start = first.split()
        shards.append((sid, gpu, float(start.split("=")[1]), float(second.split("=")[1])))
    assert shards[0][0] != shards[1][0]
    assert {s[1] for s in shards} == {"gpus=0", "gpus=1"}, shards
    assert max(s[2] for s in shards) < min(s[3] for s in shards), f"shards did not run in parallel: {shards}"

    # Retry: attempt 2 requested twice the memory of attempt 1 (profile: 4000 * attempt).
    attempts = (work / "retried.txt").read_text().splitlines()
    mems = [int(re.search(r"mem_mb=(\d+)", a)[1]) for a in attempts]
    assert mems == [4000, 8000], attempts
    failed = [sid for sid in ours if jobs[sid]["state"] == "FAILED"]
    assert len(failed) == 1, {sid: jobs[sid] for sid in ours}


def slurm_ci_config(tiny_llama_dir: Path, workdir: Path) -> Path:
    """The end-to-end test's tiny experiment (tests/e2e_config.yaml), one seed."""
    from e2e_support import e2e_config  # tests/ is on sys.path under pytest

    path = e2e_config(tiny_llama_dir, workdir)
    cfg = yaml.safe_load(path.read_text())
    cfg.update(experiment=PIPELINE_EXP, seeds=[1])
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


PIPELINE_EXP = "slurm_ci"
# The whole DAG of the tiny end-to-end experiment, one seed, up to the report:
# data, model preparation, mixtures, all seven trainings, the sampling sweep,
# the candidate judges and the cost estimate, curation, the evaluation of every
# variant and of the trajectory checkpoints. The tables, figures, provenance and
# report are local rules (they run on the submitting node, as on a cluster).
PIPELINE_TARGETS = [f"results/{PIPELINE_EXP}/report.html"]
SUBMITTED_RULES = {
    "prepare_model", "prepare_dataset", "prepare_dataset_cd", "prepare_dataset_eval", "build_mixture",
    "train", "sampling_subset", "sample", "judge_items", "judge_cost_estimate", "judge_candidates",
    "score_faithfulness", "score_task", "curate", "eval_generate", "eval_score",
    "eval_trajectory_generate", "eval_trajectory_score",
}


def test_pipeline_through_sbatch(slurm, tiny_llama_dir, tmp_path):
    work = tmp_path / "workdir"
    work.mkdir()
    configfile = slurm_ci_config(tiny_llama_dir, work)
    profile = ci_profile(tmp_path / "profile", slurm.gpus)
    started = time.monotonic()
    out = run(
        [SNAKEMAKE, "-s", REPO / "Snakefile", "--directory", work, "--profile", profile,
         "--configfile", REPO / "config.yaml", configfile, "--", *PIPELINE_TARGETS],
        env=slurm.env, cwd=work, timeout_s=RUN_TIMEOUT_S,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-6000:] + "\n" + rule_logs_tail(work) + "\n" + slurm.log_tail()

    # Outputs: a curated set in the unified schema, the ReSet model's scored evaluation.
    results = work / "results" / PIPELINE_EXP
    curated = pd.read_parquet(results / "curated" / "reset.parquet")
    assert len(curated) > 0 and {"id", "prompt", "references", "gold_references"} <= set(curated)
    assert all(len(refs) == 1 and refs[0] for refs in curated["references"])
    summary = json.loads((results / "eval" / "instruct_mtl_reset" / "seed1" / "summary.json").read_text())
    assert summary, "empty evaluation summary"
    for dataset in ("nq", "alpaca_eval", "bioasq"):
        scored = pd.read_parquet(results / "eval" / "instruct_mtl_reset" / "seed1" / f"{dataset}.parquet")
        assert len(scored) > 0 and "prediction" in scored, dataset
    assert (results / "models" / "instruct_mtl_reset" / "seed1" / "training_summary.json").is_file()
    main = pd.read_csv(results / "tables" / "main_results.csv")
    assert {"instruct", "base_cd_if", "instruct_mtl_reset_s"} <= set(main["variant"])
    assert (results / "report.html").read_text().count('src="data:image/png;base64,') == len(report.FIGURES)

    # Every job went through sbatch, once, and finished there; none ran locally.
    ours = submitted_jobs(out.stdout)
    assert set(ours.values()) == SUBMITTED_RULES, sorted(set(ours.values()))
    jobs = slurm.squeue()
    states = {sid: jobs.get(sid, {}).get("state") for sid in ours}
    assert all(s == "COMPLETED" for s in states.values()), states
    logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(logs) == len(ours), logs

    # GPU requests reached Slurm: the profile's GPU rules held one (fake) GPU each,
    # the CPU rules and training (0 here) none.
    for sid, rule in ours.items():
        want = min(GPU_RULES.get(rule, 0), slurm.gpus) if rule != "train" else 0
        got = re.search(r"TresPerJob=\S*gpu:(\d+)", slurm.job_info(sid))
        assert (int(got[1]) if got else 0) == want, f"{rule} (job {sid}) held {got and got[0]}, expected {want} GPUs"
    print(f"{len(ours)} sbatch jobs in {took:.0f}s")
