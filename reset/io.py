"""Atomic file writes, so a crashed job never leaves an output that looks complete; checked parquet reads."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path):
    """Like atomic_path for a directory: build in a temp sibling, then rename."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # mkdtemp and some writers create private modes; outputs are shared files
        for sub in tmp.rglob("*"):
            os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_parquet(df, path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_table(path, required_columns=(), what="table"):
    """A parquet file as a DataFrame, with a clear error when it is missing, unreadable or lacks a column.

    `what` says what the file should be ("sampling subset", "evaluation set"); errors name the
    file, and for missing columns list them and the columns found.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: cannot read {what} as parquet ({err})") from None
    missing = [c for c in required_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} of a {what} "
                         f"(found {', '.join(map(str, frame.columns)) or 'none'})")
    return frame


def read_tables(paths, required_columns=(), what="table"):
    """`read_table` of every path, concatenated; at least one path is needed."""
    import pandas as pd

    frames = [read_table(path, required_columns, what) for path in paths]
    if not frames:
        raise ValueError(f"no {what} files given")
    return pd.concat(frames, ignore_index=True)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_jsonl(rows, path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def iter_jsonl(lines, name):
    """Rows of JSONL text lines (an open file), blank lines skipped; a broken line is a ValueError
    naming `name` and the line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}:{lineno}: not valid JSON ({err.msg}, column {err.colno})") from None


def read_jsonl(path) -> list[dict]:
    """Read JSONL; a broken line is an error that names the file and line."""
    with open(path, encoding="utf-8") as fh:
        return list(iter_jsonl(fh, path))


def _json_default(value):
    # numpy scalars and arrays show up in summaries built from pandas frames
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
