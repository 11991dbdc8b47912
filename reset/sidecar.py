"""Provenance sidecars: what one job ran with, on which machine, and what it read.

Every `python -m reset.*` job that writes an output (through `reset.cli.run_cli`) leaves a
small JSON file beside it: the primary output (`--out`, else `--out-dir`) plus
`.provenance.json`, e.g. `sampling/shards/0.parquet.provenance.json` or
`models/instruct_mtl/seed1.provenance.json` for a directory output. It holds the host, CPU,
GPU, CUDA and driver, package versions, the git commit of the code, the parsed arguments and
their hash, the revision of every prepared model and dataset the job read, its command line,
wall time and peak memory. `reset.provenance.collect_jobs` gathers them for the report.

A sidecar never holds a secret: a flag naming a key holds the *name* of an environment
variable, and every value of a secret-looking environment variable (`*KEY*`, `*TOKEN*`,
`*SECRET*`, `*PASSWORD*`) is replaced by `<redacted>` wherever it would appear.
The sidecar is written last, after the job's own outputs, and atomically; a failed job
writes none. See docs/design.md#provenance-sidecars.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import socket
import sys
import time
from pathlib import Path

SUFFIX = ".provenance.json"
PACKAGES = ["reset-pipeline", "torch", "transformers", "accelerate", "deepspeed", "datasets", "tokenizers",
            "safetensors", "pandas", "numpy", "openai"]
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"
# output flags, in order of preference: the first one given is the job's primary output
OUTPUT_DESTS = ("out", "out_dir")
# files prepared by reset.models (model directories) and reset.data (datasets, mixtures)
MODEL_SOURCE_FILES = ("SOURCE.json", "SOURCE")


# ------------------------------------------------------------------ machine and code


def host_info() -> dict:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **gpu_info(),
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def gpu_info() -> dict:
    """GPU names, CUDA and driver versions; from torch when the job loaded it, else from the driver's /proc files."""
    info = {"gpus": [], "gpu_count": 0, "cuda": None, "driver": None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    with contextlib.suppress(OSError):
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        match = re.search(r"Kernel Module\s+(\S+)", first)
        info["driver"] = match.group(1) if match else first.strip()
    torch = sys.modules.get("torch")  # never import torch only to describe the machine
    if torch is not None:
        try:
            info["cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception as err:  # a broken driver must not fail the job after its work is done
            info["gpu_error"] = str(err)
    if not info["gpus"]:
        for path in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    if line.startswith("Model:"):
                        info["gpus"].append(line.split(":", 1)[1].strip())
    info["gpu_count"] = len(info["gpus"])
    return info


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(start=None) -> dict:
    """The commit of the checkout holding this code, read from .git without running git; None outside one."""
    start = Path(start or Path(__file__).resolve().parent)
    for root in (start, *start.parents):
        dot_git = root / ".git"
        if dot_git.exists():
            try:
                return {"commit": _read_head(dot_git), "checkout": str(root)}
            except (OSError, ValueError) as err:
                return {"commit": None, "checkout": str(root), "note": f"unreadable .git: {err}"}
    return {"commit": None, "checkout": None, "note": "not a git checkout"}


def _read_head(dot_git: Path) -> str | None:
    git_dir = dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text().strip()
        if not text.startswith("gitdir:"):
            raise ValueError(f"{dot_git}: no gitdir line")
        git_dir = (dot_git.parent / text.split(":", 1)[1].strip()).resolve()
    common = git_dir
    if (git_dir / "commondir").exists():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head  # detached
    ref = head.split(":", 1)[1].strip()
    for base in (git_dir, common):
        if (base / ref).exists():
            return (base / ref).read_text().strip()
    packed = common / "packed-refs"
    if packed.exists():
        for line in packed.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None  # a branch without commits


# ------------------------------------------------------------------ settings and inputs


def secret_values(environ=None) -> list[str]:
    environ = os.environ if environ is None else environ
    # short values ("1", "true") would redact harmless text; real keys are long
    return sorted((v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 8), key=len, reverse=True)


def redact(value, secrets):
    """`value` with every secret string replaced; dict keys naming a secret keep only env var names."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def settings_of(args: argparse.Namespace | None) -> dict:
    if args is None:
        return {}
    return {key: _plain(value) for key, value in sorted(vars(args).items())}


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def settings_hash(settings: dict) -> str:
    """Digest of the settings that can change the output: runtime flags (reset.settings) left out."""
    from reset.settings import RUNTIME_DESTS

    output = {k: v for k, v in settings.items() if k not in RUNTIME_DESTS}
    return hashlib.sha256(json.dumps(output, sort_keys=True).encode()).hexdigest()[:16]


def _paths(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _paths(v)
    elif isinstance(value, (str, Path)) and value and len(str(value)) < 4096:
        text = str(value)
        if not text.startswith(("{", "[")):
            with contextlib.suppress(OSError, ValueError):
                if Path(text).exists():
                    yield Path(text)


def model_record(path: Path) -> dict | None:
    """Source and revision of a model directory written by reset.models (or a training job's checkpoint)."""
    if not path.is_dir():
        return None
    if (path / "SOURCE.json").exists():
        with contextlib.suppress(OSError, ValueError):
            return {"path": str(path), **json.loads((path / "SOURCE.json").read_text())}
    if (path / "SOURCE").exists():
        return {"path": str(path), "source": (path / "SOURCE").read_text().strip(), "revision": None}
    if (path / "config.json").exists():  # a trained checkpoint: its training job's sidecar says where from
        trained = path.parent / (path.name + SUFFIX)
        return {"path": str(path), "source": "trained", "sidecar": str(trained) if trained.exists() else None}
    return None


def dataset_records(path: Path) -> list[dict]:
    """Sources and revisions of a prepared dataset (filter_report.json) or a mixture's components."""
    folder = path if path.is_dir() else path.parent
    report = folder / "filter_report.json"
    if report.exists():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(report.read_text())
            return [{"dataset": data.get("dataset", folder.name), "path": str(path),
                     "sources": data.get("sources"), "revision": data.get("revision")}]
    mixture = folder / "report.json"
    if mixture.exists():
        from reset.variants import MIXTURES

        with contextlib.suppress(OSError, ValueError):
            data = json.loads(mixture.read_text())
            name = data.get("mixture")
            if name in MIXTURES:  # data/mixtures/{name} -> data/{dataset}
                return [rec for ds in MIXTURES[name] for rec in dataset_records(folder.parent.parent / ds)]
    return []


def inputs_read(args: argparse.Namespace | None, outputs=()) -> dict:
    models, datasets, seen = [], {}, set()
    skip = {Path(p).resolve() for p in outputs if p}
    for value in (vars(args).values() if args is not None else ()):
        for path in _paths(value):
            if path.resolve() in skip or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            record = model_record(path)
            if record:
                models.append(record)
            for rec in dataset_records(path):
                datasets.setdefault(rec["dataset"], rec)
    return {"models": models, "datasets": list(datasets.values())}


# ------------------------------------------------------------------ the job


def primary_output(args: argparse.Namespace | None) -> Path | None:
    for dest in OUTPUT_DESTS:
        value = getattr(args, dest, None) if args is not None else None
        if value:
            return Path(value)
    return None


def sidecar_path(output) -> Path:
    output = Path(output)
    return output.parent / (output.name + SUFFIX)


def peak_memory_mb() -> dict:
    # ru_maxrss is KiB on Linux (bytes on macOS)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    out = {"rss_mb": round(own, 1), "children_rss_mb": round(children, 1), "gpu_mb": None}
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["gpu_mb"] = round(max(torch.cuda.max_memory_allocated(i)
                                          for i in range(torch.cuda.device_count())) / 2**20, 1)
    return out


class Job:
    """One CLI run: started when created, described by `record()` once its arguments are parsed."""

    def __init__(self, name=None, argv=None):
        self.name = name
        self.argv = list(sys.argv if argv is None else argv)
        self.args: argparse.Namespace | None = None
        self.started = _dt.datetime.now(_dt.UTC)
        self._t0 = time.monotonic()

    def record(self) -> dict:
        secrets = secret_values()
        output = primary_output(self.args)
        settings = settings_of(self.args)
        command = getattr(self.args, "command", None)
        return redact({
            "job": " ".join(part for part in (self.name, command if isinstance(command, str) else None) if part),
            "output": str(output) if output else None,
            # as typed: `python -m reset.<module> ...` (argv[0] is the module's file under -m)
            "command": [sys.executable, "-m", self.name, *self.argv[1:]] if self.name else self.argv,
            "cwd": os.getcwd(),
            "started": self.started.isoformat(timespec="seconds"),
            "wall_seconds": round(time.monotonic() - self._t0, 3),
            "peak_memory": peak_memory_mb(),
            "host": host_info(),
            "packages": package_versions(),
            "git": git_commit(),
            "settings": settings,
            "settings_hash": settings_hash(redact(settings, secrets)),
            "read": inputs_read(self.args, outputs=[output]),
        }, secrets)

    def write(self) -> Path | None:
        """Write the sidecar beside the primary output; nothing when the job has no output path."""
        output = primary_output(self.args)
        if output is None or not output.exists() or os.environ.get("RANK", "0") != "0":
            return None  # no output path (stdout), or not rank 0 of a distributed job
        from reset.io import atomic_path

        path = sidecar_path(output)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.record(), indent=2, sort_keys=True) + "\n")
        return path


_current: list[Job] = []


def current() -> Job | None:
    return _current[-1] if _current else None


@contextlib.contextmanager
def job(name=None, argv=None):
    """Time a CLI run and capture the arguments it parses; the caller writes the sidecar on success.

    Each CLI's main() calls `parser.parse_args` once; while a job is open that call also hands
    the parsed namespace to the job, so no module has to pass its arguments on by hand.
    """
    this = Job(name, argv)
    original = argparse.ArgumentParser.parse_args

    def parse_args(parser, args=None, namespace=None):
        parsed = original(parser, args, namespace)
        this.args = parsed
        return parsed

    _current.append(this)
    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield this
    finally:
        argparse.ArgumentParser.parse_args = original
        _current.remove(this)
