"""The judge cache: a directory of append-only shards and claim files, safe on a shared file system.

Layout of a cache directory (e.g. results/{exp}/cache/judge/):

  shards/<host>-<pid>-<id>.jsonl   one file per writing process, written by that process only:
                                   one JSON line {key, model, value, created} per judgement,
                                   appended and fsync'ed the moment the reply is parsed
  shards/compacted-*.jsonl         what `python -m reset.judge compact` folded together
  claims/<key>                     who is requesting a prompt now: {owner, host, pid, expires}

No file is ever written by two processes, so nothing relies on locks, shared memory or mmap
coherence (which NFS and FUSE file systems do not give across hosts). What is relied on:
exclusive create (O_CREAT|O_EXCL) and atomic rename of a file on the shared file system, and
close-to-open consistency (a file opened after another host's fsync shows what was written).
A reader takes a shard's lines up to its last newline, so a line a killed writer left half
written is never read. Claims keep two jobs from paying for one prompt: they are created
exclusively, renewed while their holder works on the prompt, and lapse when released, when they
expire (host clocks are assumed to agree to well under `claim_ttl_s`), or at once when the holder
is a dead process on this host.

A judge.sqlite cache of earlier versions is read as well: `<dir>.sqlite` beside the directory
(where earlier versions kept it) and any *.sqlite inside it; `compact` folds them in. A cache path
ending in .sqlite names the directory without the suffix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

SHARDS, CLAIMS = "shards", "claims"
REFRESH_MIN_S = 0.2   # a lookup that misses re-reads the shards at most this often


def _process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


LEGACY_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def cache_dir_and_legacy(path) -> tuple[Path, list[Path]]:
    """The cache directory for `path` and the SQLite caches of earlier versions it reads.

    A path ending in .sqlite (.sqlite3, .db), the name of the cache of earlier versions,
    means the directory without that suffix (results/x/cache/judge.sqlite -> results/x/cache/judge),
    so an old config or command line keeps working and keeps its judgements.
    """
    path = Path(path)
    if path.suffix in LEGACY_SUFFIXES:
        path = path.with_suffix("")
    elif path.is_file():
        raise ValueError(f"judge cache {path}: a file; the judge cache is a directory")
    legacy = [c for s in LEGACY_SUFFIXES for c in [path.with_name(path.name + s)] if c.is_file()]
    if path.is_dir():
        legacy += sorted(c for s in LEGACY_SUFFIXES for c in path.glob(f"*{s}") if c.is_file())
    return path, legacy


def read_sqlite_cache(path) -> dict[str, tuple[str, dict]]:
    """key -> (model, value) of a judge.sqlite of an earlier version (its `judgements` table)."""
    db = sqlite3.connect(Path(path), timeout=60)
    try:
        rows = db.execute("SELECT key, model, value FROM judgements ORDER BY created").fetchall()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"judge cache {path}: not a judge SQLite cache ({err})") from None
    finally:
        db.close()
    return {key: (model, json.loads(value)) for key, model, value in rows}


def _complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The newline-terminated lines of `data` and how many bytes they take."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


class JudgeCache:
    """Persistent key -> JSON value store in a directory of shards, shared by threads, processes and hosts.

    `claim`/`release` keep two jobs that run at the same time from paying twice for one new
    prompt: the job that claims a key requests it, the other waits for its answer.
    """

    def __init__(self, path, create: bool = True):
        self.path, self.legacy = cache_dir_and_legacy(path)
        self.shards, self.claims = self.path / SHARDS, self.path / CLAIMS
        if create:
            self.shards.mkdir(parents=True, exist_ok=True)
            self.claims.mkdir(parents=True, exist_ok=True)
        self.owner = uuid.uuid4().hex
        self._host = socket.gethostname()
        self._lock = threading.RLock()
        self._values: dict[str, dict] = {}
        self._models: dict[str, str] = {}
        self._offsets: dict[str, int] = {}   # shard name -> bytes read so far
        self._last_refresh = 0.0
        self._fd = None                      # our own shard, opened on the first put
        self._torn = False                   # the last write to it failed part-way
        self._shard_name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self._host)}-{os.getpid()}-{self.owner[:12]}.jsonl"
        self._held: dict[str, float] = {}    # claimed key -> ttl_s
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()
        for db in self.legacy:
            for key, (model, value) in read_sqlite_cache(db).items():
                self._values.setdefault(key, value)
                self._models.setdefault(key, model)
        self.refresh(force=True)

    # ------------------------------------------------------------ judgements
    def refresh(self, force: bool = False) -> None:
        """Read what other processes appended to their shards since the last look."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < REFRESH_MIN_S:
                return
            self._last_refresh = now
            try:
                names = sorted(n for n in os.listdir(self.shards) if n.endswith(".jsonl"))
            except FileNotFoundError:
                return
            for name in names:
                if name != self._shard_name:
                    self._read_shard(name)

    def _read_shard(self, name: str) -> None:
        offset = self._offsets.get(name, 0)
        try:
            with open(self.shards / name, "rb") as f:   # a fresh open: close-to-open shows the latest data
                f.seek(offset)
                lines, used = _complete_lines(f.read())
        except FileNotFoundError:   # folded by compaction: its lines are in the compacted shard
            return
        for number, line in enumerate(lines):
            try:
                entry = json.loads(line)
                key, value = entry["key"], entry["value"]
            except (ValueError, KeyError, TypeError):
                log.warning("judge cache %s: skipping an unreadable line near byte %d", self.shards / name,
                            offset + sum(len(x) + 1 for x in lines[:number]))
                continue
            self._values.setdefault(key, value)
            self._models.setdefault(key, entry.get("model", ""))
        self._offsets[name] = offset + used

    def get(self, key: str, fresh: bool = False) -> dict | None:
        """The value of `key`; a miss re-reads the shards (at once with `fresh`, else at most every 0.2 s)."""
        with self._lock:
            if key not in self._values:
                self.refresh(force=fresh)
            return self._values.get(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> set[str]:
        with self._lock:
            self.refresh(force=True)
            return set(self._values)

    def entries(self):
        """(key, model, value) of every judgement this cache sees."""
        with self._lock:
            self.refresh(force=True)
            return [(k, self._models.get(k, ""), v) for k, v in self._values.items()]

    def put(self, key: str, model: str, value: dict) -> None:
        """Store a judgement: one line appended to this process's shard and fsync'ed before returning."""
        line = json.dumps({"key": key, "model": model, "value": value, "created": time.time()},
                          ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            if self._fd is None:
                self.shards.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.shards / self._shard_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                                   0o644)
            # after a failed write, a newline first ends the torn line so this one stays readable
            data = (b"\n" if self._torn else b"") + line.encode("utf-8")
            self._torn = True
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
            self._torn = False
            self._values[key] = value
            self._models[key] = model

    # ------------------------------------------------------------ claims
    def _claim_record(self, ttl_s: float) -> bytes:
        return json.dumps({"owner": self.owner, "host": self._host, "pid": os.getpid(),
                           "expires": time.time() + ttl_s}).encode()

    def _read_claim(self, path: Path):
        """The claim at `path`: its record, "partial" (being written), or None (gone)."""
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            return record if isinstance(record, dict) and "owner" in record else "partial"
        except ValueError:
            return "partial"

    def _lapsed(self, path: Path, record, ttl_s: float) -> bool:
        if record == "partial":   # a creator killed between create and write leaves it empty
            try:
                return time.time() - path.stat().st_mtime > ttl_s
            except FileNotFoundError:
                return True
        if record["expires"] <= time.time():
            return True
        # a pid means something on its own host only
        return record.get("host") == self._host and not _process_alive(int(record.get("pid", -1)))

    def claim(self, key: str, ttl_s: float) -> bool:
        """Take the right to request `key`; False while another live holder has it.

        The claim is renewed every ttl_s / 3 seconds until `release`, so it outlives any
        request; it lapses ttl_s after its holder stops renewing (killed, or host gone).
        """
        path = self.claims / key
        for _ in range(4):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                record = self._read_claim(path)
                if record is None:          # released meanwhile: try again
                    continue
                if record != "partial" and record["owner"] == self.owner:
                    self._renew(key, ttl_s)
                    return True
                if not self._lapsed(path, record, ttl_s):
                    return False
                if not self._break(path, record):
                    return False
                continue
            try:
                os.write(fd, self._claim_record(ttl_s))
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._held[key] = ttl_s
                self._start_renewer()
            return True
        return False

    def _break(self, path: Path, record) -> bool:
        """Remove a lapsed claim; False when what was removed turned out to be a newer, live claim."""
        tomb = path.with_name(f".{path.name}.lapsed-{uuid.uuid4().hex}")
        try:
            os.rename(path, tomb)   # atomic: of two jobs breaking one claim, one gets it
        except FileNotFoundError:
            return True
        taken = self._read_claim(tomb)
        if taken != record:         # another job re-claimed it between our look and the rename: put it back
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, json.dumps(taken).encode() if isinstance(taken, dict) else b"")
                os.close(fd)
            except FileExistsError:
                pass
            tomb.unlink(missing_ok=True)
            return False
        tomb.unlink(missing_ok=True)
        who = "a partly written claim" if record == "partial" else f"host {record.get('host')} pid {record.get('pid')}"
        log.info("judge cache: a lapsed claim (%s) on a prompt was taken over", who)
        return True

    def _renew(self, key: str, ttl_s: float) -> bool:
        """Push the expiry of our claim on `key` forward; False when it is no longer ours."""
        path = self.claims / key
        record = self._read_claim(path)
        if not isinstance(record, dict) or record.get("owner") != self.owner:
            return False
        tmp = path.with_name(f".{key}.renew-{self.owner}")
        tmp.write_bytes(self._claim_record(ttl_s))
        os.replace(tmp, path)   # readers see the old or the new record, never half of one
        return True

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, name="judge-claims", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while True:
            with self._lock:
                held = dict(self._held)
            if not held or self._closing.wait(max(0.05, min(held.values()) / 3)):
                return
            for key, ttl_s in held.items():
                try:
                    kept = self._renew(key, ttl_s)
                except OSError as err:
                    log.warning("judge cache: could not renew a claim: %s", err)
                    continue
                if not kept:
                    with self._lock:
                        if self._held.pop(key, None) is not None:
                            log.warning("judge cache: lost the claim on a prompt (it lapsed); the prompt may be "
                                        "paid twice")

    def release(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)
        path = self.claims / key
        record = self._read_claim(path)
        if isinstance(record, dict) and record.get("owner") == self.owner:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            held, self._held = list(self._held), {}
        for key in held:
            self.release(key)
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def compact(path, quiet_s: float = 600.0, force: bool = False) -> dict:
    """Fold every shard (and SQLite cache of an earlier version) into one shard; run when no job runs.

    Refuses (ValueError) while a claim is live or a shard was written in the last `quiet_s`
    seconds, the signs of a running job, unless `force`. Writes the new shard under a
    temporary name, renames it into place, then removes what it folded; a SQLite cache is
    renamed to *.sqlite.migrated (kept, no longer read).
    """
    directory, legacy = cache_dir_and_legacy(path)
    shards = directory / SHARDS
    if not directory.is_dir() and not legacy:
        raise ValueError(f"judge cache {directory}: no such cache")
    names = sorted(n for n in os.listdir(shards) if n.endswith(".jsonl")) if shards.is_dir() else []
    if not force:
        now = time.time()
        busy = [n for n in names if now - (shards / n).stat().st_mtime < quiet_s]
        claims = [c for c in (directory / CLAIMS).glob("[!.]*")] if (directory / CLAIMS).is_dir() else []
        if busy or claims:
            raise ValueError(f"judge cache {directory}: {len(busy)} shard(s) written in the last {quiet_s:.0f} s and "
                             f"{len(claims)} claim(s) present: a job may be running; compact when none runs "
                             "(--force to override, --quiet-s to shorten the wait)")
    cache = JudgeCache(directory, create=True)
    entries = cache.entries()
    cache.close()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = shards / f"compacted-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
    tmp = shards / f".{target.name}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for key, model, value in sorted(entries, key=lambda e: e[0]):
            f.write(json.dumps({"key": key, "model": model, "value": value, "created": time.time()},
                               ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    for name in names:
        (shards / name).unlink(missing_ok=True)
    for db in legacy:
        os.replace(db, db.with_name(db.name + ".migrated"))
    return {"cache": str(directory), "entries": len(entries), "shards_folded": len(names),
            "sqlite_migrated": [str(db) for db in legacy], "shard": str(target)}
