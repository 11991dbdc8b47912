"""reset.policy: which model starts which job, what it trains on, and the two data collection modes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from reset import policy
from reset.models import source_slug
from reset.variants import TRAINED_VARIANTS, VARIANTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def config():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["models"]["base"]["source"] = "org/base-7b"
    cfg["models"]["instruct"]["source"] = "org/chat-7b"
    cfg["seeds"] = [1, 2, 3]
    cfg["sampling"]["source_seed"] = 2
    return cfg


def per_seed(config):
    out = copy.deepcopy(config)
    out["sampling"]["per_seed"] = True
    return out


def test_variant_strings_are_split_and_checked():
    assert policy.split_ref("model:instruct") == ("model", "instruct")
    assert policy.split_ref("curated:reset_s", "data") == ("curated", "reset_s")
    for bad, field in (("instruct", "init"), ("model:", "init"), ("mixture:if", "init"), ("model:base", "data")):
        with pytest.raises(ValueError, match=field):
            policy.split_ref(bad, field)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        policy.variant_init("nope")
    # every variant of the paper parses
    for name in VARIANTS:
        policy.variant_init(name)
        policy.variant_data(name)


def test_which_model_starts_which_job(config):
    base = f"models/pretrained/{source_slug('org/base-7b')}"
    chat = f"models/pretrained/{source_slug('org/chat-7b')}"
    starts = {v: policy.variant_init_dir(config, v, 3) for v in TRAINED_VARIANTS}
    assert starts == {
        "instruct_cd": chat, "instruct_mtl": chat, "instruct_reset": chat,   # from the pretrained instruct model
        "instruct_mtl_reset": "models/instruct_mtl/seed3", "instruct_mtl_reset_s": "models/instruct_mtl/seed3",
        "base_cd": base, "base_cd_if": "models/base_cd/seed3",              # stage 2 continues stage 1, same seed
    }
    assert policy.variant_model_dir(config, "instruct", 2) == chat        # not trained: the pretrained model
    assert policy.variant_model_dir(config, "base_cd_if", 2) == "models/base_cd_if/seed2"
    assert {v: policy.variant_root_source(config, v) for v in ("base_cd_if", "instruct_mtl_reset_s", "instruct")} == {
        "base_cd_if": "org/base-7b", "instruct_mtl_reset_s": "org/chat-7b", "instruct": "org/chat-7b"}


def test_what_each_job_trains_on_in_both_modes(config):
    shared = {v: policy.variant_train_data(config, v, 3) for v in TRAINED_VARIANTS}
    assert shared == {
        "instruct_cd": "data/mixtures/cd/train.parquet", "instruct_mtl": "data/mixtures/mtl/train.parquet",
        "instruct_reset": "curated/reset.parquet", "instruct_mtl_reset": "curated/reset.parquet",
        "instruct_mtl_reset_s": "curated/reset_s.parquet", "base_cd": "data/mixtures/cd/train.parquet",
        "base_cd_if": "data/mixtures/if/train.parquet",
    }
    seeded = per_seed(config)
    assert policy.variant_train_data(seeded, "instruct_mtl_reset", 3) == "curated/seed3/reset.parquet"
    assert policy.variant_train_data(seeded, "instruct_reset", 1) == "curated/seed1/reset.parquet"
    assert policy.variant_train_data(seeded, "instruct_mtl_reset_s", "{seed}") == "curated/seed{seed}/reset_s.parquet"
    assert policy.variant_train_data(seeded, "base_cd", 1) == "data/mixtures/cd/train.parquet"
    # checkpoint selection: the mixture's dev set; ReSet variants the MTL dev set
    assert policy.variant_dev_data("instruct_mtl_reset_s") == "data/mixtures/mtl/dev.parquet"
    assert policy.variant_dev_data("base_cd_if") == "data/mixtures/if/dev.parquet"
    with pytest.raises(ValueError, match="not trained"):
        policy.variant_train_data(config, "instruct", 1)


def test_shared_collection_samples_once_from_the_source_seed(config):
    assert not policy.per_seed(config)
    assert policy.collection_seeds(config) == [2]
    assert policy.sampling_model_dir(config) == "models/instruct_mtl/seed2"
    assert policy.sampling_model_dir(config, 3) == "models/instruct_mtl/seed2"
    assert policy.sampling_shard_paths(config) == ["sampling/shard0.parquet", "sampling/shard1.parquet"]
    assert policy.candidate_scores_path(config, "if.parquet") == "scores/candidates/if.parquet"
    assert policy.curated_targets(config) == ["curated/reset.parquet", "curated/reset_summary.json",
                                              "curated/reset_s.parquet", "curated/reset_s_summary.json"]
    assert policy.judge_items_paths(config, "if") == ["scores/candidates/if_items.parquet"]
    assert policy.data_mode(config, 3) == {"mode": "shared", "source_seed": 2}


def test_per_seed_collection_has_one_set_per_seed(config):
    seeded = per_seed(config)
    assert policy.collection_seeds(seeded) == [1, 2, 3]
    assert policy.sampling_model_dir(seeded) == "models/instruct_mtl/seed{seed}"
    assert policy.sampling_model_dir(seeded, 3) == "models/instruct_mtl/seed3"
    assert policy.sampling_shard_paths(seeded, 1) == ["sampling/seed1/shard0.parquet", "sampling/seed1/shard1.parquet"]
    assert policy.sampling_subset_path() == "sampling/subset.parquet"   # the prompts are the same for every seed
    assert policy.candidate_scores_path(seeded, "task.parquet", 2) == "scores/candidates/seed2/task.parquet"
    assert policy.curated_path(seeded, "reset_s", 3, "_candidates.parquet") == "curated/seed3/reset_s_candidates.parquet"
    targets = policy.curated_targets(seeded)
    assert len(targets) == 3 * 2 * 2 and "curated/seed2/reset_summary.json" in targets
    # one cost estimate over every seed's items
    assert policy.judge_items_paths(seeded, "if_supercharged") == [
        f"scores/candidates/seed{n}/if_supercharged_items.parquet" for n in (1, 2, 3)]
    assert policy.data_mode(seeded, "3") == {"mode": "per_seed", "source_seed": 3}
    with pytest.raises(ValueError, match="unknown curated set"):
        policy.curated_path(seeded, "reset_x", 1)


def test_curation_policy_judges_and_rounds(config):
    config["curation"].update({"per_dataset": 2000, "reset_s": {"rounds": 2, "per_dataset": 500}})
    assert policy.curation_policy(config, "reset") == {"judge": "if", "rounds": 1, "per_pool": 2000}
    assert policy.curation_policy(config, "reset_s") == {"judge": "if_supercharged", "rounds": 2, "per_pool": 500}
    assert policy.judge_rounds(config, "if") == 1 and policy.judge_rounds(config, "if_supercharged") == 2
    for name in policy.CURATED_SETS:   # each set's judge scores every round the set ranks
        made = policy.curation_policy(config, name)
        assert policy.CURATED_JUDGE[name] == made["judge"]
        assert policy.judge_rounds(config, made["judge"]) == made["rounds"]
    with pytest.raises(ValueError, match="unknown candidate judge"):
        policy.judge_rounds(config, "nli")
    assert policy.allow_truncated(config) is False
    config["curation"]["allow_truncated"] = True
    assert policy.allow_truncated(config) is True


def test_check_collection_names_the_keys(config):
    config["curation"]["reset_s"]["rounds"] = config["sampling"]["rounds"] + 1
    with pytest.raises(ValueError, match=r"curation\.reset_s\.rounds .* exceeds sampling\.rounds"):
        policy.check_collection(config)
