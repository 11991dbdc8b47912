# Config validation, path helpers and input functions: the only place rules get
# paths from. Only light modules are imported here (parse time stays fast).

import os
import shlex

from snakemake.utils import validate

from reset import policy
from reset.variants import (
    CD_TRAIN,
    DATASETS,
    IF_POOL,
    KIND,
    MIXTURES,
    SAMPLING_POOLS,
    SPLITS,
    STAGE2_START,
    TRAINED_VARIANTS,
    TRAJECTORY_POINTS,
    TRAJECTORY_VARIANTS,
    VARIANTS,
)


def check_api_key_env(config):
    """A key pasted into api_key_env must stop the run without being echoed into any log."""
    import re

    for name, judge in (config.get("judges") or {}).items():
        value = judge.get("api_key_env") if isinstance(judge, dict) else None
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
            raise ValueError(f"judges.{name}.api_key_env must be the name of an environment variable that holds "
                             "the API key (e.g. OPENAI_API_KEY), never the key itself; the value is not shown")


check_api_key_env(config)
validate(config, schema="../schemas/config.schema.yaml")

from reset import settings as _settings

# The typed view of the config (reset/settings.py defines every key once, with its default).
S = _settings.load(config)
# The same, as a complete mapping (defaults filled in), for the plain functions of reset/policy.py.
CFG = S.to_dict()


class Runtime:
    """Flags of settings that cannot change an output (logging, retries, timeouts, concurrency).

    Used as a param and formatted into the shell command like any other, but Snakemake's params
    rerun trigger records only params of plain types (str, numbers, lists, ...) and skips other
    objects, so changing one of these settings reruns no job. tests/test_settings_reruns.py keeps
    this so on a finished run.
    """

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text

    def __format__(self, spec):
        return self.text


def runtime_flags(section, **kwargs):
    return Runtime(_settings.flags(section, output=False, **kwargs))

EXP = S.experiment
RESULTS = f"results/{EXP}"
SEEDS = list(S.seeds)
EVAL_DATASETS = [*S.evaluation.seen, *S.evaluation.unseen]


wildcard_constraints:
    experiment=r"[A-Za-z0-9_.-]+",
    dataset="|".join(DATASETS),
    split="train|dev|eval",
    mixture="|".join(MIXTURES),
    variant="|".join(VARIANTS),
    trained="|".join(TRAINED_VARIANTS),
    seed=r"\d+",
    shard=r"\d+",
    point="first|best|last",
    curated="reset|reset_s",
    judge="if|if_supercharged",


def res(*parts):
    """A path under results/{experiment}/."""
    return os.path.join(RESULTS, *map(str, parts))


def logs(*parts):
    return os.path.join("logs", EXP, *map(str, parts))


def bench(*parts):
    return os.path.join("benchmarks", "runs", EXP, *map(str, parts))


def preflight_done():
    """Input of every GPU and paid-judge job: the passed preflight (ancient, so re-running it re-runs nothing)."""
    return ancient(res("preflight.json"))


def preflight_config_args():
    """The whole config, defaults filled in, for the checks; runtime flags, so not what triggers a re-run."""
    import json

    return Runtime(cli_args({"--config-json": json.dumps(S.to_dict(), sort_keys=True)}))


def preflight_executor():
    """The executor's name (slurm turns the cluster check on); a dry run counts as local.

    (A dry run cannot tell which executor the real run will use; with a Slurm profile
    `-n` therefore lists the preflight as to be re-run. It is cheap and re-runs nothing.)
    """
    plugin = workflow.executor_plugin
    name = plugin.name if plugin is not None else "local"
    return "local" if name in ("dryrun", "touch") else name


def preflight_resources():
    """default-resources and set-resources as the profile gave them: the cluster check reads them."""
    rs = workflow.resource_settings

    def plain(resources):
        # A value given as an expression ("min(4000 * attempt, 16000)") has no value before a job
        # exists; its raw text is what the profile said, and what the check reports.
        out = {}
        for key, value in dict(resources or {}).items():
            value = getattr(value, "raw", value)
            out[str(key)] = value if isinstance(value, (int, float, type(None))) else str(value)
        return out

    import json

    return json.dumps({"default": plain(rs.default_resources),
                       "rules": {rule: plain(r) for rule, r in dict(rs.overwrite_resources or {}).items()}},
                      sort_keys=True)


def cli_args(mapping):
    """Render {"--flag": value} as shell-quoted arguments; None values are skipped."""
    out = []
    for flag, value in mapping.items():
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(flag)
            out.extend(shlex.quote(str(v)) for v in value)
        else:
            out.extend([flag, shlex.quote(str(value))])
    return " ".join(out)


# ---------------------------------------------------------------- models


def source_slug(source):
    from reset.models import source_slug as _slug

    return _slug(source)


def pretrained_dir(source):
    return res(policy.pretrained_dir(source))


def trusts_remote_code(source):
    """Whether models.trust_remote_code names this exact model source."""
    return source in S.models.trust_remote_code


def variant_root_source(variant):
    """The configured model source a variant descends from (base or instruct)."""
    return policy.variant_root_source(CFG, variant)


def variant_trusts_remote_code(variant):
    """A fine-tuned model keeps its ancestor's custom code, so it is trusted exactly when that source is."""
    return trusts_remote_code(variant_root_source(variant))


def judge_trusts_remote_code(judge):
    cfg = judge_settings(judge)
    return cfg.provider == "local" and trusts_remote_code(cfg.model)


def nli_trusts_remote_code():
    return trusts_remote_code(S.judges.nli.model)


def judge_settings(judge):
    """The typed settings of judges.<judge> (if or if_supercharged)."""
    return S.judges.if_ if judge == "if" else S.judges.if_supercharged


def all_model_sources():
    """Every model source the run needs prepared locally, keyed by slug."""
    sources = [S.models.base.source, S.models.instruct.source]
    for judge in ("if", "if_supercharged"):
        if judge_settings(judge).provider == "local":
            sources.append(judge_settings(judge).model)
    sources.append(S.judges.nli.model)
    return {source_slug(s): s for s in sources}


def model_options(source):
    """Per-source options (revision, pickle allowance) from config.models or judges.nli."""
    for spec in (S.models.base, S.models.instruct):
        if spec.source == source:
            return {"revision": spec.revision, "allow_pickle_weights": spec.allow_pickle_weights}
    nli = S.judges.nli
    if nli.model == source:
        return {"revision": nli.revision, "allow_pickle_weights": nli.allow_pickle_weights}
    return {}


def model_task(source):
    """seq-cls for a classifier NLI model, causal-lm for everything else."""
    nli = S.judges.nli
    causal_roles = [S.models.base.source, S.models.instruct.source]
    if nli.model == source and nli.backend == "seq_cls" and source not in causal_roles:
        return "seq-cls"
    return "causal-lm"


# Which model starts which job and what it trains on: reset/policy.py (unit-tested there).


def variant_model_dir(variant, seed):
    """The model a variant is evaluated with: its best checkpoint, or the pretrained one."""
    return res(policy.variant_model_dir(CFG, variant, seed))


def variant_init_dir(variant, seed):
    return res(policy.variant_init_dir(CFG, variant, seed))


def variant_train_data(variant, seed):
    """A mixture, or the curated set of the seed's data collection (sampling.per_seed)."""
    return res(policy.variant_train_data(CFG, variant, seed))


def variant_dev_data(variant):
    return res(policy.variant_dev_data(variant))


def judge_model_dir(judge):
    cfg = judge_settings(judge)
    return pretrained_dir(cfg.model) if cfg.provider == "local" else None


def nli_model_dir():
    return pretrained_dir(S.judges.nli.model)


# ---------------------------------------------------------------- data
# (data layer: prepare_dataset*, build_mixture and prepare_model in rules/data.smk)

from reset.sources import local_files, source_map  # standard library only

DATASETS_OF_SHAPE = {
    shape: [n for n in DATASETS if SPLITS[n] == list(shape)]
    for shape in [("train", "dev"), ("eval",), ("train", "dev", "eval")]
}


def dataset_raw_inputs(wildcards):
    """Local files of a dataset's source(s), so editing them re-runs it.

    Hub ids add nothing (no network at DAG time); a local path that does not
    exist yet adds nothing either, so the job itself fails naming the file.
    """
    sources = source_map(S.datasets[wildcards.dataset].source)
    return [f for src in sources.values() for f in local_files(src)]


def if_train_splits():
    return [res("data", n, f"{s}.parquet") for n in MIXTURES["if"] for s in SPLITS[n]]


def dataset_seen_inputs(wildcards):
    """IF evaluation sets keep only instructions not seen in the IF training sets."""
    return if_train_splits() if KIND[wildcards.dataset] == "if" else []


def dataset_eval_cap(name):
    if "eval" not in SPLITS[name]:
        return None
    cap = S.datasets[name].eval_cap
    if cap:
        return cap
    return S.data.eval_cap_if if KIND[name] == "if" else S.data.eval_cap_context


def _split_pairs(value):
    """A source or hub split: a string as is, a mapping as split=VALUE pairs."""
    if value is None:
        return None
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    return [value]


def dataset_args(wildcards):
    """Flags of `python -m reset.data prepare` for a dataset, from datasets.<name> and data."""
    name = wildcards.dataset
    cfg, data, splits = S.datasets[name], S.data, SPLITS[name]
    return cli_args({
        "--dataset": name,
        "--source": _split_pairs(cfg.source),
        "--format": cfg.format,
        "--hub-name": cfg.name,
        "--hub-split": _split_pairs(cfg.split),
        "--revision": cfg.revision,
        "--lang": ("any" if cfg.lang is None else cfg.lang) if name == "oasst1" else None,
        "--split-seed": data.split_seed,
        "--dev-fraction": data.dev_fraction if "dev" in splits else None,
        "--dev-min": data.dev_min if "dev" in splits else None,
        "--eval-fraction": data.eval_fraction if {"train", "eval"} <= set(splits) else None,
        "--eval-cap": dataset_eval_cap(name),
        "--max-passages": data.max_passages if KIND[name].endswith("_qa") else None,
    })


def dataset_seen_args(wildcards, input):
    return cli_args({"--seen": list(input.seen)}) if input.seen else ""


def mixture_inputs(split):
    return lambda wildcards: [res("data", n, f"{split}.parquet") for n in MIXTURES[wildcards.mixture]]


def data_mixture_targets():
    return [res("data", "mixtures", m, f"{split}.parquet") for m in MIXTURES for split in ("train", "dev")]


def model_prepare_args(wildcards):
    """Flags of `python -m reset.models prepare` for the source behind a pretrained slug."""
    source = all_model_sources()[wildcards.slug]
    options = model_options(source)
    return cli_args({
        "--source": source,
        "--revision": options.get("revision"),
        "--trust-remote-code": trusts_remote_code(source),
        "--allow-pickle-weights": bool(options.get("allow_pickle_weights")),
        "--task": model_task(source),
    })


# ---------------------------------------------------------------- evaluation
# (evaluation and report layers: rules/evaluate.smk, rules/report.smk)


def eval_data():
    """The prepared evaluation split of every evaluation set (config evaluation.seen + unseen)."""
    return [res("data", name, "eval.parquet") for name in EVAL_DATASETS]


def eval_store():
    """Content-addressed evaluation outputs (reset.eval_store): not an output, it outlives re-runs."""
    return res("eval_store")


def eval_shards():
    return list(range(S.evaluation.shards))


def trajectories_enabled():
    return S.evaluation.trajectories


def trajectory_model_dir(variant, seed, point):
    """Model of a trajectory point: best = the variant's best checkpoint, first/last = kept ones."""
    if point == "best":
        return res("models", variant, f"seed{seed}")
    return res("trajectory", variant, f"seed{seed}", point)


def eval_scored(variant, seed, point=None):
    """Scored evaluation parquets of one model (point: first/best/last for trajectories)."""
    if point is None:
        return [res("eval", variant, f"seed{seed}", f"{name}.parquet") for name in EVAL_DATASETS]
    return [res("eval_trajectory", variant, f"seed{seed}", point, f"{name}.parquet") for name in EVAL_DATASETS]


def all_eval_scored():
    return [p for variant in VARIANTS for seed in SEEDS for p in eval_scored(variant, seed)]


def all_eval_summaries(wildcards=None):
    """summary.json of every evaluation scoring job (provenance records which ones were reused)."""
    out = [res("eval", v, f"seed{s}", "summary.json") for v in VARIANTS for s in SEEDS]
    if trajectories_enabled():
        out += [res("eval_trajectory", v, f"seed{s}", p, "summary.json")
                for v in TRAJECTORY_VARIANTS for s in SEEDS for p in ("first", "last")]
    return out


def all_trajectory_scored():
    return [p for variant in TRAJECTORY_VARIANTS for seed in SEEDS
            for point in TRAJECTORY_POINTS for p in eval_scored(variant, seed, point)]


def eval_generate_args(wildcards):
    ev = S.evaluation
    return cli_args({"--shards": ev.shards, "--max-new-tokens": ev.max_new_tokens, "--batch-size": ev.batch_size,
                     "--trust-remote-code": variant_trusts_remote_code(wildcards.variant)})


def eval_score_args():
    """Output-affecting judge (judges.if) and NLI (judges.nli) flags of `python -m reset.evaluate score`."""
    return " ".join([
        cli_args({
            "--datasets": EVAL_DATASETS,
            "--judge-model-dir": judge_model_dir("if"),
            "--judge-cache": judge_cache(),
            "--judge-trust-remote-code": judge_trusts_remote_code("if"),
        }),
        _settings.flags(S.judges.if_, output=True, prefix="judge-"),
        nli_args(),
    ])


def paid_judge_runtime(cfg, prefix=""):
    """A judging job's runtime flags: retries, concurrency, the prices, and the budget its paid-step
    check compares them with before the first call (docs/config.md, "Gates")."""
    return Runtime(f"{runtime_flags(cfg, prefix=prefix)} {cli_args({'--max-usd': S.judges.max_usd})}")


def eval_score_runtime():
    return paid_judge_runtime(S.judges.if_, prefix="judge-")


def nli_args():
    """judges.nli flags of every faithfulness-scoring job (the model as its prepared directory)."""
    from reset.faithfulness import NLI_FLAG_KEYS

    return " ".join([
        cli_args({"--nli-model": nli_model_dir(), "--nli-trust-remote-code": nli_trusts_remote_code()}),
        _settings.flags(S.judges.nli, output=None, only=NLI_FLAG_KEYS, prefix="nli-"),
    ])


def eval_score_models():
    """Local judge and NLI model directories the scoring jobs load."""
    return [d for d in (judge_model_dir("if"), nli_model_dir()) if d]


def eval_set_args():
    return cli_args({"--seeds": SEEDS, "--seen": list(S.evaluation.seen), "--unseen": list(S.evaluation.unseen)})


def trajectory_start_scored():
    """Main evaluations a second stage's trajectory starts from (reset.variants.STAGE2_START)."""
    return [p for variant in TRAJECTORY_VARIANTS if variant in STAGE2_START for seed in SEEDS
            for p in eval_scored(STAGE2_START[variant], seed)]


def claims_trajectory_inputs():
    """The checkpoint trajectories the checkpoint claims need, when the run evaluates them."""
    return all_trajectory_scored() if trajectories_enabled() else []


def report_flags(*keys):
    """Flags of report.* keys (they change the outputs that read them, so they are params)."""
    return _settings.flags(S.report, only=keys)


def eval_root(path):
    """results/{exp}/eval from eval/{variant}/seed{seed}/{dataset}.parquet."""
    return os.path.dirname(os.path.dirname(os.path.dirname(path)))


def trajectory_root(path):
    """results/{exp}/eval_trajectory from eval_trajectory/{variant}/seed{seed}/{point}/{dataset}.parquet."""
    return os.path.dirname(eval_root(path))


REPORT_TABLES = [
    "claims.csv", "claims.md", "claims.tex",
    "main_results.csv", "main_results.md", "main_results.tex", "main_results_by_seed.csv",
    "two_stage.csv", "two_stage.md", "two_stage.tex", "coverage.csv", "coverage.md", "coverage.tex", "lengths.csv",
    "examples.csv",
]
REPORT_FIGURES = ["claims_forest.png", "tradeoff.png", "two_stage.png", "lengths.png"]
TRAJECTORY_FIGURES = ["trajectory.png", "trajectory_sets.png", "trajectory_lengths.png"]


def report_inputs():
    """Tables and figures the HTML report embeds (trajectories when evaluation.trajectories)."""
    out = [res("tables", f) for f in REPORT_TABLES] + [res("figures", f) for f in REPORT_FIGURES]
    if trajectories_enabled():
        out += [res("tables", "trajectory.csv")] + [res("figures", f) for f in TRAJECTORY_FIGURES]
    return out


def report_targets():
    return report_inputs() + [res("provenance.json"), res("report.html")]


def evaluation_targets():
    out = all_eval_scored()
    if trajectories_enabled():
        out += all_trajectory_scored()
    return out


# ---------------------------------------------------------------- training
# (training layer: rule train in rules/train.smk)


def checkpoint_dir(variant, seed):
    """Trainer checkpoints of a job: not an output, so a killed job's survive for resuming."""
    return res("checkpoints", variant, f"seed{seed}")


def train_args(wildcards):
    """Output-affecting flags of `python -m reset.train` for a variant: the training keys it uses, with
    its learning rate and effective batch picked by VARIANTS (changing reset_learning_rate reruns only
    the ReSet trainings)."""
    spec = VARIANTS[wildcards.trained]
    from reset.train import JOB_SPECIFIC

    return " ".join([
        _settings.flags(S.training, output=True, exclude=JOB_SPECIFIC),
        cli_args({
            "--learning-rate": getattr(S.training, spec["lr"]),
            "--effective-batch": getattr(S.training, f"effective_batch_{spec['batch']}"),
            "--seed": wildcards.seed,
            "--trust-remote-code": variant_trusts_remote_code(wildcards.trained),
        }),
    ])


def train_launcher(wildcards, resources):
    """Single process on CPU; with GPUs one process per GPU under ZeRO-3 (one job = one node)."""
    gpus = int(resources.get("gpu", 0))
    if gpus < 1:
        return "python -m reset.train"
    return (f"python -m torch.distributed.run --standalone --nproc_per_node {gpus} -m reset.train "
            f"--deepspeed {shlex.quote(S.training.deepspeed_config)}")


def training_targets():
    return [res("models", v, f"seed{s}", "training_summary.json") for v in TRAINED_VARIANTS for s in SEEDS]


# ---------------------------------------------------------------- ReSet
# (sampling, candidate judges, curation: rules/sample.smk, judge.smk, curate.smk)

# The data collection (sampling -> candidate scores -> curation) leads to the ReSet trainings,
# the pipeline's longest chain; its jobs go ahead of baseline evaluations, which can fill any
# free core later. Without it the two sampling shards of the demo ran one after the other
# beside evaluation jobs, and the ReSet trainings started minutes later (docs/performance.md).
COLLECTION_PRIORITY = 10

# Paths of the data collection: shared, or under seed{n}/ with sampling.per_seed, where the rules
# carry a {seed} wildcard (reset/policy.py). In shared mode the paths have no wildcard.
policy.check_collection(CFG)
CURATED_JUDGE = policy.CURATED_JUDGE
SAMPLING_VARIANT = policy.SAMPLING_VARIANT   # the multi-task checkpoint ReSet samples from


def collection(stage, name):
    """results/{exp}/{stage}/[seed{seed}/]{name}: a path pattern of the data collection."""
    return res(policy.collection_path(CFG, stage, name))


def candidate_scores(name):
    return collection("scores/candidates", name)


def sampling_pool_inputs():
    """Train splits of each ReSet pool; the four IF train splits form the pool if_mix (not up-sampled)."""
    return {pool: [res("data", n, "train.parquet") for n in (MIXTURES["if"] if pool == IF_POOL else [pool])]
            for pool in SAMPLING_POOLS}


def sampling_pool_args(wildcards, input):
    return " ".join(cli_args({"--pool": [pool, *input[pool]]}) for pool in SAMPLING_POOLS)


def sampling_subset_args():
    return cli_args({"--per-pool": S.sampling.subset_per_dataset, "--seed": S.sampling.seed})


def sampling_model_dir():
    """ReSet samples from SAMPLING_VARIANT of sampling.source_seed (per seed: of the {seed} wildcard)."""
    return res(policy.sampling_model_dir(CFG))


def sampling_shards():
    return [res(p) for p in policy.sampling_shard_paths(CFG)]


SWEEP_KEYS = ("shards", "rounds", "temperatures", "top_ks", "topk_temperature", "max_new_tokens", "batch_size", "seed")


def sweep_args():
    """Flags of `python -m reset.sample sweep`: the sampling keys of the sweep, named as in the config."""
    return " ".join([_settings.flags(S.sampling, output=None, only=SWEEP_KEYS),
                     cli_args({"--trust-remote-code": variant_trusts_remote_code(SAMPLING_VARIANT)})])


def judge_rounds(judge):
    """The main IF judge scores round 1; the ReSet-S judge every round ReSet-S ranks."""
    return policy.judge_rounds(CFG, judge)


def truncated_flag():
    """--allow-truncated when curation.allow_truncated lets cut-off candidates be judged and ranked."""
    return "--allow-truncated" if policy.allow_truncated(CFG) else ""


def judge_items_all(judge):
    """One IF judge's items of every collection seed (what the cost estimate covers)."""
    return [res(p) for p in policy.judge_items_paths(CFG, judge)]


def judge_settings_json(judge):
    """The output-affecting keys of judges.<judge> as JSON (runtime keys: candidate_judge_runtime)."""
    import json

    return json.dumps(judge_settings(judge).output_dict(), sort_keys=True)


def judge_cache():
    """The persistent IF judge cache directory (not an output: it outlives re-runs; a judge.sqlite
    beside it, the cache of earlier versions, is read too)."""
    return res("cache", "judge")


def candidate_judge_inputs(wildcards):
    """A candidate IF judge job needs its items, the cost estimate and, for a local judge, its model.

    The estimate is a gate, not data, so it is ancient(); it is made once and never re-made while
    it exists (docs/config.md, "Gates"), and each paid job checks its own calls at current prices.
    """
    out = {"judge_items": candidate_scores(f"{wildcards.judge}_items.parquet"),
           "estimate": ancient(res("judge_cost_estimate.json"))}
    if judge_model_dir(wildcards.judge):
        out["model"] = judge_model_dir(wildcards.judge)
    return out


def candidate_judge_runtime(wildcards):
    return paid_judge_runtime(judge_settings(wildcards.judge))


def candidate_judge_args(wildcards):
    return cli_args({"--settings": judge_settings_json(wildcards.judge),
                     "--model-dir": judge_model_dir(wildcards.judge), "--cache": judge_cache(),
                     "--trust-remote-code": judge_trusts_remote_code(wildcards.judge)})


def judge_cost_args(wildcards, input):
    """Both judges' whole settings (prices included) and their items; runtime: never compared."""
    import json

    jobs = " ".join(cli_args({"--job": [judge, json.dumps(judge_settings(judge).to_dict(), sort_keys=True),
                                        *input[judge]]})
                    for judge in ("if", "if_supercharged"))
    return Runtime(f"{jobs} {cli_args({'--max-usd': S.judges.max_usd, '--cache': judge_cache()})}")


def candidate_nli_args():
    return nli_args()


def curate_args(wildcards):
    made = policy.curation_policy(CFG, wildcards.curated)
    mode = policy.data_mode(CFG, wildcards.get("seed", S.sampling.source_seed))
    return cli_args({
        "--name": wildcards.curated, "--if-weight": S.curation.if_weight,
        "--rounds": made["rounds"], "--per-pool": made["per_pool"],
        "--allow-truncated": policy.allow_truncated(CFG),
        "--data-mode": mode["mode"], "--source-seed": mode["source_seed"],
    })


def curation_summaries():
    """Every curated set's summary (counts, exclusions, the data collection mode), for tables and report."""
    return [res(p) for p in policy.curated_targets(CFG) if p.endswith("_summary.json")]


def reset_targets():
    return [res(p) for p in policy.curated_targets(CFG)] + [res("judge_cost_estimate.json")]


# ---------------------------------------------------------------- targets


def data_targets():
    out = []
    for name in DATASETS:
        out.append(res("data", name, "filter_report.json"))
        out.extend(res("data", name, f"{split}.parquet") for split in SPLITS[name])
    return out


def all_targets():
    """Everything the default target builds; later stages append to TARGETS."""
    return data_targets() + [t for stage in TARGETS for t in stage()]


# Stage files append zero-argument functions returning their final targets.
TARGETS = []
