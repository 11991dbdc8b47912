"""Result tables from scored evaluation parquets (SPEC §7).

Aggregation, in two steps so every number can be recomputed by hand:
1. per (variant, seed, dataset, metric): the mean over the dataset's rows that
   have a value (a missing IF rating is NaN and left out, never a 0);
2. per (variant, dataset, metric): mean and sample standard deviation (ddof=1)
   over seeds; with one seed the std is NaN (printed as no ± part).
A macro row (`macro_seen`, `macro_unseen`, `macro_all`) is, per seed, the plain
mean over the datasets of that group that carry the metric (by task kind: IF
score on IF sets, faithfulness and task on context-dependent sets), then mean
and std over seeds like a dataset. A seed missing any of the group's datasets
gives no macro value for that seed.

Layouts: long CSV (the contract), and the paper's wide layout (rows = variants,
columns = datasets grouped seen / unseen, then macro averages) as Markdown,
LaTeX and HTML.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from reset.variants import KIND, TWO_STAGE

log = logging.getLogger(__name__)

# table metric -> column of the scored evaluation parquet
METRIC_COLUMNS = {"if": "if_score", "faithfulness": "faithfulness", "task": "task"}
COVERAGE_COLUMNS = {"unigram_coverage": "unigram_coverage", "bigram_coverage": "bigram_coverage"}
LENGTH_COLUMNS = {"n_tokens": "n_tokens"}
# which metrics a dataset of each kind reports (SPEC §6)
KIND_METRICS = {
    "if": ["if"],
    "extractive_qa": ["faithfulness", "task"],
    "abstractive_qa": ["faithfulness", "task"],
    "summarization": ["faithfulness", "task"],
}
COVERAGE_KINDS = {"extractive_qa"}
MACROS = {"macro_seen": "seen", "macro_unseen": "unseen", "macro_all": "all"}
METRIC_LABELS = {
    "if": "IF", "faithfulness": "Faith.", "task": "Task",
    "unigram_coverage": "Uni.", "bigram_coverage": "Bi.", "n_tokens": "Tokens",
}
METRIC_NAMES = {
    "if": "IF score", "faithfulness": "faithfulness", "task": "task score",
    "unigram_coverage": "unigram coverage", "bigram_coverage": "bigram coverage",
    "n_tokens": "generated tokens",
}
SUMMARY_COLUMNS = ["variant", "dataset", "seen", "metric", "mean", "std", "n_seeds"]


# ---------------------------------------------------------------- reading


def eval_path(root, variant, seed, dataset, point=None) -> Path:
    parts = [variant, f"seed{seed}"] + ([point] if point else []) + [f"{dataset}.parquet"]
    return Path(root).joinpath(*parts)


def read_eval(root, variants, seeds, datasets, point=None, columns=None):
    """Concatenate scored evaluation parquets, adding variant / seed (/ point) columns."""
    import pandas as pd

    wanted = ["id", "dataset", "kind", *(columns or [])]
    frames = []
    for variant in variants:
        for seed in seeds:
            for dataset in datasets:
                path = eval_path(root, variant, seed, dataset, point)
                if not path.exists():
                    raise FileNotFoundError(f"missing evaluation file {path} ({variant}, seed {seed}, {dataset})")
                frame = pd.read_parquet(path)
                missing = [c for c in wanted if c not in frame.columns]
                if missing:
                    raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
                frame = frame[wanted].copy()
                frame["variant"], frame["seed"], frame["dataset"] = variant, int(seed), dataset
                if point:
                    frame["point"] = point
                frames.append(frame)
    if not frames:
        raise ValueError("no evaluation files selected (empty variants, seeds or datasets)")
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- aggregation


def applicable(dataset, metrics):
    """The metrics (of `metrics`) a dataset reports, by its task kind."""
    kind = KIND[dataset]
    if set(metrics) <= set(METRIC_COLUMNS):
        return [m for m in metrics if m in KIND_METRICS[kind]]
    if set(metrics) <= set(COVERAGE_COLUMNS):
        return list(metrics) if kind in COVERAGE_KINDS else []
    return list(metrics)  # lengths: every dataset


def per_seed(rows, metrics, keys=("variant", "seed")):
    """Long frame: keys + dataset, metric, value (mean over rows with a value), n (rows counted)."""
    import pandas as pd

    out = []
    for group, frame in rows.groupby([*keys, "dataset"], sort=False):
        *key_values, dataset = group
        for metric in applicable(dataset, metrics):
            values = frame[metrics[metric]].astype(float)
            values = values[values.notna()]
            if values.empty:
                log.warning("no %s values for %s / %s", metric, dataset, dict(zip(keys, key_values, strict=True)))
            out.append({**dict(zip(keys, key_values, strict=True)), "dataset": dataset, "metric": metric,
                        "value": float(values.mean()) if len(values) else math.nan, "n": int(len(values))})
    return pd.DataFrame(out, columns=[*keys, "dataset", "metric", "value", "n"])


def add_macros(seed_frame, seen, unseen, keys=("variant", "seed")):
    """Append macro_seen / macro_unseen / macro_all rows (per seed: mean over the group's datasets)."""
    import pandas as pd

    groups = {"macro_seen": list(seen), "macro_unseen": list(unseen), "macro_all": [*seen, *unseen]}
    out = []
    for group, frame in seed_frame.groupby([*keys, "metric"], sort=False):
        *key_values, metric = group
        values = dict(zip(frame["dataset"], frame["value"], strict=True))
        for macro, members in groups.items():
            members = [d for d in members if metric in applicable(d, [metric])]
            if not members:
                continue
            got = [values.get(d, math.nan) for d in members]
            value = math.nan if any(math.isnan(v) for v in got) else sum(got) / len(got)
            out.append({**dict(zip(keys, key_values, strict=True)), "dataset": macro, "metric": metric,
                        "value": value, "n": len(members)})
    return pd.concat([seed_frame, pd.DataFrame(out, columns=seed_frame.columns)], ignore_index=True)


def seen_label(dataset, seen):
    if dataset in MACROS:
        return MACROS[dataset]
    return "seen" if dataset in seen else "unseen"


def mean_std(values):
    """Mean and sample std (ddof=1) of the finite values; std is NaN for fewer than two."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, 1
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var), len(values)


def summarize(seed_frame, seen, keys=("variant",)):
    """Mean / std / n_seeds over seeds for each keys + (dataset, metric)."""
    import pandas as pd

    out = []
    for group, frame in seed_frame.groupby([*keys, "dataset", "metric"], sort=False):
        *key_values, dataset, metric = group
        mean, std, n = mean_std(frame["value"])
        out.append({**dict(zip(keys, key_values, strict=True)), "dataset": dataset, "seen": seen_label(dataset, seen),
                    "metric": metric, "mean": mean, "std": std, "n_seeds": n})
    return pd.DataFrame(out, columns=[*keys, "dataset", "seen", "metric", "mean", "std", "n_seeds"])


def order_rows(frame, variants, datasets, metrics, points=None):
    """Sort rows by variant order, (trajectory point,) dataset order (macros last), metric order."""
    rank = {
        "variant": {v: i for i, v in enumerate(variants)},
        "point": {p: i for i, p in enumerate(points or [])},
        "dataset": {d: i for i, d in enumerate([*datasets, *MACROS])},
        "metric": {m: i for i, m in enumerate(metrics)},
    }
    by = ["variant", "point", "dataset", "metric"] if points else ["variant", "dataset", "metric"]
    key = frame.apply(lambda r: tuple(rank[c][r[c]] for c in by), axis=1)
    return frame.loc[key.sort_values().index].reset_index(drop=True)


def main_results(rows, variants, seen, unseen):
    """The SPEC §7 table (long): every variant × dataset × metric, plus the macro rows."""
    seeds = per_seed(rows, METRIC_COLUMNS)
    seeds = add_macros(seeds, seen, unseen)
    summary = summarize(seeds, seen)
    return order_rows(summary, variants, [*seen, *unseen], list(METRIC_COLUMNS))[SUMMARY_COLUMNS], seeds


def coverage_results(rows, variants, seen, unseen):
    """Unigram / bigram coverage on the extractive sets (appendix table)."""
    seeds = per_seed(rows, COVERAGE_COLUMNS)
    summary = summarize(seeds, seen)
    return order_rows(summary, variants, [*seen, *unseen], list(COVERAGE_COLUMNS))[SUMMARY_COLUMNS]


def length_results(rows, variants, seen, unseen):
    """Mean generated tokens per variant and dataset (macros over every dataset of the group)."""
    seeds = add_macros(per_seed(rows, LENGTH_COLUMNS), seen, unseen)
    summary = summarize(seeds, seen)
    return order_rows(summary, variants, [*seen, *unseen], list(LENGTH_COLUMNS))[SUMMARY_COLUMNS]


def two_stage_results(summary, seed_frame):
    """Before / after each stage of the two-stage paradigm, on the macro_all of each metric."""
    import pandas as pd

    out = []
    for pipeline, before, after in TWO_STAGE:
        for metric in METRIC_COLUMNS:
            cells = {}
            for role, variant in (("before", before), ("after", after)):
                hit = summary[(summary.variant == variant) & (summary.dataset == "macro_all")
                              & (summary.metric == metric)]
                cells[role] = hit.iloc[0] if len(hit) else None
            if cells["before"] is None or cells["after"] is None:
                continue
            out.append({
                "pipeline": pipeline, "metric": metric, "dataset": "macro_all",
                "before": before, "before_mean": cells["before"]["mean"], "before_std": cells["before"]["std"],
                "after": after, "after_mean": cells["after"]["mean"], "after_std": cells["after"]["std"],
                "delta": cells["after"]["mean"] - cells["before"]["mean"],
                "n_seeds": int(min(cells["before"]["n_seeds"], cells["after"]["n_seeds"])),
            })
    return pd.DataFrame(out, columns=["pipeline", "metric", "dataset", "before", "before_mean", "before_std",
                                      "after", "after_mean", "after_std", "delta", "n_seeds"])


TRAJECTORY_POINTS = ["first", "best", "last"]
# "start": for a second stage, the model it started from (reset.variants.STAGE2_START)
POINT_ORDER = ["start", *TRAJECTORY_POINTS]


def trajectory_points(variant, present):
    """The three points drawn for a job: start / best / last for a second stage, else first / best / last."""
    return ["start", "best", "last"] if (variant, "start") in present else TRAJECTORY_POINTS


def trajectory_results(rows, variants, seen, unseen):
    """Scores and lengths of the (start,) first / best / last checkpoints (datasets and macros)."""
    import pandas as pd

    keys = ("variant", "point", "seed")
    scores = add_macros(per_seed(rows, METRIC_COLUMNS, keys), seen, unseen, keys)
    lengths = add_macros(per_seed(rows, LENGTH_COLUMNS, keys), seen, unseen, keys)
    summary = summarize(pd.concat([scores, lengths], ignore_index=True), seen, keys=("variant", "point"))
    metrics = [*METRIC_COLUMNS, *LENGTH_COLUMNS]
    summary = order_rows(summary, variants, [*seen, *unseen], metrics, points=POINT_ORDER)
    return summary[["variant", "point", *SUMMARY_COLUMNS[1:]]]


# ---------------------------------------------------------------- formatting


def fmt(mean, std, digits=3):
    """'0.512 ± 0.034', or '0.512' without a std, or '–' without a value."""
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class Column:
    group: str      # "Seen", "Unseen" or "Overall"
    dataset: str
    metric: str


@dataclass
class WideTable:
    """Rows = variants; columns grouped (group -> dataset -> metric); cells (mean, std)."""

    columns: list
    variants: list
    cells: dict          # (variant, dataset, metric) -> (mean, std)
    digits: int = 3

    def value(self, variant, col):
        return self.cells.get((variant, col.dataset, col.metric), (math.nan, math.nan))

    def best(self, col):
        """The variants with the highest mean in a column (several on a tie; none when all tie)."""
        means = {v: self.value(v, col)[0] for v in self.variants}
        finite = [m for m in means.values() if not math.isnan(m)]
        if len(finite) < 2:
            return set()
        top = round(max(finite), self.digits)
        if round(min(finite), self.digits) == top:
            return set()  # every variant ties: nothing stands out
        return {v for v, m in means.items() if not math.isnan(m) and round(m, self.digits) == top}

    def text(self, variant, col):
        return fmt(*self.value(variant, col), digits=self.digits)

    def spans(self, attr):
        """Consecutive runs of columns sharing `attr` (for grouped headers): [(label, width)]."""
        runs = []
        for col in self.columns:
            key = getattr(col, attr) if attr == "group" else (col.group, col.dataset)
            if runs and runs[-1][0] == key:
                runs[-1][1] += 1
            else:
                runs.append([key, 1])
        return [(key if attr == "group" else key[1], width) for key, width in runs]


def wide_table(summary, variants, seen, unseen, metrics, macros=True, digits=3):
    """The paper's layout from a long summary (main results or coverage)."""
    cells = {(r.variant, r.dataset, r.metric): (r.mean, r.std) for r in summary.itertuples()}
    present = {(r.dataset, r.metric) for r in summary.itertuples()}
    columns = []
    for group, datasets in (("Seen", seen), ("Unseen", unseen)):
        for dataset in datasets:
            columns += [Column(group, dataset, m) for m in metrics if (dataset, m) in present]
    if macros:
        for macro in MACROS:
            columns += [Column("Overall", macro, m) for m in metrics if (macro, m) in present]
    variants = [v for v in variants if any(key[0] == v for key in cells)]
    return WideTable(columns, variants, cells, digits)


def dataset_label(name):
    return {"macro_seen": "macro seen", "macro_unseen": "macro unseen", "macro_all": "macro all"}.get(name, name)


def to_markdown(table: WideTable) -> str:
    """Markdown: one header row 'dataset metric'; unseen dataset names in italics; best in bold."""
    def head(col):
        name = dataset_label(col.dataset)
        name = f"*{name}*" if col.group == "Unseen" else name
        return f"{name} {METRIC_LABELS[col.metric]}"

    lines = ["| variant | " + " | ".join(head(c) for c in table.columns) + " |",
             "|---|" + "---:|" * len(table.columns)]
    best = [table.best(c) for c in table.columns]
    for variant in table.variants:
        cells = [f"**{table.text(variant, c)}**" if variant in b else table.text(variant, c)
                 for c, b in zip(table.columns, best, strict=True)]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def to_latex(table: WideTable, caption: str, label: str) -> str:
    """booktabs table with grouped headers (group / dataset / metric); best per column in bold."""
    n = len(table.columns)
    out = [r"\begin{table*}[t]", r"\centering", r"\resizebox{\linewidth}{!}{%",
           r"\begin{tabular}{l" + "c" * n + "}", r"\toprule"]
    row, rules, start = [""], [], 2
    for group, width in table.spans("group"):
        row.append(rf"\multicolumn{{{width}}}{{c}}{{{group}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    out += [" & ".join(row) + r" \\", " ".join(rules)]
    row, rules, start = [""], [], 2
    for (dataset, width), col0 in zip(table.spans("dataset"), _first_of_runs(table), strict=True):
        name = latex_escape(dataset_label(dataset))
        name = rf"\textit{{{name}}}" if col0.group == "Unseen" else name
        row.append(rf"\multicolumn{{{width}}}{{c}}{{{name}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    out += [" & ".join(row) + r" \\", " ".join(rules)]
    out.append(" & ".join(["Model", *[METRIC_LABELS[c.metric] for c in table.columns]]) + r" \\")
    out.append(r"\midrule")
    best = [table.best(c) for c in table.columns]
    for variant in table.variants:
        cells = []
        for col, top in zip(table.columns, best, strict=True):
            text = table.text(variant, col).replace("±", r"$\pm$").replace("–", "--")
            cells.append(rf"\textbf{{{text}}}" if variant in top else text)
        out.append(" & ".join([latex_escape(variant), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table*}"]
    return "\n".join(out) + "\n"


def _first_of_runs(table):
    firsts, previous = [], None
    for col in table.columns:
        if (col.group, col.dataset) != previous:
            firsts.append(col)
            previous = (col.group, col.dataset)
    return firsts


def to_html(table: WideTable) -> str:
    """HTML with three header rows (group, dataset, metric)."""
    esc = html.escape
    out = ['<table class="results">', "<thead>"]
    out.append('<tr><th rowspan="3">variant</th>' + "".join(
        f'<th colspan="{w}">{esc(g)}</th>' for g, w in table.spans("group")) + "</tr>")
    cells = []
    for (dataset, width), col0 in zip(table.spans("dataset"), _first_of_runs(table), strict=True):
        name = esc(dataset_label(dataset))
        cells.append(f'<th colspan="{width}">' + (f"<i>{name}</i>" if col0.group == "Unseen" else name) + "</th>")
    out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{esc(METRIC_LABELS[c.metric])}</th>" for c in table.columns) + "</tr>")
    out += ["</thead>", "<tbody>"]
    best = [table.best(c) for c in table.columns]
    for variant in table.variants:
        tds = []
        for col, top in zip(table.columns, best, strict=True):
            text = esc(table.text(variant, col))
            tds.append(f"<td><b>{text}</b></td>" if variant in top else f"<td>{text}</td>")
        out.append(f"<tr><th>{esc(variant)}</th>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out) + "\n"


def two_stage_rows(frame, digits=3):
    """Rows for the two-stage table: pipeline, metric, before, after, delta (strings)."""
    rows = []
    for r in frame.itertuples():
        rows.append([r.pipeline, METRIC_NAMES[r.metric],
                     f"{r.before}: {fmt(r.before_mean, r.before_std, digits)}",
                     f"{r.after}: {fmt(r.after_mean, r.after_std, digits)}",
                     "–" if math.isnan(r.delta) else f"{r.delta:+.{digits}f}"])
    return rows


TWO_STAGE_HEADER = ["pipeline", "metric (macro over all sets)", "before", "after", "Δ"]


def simple_markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def simple_latex(header, rows, caption, label) -> str:
    def cell(text):
        return latex_escape(str(text)).replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")

    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
           " & ".join(cell(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(cell(c) for c in row) + r" \\" for row in rows]
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def simple_html(header, rows) -> str:
    esc = html.escape
    out = ['<table class="results">', "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>",
           "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    out += ["</tbody>", "</table>"]
    return "\n".join(out) + "\n"


