# Config validation, path helpers and input functions: the only place rules get
# paths from. Only light modules are imported here (parse time stays fast).

import shlex

from snakemake.utils import validate

from reset.variants import (
    CD_TRAIN,
    DATASETS,
    KIND,
    MIXTURES,
    SAMPLING_POOLS,
    SPLITS,
    TRAINED_VARIANTS,
    TRAJECTORY_VARIANTS,
    VARIANTS,
)


validate(config, schema="../schemas/config.schema.yaml")

EXP = config["experiment"]
RESULTS = f"results/{EXP}"
SEEDS = config["seeds"]
EVAL_DATASETS = config["evaluation"]["seen"] + config["evaluation"]["unseen"]


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
    return "/".join([RESULTS, *[str(p) for p in parts]])


def logs(*parts):
    return "/".join(["logs", EXP, *[str(p) for p in parts]])


def bench(*parts):
    return "/".join(["benchmarks", "runs", EXP, *[str(p) for p in parts]])


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


def model_source_for_role(role):
    return config["models"][role]["source"]


def pretrained_dir(source):
    return res("models", "pretrained", source_slug(source))


def trusts_remote_code(source):
    return source in config["models"].get("trust_remote_code", [])


def all_model_sources():
    """Every model source the run needs prepared locally, keyed by slug."""
    sources = [config["models"]["base"]["source"], config["models"]["instruct"]["source"]]
    for judge in ("if", "if_supercharged"):
        if config["judges"][judge]["provider"] == "local":
            sources.append(config["judges"][judge]["model"])
    sources.append(config["judges"]["nli"]["model"])
    return {source_slug(s): s for s in sources}


def model_options(source):
    """Per-source options from config.models (revision, pickle allowance)."""
    for role in ("base", "instruct"):
        spec = config["models"][role]
        if spec["source"] == source:
            return spec
    return {}


def variant_model_dir(variant, seed):
    """The model a variant is evaluated with: its best checkpoint, or the pretrained one."""
    spec = VARIANTS[variant]
    if spec["data"] is None:
        return pretrained_dir(model_source_for_role(spec["init"].split(":", 1)[1]))
    return res("models", variant, f"seed{seed}")


def variant_init_dir(variant, seed):
    kind, name = VARIANTS[variant]["init"].split(":", 1)
    if kind == "model":
        return pretrained_dir(model_source_for_role(name))
    return res("models", name, f"seed{seed}")


def variant_train_data(variant):
    kind, name = VARIANTS[variant]["data"].split(":", 1)
    if kind == "mixture":
        return res("data", "mixtures", name, "train.parquet")
    return res("curated", f"{name}.parquet")


def variant_dev_data(variant):
    kind, name = VARIANTS[variant]["data"].split(":", 1)
    return res("data", "mixtures", name if kind == "mixture" else "mtl", "dev.parquet")


def judge_model_dir(judge):
    cfg = config["judges"][judge]
    return pretrained_dir(cfg["model"]) if cfg["provider"] == "local" else None


def nli_model_dir():
    return pretrained_dir(config["judges"]["nli"]["model"])


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
