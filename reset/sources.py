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
