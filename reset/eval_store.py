"""Content-addressed store of evaluation outputs: each distinct model is evaluated once.

Two variants can be the same model: in the demo `base_cd` and `instruct_cd` start
from the same pretrained model and train on the same data with the same seed, and
a trajectory's first or last checkpoint is often the best one. Their evaluations
are then the same too. The store keys every generation shard by

    model digest (reset.digests, written with the model) + digests of the
    evaluation files + the generation settings (shard, shards, max_new_tokens,
    batch size)

and every scoring job by

    digests of its generation shards + the scoring settings (datasets, judge
    settings and judge model digest, NLI settings and NLI model digest).

A job first looks its key up: a complete entry is copied into the job's outputs
(a second or two, and the log and summary say where it came from); otherwise the
job computes, then publishes its outputs as a new entry. Because scoring is keyed
by the generations' bytes, a model whose generations came from the store finds
its scores there as well.

Entries are directories results/{exp}/eval_store/{kind}/{key}/ made complete by an
atomic rename, so a killed job never leaves half an entry. Outputs are hard-linked
into an entry (no extra space) but copied out of it: a copy gets its own
modification time, so Snakemake never sees a reused output as older than the
model it belongs to.

Two jobs with the same key at the same time: the second waits on the first's
lock (an flock on {key}.lock, released by the kernel if the holder dies) and then
copies its entry, so the same evaluation never runs twice. Waiting costs that
job's slot, never CPU; where the file system offers no locks, both compute and
the second publish is dropped (same bytes).

Every key also covers the digest of the package's source (reset/*.py), so after
a code change a job that Snakemake reruns computes afresh. What the key leaves
out on purpose: the device and library versions (as for every other output of
the pipeline: Snakemake does not rerun a job for them either) and settings that
cannot change an output (trust flags, judge cache path, budget cap).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from reset.digests import file_digest, json_digest, model_digest
from reset.io import atomic_path

log = logging.getLogger(__name__)

VERSION = 1          # bump when the layout or what a key covers changes
ENTRY_FILE = "entry.json"


# ---------------------------------------------------------------- keys


def code_digest() -> str:
    """Digest of the package's source: a changed scorer or generator never reuses an older entry."""
    package = Path(__file__).resolve().parent
    return json_digest({p.name: file_digest(p) for p in sorted(package.glob("*.py"))})


def generation_key(model_dir, data_paths, settings: dict) -> tuple[str, dict]:
    """(key, what it covers) of one generation shard of a model."""
    inputs = {"version": VERSION, "kind": "generate", "code": code_digest(), "model": model_digest(model_dir),
              "data": [file_digest(p) for p in data_paths], "settings": settings}
    return json_digest(inputs), inputs


def score_key(generation_paths, settings: dict, model_dirs: dict) -> tuple[str, dict]:
    """(key, what it covers) of the scores of a set of generation shards.

    model_dirs: {"judge": dir or None, "nli": dir or None}, the models scoring loads.
    """
    inputs = {"version": VERSION, "kind": "score", "code": code_digest(),
              "generations": [file_digest(p) for p in generation_paths], "settings": settings,
              "models": {name: model_digest(d) if d else None for name, d in sorted(model_dirs.items())}}
    return json_digest(inputs), inputs


# ---------------------------------------------------------------- store


def link_or_copy(src, dst) -> None:
    """Hard link where the file system allows it, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def copy_out(src, dst) -> None:
    """Copy an entry's file to an output path atomically (its own inode and modification time)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


class Store:
    """One experiment's store: root/{kind}/{key}/ (files + entry.json), root/{kind}/{key}.lock."""

    def __init__(self, root):
        self.root = Path(root)

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> dict | None:
        """The entry record of a complete entry (with its directory under "dir"), else None."""
        path = self.entry_dir(kind, key) / ENTRY_FILE
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return {**record, "dir": str(path.parent)}

    @contextlib.contextmanager
    def claim(self, kind: str, key: str):
        """Hold the key's lock for the body (compute and publish); another holder makes us wait."""
        lock = self.root / kind / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as fh:
            locked = _lock(fh, lock, kind, key)
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, kind: str, key: str, files: dict, inputs: dict, produced_for: str) -> None:
        """Make {name: path} a complete entry (atomic rename); an entry already there is kept."""
        final = self.entry_dir(kind, key)
        if (final / ENTRY_FILE).is_file():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=final.parent))
        try:
            for name, src in files.items():
                link_or_copy(src, tmp / name)
            record = {"key": key, "inputs": inputs, "files": sorted(files), "produced_for": produced_for,
                      "host": socket.gethostname(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / ENTRY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            try:
                os.rename(tmp, final)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                log.info("store entry %s/%s appeared meanwhile; keeping it", kind, key)
            else:
                log.info("published to the evaluation store: %s", final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def _lock(fh, lock: Path, kind: str, key: str) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as err:   # a file system without locks: duplicate work is possible, wrong results are not
        log.warning("%s: no file locks here (%s); a job with the same key may compute it too", lock, err)
        return False
    log.info("another job is computing the same %s (key %s); waiting for it to publish", kind, key[:16])
    start = time.time()
    fcntl.flock(fh, fcntl.LOCK_EX)
    log.info("waited %.0f s", time.time() - start)
    return True
