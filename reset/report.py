"""Result tables, figures, provenance and the self-contained HTML report.

Subcommands (every path explicit; Snakemake calls them from rules/report.smk):
  tables       scored eval parquets -> tables/main_results.{csv,md,tex}, main_results_by_seed.csv,
               two_stage.{csv,md,tex}, coverage.{csv,md,tex}, lengths.csv
  trajectory   scored first/best/last checkpoint parquets (+ a second stage's start) -> tables/trajectory.csv
  examples     seeded example generations of every variant side by side -> tables/examples.csv
  figures      tables -> figures/tradeoff.png, two_stage.png, lengths.png
  figure-trajectory  tables/trajectory.csv -> figures/trajectory{,_sets,_lengths}.png
  figure-claims      tables/claims.csv (python -m reset.claims) -> figures/claims_forest.png
  provenance   config, git commit, package versions, sources with sha256, seeds, hardware -> JSON
  html         tables + figures + provenance -> report.html (figures embedded, no external files)
  show         print the main table of results/{experiment} and where its report is
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import sys
from pathlib import Path

from reset import captions
from reset import figures as figs
from reset import tables as tab
from reset.io import atomic_path
from reset.settings import Report, add_flags, from_args
from reset.variants import STAGE2_START, VARIANTS

log = logging.getLogger(__name__)

# Captions: one source, report/*.rst (reset.captions), shared with Snakemake's report.
FIGURES = {"claims_forest": "claims_forest.png", "tradeoff": "tradeoff.png", "two_stage": "two_stage.png",
           "trajectory": "trajectory.png", "trajectory_sets": "trajectory_sets.png",
           "trajectory_lengths": "trajectory_lengths.png", "lengths": "lengths.png"}


# ---------------------------------------------------------------- ReSet data and seen/unseen notes
# (the choices behind them: docs/decisions.md, "ReSet sampling, candidate judges and curation"
# and "Evaluation, tables and report")


def seen_unseen_note(seen, unseen):
    """The seen/unseen assignment of the evaluation sets (config evaluation.seen / unseen), for table captions."""
    from reset.variants import KIND, SPLITS

    trained = [d for d in seen if "train" in SPLITS.get(d, [])]
    held_out_if = [d for d in seen if d not in trained and KIND.get(d) == "if"]
    other = [d for d in seen if d not in trained and d not in held_out_if]
    parts = []
    if trained:
        parts.append(f"{', '.join(trained)} (training split fine-tuned on)")
    if held_out_if:
        parts.append(f"{', '.join(held_out_if)} (instruction following: the task of the IF training sets, "
                     "scored by the judge that ranked ReSet's data; their instructions held out)")
    if other:
        parts.append(", ".join(other))
    return f"Seen sets: {'; '.join(parts) or 'none'}. Unseen sets: {', '.join(unseen) or 'none'}."


def read_curation_summaries(paths):
    """The curate step's summaries ({name}_summary.json), in the order given."""
    return [json.loads(Path(p).read_text()) for p in paths or []]


def reset_data_note(summaries):
    """How ReSet's curated data was collected (shared or per seed) and what the cut-off policy was."""
    if not summaries:
        return ""
    data = [s.get("data") or {} for s in summaries]
    modes = {d.get("mode") for d in data}
    if modes == {"per_seed"}:
        seeds = sorted({d["source_seed"] for d in data if d.get("source_seed") is not None})
        text = (f"ReSet data collected per seed: each seed's instruct_mtl (seeds {', '.join(map(str, seeds))}) "
                "sampled, was judged and curated, and that seed's ReSet variants trained on its own set, so the "
                "spread over seeds includes the data collection.")
    elif modes == {"shared"}:
        source = data[0].get("source_seed")
        text = (f"ReSet data collected once, from instruct_mtl of seed {source}, and used by every seed's ReSet "
                "variants: their spread over seeds covers the continued fine-tuning, not the data collection.")
    else:
        text = "ReSet data collection mode not recorded."
    allowed = {s.get("allow_truncated") for s in summaries}
    if allowed == {False}:
        text += " Candidates cut off at the generation cap were not ranked."
    elif True in allowed:
        text += " Candidates cut off at the generation cap were ranked (curation.allow_truncated)."
    return text


def _curation_html(summaries):
    """Per curated set and pool: candidates, cut-off ones, examples dropped and why, examples kept."""
    if not summaries:
        return ""
    rows = []
    for s in summaries:
        data = s.get("data") or {}
        where = f"seed {data['source_seed']}" if data.get("source_seed") is not None else "–"
        for pool, c in s.get("pools", {}).items():
            rows.append([s["name"], data.get("mode", "–"), where, pool, c.get("examples", "–"),
                         c.get("candidates", "–"), c.get("cut_off", "–"), c.get("dropped_no_complete", "–"),
                         c.get("dropped_no_score", "–"), c.get("kept", "–"), c.get("kept_cut_off", "–")])
    return ("<h2>ReSet curated data</h2><p class=caption>" + html.escape(reset_data_note(summaries))
            + " " + captions.html("curation") + "</p><div class=scroll>"
            + tab.simple_html(["set", "mode", "sampled by", "pool", "examples", "candidates", "cut off",
                               "dropped: no complete", "dropped: no score", "kept", "kept cut off"], rows)
            + "</div>")


# ---------------------------------------------------------------- tables


def _write_text(text, path):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_csv(frame, path):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_tables(eval_dir, variants, seeds, seen, unseen, out_dir, experiment="", curation=()):
    """All tables computed from the main evaluation (not the trajectories); curation: summary dicts."""
    # the fixed caption (report/*.rst) plus what this run decided: the seen/unseen sets, the ReSet data collection
    main_notes = " ".join(filter(None, [seen_unseen_note(seen, unseen), reset_data_note(curation)]))
    coverage_notes = seen_unseen_note(seen, unseen)
    datasets = [*seen, *unseen]
    columns = [*tab.METRIC_COLUMNS.values(), *tab.COVERAGE_COLUMNS.values(), *tab.LENGTH_COLUMNS.values()]
    rows = tab.read_eval(eval_dir, variants, seeds, datasets, columns=columns)
    out = Path(out_dir)
    main, by_seed = tab.main_results(rows, variants, seen, unseen)
    _write_csv(main, out / "main_results.csv")
    _write_csv(by_seed, out / "main_results_by_seed.csv")
    wide = tab.wide_table(main, variants, seen, unseen, list(tab.METRIC_COLUMNS))
    title = f"Main results{f' ({experiment})' if experiment else ''}"
    _write_text(f"# {title}\n\n{captions.text('main_results')} {main_notes}\n\n" + tab.to_markdown(wide),
                out / "main_results.md")
    _write_text(tab.to_latex(wide, f"{captions.latex('main_results')} {tab.latex_escape(main_notes)}",
                             "tab:main_results"), out / "main_results.tex")

    stages = tab.two_stage_results(main, by_seed)
    _write_csv(stages, out / "two_stage.csv")
    rows2 = tab.two_stage_rows(stages)
    _write_text(f"# Two-stage paradigm\n\n{captions.text('two_stage_table')}\n\n"
                + tab.simple_markdown(tab.TWO_STAGE_HEADER, rows2), out / "two_stage.md")
    _write_text(tab.simple_latex(tab.TWO_STAGE_HEADER, rows2, captions.latex("two_stage_table"), "tab:two_stage"),
                out / "two_stage.tex")

    coverage = tab.coverage_results(rows, variants, seen, unseen)
    _write_csv(coverage, out / "coverage.csv")
    wide = tab.wide_table(coverage, variants, seen, unseen, list(tab.COVERAGE_COLUMNS), macros=False)
    _write_text(f"# N-gram coverage (extractive QA)\n\n{captions.text('coverage')} {coverage_notes}\n\n"
                + tab.to_markdown(wide), out / "coverage.md")
    _write_text(tab.to_latex(wide, f"{captions.latex('coverage')} {tab.latex_escape(coverage_notes)}",
                             "tab:coverage"), out / "coverage.tex")

    _write_csv(tab.length_results(rows, variants, seen, unseen), out / "lengths.csv")
    log.info("tables: %d rows in main_results.csv from %d evaluation rows", len(main), len(rows))
    return main


def write_trajectory_table(eval_dir, variants, seeds, seen, unseen, out, start_eval_dir=None):
    """tables/trajectory.csv; with start_eval_dir (the main evaluation) a second stage also gets
    the point "start": the main evaluation of the variant it was trained from (STAGE2_START)."""
    import pandas as pd

    columns = [*tab.METRIC_COLUMNS.values(), *tab.LENGTH_COLUMNS.values()]
    datasets = [*seen, *unseen]
    frames = [tab.read_eval(eval_dir, variants, seeds, datasets, point=p, columns=columns)
              for p in tab.TRAJECTORY_POINTS]
    if start_eval_dir is not None:
        for variant in variants:
            if variant in STAGE2_START:
                frame = tab.read_eval(start_eval_dir, [STAGE2_START[variant]], seeds, datasets, columns=columns)
                frames.append(frame.assign(variant=variant, point="start"))
    frame = tab.trajectory_results(pd.concat(frames, ignore_index=True), variants, seen, unseen)
    _write_csv(frame, out)
    return frame


# ---------------------------------------------------------------- figures


def write_figures(tables_dir, out_dir, experiment=""):
    import pandas as pd

    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    main = pd.read_csv(tables_dir / "main_results.csv")
    figs.tradeoff(main, out_dir / "tradeoff.png", experiment)
    figs.two_stage(pd.read_csv(tables_dir / "two_stage.csv"), out_dir / "two_stage.png", experiment)
    figs.lengths(pd.read_csv(tables_dir / "lengths.csv"), out_dir / "lengths.png", experiment)


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1400px;
     padding:0 1em;color:#222}
h1,h2,h3{font-weight:600} .caption{color:#444;font-size:.92em;max-width:70em}
table.results{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.82em}
table.results th,table.results td{border:1px solid #ccc;padding:.25em .5em;text-align:center;white-space:nowrap}
table.results thead th{background:#f2f2f2} table.results tbody th{text-align:left;background:#fafafa}
.scroll{overflow-x:auto} figure{margin:1em 0 2em} figure img{max-width:100%;border:1px solid #ddd}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em} code{font-size:.9em}
table.claims td:last-child{white-space:normal;text-align:left;min-width:24em}
table.examples td{white-space:pre-wrap;text-align:left;max-width:60em} .example{margin:0 0 1.5em}
.example p{white-space:pre-wrap}
"""


def _figure_html(path, name, number):
    """An embedded PNG with its caption report/{name}.rst."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(captions.text(name))}" src="data:image/png;base64,{data}">'
            f"<figcaption class=caption><b>Figure {number}.</b> {captions.html(name)}</figcaption></figure>")


def _kv_table(pairs):
    rows = [[k, "–" if v is None else v] for k, v in pairs]
    return tab.simple_html(["", ""], rows).replace("<thead><tr><th></th><th></th></tr></thead>", "")


def _jobs_html(jobs):
    """One row per job sidecar: what ran where, how long, how much memory, with which settings."""
    rows = []
    for job in jobs:
        host = job.get("host", {})
        gpus = host.get("gpus") or []
        gpu = f"{len(gpus)}× {gpus[0]}" if gpus else "none"
        memory = job.get("peak_memory", {})
        peak = max(memory.get("rss_mb") or 0, memory.get("children_rss_mb") or 0)
        wall = job.get("wall_seconds")
        rows.append([job.get("job") or "?", job.get("output") or job.get("sidecar", ""),
                     host.get("hostname") or job.get("error", "?"), gpu,
                     "–" if wall is None else f"{wall:.1f}",
                     f"{peak:.0f}" + (f" (GPU {memory['gpu_mb']:.0f})" if memory.get("gpu_mb") else ""),
                     (job.get("git") or {}).get("commit", "")[:10] if (job.get("git") or {}).get("commit") else "–",
                     job.get("settings_hash", "–")])
    return ("<h3>Jobs</h3><p class=caption>Every computing job's provenance sidecar (the job's output + "
            "<code>.provenance.json</code>): the host and GPUs it ran on, wall time in seconds, peak resident "
            "memory in MiB and the hash of the settings it ran with. The sidecars also hold CPU, CUDA, driver, "
            "package versions, the command and the revision of every model and dataset read.</p>"
            "<div class=scroll>" + tab.simple_html(["job", "output", "host", "GPU", "wall s", "peak MiB",
                                                     "commit", "settings hash"], rows) + "</div>")


def _provenance_html(prov):
    esc = html.escape
    parts = ["<h2>Provenance</h2>"]
    git = prov.get("git", {})
    commit = git.get("commit") or f"unknown ({git.get('note', '')})"
    dirty = git.get("dirty")
    parts.append(f"<p>Created {esc(prov.get('created', ''))} from git commit <code>{esc(commit)}</code>"
                 + (f" with {len(git.get('changed_files', []))} uncommitted change(s)" if dirty else "")
                 + ".</p>")
    parts.append("<h3>Seeds</h3>" + _kv_table([(k, json.dumps(v) if not isinstance(v, str) else v)
                                                 for k, v in prov.get("seeds", {}).items()]))
    parts.append(_jobs_html(prov.get("jobs", [])))
    host = prov.get("report_host", {})
    parts.append("<h3>Report host</h3><p class=caption>The machine and interpreter that built this report "
                 "(not where the jobs above ran).</p>"
                 + _kv_table([("hostname", host.get("hostname"))]
                             + [(k, json.dumps(v) if isinstance(v, list) else v)
                                for k, v in host.get("hardware", {}).items()]))
    parts.append("<h3>Package versions (report host)</h3>" + _kv_table(sorted(host.get("packages", {}).items())))
    rows = []
    for role, entry in prov.get("models", {}).items():
        files = entry.get("files") or []
        if files:
            for f in files:
                rows.append([role, entry["source"], entry.get("kind", ""), f["path"], f["bytes"], f["sha256"]])
        else:
            rows.append([role, entry["source"], entry.get("kind", ""), entry.get("revision") or
                         entry.get("base_url") or entry.get("note") or "", "", ""])
    parts.append("<h3>Model sources</h3><div class=scroll>"
                 + tab.simple_html(["role", "source", "kind", "file / revision", "bytes", "sha256"], rows) + "</div>")
    rows = []
    reports = prov.get("filter_reports", {})
    for name, entry in prov.get("datasets", {}).items():
        rep = reports.get(name, {})
        kept = f"{rep.get('kept', '–')} / {rep.get('read', '–')}"
        for split, src in entry["splits"].items():
            for f in src.get("files") or [{"path": f"hub (name={src.get('name')}, split={src.get('split')}, "
                                                    f"revision={src.get('revision')})", "bytes": "", "sha256": ""}]:
                rows.append([name, split, src["source"], f["path"], f["bytes"], f["sha256"], kept])
    parts.append("<h3>Dataset sources</h3><p class=caption>kept / read: rows the filters kept out of the rows "
                 "read (filter_report.json).</p><div class=scroll>"
                 + tab.simple_html(["dataset", "split", "source", "file", "bytes", "sha256", "kept / read"], rows)
                 + "</div>")
    import yaml

    parts.append("<h3>Configuration used</h3><pre>"
                 + esc(yaml.safe_dump(prov.get("config", {}), sort_keys=False, allow_unicode=True)) + "</pre>")
    return "\n".join(parts)


def _trajectory_html(traj):
    rows = []
    for (variant, point), frame in traj[traj["dataset"] == "macro_all"].groupby(["variant", "point"], sort=False):
        cells = {r.metric: tab.fmt(r.mean, r.std, 1 if r.metric == "n_tokens" else 3) for r in frame.itertuples()}
        rows.append([variant, point, *[cells.get(m, "–") for m in ("if", "faithfulness", "task", "n_tokens")]])
    return tab.simple_html(["variant", "checkpoint", "IF (macro)", "faithfulness (macro)", "task (macro)",
                            "generated tokens"], rows)


def why_inconclusive(claims_frame):
    """One paragraph on the inconclusive verdicts: how wide their intervals are against their effects."""
    import math

    import numpy as np

    tested = claims_frame[claims_frame["ci_low"].notna()]
    open_rows = tested[tested["verdict"] == "inconclusive"]
    if open_rows.empty:
        return ""
    widths = (open_rows["ci_high"] - open_rows["ci_low"]).to_numpy()
    effects = open_rows["effect"].abs().to_numpy()
    examples = int(np.median(open_rows["n_examples"]))
    seeds = int(open_rows["n_seeds"].max())
    text = (f"{len(open_rows)} of {len(tested)} tested claims are inconclusive because their 95 % intervals are "
            f"wide: a median {np.median(widths):.3f} against a median effect of {np.median(effects):.3f} "
            f"(from about {examples} examples per comparison and {seeds} seed{'s' if seeds != 1 else ''}). "
            "Intervals narrow roughly as one over the square root of the number of examples, so more evaluation "
            "examples (data.eval_cap_if, data.eval_cap_context) and more seeds are what would settle them")
    # the half-width shrinks as 1/sqrt(n): it falls below the median effect at (half-width / effect)^2 times n
    ratio = np.median(widths) / 2 / max(np.median(effects), 1e-9)
    if math.isfinite(ratio) and ratio > 1:
        text += (f"; at this spread an effect of the median size would need about {math.ceil(ratio ** 2)}× the "
                 "examples for its interval to exclude 0")
    return text + "."


def _claims_html(claims_frame):
    from reset import claims as cl

    colours = {"reproduced": "#d9f2e6", "contradicted": "#fde0cf", "inconclusive": "#e8e6f3"}
    rows = cl.display_rows(claims_frame)
    table = tab.simple_html(cl.DISPLAY_HEADER, rows).replace('<table class="results">', '<table class="results claims">')
    for verdict, colour in colours.items():
        table = table.replace(f"<td>{verdict}</td>", f'<td style="background:{colour}"><b>{verdict}</b></td>')
    return table


def write_html(tables_dir, figures_dir, provenance, out, experiment, trajectory=True, curation=()):
    import pandas as pd

    from reset import claims as cl
    from reset import examples as ex

    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    prov = json.loads(Path(provenance).read_text())
    config = prov.get("config", {})
    seen, unseen = config["evaluation"]["seen"], config["evaluation"]["unseen"]
    settings = config.get("report", {})
    variants = list(VARIANTS)
    main = pd.read_csv(tables_dir / "main_results.csv")
    coverage = pd.read_csv(tables_dir / "coverage.csv")
    stages = pd.read_csv(tables_dir / "two_stage.csv")
    claims_frame = pd.read_csv(tables_dir / "claims.csv")
    numbers = {"table": 0, "figure": 0}

    def table(name, content, extra=""):
        numbers["table"] += 1
        return (f"<p class=caption><b>Table {numbers['table']}.</b> {captions.html(name)}{extra}</p>"
                f"<div class=scroll>{content}</div>")

    def figure(name):
        numbers["figure"] += 1
        return _figure_html(figures_dir / FIGURES[name], name, numbers["figure"])

    esc = html.escape
    body = [f"<h1>ReSet pipeline — results of experiment <code>{esc(experiment)}</code></h1>",
            "<p class=caption>Reproduction of “Dancing in Chains: Reconciling Instruction Following and "
            "Faithfulness in Language Models” (ReSet). Every number below is recomputable from "
            f"<code>results/{esc(experiment)}/eval/</code> (see tables/main_results_by_seed.csv and, for the "
            "verdicts, the procedure in docs/results.md).</p>",
            "<h2>Reproduction verdicts</h2>",
            f"<p><b>{esc(cl.summary_sentence(claims_frame))}</b> {esc(why_inconclusive(claims_frame))}</p>",
            table("claims", _claims_html(claims_frame),
                  esc(f" Bootstrap: {settings.get('bootstrap_resamples', '?')} resamples, seed "
                      f"{settings.get('seed', '?')}; similarity margin {settings.get('similarity_margin', '?')}.")),
            figure("claims_forest"),
            "<h2>Main results</h2>",
            table("main_results", tab.to_html(tab.wide_table(main, variants, seen, unseen, list(tab.METRIC_COLUMNS))),
                  esc(" ".join(filter(None, ["", seen_unseen_note(seen, unseen), reset_data_note(curation)])))),
            figure("tradeoff"),
            "<h2>Two-stage paradigm</h2>",
            table("two_stage_table", tab.simple_html(tab.TWO_STAGE_HEADER, tab.two_stage_rows(stages))),
            figure("two_stage")]
    if trajectory:
        body += ["<h2>Checkpoint trajectories</h2>", figure("trajectory"), figure("trajectory_sets"),
                 figure("trajectory_lengths"),
                 table("trajectory_table", _trajectory_html(pd.read_csv(tables_dir / "trajectory.csv")),
                       " Shown here: the macro averages over all sets; tables/trajectory.csv has every set.")]
    body += ["<h2>Generation length</h2>", figure("lengths"),
             "<h2>Example generations</h2>",
             f"<p class=caption>{captions.html('examples')} All of them, untruncated: "
             "<code>tables/examples.csv</code>.</p>",
             ex.to_html(pd.read_csv(tables_dir / "examples.csv", keep_default_na=False,
                                    na_values={c: [""] for c in ex.SCORE_COLUMNS.values()})),
             "<h2>Appendix: n-gram coverage</h2>",
             table("coverage", tab.to_html(tab.wide_table(coverage, variants, seen, unseen, list(tab.COVERAGE_COLUMNS),
                                                          macros=False)),
                  esc(f" {seen_unseen_note(seen, unseen)}")),
             _curation_html(curation),
             _provenance_html(prov)]
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>ReSet results: {esc(experiment)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    _write_text(page, out)


# ---------------------------------------------------------------- show


def show(results_dir, stream=None) -> int:
    """Print the main results (one block per metric) and where the report is."""
    import pandas as pd

    stream = stream or sys.stdout
    results_dir = Path(results_dir)
    path = results_dir / "tables" / "main_results.csv"
    if not path.exists():
        print(f"{path} does not exist yet: run `snakemake -c2 {path}` (or `make demo`) first", file=sys.stderr)
        return 1
    main = pd.read_csv(path)
    print(f"Main results of {results_dir} (mean ± std over seeds; n_seeds = "
          f"{', '.join(str(n) for n in sorted(set(main['n_seeds'])))})", file=stream)
    for metric in tab.METRIC_COLUMNS:
        frame = main[main["metric"] == metric]
        if frame.empty:
            continue
        datasets = list(dict.fromkeys(frame["dataset"]))
        cells = {(r.variant, r.dataset): tab.fmt(r.mean, r.std) for r in frame.itertuples()}
        variants = list(dict.fromkeys(frame["variant"]))
        header = ["variant", *[tab.dataset_label(d) + ("*" if s == "unseen" else "")
                               for d, s in dict.fromkeys(zip(frame["dataset"], frame["seen"], strict=True))]]
        rows = [[v, *[cells.get((v, d), "–") for d in datasets]] for v in variants]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        print(f"\n{tab.METRIC_NAMES[metric]}  (* = unseen set)", file=stream)
        for line in [header, ["-" * w for w in widths], *rows]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip(), file=stream)
    claims_path = results_dir / "tables" / "claims.csv"
    if claims_path.exists():
        from reset import claims as cl

        frame = pd.read_csv(claims_path)
        print(f"\nReproduction verdicts: {cl.summary_sentence(frame)}", file=stream)
        for r in frame.itertuples():
            ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            effect = "–" if r.effect != r.effect else f"{r.effect:+.3f}"
            print(f"  {r.verdict:<13} {r.claim:<36} {effect}{ci}", file=stream)
    report = results_dir / "report.html"
    if report.exists():
        print(f"\nReport: {report.resolve()}", file=stream)
    else:
        print(f"\nReport not built yet: snakemake -c2 {report}", file=stream)
    for name in ("main_results.md", "main_results.tex"):
        if (results_dir / "tables" / name).exists():
            print(f"Table ({name.rsplit('.', 1)[1]}): {(results_dir / 'tables' / name).resolve()}", file=stream)
    return 0


# ---------------------------------------------------------------- CLI


def _eval_args(parser):
    parser.add_argument("--eval-dir", required=True, help="results/{exp}/eval (or eval_trajectory)")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--seen", nargs="*", default=[], help="seen evaluation sets (config evaluation.seen)")
    parser.add_argument("--unseen", nargs="*", default=[], help="unseen evaluation sets (config evaluation.unseen)")


def _check_variants(names):
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reset.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tables", help="main, two-stage, coverage and length tables")
    _eval_args(p)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--experiment", default="")
    p.add_argument("--curation-summaries", nargs="*", default=[],
                   help="curated/.../{name}_summary.json: the captions state how ReSet's data was collected")
    p = sub.add_parser("trajectory", help="table of the first/best/last checkpoint evaluations")
    _eval_args(p)
    p.add_argument("--start-eval-dir", default=None,
                   help="results/{exp}/eval: a second stage's point 'start' is the main evaluation of the model "
                        "it was trained from")
    p.add_argument("--out", required=True, help="CSV path (tables/trajectory.csv)")
    p = sub.add_parser("examples", help="seeded example generations of every variant side by side (CSV)")
    _eval_args(p)
    add_flags(p, Report, only=("seed", "examples_per_set"), group_title="report keys (docs/config.md)")
    p.add_argument("--out", required=True, help="CSV path (tables/examples.csv)")
    p = sub.add_parser("figure-claims", help="forest plot of tables/claims.csv")
    p.add_argument("--table", required=True)
    add_flags(p, Report, only=("similarity_margin",), group_title="report keys (docs/config.md)")
    p.add_argument("--out", required=True)
    p.add_argument("--experiment", default="")
    p = sub.add_parser("figures", help="trade-off, two-stage and length figures from the tables")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--experiment", default="")
    p = sub.add_parser("figure-trajectory", help="checkpoint trajectory figures from tables/trajectory.csv")
    p.add_argument("--table", required=True)
    p.add_argument("--out-dir", required=True, help="figures/: trajectory.png, trajectory_sets.png, "
                                                    "trajectory_lengths.png")
    p.add_argument("--experiment", default="")
    p = sub.add_parser("provenance", help="config, git commit, packages, sources with sha256, hardware")
    p.add_argument("--config-json", required=True, help="the run's config as a JSON string or @file")
    p.add_argument("--data-dir", default=None, help="results/{exp}/data (filter reports)")
    p.add_argument("--repo", default=".", help="git checkout to read the commit from")
    p.add_argument("--eval-summaries", nargs="*", default=[],
                   help="summary.json of the evaluation scoring jobs (which reused another model's outputs)")
    p.add_argument("--preflight", default=None, help="preflight.json: hub commits resolved for each source")
    p.add_argument("--results-dir", default=None, help="results/{exp}: gather every job's provenance sidecar")
    p.add_argument("--out", required=True)
    p = sub.add_parser("html", help="self-contained HTML report")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    p.add_argument("--provenance", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--no-trajectory", action="store_true", help="the run evaluated no checkpoint trajectories")
    p.add_argument("--curation-summaries", nargs="*", default=[],
                   help="curated/.../{name}_summary.json: the ReSet data section and caption")
    p.add_argument("--out", required=True)
    p = sub.add_parser("show", help="print the main table and where the report is")
    p.add_argument("results_dir", help="results/{experiment}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "tables":
        _check_variants(args.variants)
        write_tables(args.eval_dir, args.variants, args.seeds, args.seen, args.unseen, args.out_dir, args.experiment,
                     read_curation_summaries(args.curation_summaries))
    elif args.command == "trajectory":
        _check_variants(args.variants)
        write_trajectory_table(args.eval_dir, args.variants, args.seeds, args.seen, args.unseen, args.out,
                               args.start_eval_dir)
    elif args.command == "examples":
        from reset.examples import example_generations

        _check_variants(args.variants)
        rep = from_args(Report, args)
        _write_csv(example_generations(args.eval_dir, args.variants, args.seeds[0], args.seen, args.unseen,
                                       rep.examples_per_set, rep.seed), args.out)
    elif args.command == "figure-claims":
        import pandas as pd

        figs.forest(pd.read_csv(args.table), args.out, from_args(Report, args).similarity_margin, args.experiment)
    elif args.command == "figures":
        write_figures(args.tables_dir, args.out_dir, args.experiment)
    elif args.command == "figure-trajectory":
        import pandas as pd

        traj = pd.read_csv(args.table)
        out = Path(args.out_dir)
        figs.trajectory(traj, out / FIGURES["trajectory"], args.experiment)
        figs.trajectory_sets(traj, out / FIGURES["trajectory_sets"], args.experiment)
        figs.trajectory_lengths(traj, out / FIGURES["trajectory_lengths"], args.experiment)
    elif args.command == "provenance":
        from reset.provenance import collect

        text = args.config_json
        config = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
        with atomic_path(args.out) as tmp:  # keep the config's own key order (write_json sorts keys)
            prov = collect(config, args.repo, args.data_dir, args.preflight, args.eval_summaries, args.results_dir)
            tmp.write_text(json.dumps(prov, indent=2, default=str) + "\n")
    elif args.command == "html":
        write_html(args.tables_dir, args.figures_dir, args.provenance, args.out, args.experiment,
                   trajectory=not args.no_trajectory, curation=read_curation_summaries(args.curation_summaries))
    else:
        return show(args.results_dir)
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main, sidecar=False))
