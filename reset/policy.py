"""Which model starts which job, what it trains on, and how ReSet's data is collected.

Plain functions of the run's config (the dict Snakemake loads): `rules/common.smk`
calls them to build paths, and unit tests (tests/test_policy.py) call them
directly. Paths are relative to `results/{experiment}/`. Snakemake wildcards may be
passed as values (seed="{seed}"): the functions only format strings.

ReSet's data can be collected in two modes (`sampling.per_seed`, docs/decisions.md):

- shared (default): `instruct_mtl` of `sampling.source_seed` samples once; its
  curated sets `curated/{name}.parquet` serve the continued fine-tuning of every
  seed.
- per seed: each seed's own `instruct_mtl` samples, is judged and curated under
  `sampling/seed{n}/`, `scores/candidates/seed{n}/` and `curated/seed{n}/`, and
  seed n's ReSet variants train on `curated/seed{n}/{name}.parquet`. The subset
  of prompts (`sampling/subset.parquet`) is the same for every seed.
"""

from __future__ import annotations

from reset.variants import VARIANTS

# The checkpoint ReSet samples from.
SAMPLING_VARIANT = "instruct_mtl"
# Curated sets and the IF judge that ranks each one's candidates.
CURATED_JUDGE = {"reset": "if", "reset_s": "if_supercharged"}
CURATED_SETS = list(CURATED_JUDGE)
CANDIDATE_JUDGES = list(dict.fromkeys(CURATED_JUDGE.values()))
REF_KINDS = {"init": ("model", "variant"), "data": ("mixture", "curated")}


# ---------------------------------------------------------------- variant strings


def split_ref(ref: str, field: str = "init") -> tuple[str, str]:
    """'model:instruct' -> ('model', 'instruct'); a malformed string is a ValueError naming it."""
    kind, sep, name = str(ref).partition(":")
    if not sep or not name or kind not in REF_KINDS[field]:
        raise ValueError(f"variant {field} {ref!r}: expected one of "
                         f"{', '.join(k + ':<name>' for k in REF_KINDS[field])}")
    return kind, name


def _spec(variant: str) -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def variant_init(variant: str) -> tuple[str, str]:
    """('model', role) for a pretrained start, ('variant', name) for another variant's best checkpoint."""
    return split_ref(_spec(variant)["init"], "init")


def variant_data(variant: str) -> tuple[str, str] | None:
    """('mixture', if|cd|mtl) or ('curated', reset|reset_s); None for a variant that is not trained."""
    data = _spec(variant)["data"]
    return None if data is None else split_ref(data, "data")


def variant_root_role(variant: str) -> str:
    """The pretrained role (base or instruct) a variant descends from, however many stages back."""
    kind, name = variant_init(variant)
    return name if kind == "model" else variant_root_role(name)


# ---------------------------------------------------------------- models


def pretrained_dir(source: str) -> str:
    from reset.models import source_slug

    return f"models/pretrained/{source_slug(source)}"


def role_source(config: dict, role: str) -> str:
    return config["models"][role]["source"]


def variant_root_source(config: dict, variant: str) -> str:
    """The configured model source a variant descends from."""
    return role_source(config, variant_root_role(variant))


def variant_init_dir(config: dict, variant: str, seed) -> str:
    """The model a trained variant starts from: a pretrained model or the same seed's checkpoint of its parent."""
    kind, name = variant_init(variant)
    if kind == "model":
        return pretrained_dir(role_source(config, name))
    return f"models/{name}/seed{seed}"


def variant_model_dir(config: dict, variant: str, seed) -> str:
    """The model a variant is evaluated with: its best checkpoint, or, untrained, the model it starts from."""
    if variant_data(variant) is None:
        return variant_init_dir(config, variant, seed)
    return f"models/{variant}/seed{seed}"


def variant_train_data(config: dict, variant: str, seed) -> str:
    """Training parquet of a variant: its mixture, or the curated set of its seed's data collection."""
    data = variant_data(variant)
    if data is None:
        raise ValueError(f"variant {variant!r} is not trained")
    kind, name = data
    if kind == "mixture":
        return f"data/mixtures/{name}/train.parquet"
    return curated_path(config, name, seed)


def variant_dev_data(variant: str) -> str:
    """Dev parquet for checkpoint selection: the mixture's, or the MTL dev set for a curated set."""
    data = variant_data(variant)
    if data is None:
        raise ValueError(f"variant {variant!r} is not trained")
    kind, name = data
    return f"data/mixtures/{name if kind == 'mixture' else 'mtl'}/dev.parquet"


# ---------------------------------------------------------------- ReSet data collection


def per_seed(config: dict) -> bool:
    """Whether every seed collects its own ReSet data (sampling.per_seed)."""
    return bool(config["sampling"].get("per_seed", False))


def collection_seeds(config: dict) -> list[int]:
    """The seeds whose instruct_mtl checkpoint samples: all seeds per seed, else sampling.source_seed."""
    return list(config["seeds"]) if per_seed(config) else [config["sampling"]["source_seed"]]


def check_collection(config: dict) -> None:
    """Errors a run would otherwise meet only mid-way, naming the config keys."""
    rounds, sampled = config["curation"]["reset_s"]["rounds"], config["sampling"]["rounds"]
    if rounds > sampled:
        raise ValueError(f"config: curation.reset_s.rounds ({rounds}) exceeds sampling.rounds ({sampled}): "
                         "ReSet-S ranks candidates of rounds that are never sampled")


def sampling_model_seed(config: dict, seed) -> object:
    """The seed of the instruct_mtl checkpoint that samples the data seed `seed` trains on."""
    return seed if per_seed(config) else config["sampling"]["source_seed"]


def sampling_model_dir(config: dict, seed="{seed}") -> str:
    return f"models/{SAMPLING_VARIANT}/seed{sampling_model_seed(config, seed)}"


def collection_path(config: dict, stage: str, name: str, seed="{seed}") -> str:
    """A file of the data collection: stage/name, or stage/seed{n}/name in per-seed mode.

    stage is "sampling", "scores/candidates" or "curated"; the subset of prompts is
    shared by every seed (sampling_subset_path).
    """
    if stage not in ("sampling", "scores/candidates", "curated"):
        raise ValueError(f"unknown data collection stage {stage!r}")
    return f"{stage}/seed{seed}/{name}" if per_seed(config) else f"{stage}/{name}"


def sampling_subset_path() -> str:
    return "sampling/subset.parquet"


def sampling_shard_paths(config: dict, seed="{seed}") -> list[str]:
    return [collection_path(config, "sampling", f"shard{i}.parquet", seed)
            for i in range(config["sampling"]["shards"])]


def candidate_scores_path(config: dict, name: str, seed="{seed}") -> str:
    """scores/candidates/[seed{n}/]{name} (name e.g. 'if.parquet', 'task_dedup.json')."""
    return collection_path(config, "scores/candidates", name, seed)


def curated_path(config: dict, name: str, seed="{seed}", suffix: str = ".parquet") -> str:
    """curated/[seed{n}/]{name}{suffix}; suffix '_candidates.parquet' or '_summary.json' for the side files."""
    if name not in CURATED_JUDGE:
        raise ValueError(f"unknown curated set {name!r}; known: {', '.join(CURATED_JUDGE)}")
    return collection_path(config, "curated", f"{name}{suffix}", seed)


def curated_targets(config: dict) -> list[str]:
    """Every curated set and summary of the run (one per collection seed in per-seed mode)."""
    return [curated_path(config, name, seed, suffix) for seed in collection_seeds(config)
            for name in CURATED_SETS for suffix in (".parquet", "_summary.json")]


def judge_items_paths(config: dict, judge: str) -> list[str]:
    """Every collection seed's judge items of one IF judge: the cost estimate covers them all."""
    return [candidate_scores_path(config, f"{judge}_items.parquet", seed) for seed in collection_seeds(config)]


# ---------------------------------------------------------------- curation


def judge_rounds(config: dict, judge: str) -> int:
    """The main IF judge scores round 1; the ReSet-S judge every round ReSet-S ranks."""
    if judge == "if":
        return 1
    if judge == "if_supercharged":
        return int(config["curation"]["reset_s"]["rounds"])
    raise ValueError(f"unknown candidate judge {judge!r}; known: {', '.join(CANDIDATE_JUDGES)}")


def curation_policy(config: dict, name: str) -> dict:
    """How a curated set is made: its IF judge, the rounds it ranks and the examples kept per pool."""
    cur = config["curation"]
    if name == "reset":
        return {"judge": "if", "rounds": 1, "per_pool": int(cur["per_dataset"])}
    if name == "reset_s":
        return {"judge": "if_supercharged", "rounds": int(cur["reset_s"]["rounds"]),
                "per_pool": int(cur["reset_s"]["per_dataset"])}
    raise ValueError(f"unknown curated set {name!r}; known: {', '.join(CURATED_JUDGE)}")


def allow_truncated(config: dict) -> bool:
    """Whether candidates cut off at sampling.max_new_tokens may be ranked (curation.allow_truncated)."""
    return bool(config["curation"].get("allow_truncated", False))


def data_mode(config: dict, seed) -> dict:
    """Where a curated set's data came from (recorded in its summary).

    mode: "shared" (every seed trains on it) or "per_seed" (only seed source_seed does);
    source_seed: the seed of the instruct_mtl checkpoint that sampled it. The list of
    seeds is left out on purpose: adding a seed must not re-run a shared curation.
    """
    return {"mode": "per_seed" if per_seed(config) else "shared",
            "source_seed": int(sampling_model_seed(config, seed))}
