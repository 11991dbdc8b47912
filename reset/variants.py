"""The model variants of the paper (SPEC §5). Pure data: Snakemake imports it at parse time."""

from __future__ import annotations

# init: "model:<role>" (a pretrained model of config.models) or "variant:<name>"
#       (that variant's best checkpoint, same seed).
# data: "mixture:<if|cd|mtl>" or "curated:<reset|reset_s>"; None = not trained.
# lr:   "learning_rate" or "reset_learning_rate" (keys of config.training).
# batch: "cd" (effective_batch_cd) or "if" (effective_batch_if).
VARIANTS = {
    "instruct": {"init": "model:instruct", "data": None, "lr": None, "batch": None},
    "instruct_cd": {"init": "model:instruct", "data": "mixture:cd", "lr": "learning_rate", "batch": "cd"},
    "instruct_mtl": {"init": "model:instruct", "data": "mixture:mtl", "lr": "learning_rate", "batch": "if"},
    "instruct_reset": {"init": "model:instruct", "data": "curated:reset", "lr": "reset_learning_rate", "batch": "if"},
    "instruct_mtl_reset": {"init": "variant:instruct_mtl", "data": "curated:reset", "lr": "reset_learning_rate", "batch": "if"},
    "instruct_mtl_reset_s": {"init": "variant:instruct_mtl", "data": "curated:reset_s", "lr": "reset_learning_rate", "batch": "if"},
    "base_cd": {"init": "model:base", "data": "mixture:cd", "lr": "learning_rate", "batch": "cd"},
    "base_cd_if": {"init": "variant:base_cd", "data": "mixture:if", "lr": "learning_rate", "batch": "if"},
}

TRAINED_VARIANTS = [name for name, spec in VARIANTS.items() if spec["data"] is not None]

# Two-stage paradigm: (pipeline, before, after).
TWO_STAGE = [("CDIF", "base_cd", "base_cd_if"), ("IFCD", "instruct", "instruct_cd")]
# Jobs whose first/best/last checkpoints are evaluated for the trajectory figures.
TRAJECTORY_VARIANTS = ["base_cd", "base_cd_if", "instruct_cd"]
# A second stage's trajectory starts at the model it was trained from (the paper's figures:
# "the first checkpoint is the best checkpoint from the context-dependent training stage"):
# trajectory variant -> the variant whose main evaluation is its point "start".
STAGE2_START = {after: before for _, before, after in TWO_STAGE if after in TRAJECTORY_VARIANTS}

IF_TRAIN = ["dolly", "sharegpt", "self_instruct", "oasst1"]
IF_EVAL = ["alpaca_eval", "vicuna_eval", "koala_eval"]
CD_TRAIN = ["nq", "msmarco", "cnn_dailymail"]
CD_EVAL_ONLY = ["bioasq", "searchqa", "wikisum"]
DATASETS = IF_TRAIN + IF_EVAL + CD_TRAIN + CD_EVAL_ONLY

KIND = {
    **{name: "if" for name in IF_TRAIN + IF_EVAL},
    "nq": "extractive_qa",
    "bioasq": "extractive_qa",
    "searchqa": "extractive_qa",
    "msmarco": "abstractive_qa",
    "cnn_dailymail": "summarization",
    "wikisum": "summarization",
}

# Splits each dataset produces.
SPLITS = {
    **{name: ["train", "dev"] for name in IF_TRAIN},
    **{name: ["eval"] for name in IF_EVAL + CD_EVAL_ONLY},
    **{name: ["train", "dev", "eval"] for name in CD_TRAIN},
}

MIXTURES = {
    "if": IF_TRAIN,
    "cd": CD_TRAIN,
    "mtl": IF_TRAIN + CD_TRAIN,
}

# The four ReSet sampling pools: the IF mixture counts as one.
SAMPLING_POOLS = ["if_mix", "nq", "msmarco", "cnn_dailymail"]
