"""Reproduction verdicts: each claim of the paper checked on the run's own evaluation parquets.

A claim compares two models (variants, or checkpoints of a training job's trajectory) on one
metric over a group of evaluation sets. Its effect is b − a on the macro average the main
table uses (per seed: mean over each set's examples that have a value, then the plain mean
over the group's sets that carry the metric; then the mean over seeds), so the effect of a
main-table claim equals the difference of two `macro_*` means in tables/main_results.csv.

Its 95 % interval comes from a paired bootstrap (docs/results.md, "Reproduction verdicts"):
every variant is evaluated on the same examples, so one resample draws, for each evaluation
set, as many example ids as the set has, with replacement, and (with several seeds) as many
seeds as the run has, with replacement; the same draw serves every model and every claim,
and the macro average is recomputed from it. The generator is numpy's PCG64 seeded with
`report.seed`; `report.bootstrap_resamples` resamples are drawn in chunks of `CHUNK`.

Verdicts: for a directional claim, an interval wholly on the claimed side of 0 → reproduced,
wholly on the other side → contradicted, else inconclusive. For a "similar or better" claim
(b not worse than a by more than the margin `report.similarity_margin`): ci_low > −margin →
reproduced, ci_high < −margin → contradicted, else inconclusive.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reset import tables as tab
from reset.io import atomic_path
from reset.settings import Report, add_flags, from_args
from reset.variants import KIND

log = logging.getLogger(__name__)

CLAIM_KEYS = ("bootstrap_resamples", "seed", "similarity_margin")   # the report.* keys claims.csv depends on
CHUNK = 500                 # resamples drawn per chunk (part of the documented procedure: keep fixed)
CONFIDENCE = 0.95
VERDICTS = ("reproduced", "contradicted", "inconclusive")
COLUMNS = ["claim", "statement", "where", "variant_a", "variant_b", "metric", "datasets", "claimed", "effect",
           "ci_low", "ci_high", "p_value", "n_examples", "n_seeds", "paper_value", "verdict", "note"]
GROUPS = ("all", "seen", "unseen", "extractive", "abstractive")
SECTION_RQ1 = "Sec. “Does Fine-tuning with Instruction Following Data Hurt Faithfulness?”, Fig. RQ1"
SECTION_RQ2 = "Sec. “Does Context-Dependent Fine-tuning Hurt Instruction Following?”, Fig. RQ2"
SECTION_MIX = ("App. “Quandary of Mixed Training on Abstractive and Extractive QA and Summarization "
               "Datasets” (figures of the three LLaMA-7B checkpoints)")
SECTION_RESULTS = "Sec. “Results”, main results table"


@dataclass(frozen=True)
class Claim:
    """One checkable statement: b − a on `metric` over the `group` of evaluation sets."""

    id: str
    statement: str
    where: str
    a: str                  # variant, or "variant@point" (first / best / last checkpoint)
    b: str
    metric: str             # if | faithfulness | task
    group: str              # all | seen | unseen | extractive | abstractive
    rule: str               # "increase", "decrease" or "similar_or_better"
    paper_value: float = math.nan

    @property
    def needs_trajectory(self) -> bool:
        return "@" in self.a or "@" in self.b


CLAIMS = [
    Claim("1a_cdif_faithfulness",
          "Fine-tuning the context-dependent model (CDIF stage 2) on instruction-following data lowers "
          "its faithfulness.", SECTION_RQ1, "base_cd", "base_cd_if", "faithfulness", "all", "decrease"),
    Claim("1b_cdif_if",
          "Fine-tuning the context-dependent model (CDIF stage 2) on instruction-following data raises "
          "its IF score.", SECTION_RQ1, "base_cd", "base_cd_if", "if", "all", "increase"),
    Claim("2a_ifcd_if",
          "Context-dependent fine-tuning of the instruct model (IFCD) lowers its IF score.",
          SECTION_RQ2, "instruct", "instruct_cd", "if", "all", "decrease"),
    Claim("2b_ifcd_faithfulness",
          "Context-dependent fine-tuning of the instruct model (IFCD) raises its faithfulness.",
          SECTION_RQ2, "instruct", "instruct_cd", "faithfulness", "all", "increase"),
    Claim("3a_cd_extractive_faithfulness",
          "During context-dependent training of the base model, faithfulness on extractive QA falls "
          "from the first to the last checkpoint.", SECTION_MIX, "base_cd@first", "base_cd@last",
          "faithfulness", "extractive", "decrease"),
    Claim("3b_cd_extractive_task",
          "During the same training, task performance (EM) on extractive QA rises from the first to the "
          "last checkpoint.", SECTION_MIX, "base_cd@first", "base_cd@last", "task", "extractive", "increase"),
    Claim("3c_cd_abstractive_faithfulness",
          "On abstractive QA and summarisation the falling-faithfulness trend is not salient: faithfulness "
          "does not fall by more than the margin.", SECTION_MIX, "base_cd@first", "base_cd@last",
          "faithfulness", "abstractive", "similar_or_better"),
    Claim("4a_mtl_if",
          "Multi-task training of the instruct model closes most of the IF gap left by context-dependent "
          "training alone (the paper: 0.49 → 0.75).", SECTION_RESULTS, "instruct_cd", "instruct_mtl", "if",
          "all", "increase", paper_value=0.75 - 0.49),
    Claim("4b_mtl_faithfulness_headroom",
          "Multi-task training leaves headroom on faithfulness: it stays below the context-dependent-only "
          "model, the paper's upper bound.", SECTION_RESULTS, "instruct_cd", "instruct_mtl", "faithfulness",
          "all", "decrease"),
    Claim("5a_reset_if_seen", "MTL + ReSet beats MTL on IF score on the seen sets.", SECTION_RESULTS,
          "instruct_mtl", "instruct_mtl_reset", "if", "seen", "increase"),
    Claim("5b_reset_if_unseen", "MTL + ReSet beats MTL on IF score on the unseen sets.", SECTION_RESULTS,
          "instruct_mtl", "instruct_mtl_reset", "if", "unseen", "increase"),
    Claim("5c_reset_faithfulness_seen", "MTL + ReSet beats MTL on faithfulness on the seen sets.",
          SECTION_RESULTS, "instruct_mtl", "instruct_mtl_reset", "faithfulness", "seen", "increase"),
    Claim("5d_reset_faithfulness_unseen", "MTL + ReSet beats MTL on faithfulness on the unseen sets.",
          SECTION_RESULTS, "instruct_mtl", "instruct_mtl_reset", "faithfulness", "unseen", "increase"),
    Claim("6a_reset_without_mtl_if",
          "ReSet applied to the instruct model without MTL first is worse than MTL + ReSet on IF score.",
          SECTION_RESULTS, "instruct_reset", "instruct_mtl_reset", "if", "all", "increase"),
    Claim("6b_reset_without_mtl_faithfulness",
          "ReSet applied to the instruct model without MTL first is worse than MTL + ReSet on faithfulness.",
          SECTION_RESULTS, "instruct_reset", "instruct_mtl_reset", "faithfulness", "all", "increase"),
    Claim("7a_reset_s_if",
          "ReSet-S, with three-fold less curated data (2,000 instead of 8,000 examples), is similar to or "
          "better than ReSet on IF score.", SECTION_RESULTS + "; abstract", "instruct_mtl_reset",
          "instruct_mtl_reset_s", "if", "all", "similar_or_better"),
    Claim("7b_reset_s_faithfulness",
          "ReSet-S, with three-fold less curated data, is similar to or better than ReSet on faithfulness.",
          SECTION_RESULTS + "; abstract", "instruct_mtl_reset", "instruct_mtl_reset_s", "faithfulness", "all",
          "similar_or_better"),
]


# ---------------------------------------------------------------- groups and data


def group_sets(group, metric, seen, unseen):
    """The evaluation sets a claim averages over: those of the group that carry the metric."""
    members = {"all": [*seen, *unseen], "seen": list(seen), "unseen": list(unseen),
               "extractive": [d for d in [*seen, *unseen] if KIND[d] == "extractive_qa"],
               "abstractive": [d for d in [*seen, *unseen] if KIND[d] in ("abstractive_qa", "summarization")]}
    if group not in members:
        raise ValueError(f"unknown dataset group {group!r} (known: {', '.join(GROUPS)})")
    return [d for d in members[group] if metric in tab.applicable(d, [metric])]


def model_label(variant, point=None):
    return f"{variant}@{point}" if point else variant


def load_values(eval_dir, trajectory_dir, labels, seeds, datasets, metrics):
    """{(dataset, metric): (ids, array[n_examples, n_labels, n_seeds])} from the scored parquets.

    labels are variants (read from eval_dir) or "variant@point" (from trajectory_dir). Every
    model and seed must hold the same example ids for a set; a missing score stays NaN.
    """
    import pandas as pd

    columns = sorted({tab.METRIC_COLUMNS[m] for m in metrics})
    frames = []
    for label in labels:
        variant, _, point = label.partition("@")
        root = trajectory_dir if point else eval_dir
        if root is None:
            raise ValueError(f"{label}: a trajectory point needs --trajectory-dir")
        frame = tab.read_eval(root, [variant], seeds, datasets, point=point or None, columns=columns)
        frame["label"] = label
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    out = {}
    for dataset in datasets:
        sub = rows[rows["dataset"] == dataset]
        reference = None
        for (label, seed), frame in sub.groupby(["label", "seed"], sort=False):
            ids = frame["id"].astype(str)
            if ids.duplicated().any():
                raise ValueError(f"{dataset}: {label} seed {seed} repeats example id(s) "
                                 f"{', '.join(ids[ids.duplicated()].head(3))}")
            if reference is None:
                reference, ref_key = sorted(ids), (label, seed)
            elif sorted(ids) != reference:
                diff = sorted(set(ids) ^ set(reference))
                raise ValueError(f"{dataset}: {label} seed {seed} was evaluated on other examples than "
                                 f"{ref_key[0]} seed {ref_key[1]} (e.g. id {diff[0]}); a paired comparison "
                                 "needs the same examples for every model")
        for metric in metrics:
            if metric not in tab.applicable(dataset, [metric]):
                continue
            array = np.full((len(reference), len(labels), len(seeds)), np.nan)
            position = {i: k for k, i in enumerate(reference)}
            for (label, seed), frame in sub.groupby(["label", "seed"], sort=False):
                rows_at = [position[i] for i in frame["id"].astype(str)]
                array[rows_at, labels.index(label), seeds.index(int(seed))] = \
                    frame[tab.METRIC_COLUMNS[metric]].astype(float).to_numpy()
            out[(dataset, metric)] = (reference, array)
    return out


# ---------------------------------------------------------------- bootstrap


def _means(counts, values):
    """Per resample: mean over the drawn examples that have a value. counts [B, n]; values [n, ...]."""
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    sums = np.tensordot(counts, filled, axes=(1, 0))
    weights = np.tensordot(counts, present.astype(float), axes=(1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, sums / np.where(weights > 0, weights, 1.0), np.nan)


def _draw_counts(rng, n, size):
    """How often each of n items is drawn in `size` resamples of n draws with replacement."""
    idx = rng.integers(0, n, size=(size, n))
    flat = (idx + np.arange(size)[:, None] * n).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)


def bootstrap(values, resamples, seed):
    """Resampled per-set means of every model and seed.

    values: {(set, metric): array[n_examples, n_labels, n_seeds]} (keys in a fixed order: the
    draws follow it). Returns (means {key: array[B, n_labels, n_seeds]}, seed weights
    array[B, n_seeds]: how often each seed was drawn). One resample uses the same example draw
    for every metric of a set (keys sharing the set name share it) and one seed draw for all.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    keys = list(values)
    n_seeds = next(iter(values.values())).shape[2] if values else 1
    sets = list(dict.fromkeys(k[0] for k in keys))
    means = {k: [] for k in keys}
    weights = []
    from tqdm import tqdm

    for start in tqdm(range(0, resamples, CHUNK), desc="bootstrap", unit="chunk", mininterval=5):
        size = min(CHUNK, resamples - start)
        weights.append(_draw_counts(rng, n_seeds, size) if n_seeds > 1 else np.ones((size, 1)))
        for name in sets:
            members = [k for k in keys if k[0] == name]
            counts = _draw_counts(rng, values[members[0]].shape[0], size)
            for key in members:
                means[key].append(_means(counts, values[key]))
    return {k: np.concatenate(v) for k, v in means.items()}, np.concatenate(weights)


def point_means(values):
    """The per-set means of the data as it is (every example once, every seed once)."""
    means = {k: _means(np.ones((1, v.shape[0])), v) for k, v in values.items()}
    n_seeds = next(iter(values.values())).shape[2] if values else 1
    return means, np.ones((1, n_seeds))


def macro_effect(means, weights, keys, a, b):
    """b − a of the seed-averaged macro over `keys` (sets), per resample.

    Per seed the macro is the plain mean over the sets (NaN when one is missing, as in the main
    table); over seeds, the weighted mean over the seeds that have a value.
    """
    def macro(label):
        per_seed = np.mean(np.stack([means[k][:, label, :] for k in keys]), axis=0)   # [B, S]
        present = ~np.isnan(per_seed)
        w = weights * present
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.where(present, per_seed, 0.0) * w).sum(axis=1) / w.sum(axis=1)

    return macro(b) - macro(a)


def interval(effects):
    """Percentile interval (95 %) and two-sided p-value for 0 of bootstrap effects (NaN ones dropped)."""
    effects = effects[~np.isnan(effects)]
    if not len(effects):
        return math.nan, math.nan, math.nan, 0
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(effects, [tail, 1 - tail])
    below, above = int((effects <= 0).sum()), int((effects >= 0).sum())
    p = min(1.0, 2 * (1 + min(below, above)) / (len(effects) + 1))
    return float(low), float(high), p, len(effects)


def verdict(rule, low, high, margin):
    """reproduced / contradicted / inconclusive from the interval (see the module docstring)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if rule == "similar_or_better":
        return "reproduced" if low > -margin else "contradicted" if high < -margin else "inconclusive"
    sign = {"increase": 1, "decrease": -1}[rule]
    low, high = sorted((sign * low, sign * high))
    return "reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive"


def claimed_text(rule, margin):
    return {"increase": "b > a", "decrease": "b < a",
            "similar_or_better": f"b − a > −{margin:g} (similar or better)"}[rule]


def explain(rule, result, low, high, margin):
    """Why a verdict was reached, in one sentence (the report quotes it)."""
    width = high - low
    where = f"the 95 % interval [{low:+.3f}, {high:+.3f}] ({width:.3f} wide)"
    if rule == "similar_or_better":
        if result == "reproduced":
            return f"{where} lies above −{margin:g}: b is at worst {margin:g} below a"
        if result == "contradicted":
            return f"{where} lies below −{margin:g}: b is worse than a by more than the margin"
        return f"{where} contains −{margin:g}: too wide to tell whether b is within {margin:g} of a"
    side = "above" if rule == "increase" else "below"
    if result == "reproduced":
        return f"{where} lies {side} 0, the claimed direction"
    if result == "contradicted":
        return f"{where} lies on the other side of 0 than claimed"
    return f"{where} contains 0: too wide to tell the direction"


# ---------------------------------------------------------------- claims table


def check_claims(eval_dir, seeds, seen, unseen, resamples, seed, margin, trajectory_dir=None, claims=CLAIMS):
    """One row per claim (COLUMNS) from the scored evaluation parquets."""
    import pandas as pd

    seeds = [int(s) for s in seeds]
    datasets = [*seen, *unseen]
    usable = [c for c in claims if trajectory_dir is not None or not c.needs_trajectory]
    labels = list(dict.fromkeys(x for c in usable for x in (c.a, c.b)))
    metrics = list(dict.fromkeys(c.metric for c in usable))
    values = load_values(eval_dir, trajectory_dir, labels, seeds, datasets, metrics) if usable else {}
    log.info("bootstrap: %d resamples (seed %d) over %d sets, %d models, %d seed(s)", resamples, seed,
             len(datasets), len(labels), len(seeds))
    arrays = {key: array for key, (_, array) in values.items()}
    boot, weights = bootstrap(arrays, resamples, seed)
    point, ones = point_means(arrays)
    out = []
    for claim in claims:
        members = group_sets(claim.group, claim.metric, seen, unseen)
        keys = [(d, claim.metric) for d in members]
        row = {"claim": claim.id, "statement": claim.statement, "where": claim.where, "variant_a": claim.a,
               "variant_b": claim.b, "metric": claim.metric,
               "datasets": f"{claim.group}: {', '.join(members) if members else 'none'}",
               "claimed": claimed_text(claim.rule, margin), "effect": math.nan, "ci_low": math.nan,
               "ci_high": math.nan, "p_value": math.nan, "n_examples": sum(len(values[k][0]) for k in keys
                                                                           if k in values),
               "n_seeds": len(seeds), "paper_value": claim.paper_value, "verdict": "inconclusive"}
        if claim not in usable:
            row["note"] = "not tested: the run evaluated no checkpoint trajectories (evaluation.trajectories)"
        elif not members:
            row["note"] = (f"not tested: no {claim.group} evaluation set carries the {tab.METRIC_NAMES[claim.metric]} "
                           "(evaluation.seen / evaluation.unseen)")
        else:
            a, b = labels.index(claim.a), labels.index(claim.b)
            effect = float(macro_effect(point, ones, keys, a, b)[0])
            low, high, p, used = interval(macro_effect(boot, weights, keys, a, b))
            result = verdict(claim.rule, low, high, margin)
            row.update(effect=effect, ci_low=low, ci_high=high, p_value=p, verdict=result)
            if math.isnan(effect):
                row["note"] = "no value: a model has no score on one of these sets"
            else:
                row["note"] = explain(claim.rule, result, low, high, margin)
                if used < resamples:
                    row["note"] += f"; {resamples - used} of {resamples} resamples had no value and were dropped"
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


# ---------------------------------------------------------------- formatting


def _num(value, digits=3, signed=True):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def display_rows(frame):
    """Rows of the verdict table as strings: claim, verdict, comparison, effect [CI], p, paper, why."""
    rows = []
    for r in frame.itertuples():
        ci = "–" if math.isnan(r.ci_low) else f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"
        p = "–" if math.isnan(r.p_value) else f"{r.p_value:.3g}"
        rows.append([r.claim, r.verdict, f"{r.variant_a} → {r.variant_b}",
                     f"{tab.METRIC_NAMES[r.metric]} ({r.datasets.split(':')[0]})", r.claimed,
                     _num(r.effect), ci, p, _num(r.paper_value), r.note])
    return rows


DISPLAY_HEADER = ["claim", "verdict", "a → b", "metric (sets)", "claimed", "effect b − a", "95 % CI", "p",
                  "paper", "why"]


def summary_sentence(frame):
    counts = frame["verdict"].value_counts()
    parts = [f"{int(counts.get(v, 0))} {v}" for v in VERDICTS]
    return f"{len(frame)} claims checked: " + ", ".join(parts) + "."


def write_claims(frame, out_dir, caption):
    """claims.csv, claims.md and claims.tex in out_dir (atomically)."""
    out = Path(out_dir)
    with atomic_path(out / "claims.csv") as tmp:
        frame.to_csv(tmp, index=False)
    rows = display_rows(frame)
    md = f"# Reproduction verdicts\n\n{caption}\n\n{summary_sentence(frame)}\n\n" + tab.simple_markdown(
        DISPLAY_HEADER, rows)
    with atomic_path(out / "claims.md") as tmp:
        Path(tmp).write_text(md, encoding="utf-8")
    tex_rows = [row[:-1] for row in rows]  # the reasons are in claims.csv / .md
    tex = tab.simple_latex(DISPLAY_HEADER[:-1], tex_rows, tab.latex_escape(caption), "tab:claims")
    tex = tex.replace("→", r"$\rightarrow$").replace("−", "-").replace(" < ", " $<$ ").replace(" > ", " $>$ ")
    with atomic_path(out / "claims.tex") as tmp:
        Path(tmp).write_text(tex, encoding="utf-8")


# ---------------------------------------------------------------- CLI


def main(argv=None) -> int:
    from reset import captions

    parser = argparse.ArgumentParser(prog="python -m reset.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", required=True, help="results/{exp}/eval (scored parquets of every variant)")
    parser.add_argument("--trajectory-dir", default=None,
                        help="results/{exp}/eval_trajectory (claims on checkpoints; left out: those are not tested)")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--seen", nargs="*", default=[], help="seen evaluation sets (config evaluation.seen)")
    parser.add_argument("--unseen", nargs="*", default=[], help="unseen evaluation sets (config evaluation.unseen)")
    add_flags(parser, Report, only=CLAIM_KEYS, group_title="report keys (docs/config.md)")
    parser.add_argument("--out-dir", required=True, help="tables directory: claims.csv, claims.md, claims.tex")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    unknown = [d for d in [*args.seen, *args.unseen] if d not in KIND]
    if unknown:
        parser.error(f"unknown evaluation set(s) {', '.join(unknown)}")
    rep = from_args(Report, args, where="report")
    frame = check_claims(args.eval_dir, args.seeds, args.seen, args.unseen, rep.bootstrap_resamples, rep.seed,
                         rep.similarity_margin, args.trajectory_dir)
    caption = (f"{captions.text('claims')} Bootstrap: {rep.bootstrap_resamples} resamples, seed {rep.seed}; "
               f"similarity margin {rep.similarity_margin:g}.")
    write_claims(frame, args.out_dir, caption)
    log.info("%s", summary_sentence(frame))
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main, sidecar=False))
