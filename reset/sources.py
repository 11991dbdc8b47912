"""Dataset source strings: local files, remote files and hub ids (standard library only).

Snakemake imports this at parse time to list a dataset's local files as rule
inputs without touching the network; `reset.data` uses it to pick the loader.

A source is one of
  * a local file, glob or directory: `resources/demo/raw/nq.json`, `raw/part-*.parquet`;
  * a remote file URL read by the `datasets` file builders: `hf://datasets/org/repo/file.json`;
  * a hub dataset id: `microsoft/ms_marco` (with config name, split and revision from the config).
"""

from __future__ import annotations

import glob
import os
import re

# file extension -> format name; the format picks the `datasets` builder
FORMATS = {".json": "json", ".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}
BUILDERS = {"json": "json", "jsonl": "json", "parquet": "parquet", "csv": "csv"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
SPLIT_NAMES = ("train", "dev", "eval")
# The hub split read for each pipeline split when the config does not name one.
DEFAULT_HUB_SPLIT = {"all": "train", "train": "train", "dev": "validation", "eval": "test"}

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def file_format(source: str, explicit: str | None = None) -> str | None:
    """The format of a file source: `explicit` if given, else from the extension (None if unknown)."""
    if explicit:
        if explicit not in BUILDERS:
            raise ValueError(f"unknown format {explicit!r}; expected one of {', '.join(BUILDERS)}")
        return explicit
    name = source.lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return FORMATS.get(os.path.splitext(name)[1])


def is_remote_file(source: str) -> bool:
    return bool(_URL.match(source))


def is_local(source: str) -> bool:
    """A path, glob or directory on this machine (existing or not)."""
    if is_remote_file(source):
        return False
    return (
        glob.has_magic(source)
        or os.path.exists(source)
        or source.startswith(("/", "./", "../", "~"))
        or file_format(source) is not None
    )


def is_hub_id(source: str) -> bool:
    return not is_local(source) and not is_remote_file(source)


def local_files(source: str) -> list[str]:
    """The existing local files (or directory) a local source names; [] for remote and hub sources."""
    if not is_local(source):
        return []
    path = os.path.expanduser(source)
    if glob.has_magic(path):
        return sorted(p for p in glob.glob(path) if os.path.isfile(p))
    return [path] if os.path.exists(path) else []


def source_map(source) -> dict[str, str]:
    """Normalise `datasets.<name>.source`: a string becomes {"all": s}, a mapping is checked."""
    if isinstance(source, str):
        return {"all": source}
    if not isinstance(source, dict) or not source:
        raise ValueError(f"a dataset source must be a string or a mapping of {', '.join(SPLIT_NAMES)}, got {source!r}")
    bad = sorted(set(source) - set(SPLIT_NAMES))
    if bad:
        raise ValueError(f"unknown split key(s) {bad} in a source mapping; allowed: {', '.join(SPLIT_NAMES)}")
    return {key: str(value) for key, value in source.items()}


def hub_split(split, origin: str) -> str:
    """The hub split to read for `origin` ("all" or a pipeline split) given the config's `split`."""
    if isinstance(split, dict):
        return split.get(origin) or DEFAULT_HUB_SPLIT[origin]
    return split or DEFAULT_HUB_SPLIT[origin]


# ---------------------------------------------------------------- hub mirrors and revisions

# A revision placeholder left in a config where no commit could be looked up; preflight rejects it.
PLACEHOLDER_PREFIX = "UNPINNED"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_DATA_EXTENSIONS = (".parquet", ".json", ".jsonl", ".csv", ".arrow", ".txt", ".tsv")


def is_commit_sha(revision) -> bool:
    return isinstance(revision, str) and bool(_SHA.match(revision))


def is_placeholder(revision) -> bool:
    return isinstance(revision, str) and revision.startswith(PLACEHOLDER_PREFIX)


def is_mirror(source: str) -> bool:
    """A local directory read like a hub repository (e.g. made by `huggingface-cli download --local-dir`)."""
    return is_local(source) and os.path.isdir(os.path.expanduser(source))


def mirror_commit(directory: str) -> str | None:
    """The hub commit a `huggingface-cli download --local-dir` mirror was taken at, if recorded.

    The download writes `.cache/huggingface/download/<file>.metadata` beside the files; its
    first line is the commit sha of the revision downloaded.
    """
    meta_root = os.path.join(os.path.expanduser(directory), ".cache", "huggingface", "download")
    commits = set()
    for path in glob.glob(os.path.join(meta_root, "**", "*.metadata"), recursive=True):
        try:
            with open(path, encoding="utf-8") as fh:
                first = fh.readline().strip()
        except OSError:
            continue
        if is_commit_sha(first):
            commits.add(first)
    return commits.pop() if len(commits) == 1 else None


def loading_scripts(files: list[str], repo_name: str) -> list[str]:
    """Loading scripts among a repository's top-level files when it holds no data file.

    `datasets` 5 refuses such repositories ("Dataset scripts are no longer supported").
    """
    top = [f for f in files if "/" not in f.strip("/")]
    scripts = [f for f in top if f.endswith(".py")]
    has_data = any(f.lower().endswith(_DATA_EXTENSIONS + tuple(e + c for e in _DATA_EXTENSIONS for c in COMPRESSIONS))
                   for f in files if not f.startswith("."))
    if has_data or not scripts:
        return []
    base = repo_name.rstrip("/").split("/")[-1]
    return sorted(scripts, key=lambda f: (f != f"{base}.py", f))


def mirror_files(directory: str) -> list[str]:
    """Files of a mirror relative to it (hidden `.cache` / `.git` skipped)."""
    root = os.path.expanduser(directory)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def hf_url_with_revision(url: str, revision: str | None) -> str:
    """`hf://datasets/org/repo/path` pinned to `revision` (`hf://datasets/org/repo@rev/path`)."""
    match = re.match(r"^hf://(datasets|spaces)/([^/@]+)/([^/@]+)(@[^/]+)?/(.*)$", url)
    if not revision or not match or match.group(4):
        return url
    kind, org, repo, _, path = match.groups()
    return f"hf://{kind}/{org}/{repo}@{revision}/{path}"
