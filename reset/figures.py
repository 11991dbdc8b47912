"""Figures from the result tables (matplotlib, Agg backend, PNG).

Each function takes the long tables written by `reset.report tables` and writes
one PNG atomically. Figures carry their own title, axis labels and legend so
they read without the surrounding text.
"""

from __future__ import annotations

import math

from reset.io import atomic_path
from reset.tables import trajectory_points
from reset.variants import KIND, TWO_STAGE

FAMILY = {
    "instruct": "baseline", "instruct_cd": "baseline", "instruct_mtl": "baseline",
    "instruct_reset": "ReSet", "instruct_mtl_reset": "ReSet", "instruct_mtl_reset_s": "ReSet",
    "base_cd": "two-stage", "base_cd_if": "two-stage",
}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINESTYLES = ["-", "--", ":", "-."]
KIND_LABELS = {"if": "instruction following", "extractive_qa": "extractive QA",
               "abstractive_qa": "abstractive QA", "summarization": "summarization"}
METRIC_TITLES = {"if": "IF score", "faithfulness": "faithfulness", "task": "task score"}
METRIC_COLOURS = {"if": "#1f77b4", "faithfulness": "#2ca02c", "task": "#ff7f0e"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    _pyplot().close(fig)


def _cell(frame, **match):
    hit = frame
    for key, value in match.items():
        hit = hit[hit[key] == value]
    if hit.empty:
        return math.nan, math.nan
    row = hit.iloc[0]
    return float(row["mean"]), float(row["std"])


def _err(std):
    return 0.0 if math.isnan(std) else std


def _floor(values, margin=0.05):
    """Lower axis limit: 0 with a small margin, lower when a score is negative (SummaC-ZS can be)."""
    finite = [v for v in values if not math.isnan(v)]
    return min([0.0, *finite]) - margin


def tradeoff(main, path, experiment=""):
    """IF score (macro over IF sets) against faithfulness (macro over context sets), one point per variant.

    Left: the whole score range with the ideal corner; right: zoomed on the variants, labelled.
    Returns the left panel's axis limits ((x0, x1), (y0, y1)).
    """
    plt = _pyplot()
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(14, 6))
    points = []
    for i, variant in enumerate(dict.fromkeys(main["variant"])):
        faith, faith_sd = _cell(main, variant=variant, dataset="macro_all", metric="faithfulness")
        score, score_sd = _cell(main, variant=variant, dataset="macro_all", metric="if")
        if not (math.isnan(faith) or math.isnan(score)):
            points.append((variant, MARKERS[i % len(MARKERS)], faith, _err(faith_sd), score, _err(score_sd)))
    for axis in (ax, zoom):
        for variant, marker, x, xerr, y, yerr in points:
            axis.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, markersize=9, capsize=3, color=_colour(variant),
                          label=f"{variant} ({FAMILY.get(variant, 'other')})")
        axis.set_xlabel("faithfulness (macro average over context-dependent sets)")
        axis.set_ylabel("instruction-following score (macro average over IF sets)")
        axis.grid(alpha=0.3)
    ax.plot([1.0], [1.0], marker="*", markersize=20, color="gold", markeredgecolor="black", linestyle="none",
            label="ideal (faithful and instruction following)")
    ax.annotate("ideal", (1.0, 1.0), textcoords="offset points", xytext=(-30, -18), fontsize=9)
    ax.set_xlim(_floor([p[2] - p[3] for p in points]), 1.08)
    ax.set_ylim(_floor([p[4] - p[5] for p in points]), 1.08)
    ax.set_title("whole range (star = ideal corner; up and right is better)")
    ax.legend(fontsize=8, loc="lower left")
    if points:
        _zoom_limits(zoom, [p[2] for p in points], [p[3] for p in points], [p[4] for p in points],
                     [p[5] for p in points])
        labels = {}  # variants at the same spot share one label
        for variant, _, x, _, y, _ in points:
            labels.setdefault((round(x, 4), round(y, 4)), []).append(variant)
        # neighbours along x get their labels above and below in turn, so close points stay readable
        for j, ((x, y), names) in enumerate(sorted(labels.items())):
            zoom.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(5, 5 if j % 2 == 0 else -12),
                          fontsize=7)
    else:
        ax.text(0.5, 0.5, "no variant has both scores", ha="center", transform=ax.transAxes)
    zoom.set_title("zoomed on the variants")
    fig.suptitle(f"Instruction following vs faithfulness{_suffix(experiment)} (mean over seeds, bars = std)")
    fig.tight_layout()
    limits = (ax.get_xlim(), ax.get_ylim())
    _save(fig, path)
    return limits


def _zoom_limits(axis, xs, xerrs, ys, yerrs):
    """Limits around the points with their error bars, at least 0.02 wide, with a 15% margin."""
    def span(values, errs):
        low = min(v - e for v, e in zip(values, errs, strict=True))
        high = max(v + e for v, e in zip(values, errs, strict=True))
        pad = max(high - low, 0.02) * 0.15 + max(0.0, 0.02 - (high - low)) / 2
        return low - pad, high + pad

    axis.set_xlim(*span(xs, xerrs))
    axis.set_ylim(*span(ys, yerrs))


def _colour(variant):
    names = list(FAMILY)
    cycle = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[names.index(variant) % len(cycle)] if variant in names else "black"


def two_stage(stages, path, experiment=""):
    """Before / after bars of the two-stage paradigm (CDIF and IFCD), macro averages."""
    plt = _pyplot()
    pipelines = [p for p, _, _ in TWO_STAGE]
    fig, axes = plt.subplots(1, len(pipelines), figsize=(5.5 * len(pipelines), 4.8), sharey=True, squeeze=False)
    metrics = ["if", "faithfulness", "task"]
    labels = {"if": "IF score", "faithfulness": "faithfulness", "task": "task score"}
    width = 0.38
    lowest = []
    for ax, (pipeline, before, after) in zip(axes[0], TWO_STAGE, strict=True):
        frame = stages[stages["pipeline"] == pipeline]
        for offset, role, variant, colour in ((-width / 2, "before", before, "#8da0cb"),
                                              (width / 2, "after", after, "#fc8d62")):
            means, errs = [], []
            for metric in metrics:
                hit = frame[frame["metric"] == metric]
                means.append(float(hit[f"{role}_mean"].iloc[0]) if len(hit) else math.nan)
                errs.append(_err(float(hit[f"{role}_std"].iloc[0])) if len(hit) else 0.0)
            xs = [i + offset for i in range(len(metrics))]
            lowest += [m - e for m, e in zip(means, errs, strict=True)]
            bars = ax.bar(xs, [0 if math.isnan(m) else m for m in means], width, yerr=errs, capsize=3,
                          color=colour, label=f"{role}: {variant}")
            for bar, mean in zip(bars, means, strict=True):
                text = "n/a" if math.isnan(mean) else f"{mean:.2f}"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xticks(range(len(metrics)), [labels[m] for m in metrics])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{pipeline}: {before} → {after}")
        ax.set_ylabel("score (macro average, mean over seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylim(_floor(lowest), 1.1)  # shared y axis
    fig.suptitle(f"Two-stage fine-tuning: scores before and after the second stage{_suffix(experiment)}")
    fig.tight_layout()
    _save(fig, path)


POINT_AXIS = ["first kept\n(stage 2: its start)", "best\n(lowest dev loss)", "last"]


def _present_points(traj):
    return set(zip(traj["variant"], traj["point"], strict=True))


def _trajectory_line(ax, traj, variant, i, dataset, metric, present, label=None, colour=None):
    """One job's three points (start or first, best, last) on x = 0, 1, 2; returns the lowest bar end."""
    points = trajectory_points(variant, present)
    cells = [_cell(traj, variant=variant, point=p, dataset=dataset, metric=metric) for p in points]
    means = [c[0] for c in cells]
    if all(math.isnan(m) for m in means):
        return []
    # distinct dashes and shrinking markers keep overlapping lines visible
    ax.errorbar(range(len(points)), means, yerr=[_err(c[1]) for c in cells], marker=MARKERS[i % len(MARKERS)],
                markersize=9 - 2 * (i % 3), linestyle=LINESTYLES[i % len(LINESTYLES)], capsize=3,
                label=label or variant, color=colour or _colour(variant))
    return [m - _err(c[1]) for m, c in zip(means, cells, strict=True)]


def trajectory(traj, path, experiment=""):
    """IF score, faithfulness and generation length (macro averages) along each two-stage job.

    A second stage starts at the model it was trained from (point "start"), as the paper draws it.
    """
    plt = _pyplot()
    panels = [("if", "IF score (macro, IF sets)"), ("faithfulness", "faithfulness (macro, context sets)"),
              ("n_tokens", "generated tokens (mean, all sets)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4.8), squeeze=False)
    variants = list(dict.fromkeys(traj["variant"]))
    present = _present_points(traj)
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        lowest = []
        for i, variant in enumerate(variants):
            lowest += _trajectory_line(ax, traj, variant, i, "macro_all", metric, present)
        ax.set_xticks(range(3), POINT_AXIS, fontsize=7)
        ax.set_xlabel("checkpoint of the training job")
        ax.set_ylabel(label)
        if metric != "n_tokens":
            ax.set_ylim(_floor(lowest), 1.05)
        ax.set_title(label.split(" (")[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Checkpoint trajectories (mean over seeds, bars = std){_suffix(experiment)}")
    fig.tight_layout()
    _save(fig, path)


def trajectory_sets(traj, path, experiment=""):
    """Per-set panels (the paper's appendix figures): one row per job, one column per evaluation set,
    IF score on IF sets, faithfulness and task score on context-dependent sets."""
    plt = _pyplot()
    variants = list(dict.fromkeys(traj["variant"]))
    order = {k: i for i, k in enumerate(KIND_LABELS)}
    datasets = sorted((d for d in dict.fromkeys(traj["dataset"]) if not d.startswith("macro_")),
                      key=lambda d: order[KIND[d]])
    present = _present_points(traj)
    fig, axes = plt.subplots(len(variants), len(datasets), figsize=(2.4 * len(datasets), 2.7 * len(variants)),
                             squeeze=False, sharey=True)
    styles = {"if": 0, "faithfulness": 1, "task": 2}
    lowest = []
    for row, variant in zip(axes, variants, strict=True):
        for ax, dataset in zip(row, datasets, strict=True):
            metrics = ["if"] if KIND[dataset] == "if" else ["faithfulness", "task"]
            for metric in metrics:
                lowest += _trajectory_line(ax, traj, variant, styles[metric], dataset, metric, present,
                                           label=METRIC_TITLES[metric], colour=METRIC_COLOURS[metric])
            ax.set_title(f"{dataset} ({KIND_LABELS[KIND[dataset]]})", fontsize=8)
            ax.set_xticks(range(3), ["start" if (variant, "start") in present else "first", "best", "last"],
                          fontsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower left")
        row[0].set_ylabel(f"{variant}\nscore", fontsize=9)
    axes[0][0].set_ylim(_floor(lowest), 1.05)
    fig.suptitle(f"Checkpoint trajectories per evaluation set (mean over seeds, bars = std){_suffix(experiment)}")
    fig.tight_layout()
    _save(fig, path)


LENGTH_GROUPS = {"IF sets": ("if",), "extractive QA": ("extractive_qa",),
                 "abstractive QA and summarisation": ("abstractive_qa", "summarization")}


def trajectory_lengths(traj, path, experiment=""):
    """Mean generated tokens along each job, split by task kind (the paper's length figures)."""
    plt = _pyplot()
    variants = list(dict.fromkeys(traj["variant"]))
    present = _present_points(traj)
    frame = traj[(traj["metric"] == "n_tokens") & ~traj["dataset"].str.startswith("macro_")].copy()
    frame["kind"] = frame["dataset"].map(KIND)
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.4), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants, strict=True):
        points = trajectory_points(variant, present)
        for i, (group, kinds) in enumerate(LENGTH_GROUPS.items()):
            sub = frame[(frame["variant"] == variant) & frame["kind"].isin(kinds)]
            if sub.empty:
                continue
            # the mean over the group's sets of each set's mean over seeds
            means = [sub[sub["point"] == p]["mean"].mean() for p in points]
            ax.plot(range(len(points)), means, marker=MARKERS[i], linestyle=LINESTYLES[i], label=group)
        ax.set_xticks(range(3), POINT_AXIS, fontsize=7)
        ax.set_title(variant)
        ax.set_xlabel("checkpoint of the training job")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("generated tokens per answer (mean over sets and seeds)")
    fig.suptitle(f"Generation length along the trajectories, by task kind{_suffix(experiment)}")
    fig.tight_layout()
    _save(fig, path)


def lengths(length_table, path, experiment=""):
    """Mean generation length per variant, by task kind of the evaluation set."""
    plt = _pyplot()
    frame = length_table[~length_table["dataset"].str.startswith("macro_")].copy()
    frame["kind"] = frame["dataset"].map(KIND)
    variants = list(dict.fromkeys(length_table["variant"]))
    kinds = [k for k in KIND_LABELS if k in set(frame["kind"])]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(variants)), 5))
    width = 0.8 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        sub = frame[frame["kind"] == kind]
        means = [sub[sub["variant"] == v]["mean"].mean() for v in variants]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(variants))]
        ax.bar(xs, [0 if math.isnan(m) else m for m in means], width, label=KIND_LABELS[kind])
    ax.set_xticks(range(len(variants)), variants, rotation=25, ha="right")
    ax.set_ylabel("generated tokens per answer (mean over sets and seeds)")
    ax.set_xlabel("model variant")
    ax.set_title(f"Generation length per variant and task kind{_suffix(experiment)}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="evaluation sets", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


def _suffix(experiment):
    return f" — {experiment}" if experiment else ""


VERDICT_COLOURS = {"reproduced": "#1b9e77", "contradicted": "#d95f02", "inconclusive": "#7570b3"}
CLAIMED_LABELS = {"b > a": "claimed > 0", "b < a": "claimed < 0"}


def forest(claims, path, margin, experiment=""):
    """One line per claim (tables/claims.csv): effect b − a and its 95 % interval, zero marked."""
    plt = _pyplot()
    rows = list(claims.itertuples())
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.8))
    for y, r in enumerate(reversed(rows)):
        colour = VERDICT_COLOURS.get(r.verdict, "black")
        if not math.isnan(r.ci_low):
            ax.plot([r.ci_low, r.ci_high], [y, y], color=colour, linewidth=2.5, solid_capstyle="butt")
        if not math.isnan(r.effect):
            ax.plot([r.effect], [y], "o", color=colour, markersize=7)
        else:
            ax.annotate("not tested", (0, y), textcoords="offset points", xytext=(6, -3), fontsize=8, color="grey")
        if str(r.claimed).startswith("b − a >"):
            ax.plot([-margin, -margin], [y - 0.3, y + 0.3], linestyle="--", color="black", linewidth=1)
    claimed = [CLAIMED_LABELS.get(r.claimed, "similar or better") for r in reversed(rows)]
    ax.set_yticks(range(len(rows)), [f"{r.claim}  ({c})" for r, c in zip(reversed(rows), claimed, strict=True)],
                  fontsize=8)
    ax.axvline(0, color="black", linewidth=1)
    for verdict, colour in VERDICT_COLOURS.items():
        ax.plot([], [], "o-", color=colour, label=verdict)
    ax.set_xlabel("effect b − a on the macro average (mean over seeds), 95 % paired bootstrap interval")
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="verdict")
    ax.set_title(f"Reproduction verdicts{_suffix(experiment)}")
    fig.tight_layout()
    _save(fig, path)
