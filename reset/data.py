"""Datasets: raw sources -> filtered examples in one schema -> splits and training mixtures.

  python -m reset.data prepare --dataset nq --source resources/demo/raw/nq.json --out-dir results/demo/data/nq ...
  python -m reset.data mixture --name mtl --train .../train.parquet ... --dev .../dev.parquet ... --out-dir ...

`prepare` reads a dataset's source(s) with `datasets.load_dataset` (local
JSON / JSON Lines / parquet / CSV files, remote files or hub ids), runs the
dataset's adapter (reset.adapters) and the dataset-wide filters (duplicates,
IF evaluation instructions seen in training), splits the examples, and writes
{split}.parquet for the dataset's splits plus filter_report.json. `mixture`
builds the IF, CD and MTL training mixtures from prepared splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from reset import adapters
from reset.io import atomic_path, write_json
from reset.jsonstream import JsonStreamError, array_to_jsonl, iter_json_array, starts_with_array
from reset.metrics import normalize
from reset.prompts import render_prompt
from reset.sources import (
    BUILDERS,
    COMPRESSIONS,
    SPLIT_NAMES,
    file_format,
    hf_url_with_revision,
    hub_split,
    is_hub_id,
    is_local,
    loading_scripts,
    local_files,
    mirror_commit,
    mirror_files,
    source_map,
)
from reset.variants import DATASETS, EXAMPLE_COLUMNS, IF_EVAL, IF_POOL, IF_TRAIN, KIND, MIXTURES, SPLITS

log = logging.getLogger(__name__)

COLUMNS = EXAMPLE_COLUMNS
# Sources of a mapping are read in this order, so a row present in both an
# evaluation and a training source is kept for evaluation.
ORIGIN_ORDER = ["eval", "dev", "train", "all"]


class DataError(ValueError):
    """A dataset cannot be prepared: unreadable file, bad configuration or nothing left."""


# ---------------------------------------------------------------- schema


def arrow_schema():
    import pyarrow as pa

    return pa.schema([(c, pa.list_(pa.string()) if c == "references" else pa.string()) for c in COLUMNS])


def stable_id(dataset: str, identity: str) -> str:
    return f"{dataset}-{hashlib.sha1(identity.encode('utf-8')).hexdigest()[:12]}"


def to_row(dataset: str, example: adapters.Example) -> dict:
    kind = KIND[dataset]
    return {
        "id": stable_id(dataset, example.identity),
        "dataset": dataset,
        "kind": kind,
        "instruction": example.instruction,
        "context": example.context,
        "question": example.question,
        "references": list(example.references),
        "prompt": render_prompt(kind, example.instruction, example.context, example.question),
    }


def write_rows(rows: list[dict], path) -> None:
    """Write rows in the unified schema (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=arrow_schema())
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_rows(path) -> list[dict]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: prepared split not found")
    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a prepared split, missing column(s) {missing}")
    return table.select(COLUMNS).to_pylist()


# ---------------------------------------------------------------- loading


def load_source(source: str, fmt: str | None = None, name: str | None = None,
                split: str = "train", revision: str | None = None):
    """Load one source as a `datasets.Dataset`; unreadable files fail with file and line."""
    import datasets

    if is_hub_id(source):
        try:
            return datasets.load_dataset(source, name, split=split, revision=revision)
        except Exception as err:
            raise DataError(
                f"hub dataset {source!r} (config {name!r}, split {split!r}, revision {revision!r}) "
                f"could not be loaded: {type(err).__name__}: {err}"
            ) from err
    if is_local(source):
        files = local_files(source)
        if not files:
            raise DataError(f"{source}: no such file")
        if len(files) == 1 and os.path.isdir(files[0]):
            return load_mirror(files[0], name, split, revision)
    else:
        files = [hf_url_with_revision(source, revision)]
    fmt = file_format(source, fmt)
    if fmt is None:
        raise DataError(f"{source}: cannot tell the file format from the name; set `format:` "
                        f"({', '.join(BUILDERS)})")
    for path in files:
        if is_local(path) and _is_empty(path):
            raise DataError(f"{path}: file is empty")
    big_arrays = [p for p in files if fmt == "json" and is_local(p) and _is_big_array(p)]
    try:
        if big_arrays:
            ds = _load_big_arrays(files, big_arrays)
        else:
            ds = datasets.load_dataset(BUILDERS[fmt], data_files=files, split="train")
    except JsonStreamError as err:
        raise DataError(str(err)) from err
    except Exception as err:
        raise read_error(source, fmt, err) from err
    mixed = [col for col, feature in ds.features.items() if type(feature).__name__ == "Json"]
    if mixed:
        log.warning("%s: column(s) %s hold values of different types across rows; rows whose value has the "
                    "wrong type are dropped as bad_<column> (note: `datasets` decodes strings that look like "
                    "JSON literals, such as \"42\", in such columns)", source, mixed)
    return ds


def load_mirror(directory: str, name: str | None, split: str, revision: str | None = None):
    """A local copy of a hub repository, read exactly as its hub id would be (config name, split).

    Like the hub, a repository that holds only a loading script is refused, naming the script.
    """
    import datasets

    scripts = loading_scripts(mirror_files(directory), directory)
    if scripts:
        raise DataError(f"{directory}: holds only the loading script {scripts[0]} and no data file; `datasets` "
                        "no longer runs dataset scripts. Point the source at a data file instead "
                        "(docs/datasets.md)")
    commit = mirror_commit(directory)
    if revision and commit and revision != commit:
        raise DataError(f"{directory}: mirror is at commit {commit} but the config pins revision {revision}; "
                        "download that revision again or change `revision`")
    try:
        return datasets.load_dataset(directory, name, split=split)
    except Exception as err:
        raise DataError(f"{directory}: directory could not be read as a dataset (config {name!r}, split {split!r}): "
                        f"{_root_cause(err)}") from err


# Local JSON arrays above this size are streamed into JSON Lines first: the `datasets`
# JSON builder would hold the whole array (and copies) in memory.
STREAM_ARRAY_BYTES = 64 << 20


def _is_big_array(path) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > STREAM_ARRAY_BYTES and starts_with_array(path)


def _load_big_arrays(files: list[str], big: list[str]):
    """Load JSON files, rewriting the big arrays among them as JSON Lines element by element first."""
    import shutil
    import tempfile

    import datasets

    scratch = tempfile.mkdtemp(prefix="reset-jsonl-", dir=str(datasets.config.HF_DATASETS_CACHE))
    try:
        converted = []
        for i, path in enumerate(files):
            if path in big:
                out = os.path.join(scratch, f"{i}-{os.path.basename(path)}l")
                n = array_to_jsonl(path, out)
                log.info("%s: streamed %d array elements into JSON Lines", path, n)
                path = out
            converted.append(path)
        # the Dataset is memory-mapped from the `datasets` cache, so the JSON Lines can go
        return datasets.load_dataset("json", data_files=converted, split="train")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_error(source: str, fmt: str | None, err: BaseException) -> DataError:
    """The most precise explanation of a failed read: file and line or byte offset when possible."""
    if is_local(source):
        fmt = file_format(source, fmt)
        for path in local_files(source):
            problem = diagnose(path, fmt) if fmt and os.path.isfile(path) else None
            if problem:
                return DataError(problem)
    return DataError(f"{source}: could not be read as {fmt or 'a dataset'}: {_root_cause(err)}")


def _is_empty(path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(65536)
    return not head.strip() and os.path.getsize(path) <= len(head)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return f"{type(err).__name__}: {err}"


def diagnose(path, fmt: str) -> str | None:
    """Why a local file cannot be read: bad UTF-8 (byte offset) or broken JSON (line); None if not found."""
    if fmt == "parquet" or str(path).lower().endswith(COMPRESSIONS):
        return None
    if fmt == "json" and _is_big_array(path):
        try:
            for i, value in enumerate(iter_json_array(path)):
                if not isinstance(value, dict):
                    return f"{path}: expected a JSON list of objects (element {i} is {type(value).__name__})"
        except JsonStreamError as err:
            return str(err)
        except UnicodeDecodeError as err:
            return f"{path}: not valid UTF-8 ({err.reason})"
        return None
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"{path}: not valid UTF-8 at byte offset {err.start} (line {line})"
    if fmt not in ("json", "jsonl"):
        return None
    text = text.lstrip("\ufeff")
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            return f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})"
        if not all(isinstance(v, dict) for v in value):
            return f"{path}: expected a JSON list of objects"
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and text.strip().count("\n") > 0:
        return f"{path}: holds a single JSON object; expected a list of objects or one object per line"
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            return f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno})"
        if not isinstance(obj, dict):
            return f"{path}:{lineno}: expected one JSON object per line, got {type(obj).__name__}"
    return None


# ---------------------------------------------------------------- filtering


class Collector:
    """Dataset-wide filters and the drop counts of one dataset."""

    def __init__(self, dataset: str, seen: set[str] | None = None):
        self.dataset = dataset
        self.seen = seen or set()
        self.read = 0
        self.dropped = Counter()
        self._identities = set()
        self._keys = set()

    def drop(self, reason: str, n: int = 1) -> None:
        if n > 0:
            self.dropped[reason] += n

    def add(self, result) -> dict | None:
        """Count one adapter result; return the unified row if it is kept."""
        self.read += 1
        if isinstance(result, adapters.Drop):
            self.drop(result.reason)
            return None
        if self.dataset in IF_EVAL and normalize(result.instruction) in self.seen:
            self.drop("seen_in_training")
            return None
        key = self._dedup_key(result)
        if result.identity in self._identities or (key is not None and key in self._keys):
            self.drop("duplicate")
            return None
        self._identities.add(result.identity)
        if key is not None:
            self._keys.add(key)
        return to_row(self.dataset, result)

    def _dedup_key(self, example) -> str | None:
        if self.dataset in IF_TRAIN:
            return f"{normalize(example.instruction)}\x1f{normalize(example.response_for_dedup)}"
        if self.dataset in IF_EVAL:
            return normalize(example.instruction)
        return None


def seen_instructions(paths: Iterable) -> set[str]:
    """Normalised instructions of prepared IF training splits."""
    import pyarrow.parquet as pq

    seen = set()
    for path in paths:
        if not Path(path).exists():
            raise DataError(f"{path}: training split needed for the unseen-instruction filter not found")
        seen.update(normalize(t) for t in pq.read_table(path, columns=["instruction"]).column(0).to_pylist())
    return seen


def read_source(collector: Collector, source: str, origin: str, settings: dict) -> list[dict]:
    from tqdm import tqdm

    ds = load_source(source, settings.get("format"), settings.get("hub_name"),
                     hub_split(settings.get("hub_split"), origin), settings.get("revision"))
    opts = adapters.Options(lang=settings.get("lang"), max_passages=settings.get("max_passages", 5))
    adapter = adapters.ADAPTERS[collector.dataset]
    kept = []
    results = adapter(ds, opts)
    try:
        for result in tqdm(results, total=len(ds), desc=f"{collector.dataset} [{origin}]", unit="row",
                           mininterval=2.0, file=sys.stderr):
            row = collector.add(result)
            if row is not None:
                kept.append(row)
    except UnicodeDecodeError as err:  # `datasets` decodes strings lazily, row by row
        raise read_error(source, settings.get("format"), err) from err
    return kept


# ---------------------------------------------------------------- splits


def shuffled(rows: list[dict], seed: int) -> list[int]:
    """Row indices in a seeded order that depends only on the row ids, not on the source order."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["id"])
    random.Random(seed).shuffle(order)
    return order


def carve(rows: list[dict], sizes: dict[str, int], rest: str | None, seed: int) -> dict[str, list[dict]]:
    """Deal seeded-random rows into splits of the given sizes; the remainder goes to `rest` (or nowhere).

    Each split keeps the source order of its rows.
    """
    order = shuffled(rows, seed)
    assignment, start = {}, 0
    for split, size in sizes.items():
        for i in order[start:start + size]:
            assignment[i] = split
        start += size
    if rest is not None:
        for i in order[start:]:
            assignment[i] = rest
    names = [*sizes, *([rest] if rest else [])]
    return {split: [r for i, r in enumerate(rows) if assignment.get(i) == split] for split in names}


def split_sizes(n: int, carve_splits: list[str], has_train: bool, settings: dict) -> dict[str, int]:
    """How many of n examples go to eval and dev when carved from one source."""
    sizes = {}
    pool = n
    if "eval" in carve_splits:
        cap = settings["eval_cap"]
        want = math.ceil(settings["eval_fraction"] * n) if has_train else n
        sizes["eval"] = min(want, cap) if cap else want
        pool -= sizes["eval"]
    if "dev" in carve_splits:
        sizes["dev"] = min(pool, max(settings["dev_min"], math.ceil(settings["dev_fraction"] * pool)))
    return sizes


def assign_splits(dataset: str, kept: dict[str, list[dict]], settings: dict, collector: Collector):
    """Turn kept rows per source origin into the dataset's splits (SPLITS[dataset])."""
    needed = SPLITS[dataset]
    seed = settings["split_seed"]
    splits = {s: [] for s in needed}
    pool_origin = "all" if "all" in kept else ("train" if "train" in kept else None)
    for origin in ("train", "dev", "eval"):
        if origin in kept:
            splits[origin] = list(kept[origin])
    to_carve = [s for s in needed if s not in kept]
    if pool_origin is not None and to_carve:
        pool = kept[pool_origin]
        has_train = "train" in needed
        sizes = split_sizes(len(pool), [s for s in to_carve if s != "train"], has_train, settings)
        dealt = carve(pool, sizes, "train" if has_train else None, seed)
        if not has_train:
            collector.drop("over_eval_cap", len(pool) - len(dealt.get("eval", [])))
        for split, rows in dealt.items():
            splits[split] = rows
    cap = settings.get("eval_cap")
    if "eval" in kept and cap and len(splits["eval"]) > cap:
        dealt = carve(splits["eval"], {"eval": cap}, None, seed)
        collector.drop("over_eval_cap", len(splits["eval"]) - cap)
        splits["eval"] = dealt["eval"]
    return splits


def summarise_drops(dropped: Counter) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in dropped.most_common()) or "nothing dropped"


def prepare_dataset(dataset: str, source, settings: dict, seen_paths: Iterable = ()):
    """Read, filter and split one dataset; returns ({split: rows}, filter report). Writes nothing."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    try:
        sources = source_map(source)
    except ValueError as err:
        raise DataError(f"datasets.{dataset}.source: {err}") from None
    needed = SPLITS[dataset]
    extra = sorted(set(sources) - {"all", *needed})
    if extra:
        raise DataError(f"datasets.{dataset}.source: split(s) {extra} not used by {dataset} "
                        f"(its splits: {', '.join(needed)})")
    if "all" not in sources and "train" not in sources and any(s not in sources for s in needed):
        missing = [s for s in needed if s not in sources]
        raise DataError(f"datasets.{dataset}.source: mapping has no source for split(s) {missing} "
                        "and no train source to carve them from")
    seen = seen_instructions(seen_paths) if dataset in IF_EVAL else None
    if dataset in IF_EVAL and not seen_paths:
        log.warning("%s: no training splits given (--seen); the unseen-instruction filter is off", dataset)
    collector = Collector(dataset, seen)
    kept = {}
    for origin in sorted(sources, key=ORIGIN_ORDER.index):
        kept[origin] = read_source(collector, sources[origin], origin, settings)
    n_kept = sum(len(rows) for rows in kept.values())
    if n_kept == 0:
        raise DataError(f"dataset {dataset}: no example left after filtering (read {collector.read} rows from "
                        f"{', '.join(sources.values())}; dropped: {summarise_drops(collector.dropped)})")
    splits = assign_splits(dataset, kept, settings, collector)
    for split in needed:
        if not splits[split]:
            raise DataError(f"dataset {dataset}: split {split!r} is empty ({n_kept} examples kept; "
                            f"dropped: {summarise_drops(collector.dropped)}); add rows or lower data.dev_min")
    report = {
        "dataset": dataset,
        "read": collector.read,
        "kept": sum(len(rows) for rows in splits.values()),
        "dropped": dict(sorted(collector.dropped.items())),
        "splits": {split: len(rows) for split, rows in splits.items()},
        "sources": sources,
        "revision": settings.get("revision"),  # of a hub source; read by the jobs' provenance sidecars
    }
    if seen is not None:
        report["seen_instructions"] = len(seen)
    if report["read"] != report["kept"] + sum(report["dropped"].values()):
        raise AssertionError(f"{dataset}: filter report does not add up: {report}")
    ids = [r["id"] for rows in splits.values() for r in rows]
    if len(ids) != len(set(ids)):
        raise DataError(f"dataset {dataset}: duplicate example ids after filtering (hash collision?)")
    return splits, report


def write_prepared(splits: dict, report: dict, out_dir) -> None:
    out_dir = Path(out_dir)
    for split, rows in splits.items():
        write_rows(rows, out_dir / f"{split}.parquet")
    write_json(report, out_dir / "filter_report.json")


# ---------------------------------------------------------------- mixtures


def component_of(row: dict) -> str:
    """Mixture component of a row: the IF sets form one pooled component."""
    return IF_POOL if row["kind"] == "if" else row["dataset"]


def if_key(row: dict) -> str:
    return f"{normalize(row['instruction'])}\x1f{normalize(row['references'][0] if len(row['references']) else '')}"


def dedup_if(rows: list[dict], taken: set[str]) -> tuple[list[dict], int]:
    """Drop IF rows whose normalised instruction+response is already in `taken` (updated in place)."""
    out, dropped = [], 0
    for row in rows:
        if row["kind"] == "if":
            key = if_key(row)
            if key in taken:
                dropped += 1
                continue
            taken.add(key)
        out.append(row)
    return out, dropped


def upsample(rows: list[dict], target: int, rng: random.Random) -> list[dict]:
    """Whole copies of `rows` plus a seeded sample of the remainder, `target` rows in all."""
    copies, remainder = divmod(target, len(rows))
    return rows * copies + rng.sample(rows, remainder)


def build_mixture(name: str, train_paths: list, dev_paths: list, seed: int):
    """The mixture's (train rows, dev rows, report): components up-sampled to the largest, seeded shuffle."""
    if name not in MIXTURES:
        raise DataError(f"unknown mixture {name!r}; expected one of {', '.join(MIXTURES)}")
    train = [r for p in train_paths for r in read_rows(p)]
    dev = [r for p in dev_paths for r in read_rows(p)]
    for split, rows in (("train", train), ("dev", dev)):
        found = sorted({r["dataset"] for r in rows})
        if found != sorted(MIXTURES[name]):
            raise DataError(f"mixture {name}: {split} inputs hold datasets {found}, expected {sorted(MIXTURES[name])}")
    taken = set()
    train, train_dupes = dedup_if(train, taken)
    dev, dev_dupes = dedup_if(dev, taken)  # also drops dev rows equal to a training row
    components = {}
    for row in train:
        components.setdefault(component_of(row), []).append(row)
    target = max(len(rows) for rows in components.values())
    rng = random.Random(seed)
    mixed = []
    for comp in sorted(components):
        mixed.extend(upsample(components[comp], target, rng))
    rng.shuffle(mixed)
    random.Random(seed + 1).shuffle(dev)
    report = {
        "mixture": name,
        "train": len(mixed),
        "dev": len(dev),
        "components": {c: {"rows": len(r), "upsampled_to": target, "factor": round(target / len(r), 4)}
                       for c, r in sorted(components.items())},
        "dropped_if_duplicates": {"train": train_dupes, "dev": dev_dupes},
    }
    return mixed, dev, report


# ---------------------------------------------------------------- CLI


def _pairs(values: list[str] | None, flag: str) -> dict[str, str] | str | None:
    """`--flag VALUE` or `--flag split=VALUE ...` -> str or {split: value}."""
    if not values:
        return None
    if len(values) == 1 and not _is_pair(values[0]):
        return values[0]
    out = {}
    for value in values:
        if not _is_pair(value):
            raise DataError(f"{flag}: expected split=VALUE pairs ({', '.join(SPLIT_NAMES)}), got {value!r}")
        key, rest = value.split("=", 1)
        out[key] = rest
    return out


def _is_pair(value: str) -> bool:
    return value.split("=", 1)[0] in SPLIT_NAMES and "=" in value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reset.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="filter one dataset into {split}.parquet and filter_report.json")
    prep.add_argument("--dataset", required=True, choices=DATASETS)
    prep.add_argument("--source", required=True, nargs="+", metavar="SOURCE",
                      help="a local file/glob, remote file or hub id; or split=SOURCE pairs (train, dev, eval)")
    prep.add_argument("--format", choices=sorted(BUILDERS), default=None, help="file format when the name does not say")
    prep.add_argument("--hub-name", default=None, help="hub dataset configuration name")
    prep.add_argument("--hub-split", nargs="+", default=None, metavar="SPLIT",
                      help="hub split to read, or split=HUBSPLIT pairs (default: train; dev=validation, eval=test)")
    prep.add_argument("--revision", default=None, help="hub revision")
    prep.add_argument("--lang", default="en", help="oasst1 language to keep ('any' keeps all)")
    prep.add_argument("--split-seed", type=int, default=0)
    prep.add_argument("--dev-fraction", type=float, default=0.1)
    prep.add_argument("--eval-fraction", type=float, default=0.2)
    prep.add_argument("--dev-min", type=int, default=2)
    prep.add_argument("--eval-cap", type=int, default=None, help="cap on the eval split (default: none)")
    prep.add_argument("--max-passages", type=int, default=5)
    prep.add_argument("--seen", nargs="*", default=[], metavar="PARQUET",
                      help="prepared IF training splits; IF eval sets drop instructions found there")
    prep.add_argument("--out-dir", required=True)
    mix = sub.add_parser("mixture", help="build a training mixture (if, cd, mtl) from prepared splits")
    mix.add_argument("--name", required=True, choices=sorted(MIXTURES))
    mix.add_argument("--train", required=True, nargs="+", metavar="PARQUET")
    mix.add_argument("--dev", required=True, nargs="+", metavar="PARQUET")
    mix.add_argument("--seed", type=int, default=0)
    mix.add_argument("--out-dir", required=True)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "prepare":
            settings = {
                "format": args.format, "hub_name": args.hub_name, "hub_split": _pairs(args.hub_split, "--hub-split"),
                "revision": args.revision, "lang": None if args.lang == "any" else args.lang,
                "split_seed": args.split_seed, "dev_fraction": args.dev_fraction,
                "eval_fraction": args.eval_fraction, "dev_min": args.dev_min, "eval_cap": args.eval_cap,
                "max_passages": args.max_passages,
            }
            splits, report = prepare_dataset(args.dataset, _pairs(args.source, "--source"), settings, args.seen)
            write_prepared(splits, report, args.out_dir)
            log.info("%s: read %d, kept %d (%s); dropped: %s", args.dataset, report["read"], report["kept"],
                     ", ".join(f"{s}={n}" for s, n in report["splits"].items()),
                     summarise_drops(Counter(report["dropped"])))
        else:
            train, dev, report = build_mixture(args.name, args.train, args.dev, args.seed)
            out = Path(args.out_dir)
            write_rows(train, out / "train.parquet")
            write_rows(dev, out / "dev.parquet")
            write_json(report, out / "report.json")
            log.info("mixture %s: %d train, %d dev rows; components %s", args.name, len(train), len(dev),
                     report["components"])
    except DataError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
