"""Result tables, figures, provenance and the self-contained HTML report.

Subcommands (every path explicit; Snakemake calls them from rules/report.smk):
  tables       scored eval parquets -> tables/main_results.{csv,md,tex}, main_results_by_seed.csv,
               two_stage.{csv,md,tex}, coverage.{csv,md,tex}, lengths.csv
  trajectory   scored first/best/last checkpoint parquets -> tables/trajectory.csv
  figures      tables -> figures/tradeoff.png, two_stage.png, lengths.png (+ trajectory.png)
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

from reset import figures as figs
from reset import tables as tab
from reset.io import atomic_path
from reset.variants import VARIANTS

log = logging.getLogger(__name__)

MAIN_CAPTION = (
    "IF score (instruction-following sets), faithfulness and task score (context-dependent sets) of every "
    "variant; unseen sets in italics. Per seed, each cell is the mean over the set's examples; the table shows "
    "mean ± sample std over seeds (no ± with one seed). Macro columns average the sets that carry the metric, "
    "per seed, then over seeds. Best mean per column in bold."
)
TWO_STAGE_CAPTION = (
    "Two-stage paradigm: macro-averaged scores before and after the second fine-tuning stage "
    "(CDIF: base → context-dependent → instruction following; IFCD: instruct model → context-dependent)."
)
COVERAGE_CAPTION = (
    "Unigram and bigram coverage (share of the answer's normalised n-grams found in the passages) on the "
    "extractive QA sets; mean ± std over seeds."
)
FIGURE_CAPTIONS = {
    "tradeoff": "Trade-off between instruction following and faithfulness: each point is a variant (macro "
                "averages, mean over seeds, bars = std). The star marks the ideal corner.",
    "two_stage": "Before/after bars of the two-stage paradigm: the second stage's effect on each capability.",
    "trajectory": "Scores and generation length at the first, best (lowest dev loss) and last kept checkpoints "
                  "of the two-stage training jobs.",
    "lengths": "Mean number of generated tokens per answer, per variant and task kind (greedy decoding).",
}


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
            + " Per pool: sampled examples and candidates, candidates cut off at the generation cap, examples "
            "dropped for having no complete candidate or no scored one, examples kept and how many of those "
            "end cut off (curated/…/{name}_summary.json).</p><div class=scroll>"
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
    main_caption = " ".join(filter(None, [MAIN_CAPTION, seen_unseen_note(seen, unseen), reset_data_note(curation)]))
    coverage_caption = f"{COVERAGE_CAPTION} {seen_unseen_note(seen, unseen)}"
    datasets = [*seen, *unseen]
    columns = [*tab.METRIC_COLUMNS.values(), *tab.COVERAGE_COLUMNS.values(), *tab.LENGTH_COLUMNS.values()]
    rows = tab.read_eval(eval_dir, variants, seeds, datasets, columns=columns)
    out = Path(out_dir)
    main, by_seed = tab.main_results(rows, variants, seen, unseen)
    _write_csv(main, out / "main_results.csv")
    _write_csv(by_seed, out / "main_results_by_seed.csv")
    wide = tab.wide_table(main, variants, seen, unseen, list(tab.METRIC_COLUMNS))
    title = f"Main results{f' ({experiment})' if experiment else ''}"
    _write_text(f"# {title}\n\n{main_caption}\n\n" + tab.to_markdown(wide), out / "main_results.md")
    _write_text(tab.to_latex(wide, tab.latex_escape(main_caption), "tab:main_results"), out / "main_results.tex")

    stages = tab.two_stage_results(main, by_seed)
    _write_csv(stages, out / "two_stage.csv")
    rows2 = tab.two_stage_rows(stages)
    _write_text(f"# Two-stage paradigm\n\n{TWO_STAGE_CAPTION}\n\n" + tab.simple_markdown(tab.TWO_STAGE_HEADER, rows2),
                out / "two_stage.md")
    _write_text(tab.simple_latex(tab.TWO_STAGE_HEADER, rows2, tab.latex_escape(TWO_STAGE_CAPTION), "tab:two_stage"),
                out / "two_stage.tex")

    coverage = tab.coverage_results(rows, variants, seen, unseen)
    _write_csv(coverage, out / "coverage.csv")
    wide = tab.wide_table(coverage, variants, seen, unseen, list(tab.COVERAGE_COLUMNS), macros=False)
    _write_text(f"# N-gram coverage (extractive QA)\n\n{coverage_caption}\n\n" + tab.to_markdown(wide),
                out / "coverage.md")
    _write_text(tab.to_latex(wide, tab.latex_escape(coverage_caption), "tab:coverage"), out / "coverage.tex")

    _write_csv(tab.length_results(rows, variants, seen, unseen), out / "lengths.csv")
    log.info("tables: %d rows in main_results.csv from %d evaluation rows", len(main), len(rows))
    return main


def write_trajectory_table(eval_dir, variants, seeds, seen, unseen, out):
    import pandas as pd

    columns = [*tab.METRIC_COLUMNS.values(), *tab.LENGTH_COLUMNS.values()]
    rows = pd.concat([tab.read_eval(eval_dir, variants, seeds, [*seen, *unseen], point=p, columns=columns)
                      for p in tab.TRAJECTORY_POINTS], ignore_index=True)
    frame = tab.trajectory_results(rows, variants, seen, unseen)
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
"""


def _figure_html(path, caption, number):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption class=caption><b>Figure {number}.</b> {html.escape(caption)}</figcaption></figure>")


def _kv_table(pairs):
    rows = [[k, "–" if v is None else v] for k, v in pairs]
    return tab.simple_html(["", ""], rows).replace("<thead><tr><th></th><th></th></tr></thead>", "")


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
    parts.append("<h3>Hardware</h3>" + _kv_table([(k, json.dumps(v) if isinstance(v, list) else v)
                                                   for k, v in prov.get("hardware", {}).items()]))
    parts.append("<h3>Package versions</h3>" + _kv_table(sorted(prov.get("packages", {}).items())))
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


def write_html(tables_dir, figures_dir, provenance, out, experiment, trajectory=True, curation=()):
    import pandas as pd

    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    prov = json.loads(Path(provenance).read_text())
    config = prov.get("config", {})
    seen, unseen = config["evaluation"]["seen"], config["evaluation"]["unseen"]
    variants = list(VARIANTS)
    main = pd.read_csv(tables_dir / "main_results.csv")
    coverage = pd.read_csv(tables_dir / "coverage.csv")
    stages = pd.read_csv(tables_dir / "two_stage.csv")
    body = [f"<h1>ReSet pipeline — results of experiment <code>{html.escape(experiment)}</code></h1>",
            "<p class=caption>Reproduction of “Dancing in Chains: Reconciling Instruction Following and "
            "Faithfulness in Language Models” (ReSet). Every number below is recomputable from "
            f"<code>results/{html.escape(experiment)}/eval/</code> (see tables/main_results_by_seed.csv).</p>",
            "<h2>Main results</h2>",
            f"<p class=caption><b>Table 1.</b> {html.escape(MAIN_CAPTION)} {html.escape(seen_unseen_note(seen, unseen))} "
            f"{html.escape(reset_data_note(curation))}</p>",
            "<div class=scroll>" + tab.to_html(tab.wide_table(main, variants, seen, unseen,
                                                              list(tab.METRIC_COLUMNS))) + "</div>"]
    number = 1
    body.append(_figure_html(figures_dir / "tradeoff.png", FIGURE_CAPTIONS["tradeoff"], number))
    body += ["<h2>Two-stage paradigm</h2>", f"<p class=caption><b>Table 2.</b> {html.escape(TWO_STAGE_CAPTION)}</p>",
             tab.simple_html(tab.TWO_STAGE_HEADER, tab.two_stage_rows(stages))]
    number += 1
    body.append(_figure_html(figures_dir / "two_stage.png", FIGURE_CAPTIONS["two_stage"], number))
    if trajectory:
        number += 1
        body += ["<h2>Checkpoint trajectories</h2>",
                 _figure_html(figures_dir / "trajectory.png", FIGURE_CAPTIONS["trajectory"], number),
                 "<p class=caption><b>Table 3.</b> Macro averages at each checkpoint (mean ± std over seeds).</p>",
                 _trajectory_html(pd.read_csv(tables_dir / "trajectory.csv"))]
    number += 1
    body += ["<h2>Generation length</h2>",
             _figure_html(figures_dir / "lengths.png", FIGURE_CAPTIONS["lengths"], number),
             "<h2>Appendix: n-gram coverage</h2>",
             f"<p class=caption><b>Table {4 if trajectory else 3}.</b> {html.escape(COVERAGE_CAPTION)} "
             f"{html.escape(seen_unseen_note(seen, unseen))}</p>",
             "<div class=scroll>" + tab.to_html(tab.wide_table(coverage, variants, seen, unseen,
                                                               list(tab.COVERAGE_COLUMNS), macros=False)) + "</div>",
             _curation_html(curation),
             _provenance_html(prov)]
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>ReSet results: {html.escape(experiment)}</title><style>{CSS}</style></head><body>\n"
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
    p.add_argument("--out", required=True, help="CSV path (tables/trajectory.csv)")
    p = sub.add_parser("figures", help="trade-off, two-stage and length figures from the tables")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--experiment", default="")
    p = sub.add_parser("figure-trajectory", help="checkpoint trajectory figure from tables/trajectory.csv")
    p.add_argument("--table", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--experiment", default="")
    p = sub.add_parser("provenance", help="config, git commit, packages, sources with sha256, hardware")
    p.add_argument("--config-json", required=True, help="the run's config as a JSON string or @file")
    p.add_argument("--data-dir", default=None, help="results/{exp}/data (filter reports)")
    p.add_argument("--repo", default=".", help="git checkout to read the commit from")
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
        write_trajectory_table(args.eval_dir, args.variants, args.seeds, args.seen, args.unseen, args.out)
    elif args.command == "figures":
        write_figures(args.tables_dir, args.out_dir, args.experiment)
    elif args.command == "figure-trajectory":
        import pandas as pd

        figs.trajectory(pd.read_csv(args.table), args.out, args.experiment)
    elif args.command == "provenance":
        from reset.provenance import collect

        text = args.config_json
        config = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
        with atomic_path(args.out) as tmp:  # keep the config's own key order (write_json sorts keys)
            tmp.write_text(json.dumps(collect(config, args.repo, args.data_dir), indent=2, default=str) + "\n")
    elif args.command == "html":
        write_html(args.tables_dir, args.figures_dir, args.provenance, args.out, args.experiment,
                   trajectory=not args.no_trajectory, curation=read_curation_summaries(args.curation_summaries))
    else:
        return show(args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
