"""Read a big JSON array one element at a time (standard library only).

`json.load` and the `datasets` JSON builder hold a whole top-level array in memory
(plus copies); the NQ train retrieval results are several GB and ShareGPT 673 MB.
`iter_json_array` decodes the array element by element from fixed-size chunks with
`json.JSONDecoder.raw_decode`, so memory stays at one chunk plus the element being
decoded. `array_to_jsonl` rewrites such a file as JSON Lines, which `datasets`
reads in blocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
MAX_ELEMENT = 256 << 20  # characters one element may take before the file is called broken
_WS = " \t\r\n"


class JsonStreamError(ValueError):
    """The file is not a JSON array, or breaks off / holds invalid JSON (with line and column)."""


def starts_with_array(path, probe: int = 4096) -> bool:
    """Whether the file's first non-blank character (after a BOM) is `[`."""
    with open(path, "rb") as fh:
        head = fh.read(probe).decode("utf-8", errors="replace").lstrip("\ufeff" + _WS)
    return head.startswith("[")


def iter_json_array(path, chunk_size: int = CHUNK) -> Iterator:
    """Yield the elements of the JSON array in `path` in order, holding one chunk at a time."""
    decoder = json.JSONDecoder()
    buf, pos = "", 0
    lines_before = 0  # newlines in the dropped characters, for error positions
    col_base = 0  # characters after the last dropped newline
    state = "open"  # open -> first (value or ]) -> value -> sep (, or ]) -> value ... -> done
    with open(path, encoding="utf-8-sig") as fh:
        eof = False

        def refill() -> bool:
            nonlocal buf, pos, lines_before, col_base, eof
            if eof:
                return False
            block = fh.read(chunk_size)
            if not block:
                eof = True
                return False
            dropped = buf[:pos]
            lines_before += dropped.count("\n")
            col_base = len(dropped) - dropped.rfind("\n") - 1 if "\n" in dropped else col_base + len(dropped)
            buf, pos = buf[pos:] + block, 0
            return True

        def where(offset: int) -> str:
            line = lines_before + buf.count("\n", 0, offset) + 1
            newline = buf.rfind("\n", 0, offset)
            col = offset - newline if newline >= 0 else col_base + offset + 1
            return f"{path}:{line}: column {col}"

        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos >= len(buf):
                if refill():
                    continue
                if state == "done":
                    return
                raise JsonStreamError(f"{where(pos)}: file ends inside the JSON array")
            char = buf[pos]
            if state == "done":
                raise JsonStreamError(f"{where(pos)}: extra data after the JSON array")
            if state == "open":
                if char != "[":
                    raise JsonStreamError(f"{where(pos)}: expected a JSON array ('['), found {char!r}")
                pos, state = pos + 1, "first"
                continue
            if state in ("first", "sep") and char == "]":
                pos, state = pos + 1, "done"
                continue
            if state == "sep":
                if char != ",":
                    raise JsonStreamError(f"{where(pos)}: expected ',' or ']' between array elements, found {char!r}")
                pos, state = pos + 1, "value"
                continue
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as err:
                # the element may run past the chunk: read more and retry (up to MAX_ELEMENT)
                if len(buf) - pos < MAX_ELEMENT and refill():
                    continue
                raise JsonStreamError(f"{where(err.pos)}: not valid JSON ({err.msg})") from None
            if not eof and _may_go_on(value, buf, end) and refill():
                continue  # a number (or literal) may go on in the next chunk: decode again with more text
            yield value
            pos, state = end, "sep"


def _may_go_on(value, buf: str, end: int) -> bool:
    """Whether a decoded scalar could be the truncated start of a longer one ("-0" of "-0.5")."""
    if isinstance(value, (dict, list, str)):
        return end >= len(buf)
    return end + 8 >= len(buf) and all(c in "0123456789+-.eE" for c in buf[end:])


def array_to_jsonl(path, out_path, chunk_size: int = CHUNK) -> int:
    """Rewrite the JSON array in `path` as JSON Lines at `out_path` (atomically); returns the row count."""
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for value in iter_json_array(path, chunk_size):
                out.write(json.dumps(value, ensure_ascii=False))
                out.write("\n")
                n += 1
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def first_elements(path, n: int, chunk_size: int = 1 << 16) -> list:
    """The first `n` elements of a JSON array without reading the rest of the file."""
    out = []
    for value in iter_json_array(path, chunk_size):
        out.append(value)
        if len(out) >= n:
            break
    return out
