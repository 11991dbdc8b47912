"""Preflight: check a run's configuration against the real artefacts before any GPU hour.

  python -m reset.preflight --configfile config.yaml experiments/paper.yaml --out report.json

The config files are merged in order, as Snakemake merges `--configfile`. Every
check runs (problems are all reported at once), each with what to change:

  dataset  each source: file, directory (hub mirror) or hub repository readable as
           configured (config name, split, revision); its first rows go through the
           dataset's adapter, so a missing field fails naming the field
  model    base, instruct and a local judge: config and tokenizer load without the
           weights, the architecture is known, weights exist in an allowed format,
           custom code only where models.trust_remote_code names the model
  nli      the NLI model as above, and its labels at ent_idx / con_idx
  judge    provider openai: the API key variable is set, GET {base_url}/models lists
           the model, prices are set, the run's estimated cost is under judges.max_usd
  cluster  with the Slurm executor: the partitions and GPU counts asked for exist
  disk     free space under results/ against the estimated size of the checkpoints

The report is JSON: {"ok": bool, "checks": [{"kind", "name", "ok", "message"}, ...]}
(a hub check also gives the resolved "commit"). The exit status is 1 if any check
fails. Without network a hub check fails within seconds saying the hub cannot be
reached; no check waits longer than --timeout seconds. With --out, a failed
preflight writes its report beside it as *.failed.json and not to --out itself.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reset.sources import (
    BUILDERS,
    file_format,
    hf_url_with_revision,
    hub_split,
    is_commit_sha,
    is_local,
    is_placeholder,
    is_remote_file,
    loading_scripts,
    local_files,
    mirror_commit,
    mirror_files,
    source_map,
)
from reset.variants import IF_EVAL, KIND, TRAINED_VARIANTS, TRAJECTORY_VARIANTS, VARIANTS

ROWS = 20  # rows of each source run through its adapter
CONNECT_TIMEOUT = 5.0  # seconds to open a TCP connection to a server
CHECK_TIMEOUT = 25.0  # seconds one check may take before it is reported as hanging
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# A tokenizer needs one of these; without any, transformers 5 quietly builds an empty one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "tokenizer.model.v3", "tiktoken.model")
JUDGE_TEMPLATE_TOKENS = 160  # tokens of the judge's fixed instructions (reset.judge.judge_prompt)
INSTRUCTION_TOKENS = 200  # assumed tokens of an instruction in a judge prompt
PAID_HOSTS = ("api.openai.com",)


@dataclass
class Check:
    kind: str
    name: str
    ok: bool
    message: str
    commit: str | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["commit"] is None:
            del out["commit"]
        return out


class Failure(Exception):
    """A check failed: the message says what is wrong and what to change."""


@dataclass
class Context:
    """What the checks share: the config, reachability of servers, resolved model facts."""

    config: dict
    timeout: float = CHECK_TIMEOUT
    reach: dict = field(default_factory=dict)  # host:port -> error message or None
    weights_bytes: dict = field(default_factory=dict)  # model source -> bytes of its weights
    half: dict = field(default_factory=dict)  # model source -> weights in 16 bits
    model_results: dict = field(default_factory=dict)  # (source, revision, task) -> Check fields


# ---------------------------------------------------------------- config


def load_config(paths: list[str]) -> dict:
    import yaml

    from reset.settings import merge

    config = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"{path}: a config file must hold a mapping")
        config = merge(config, data)
    return config


# ---------------------------------------------------------------- network


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def require_reachable(ctx: Context, url: str, what: str) -> None:
    """Fail fast (CONNECT_TIMEOUT) when the server of `url` cannot be reached; cached per host."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = f"{host}:{port}"
    if key not in ctx.reach:
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
                ctx.reach[key] = None
        except OSError as err:
            ctx.reach[key] = f"{type(err).__name__}: {err}"
    if ctx.reach[key] is not None:
        raise Failure(f"{what} cannot be reached ({key}: {ctx.reach[key]}); check the network, or use a local "
                      "copy (docs/datasets.md: local mirrors)")


def require_hub(ctx: Context) -> None:
    if hub_offline():
        raise Failure("the hub cannot be reached: HF_HUB_OFFLINE is set; point the source at a local mirror "
                      "(huggingface-cli download ... --local-dir DIR, docs/datasets.md)")
    require_reachable(ctx, hub_endpoint(), "the hub")


def with_timeout(ctx: Context, fn, *args):
    """Run fn(*args) in a daemon thread; a check that does not answer in ctx.timeout fails, never hangs.

    Only network calls go through here; the libraries they use are imported first, in this
    thread, so a slow import (seconds on a loaded machine) never counts against the timeout.
    """
    import datasets  # noqa: F401
    import huggingface_hub  # noqa: F401
    import transformers  # noqa: F401

    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(ctx.timeout)
    if thread.is_alive():
        raise Failure(f"no answer within {ctx.timeout:.0f} s (network or server hanging)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _hub_api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint())


def _revision_problem(revision) -> str | None:
    if is_placeholder(revision):
        return (f"revision is the placeholder {revision!r}: pin the repository's commit sha (see docs/datasets.md, "
                "'Pinned revisions')")
    return None


# ---------------------------------------------------------------- datasets


def _open_text(path):
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    if lower.endswith(".bz2"):
        import bz2

        return bz2.open(path, "rt", encoding="utf-8-sig")
    if lower.endswith(".xz"):
        import lzma

        return lzma.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def first_rows_of_file(path: str, fmt: str, n: int = ROWS) -> list:
    """The first rows of a local file without reading the rest of it."""
    from reset.jsonstream import JsonStreamError, first_elements, starts_with_array

    if fmt == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=n)
        batch = next(batches, None)
        return batch.to_pylist() if batch is not None else []
    if fmt == "csv":
        import csv

        with _open_text(path) as fh:
            reader = csv.DictReader(fh)
            return [row for _, row in zip(range(n), reader, strict=False)]
    plain = not path.lower().endswith((".gz", ".bz2", ".xz", ".zst"))
    if plain and starts_with_array(path):
        try:
            return first_elements(path, n)
        except JsonStreamError as err:
            raise Failure(str(err)) from None
    from reset.io import iter_jsonl

    with _open_text(path) as fh:
        try:
            return _take(iter_jsonl(fh, path), n)
        except ValueError as err:
            raise Failure(str(err)) from None


def _take(iterable, n: int) -> list:
    out = []
    for row in iterable:
        out.append(dict(row))
        if len(out) >= n:
            break
    return out


def first_rows_streaming(path_or_builder: str, n: int = ROWS, split: str = "train", **kwargs) -> list:
    """First rows of a split read in streaming mode; "train+validation" reads from each part."""
    import datasets

    rows = []
    for part in split.split("+"):
        ds = datasets.load_dataset(path_or_builder, streaming=True, split=part.strip(), **kwargs)
        rows += _take(ds, n)
    return rows


def check_adapter(dataset: str, spec: dict, rows: list) -> str:
    """Run the first rows through the dataset's adapter; fail naming a missing or mistyped field."""
    from reset import adapters

    if not rows:
        raise Failure("the source holds no rows")
    lang = spec.get("lang", "en")
    opts = adapters.Options(lang=lang, max_passages=5)
    results = list(adapters.ADAPTERS[dataset](rows, opts))
    kept = sum(isinstance(r, adapters.Example) for r in results)
    reasons = Counter(r.reason for r in results if isinstance(r, adapters.Drop))
    columns = sorted({k for row in rows if isinstance(row, dict) for k in row})
    if kept:
        return f"{len(rows)} first rows read, {kept} become examples"
    missing = sorted({r[len("missing_"):] for r in reasons if r.startswith("missing_")})
    bad = sorted({r[len("bad_"):] for r in reasons if r.startswith("bad_")})
    if missing:
        raise Failure(f"field(s) {', '.join(repr(f) for f in missing)} missing in the first {len(rows)} rows "
                      f"(columns found: {', '.join(columns) or 'none'}); the {dataset} adapter needs them "
                      "(docs/datasets.md)")
    if bad or "not_an_object" in reasons:
        what = ", ".join(repr(f) for f in bad) if bad else "the rows themselves"
        raise Failure(f"{what} of the first {len(rows)} rows have the wrong type (columns: {', '.join(columns)})")
    return (f"{len(rows)} first rows read; none became an example ({dict(reasons)}), which the full data may "
            "still give; fields are present")


def dataset_rows(ctx: Context, dataset: str, spec: dict, origin: str, source: str) -> tuple[list, str, str | None]:
    """(first rows, where they came from, resolved commit) of one source of a dataset."""
    name, revision = spec.get("name"), spec.get("revision")
    split = hub_split(spec.get("split"), origin)
    if is_local(source):
        files = local_files(source)
        if not files:
            raise Failure(f"{source}: no such file or directory; download it first (docs/datasets.md, {dataset})")
        if len(files) == 1 and os.path.isdir(files[0]):
            directory = files[0]
            scripts = loading_scripts(mirror_files(directory), directory)
            if scripts:
                raise Failure(f"{directory}: holds only the loading script {scripts[0]} and no data file; `datasets` "
                              "no longer runs dataset scripts; point the source at a data file (docs/datasets.md)")
            commit = mirror_commit(directory)
            problem = _revision_problem(revision)
            if problem and not commit:
                raise Failure(problem)
            if revision and commit and not is_placeholder(revision) and revision != commit:
                raise Failure(f"{directory}: mirror is at commit {commit} but the config pins revision {revision}")
            try:  # local: nothing can hang on the network
                rows = first_rows_streaming(directory, name=name, split=split)
            except Exception as err:
                raise Failure(f"{directory}: cannot be read as a dataset (config {name!r}, split {split!r}): "
                              f"{_short(err)}") from None
            return rows, f"mirror {directory} (config {name!r}, split {split!r})", commit
        fmt = file_format(source, spec.get("format"))
        if fmt is None:
            raise Failure(f"{source}: cannot tell the file format from the name; set `format:` "
                          f"({', '.join(BUILDERS)})")
        try:
            rows = first_rows_of_file(files[0], fmt)
        except UnicodeDecodeError as err:
            raise Failure(f"{files[0]}: not valid UTF-8 ({err.reason})") from None
        except OSError as err:
            raise Failure(f"{files[0]}: cannot be read ({err})") from None
        return rows, f"{files[0]} (first of {len(files)} file(s))" if len(files) > 1 else files[0], None
    if is_remote_file(source):
        problem = _revision_problem(revision)
        if problem:
            raise Failure(problem)
        if source.startswith("hf://"):
            require_hub(ctx)
        else:
            require_reachable(ctx, source, urllib.parse.urlsplit(source).hostname or source)
        url = hf_url_with_revision(source, revision)
        fmt = file_format(source, spec.get("format"))
        if fmt is None:
            raise Failure(f"{source}: cannot tell the file format from the name; set `format:`")
        try:
            rows = with_timeout(ctx, lambda: first_rows_streaming(BUILDERS[fmt], data_files=[url], split="train"))
        except Failure:
            raise
        except Exception as err:
            raise Failure(f"{url}: cannot be read as {fmt}: {_short(err)}") from None
        return rows, url, None
    # a hub dataset id
    problem = _revision_problem(revision)
    if problem:
        raise Failure(problem)
    require_hub(ctx)
    try:
        info = with_timeout(ctx, lambda: _hub_api().dataset_info(source, revision=revision, timeout=ctx.timeout))
    except Failure:
        raise
    except Exception as err:
        raise Failure(f"hub dataset {source} (revision {revision!r}): {_short(err)}") from None
    files = [s.rfilename for s in (info.siblings or [])]
    scripts = loading_scripts(files, source)
    if scripts:
        raise Failure(f"hub dataset {source} holds only the loading script {scripts[0]} and no data file; "
                      "`datasets` no longer runs dataset scripts; point the source at a data file "
                      "(docs/datasets.md)")
    try:
        rows = with_timeout(ctx, lambda: first_rows_streaming(source, name=name, split=split, revision=info.sha))
    except Failure:
        raise
    except Exception as err:
        raise Failure(f"hub dataset {source} (config {name!r}, split {split!r}, revision {revision!r}): "
                      f"{_short(err)}") from None
    return rows, f"hub {source}@{info.sha[:12]} (config {name!r}, split {split!r})", info.sha


def check_dataset(ctx: Context, dataset: str, spec: dict) -> list[Check]:
    if dataset not in KIND:
        return [Check("dataset", dataset, False, f"unknown dataset {dataset!r}")]
    try:
        sources = source_map(spec.get("source"))
    except ValueError as err:
        return [Check("dataset", dataset, False, f"datasets.{dataset}.source: {err}")]
    out = []
    for origin, source in sources.items():
        label = dataset if origin == "all" else f"{dataset} [{origin}]"
        try:
            rows, where, commit = dataset_rows(ctx, dataset, spec, origin, source)
            detail = check_adapter(dataset, spec, rows)
            out.append(Check("dataset", dataset, True, f"{label}: {where}: {detail}", commit))
        except Failure as err:
            out.append(Check("dataset", dataset, False, f"{label} ({source}): {err}"))
        except Exception as err:  # an unexpected error is still one failed check, not a crash
            out.append(Check("dataset", dataset, False, f"{label} ({source}): {_short(err)}"))
    return out


# ---------------------------------------------------------------- models


def _short(err: BaseException, limit: int = 400) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def weight_files(files: dict) -> tuple[list[str], list[str]]:
    """(safetensors files, pickled weight files) among {name: bytes}."""
    safe = [f for f in files if f.endswith(".safetensors")]
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES) and "training_args" not in f
               and not f.startswith(("optimizer", "scheduler", "rng_state"))]
    return safe, pickled


def check_tokenizer_files(source: str, files) -> None:
    names = {f.rsplit("/", 1)[-1] for f in files}
    if not names & set(TOKENIZER_FILES) and not any(n.endswith(".tiktoken") for n in names):
        raise Failure(f"{source} holds no tokenizer file (one of {', '.join(TOKENIZER_FILES)}); download the "
                      "whole repository, tokenizer included")


def check_weights(source: str, files: dict, allow_pickle: bool) -> tuple[str, int]:
    """Which weights the model would load, and their size; fails on a format the config does not allow."""
    safe, pickled = weight_files(files)
    if safe:
        return f"safetensors weights ({len(safe)} file(s))", sum(files[f] or 0 for f in safe)
    if pickled:
        if not allow_pickle:
            raise Failure(f"{source} has only pickled PyTorch weights ({', '.join(sorted(pickled)[:3])}); "
                          "set allow_pickle_weights: true for it (they are read once with torch's weights-only "
                          "loader and rewritten as safetensors)")
        return f"pickled weights allowed ({len(pickled)} file(s))", sum(files[f] or 0 for f in pickled)
    raise Failure(f"{source} holds no weights (.safetensors or .bin)")


def check_config_and_tokenizer(source: str, revision: str | None, trust: bool):
    """Load config and tokenizer (no weights); returns the config. Fails naming the cause."""
    import transformers
    from transformers import AutoConfig

    from reset.models import load_source_tokenizer, missing_tokenizer_packages

    kwargs = {"revision": revision, "trust_remote_code": trust}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as err:
        if "trust_remote_code" in str(err) and not trust:
            raise Failure(f"{source} needs custom code; if you trust it, list {source!r} under "
                          "models.trust_remote_code") from None
        raise Failure(f"{source}: config.json cannot be loaded: {_short(err)}") from None
    if getattr(config, "auto_map", None) and not trust:
        raise Failure(f"{source} ships custom code (auto_map); list {source!r} under models.trust_remote_code "
                      "to allow it, or use a model transformers supports natively")
    archs = list(getattr(config, "architectures", None) or [])
    unknown = [a for a in archs if not hasattr(transformers, a)]
    if unknown and not (trust and getattr(config, "auto_map", None)):
        raise Failure(f"{source}: architecture {', '.join(unknown)} is unknown to transformers "
                      f"{transformers.__version__}")
    try:
        load_source_tokenizer(source, **kwargs)
    except Exception as err:
        missing = missing_tokenizer_packages()
        hint = f" (missing package(s): {', '.join(missing)}; pip install -r requirements.txt)" if missing else ""
        raise Failure(f"{source}: tokenizer cannot be loaded{hint}: {_short(err)}") from None
    return config


def model_facts(ctx: Context, source: str, options: dict, trust: bool):
    """(message, resolved commit, config) of one model source; cached per source and options."""
    key = (source, options.get("revision"), bool(options.get("allow_pickle_weights")), trust)
    if key in ctx.model_results:
        cached = ctx.model_results[key]
        if isinstance(cached, Failure):
            raise cached
        return cached
    try:
        result = _model_facts(ctx, source, options, trust)
    except Failure as err:
        ctx.model_results[key] = err
        raise
    ctx.model_results[key] = result
    return result


def _model_facts(ctx: Context, source: str, options: dict, trust: bool):
    revision = options.get("revision")
    allow_pickle = bool(options.get("allow_pickle_weights"))
    if source.startswith("embedded:"):
        from reset.models import embedded_gguf

        try:
            path = embedded_gguf(source.split(":", 1)[1])
        except (FileNotFoundError, ValueError) as err:
            raise Failure(str(err)) from None
        size = path.stat().st_size
        # de-quantised to float32: about 4 bytes per parameter, ~5 bits per parameter in Q4_1
        ctx.weights_bytes[source] = int(size * 8 / 5 * 4)
        return f"embedded GGUF {path.name} ({size / 2**20:.0f} MiB)", None, None
    if is_local(source) or Path(source).exists():
        directory = Path(source).expanduser()
        if not directory.is_dir():
            raise Failure(f"model directory {source} does not exist")
        # huggingface-cli's download metadata lives in <mirror>/.cache: not model files (the
        # directory itself may well sit under a .cache of its own, as the tests' models do)
        files = {str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*")
                 if p.is_file() and ".cache" not in p.relative_to(directory).parts}
        weights, size = check_weights(source, files, allow_pickle)
        check_tokenizer_files(source, files)
        commit = mirror_commit(str(directory))
        problem = _revision_problem(revision)
        if problem and not commit:
            raise Failure(problem)
        if revision and commit and not is_placeholder(revision) and revision != commit:
            raise Failure(f"{source}: mirror is at commit {commit} but the config pins revision {revision}")
        config = check_config_and_tokenizer(str(directory), None, trust)  # local: no network wait to bound
        ctx.weights_bytes[source], ctx.half[source] = size, _is_half(config)
        return f"{weights}; config and tokenizer load", commit, config
    problem = _revision_problem(revision)
    if problem:
        raise Failure(problem)
    require_hub(ctx)
    try:
        info = with_timeout(ctx, lambda: _hub_api().model_info(source, revision=revision, files_metadata=True,
                                                               timeout=ctx.timeout))
    except Failure:
        raise
    except Exception as err:
        raise Failure(f"hub model {source} (revision {revision!r}): {_short(err)}") from None
    files = {s.rfilename: s.size for s in (info.siblings or [])}
    weights, size = check_weights(source, files, allow_pickle)
    check_tokenizer_files(source, files)
    config = with_timeout(ctx, check_config_and_tokenizer, source, info.sha, trust)
    ctx.weights_bytes[source], ctx.half[source] = size, _is_half(config)
    pin = "" if is_commit_sha(revision) else " (revision not pinned to a commit)"
    return f"hub {source}@{info.sha[:12]}{pin}: {weights}; config and tokenizer load", info.sha, config


def _is_half(config) -> bool:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(dtype).replace("torch.", "") in ("bfloat16", "float16")


def trusted(config: dict, source: str) -> bool:
    return source in ((config.get("models") or {}).get("trust_remote_code") or [])


def check_models(ctx: Context) -> list[Check]:
    config = ctx.config
    out = []
    models = config.get("models") or {}
    for role in ("base", "instruct"):
        spec = models.get(role) or {}
        source = spec.get("source")
        if not source:
            out.append(Check("model", role, False, f"models.{role}.source is not set"))
            continue
        out.append(_model_check(ctx, "model", role, source, spec))
    for judge in ("if", "if_supercharged"):
        cfg = (config.get("judges") or {}).get(judge) or {}
        if cfg.get("provider") == "local":
            out.append(_model_check(ctx, "model", judge, cfg.get("model"), {}))
    return out


def _model_check(ctx: Context, kind: str, name: str, source: str, options: dict) -> Check:
    if not source:
        return Check(kind, name, False, "no model source configured")
    try:
        message, commit, _ = model_facts(ctx, source, options, trusted(ctx.config, source))
        return Check(kind, name, True, f"{source}: {message}", commit)
    except Failure as err:
        return Check(kind, name, False, f"{source}: {err}")
    except Exception as err:
        return Check(kind, name, False, f"{source}: {_short(err)}")


ENTAILMENT_WORDS = ("entail", "support")
CONTRADICTION_WORDS = ("contradict", "refute")


def check_nli_labels(id2label: dict, ent_idx: int, con_idx: int) -> str:
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items()))
    problems = []
    for what, idx, words in (("ent_idx", ent_idx, ENTAILMENT_WORDS), ("con_idx", con_idx, CONTRADICTION_WORDS)):
        if idx not in labels:
            problems.append(f"{what}={idx} is not a label index")
        elif not any(w in labels[idx].lower() for w in words):
            problems.append(f"{what}={idx} is {labels[idx]!r}, expected a label like {'/'.join(words)}")
    if problems:
        raise Failure(f"{'; '.join(problems)} (id2label: {shown}); set judges.nli.ent_idx / con_idx to the "
                      "entailment and contradiction indices")
    return f"labels {labels[ent_idx]!r} (ent_idx={ent_idx}) and {labels[con_idx]!r} (con_idx={con_idx})"


def check_nli(ctx: Context) -> list[Check]:
    nli = (ctx.config.get("judges") or {}).get("nli") or {}
    source = nli.get("model")
    if not source:
        return [Check("nli", "nli", False, "judges.nli.model is not set")]
    try:
        message, commit, config = model_facts(ctx, source, nli, trusted(ctx.config, source))
        if nli.get("backend") == "seq_cls":
            if config is None:
                raise Failure("backend seq_cls needs a sequence-classification model, not an embedded causal LM")
            message += "; " + check_nli_labels(getattr(config, "id2label", {}), int(nli.get("ent_idx", 0)),
                                               int(nli.get("con_idx", 1)))
        return [Check("nli", "nli", True, f"{source}: {message}", commit)]
    except Failure as err:
        return [Check("nli", "nli", False, f"{source}: {err}")]
    except Exception as err:
        return [Check("nli", "nli", False, f"{source}: {_short(err)}")]


# ---------------------------------------------------------------- judges


def list_served_models(base_url: str, api_key: str | None, timeout: float) -> list[str]:
    """Model ids of `GET {base_url}/models` (the list: llama.cpp answers 404 to /models/{id})."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise Failure(f"{base_url}/models answered {err.code}: the API key was rejected") from None
        raise Failure(f"{base_url}/models answered {err.code}; is base_url the /v1 root of an "
                      "OpenAI-compatible server?") from None
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise Failure(f"{base_url} cannot be reached: {err}") from None
    except ValueError:
        raise Failure(f"{base_url}/models did not answer JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise Failure(f"{base_url}/models answered no model list")
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


def judge_calls(config: dict, judge: str) -> int:
    """Upper bound on the judge calls of the run (identical pairs and cached answers cost nothing)."""
    sampling, curation = config.get("sampling") or {}, config.get("curation") or {}
    settings = len(sampling.get("temperatures") or []) + len(sampling.get("top_ks") or [])
    per_round = int(sampling.get("subset_per_dataset") or 0) * settings  # the IF pool's candidates only
    if judge == "if_supercharged":
        return per_round * int((curation.get("reset_s") or {}).get("rounds") or 0)
    evaluation, data = config.get("evaluation") or {}, config.get("data") or {}
    eval_sets = [d for d in (evaluation.get("seen") or []) + (evaluation.get("unseen") or []) if d in IF_EVAL]
    per_model = len(eval_sets) * int(data.get("eval_cap_if") or 0)
    models = len(VARIANTS) * len(config.get("seeds") or [])
    if evaluation.get("trajectories", True):
        models += len(TRAJECTORY_VARIANTS) * len(config.get("seeds") or []) * 3
    return per_round + models * per_model


def judge_cost(config: dict, judge: str) -> tuple[int, float]:
    cfg = config["judges"][judge]
    calls = judge_calls(config, judge)
    response = int((config.get("sampling") or {}).get("max_new_tokens") or 0)
    prompt = JUDGE_TEMPLATE_TOKENS + INSTRUCTION_TOKENS + response
    completion = int(cfg.get("expected_completion_tokens") or 64)
    usd = calls * (prompt * float(cfg.get("price_prompt_per_1k") or 0)
                   + completion * float(cfg.get("price_completion_per_1k") or 0)) / 1000
    return calls, usd


def check_judges(ctx: Context) -> list[Check]:
    judges = ctx.config.get("judges") or {}
    out, total, paid = [], 0.0, []
    for judge in ("if", "if_supercharged"):
        cfg = judges.get(judge) or {}
        if cfg.get("provider") != "openai":
            continue
        paid.append(judge)
        try:
            message = _check_openai_judge(ctx, judge, cfg)
            out.append(Check("judge", judge, True, message))
        except Failure as err:
            out.append(Check("judge", judge, False, f"{cfg.get('model')} at {cfg.get('base_url')}: {err}"))
        total += judge_cost(ctx.config, judge)[1]
    if paid:
        cap = judges.get("max_usd")
        if cap is not None and total > float(cap):
            out.append(Check("judge", "max_usd", False,
                             f"estimated cost of the run's judge calls ${total:,.2f} exceeds judges.max_usd = "
                             f"${float(cap):,.2f}; raise the cap, lower the prices' model, or shrink the run"))
        else:
            out.append(Check("judge", "max_usd", True, f"estimated cost of the run's judge calls ${total:,.2f} "
                             f"(judges.max_usd = {cap if cap is not None else 'no cap'})"))
    return out


def _check_openai_judge(ctx: Context, judge: str, cfg: dict) -> str:
    model, base_url = cfg.get("model"), cfg.get("base_url") or "https://api.openai.com/v1"
    key_env = cfg.get("api_key_env") or "OPENAI_API_KEY"
    problems = []
    api_key = os.environ.get(key_env)
    if not api_key:
        problems.append(f"the API key variable {key_env} is not set (export it; its value is never shown)")
    host = urllib.parse.urlsplit(base_url).hostname or ""
    prices = (cfg.get("price_prompt_per_1k"), cfg.get("price_completion_per_1k"))
    if any(p is None for p in prices) or (host in PAID_HOSTS and not all(float(p) > 0 for p in prices)):
        problems.append(f"prices are not set (judges.{judge}.price_prompt_per_1k / price_completion_per_1k)")
    served = None
    try:
        require_reachable(ctx, base_url, f"the judge server {base_url}")
        served = with_timeout(ctx, list_served_models, base_url, api_key, min(ctx.timeout, 20.0))
    except Failure as err:
        problems.append(str(err))
    if served is not None and model not in served:
        shown = ", ".join(sorted(served)[:12]) + (" ..." if len(served) > 12 else "")
        problems.append(f"the server does not serve {model!r} (it lists: {shown or 'nothing'}); name a served "
                        "model in judges.{judge}.model (docs/decisions.md)".replace("{judge}", judge))
    if problems:
        raise Failure("; ".join(problems))
    calls, usd = judge_cost(ctx.config, judge)
    return f"{model} served at {base_url}; key in {key_env}; about {calls:,} calls, ~${usd:,.2f}"


# ---------------------------------------------------------------- cluster and disk


def parse_gres_gpus(gres: str) -> int:
    """GPUs per node from a sinfo GRES field: gpu:8, gpu:a100:8(S:0-1), gpu:a100:4,gpu:v100:2 -> largest."""
    best = 0
    for item in gres.split(","):
        item = item.split("(")[0]
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            best = max(best, int(parts[-1]))
    return best


def slurm_partitions() -> dict[str, int]:
    """{partition: most GPUs on one node} from sinfo."""
    result = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise Failure(f"sinfo failed: {result.stderr.strip() or result.returncode}")
    out = {}
    for line in result.stdout.splitlines():
        if "|" not in line:
            continue
        name, gres = line.split("|", 1)
        name = name.strip().rstrip("*")
        out[name] = max(out.get(name, 0), parse_gres_gpus(gres.strip()))
    return out


def requested_resources(resources: dict) -> list[tuple[str, str | None, int]]:
    """(rule, partition, gpus) per rule of set-resources, defaults filled from default-resources."""
    default = resources.get("default") or {}
    rules = resources.get("rules") or {}
    out = [("default", default.get("slurm_partition"), _int(default.get("gpu")))]
    for rule, res in rules.items():
        res = res or {}
        out.append((rule, res.get("slurm_partition", default.get("slurm_partition")),
                    _int(res.get("gpu", default.get("gpu")))))
    return out


def _int(value) -> int:
    """A resource as the first attempt asks for it: profiles may give "2 * attempt"-style expressions."""
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        return int(eval(str(value), {"__builtins__": {}, "min": min, "max": max}, {"attempt": 1}))
    except Exception:
        return 0


def check_cluster(executor: str | None, resources: dict) -> list[Check]:
    if executor != "slurm":
        return []
    if not shutil.which("sinfo"):
        return [Check("cluster", "slurm", False, "the Slurm executor is used but sinfo is not on PATH")]
    try:
        partitions = slurm_partitions()
    except (Failure, OSError, subprocess.TimeoutExpired) as err:
        return [Check("cluster", "slurm", False, str(err))]
    out = []
    for rule, partition, gpus in requested_resources(resources):
        if partition is None and gpus == 0:
            continue
        if partition is not None and partition not in partitions:
            out.append(Check("cluster", rule, False, f"partition {partition!r} does not exist (sinfo lists: "
                             f"{', '.join(sorted(partitions))}); set slurm_partition in your profile"))
            continue
        have = partitions[partition] if partition is not None else max(partitions.values(), default=0)
        where = f"partition {partition!r}" if partition else "any partition"
        if gpus > have:
            out.append(Check("cluster", rule, False, f"asks for {gpus} GPU(s) on one node but {where} has at most "
                             f"{have}; lower gpu for {rule} in your profile or pick a GPU partition"))
        else:
            out.append(Check("cluster", rule, True, f"{where}: {gpus} GPU(s) asked, up to {have} per node"))
    return out or [Check("cluster", "slurm", True, f"sinfo lists {', '.join(sorted(partitions))}")]


def variant_root(variant: str) -> str:
    kind, name = VARIANTS[variant]["init"].split(":", 1)
    return name if kind == "model" else variant_root(name)


def estimated_run_bytes(ctx: Context) -> int | None:
    """Checkpoints of the run: prepared models, each trained model, trajectory points, one running job.

    A running job's full checkpoint holds the weights and Adam's two moments (plus fp32 master
    weights when the model is in 16-bit): 3x the weights in fp32, 7x in bf16 / fp16.
    """
    models = ctx.config.get("models") or {}
    roots = {role: (models.get(role) or {}).get("source") for role in ("base", "instruct")}
    if any(ctx.weights_bytes.get(src) is None for src in roots.values()):
        return None
    seeds = len(ctx.config.get("seeds") or [])
    total = sum(ctx.weights_bytes.values())  # every prepared model, once per source
    for variant in TRAINED_VARIANTS:
        w = ctx.weights_bytes[roots[variant_root(variant)]]
        total += w * (3 if variant in TRAJECTORY_VARIANTS else 1) * seeds  # best (+ first and last)
    running = max((ctx.weights_bytes[src] * (7 if ctx.half.get(src) else 3)) for src in roots.values())
    return total + running


def check_disk(ctx: Context, results_dir: str) -> list[Check]:
    estimate = estimated_run_bytes(ctx)
    path = Path(results_dir).resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if estimate is None:
        return [Check("disk", "results", True, f"{free / 2**30:,.1f} GiB free under {path}; the checkpoint size is "
                      "unknown because a model check failed")]
    message = (f"{free / 2**30:,.1f} GiB free under {path}; the run's checkpoints need about "
               f"{estimate / 2**30:,.1f} GiB")
    if estimate > free:
        return [Check("disk", "results", False, message + "; free space or point results/ at a bigger disk")]
    return [Check("disk", "results", True, message)]


# ---------------------------------------------------------------- run


def run_checks(config: dict, executor: str | None = None, resources: dict | None = None,
               results_dir: str | None = None, timeout: float = CHECK_TIMEOUT, progress=None) -> dict:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(min(timeout, 10))))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(min(timeout, 20))))
    os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")
    ctx = Context(config=config, timeout=timeout)
    checks: list[Check] = []
    steps = [(f"dataset {name}", lambda n=name, s=spec: check_dataset(ctx, n, s or {}))
             for name, spec in (config.get("datasets") or {}).items()]
    steps += [("models", lambda: check_models(ctx)), ("nli", lambda: check_nli(ctx)),
              ("judges", lambda: check_judges(ctx)),
              ("cluster", lambda: check_cluster(executor, resources or {})),
              ("disk", lambda: check_disk(ctx, results_dir or f"results/{config.get('experiment', 'demo')}"))]
    for label, step in steps:
        start = time.monotonic()
        found = step()
        checks.extend(found)
        if progress:
            progress(label, found, time.monotonic() - start)
    return {"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}


def write_report(report: dict, out) -> None:
    from reset.io import write_json

    write_json(report, out)


def load_resources(profile: str | None, resources_json: str | None) -> tuple[str | None, dict]:
    executor, resources = None, {}
    if profile:
        import yaml

        path = Path(profile) / "config.yaml" if Path(profile).is_dir() else Path(profile)
        data = yaml.safe_load(path.read_text()) or {}
        executor = data.get("executor")
        resources = {"default": data.get("default-resources") or {}, "rules": data.get("set-resources") or {}}
    if resources_json:
        resources = json.loads(resources_json)
    return executor, resources


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reset.preflight", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", nargs="+", metavar="YAML",
                        help="config files, merged in order like snakemake --configfile (default: config.yaml)")
    parser.add_argument("--config-json", default=None, help="the merged config as JSON (the Snakemake rule)")
    parser.add_argument("--out", default=None, help="write the JSON report here (atomically)")
    parser.add_argument("--profile", default=None, help="Snakemake profile directory: its executor and resources")
    parser.add_argument("--executor", default=None, help="executor name (slurm turns the cluster check on)")
    parser.add_argument("--resources-json", default=None,
                        help='{"default": {...}, "rules": {rule: {...}}} as in a profile\'s (set-)resources')
    parser.add_argument("--results-dir", default=None, help="where the run writes (default results/{experiment})")
    parser.add_argument("--timeout", type=float, default=CHECK_TIMEOUT, help="seconds one check may take")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.config_json:
        config = json.loads(args.config_json)
    else:
        config = load_config(args.configfile or ["config.yaml"])
    executor, resources = load_resources(args.profile, args.resources_json)
    executor = args.executor or executor

    def progress(label, found, seconds):
        for check in found:
            mark = "ok  " if check.ok else "FAIL"
            print(f"{mark} {check.kind:8} {check.name:16} {check.message}", file=sys.stderr)
        if seconds > 2:
            print(f"     ({label}: {seconds:.1f} s)", file=sys.stderr)

    start = time.monotonic()
    report = run_checks(config, executor, resources, args.results_dir, args.timeout, progress)
    report["seconds"] = round(time.monotonic() - start, 2)
    failed = [c for c in report["checks"] if not c["ok"]]
    if args.out and report["ok"]:
        write_report(report, args.out)
    elif args.out:  # never leave the output a job would take as a passed preflight
        failed_path = Path(args.out).with_suffix(".failed.json")
        write_report(report, failed_path)
        print(f"preflight failed; report in {failed_path}", file=sys.stderr)
    else:
        print(json.dumps(report, indent=2))
    print(f"preflight: {len(report['checks']) - len(failed)} passed, {len(failed)} failed "
          f"in {report['seconds']:.1f} s", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
