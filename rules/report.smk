# report stage (see docs/design.md, docs/results.md): tables, figures, provenance and the HTML report.
#   claims             scored eval parquets -> tables/claims.{csv,md,tex} (reproduction verdicts)
#   figure_claims      tables/claims.csv -> figures/claims_forest.png
#   tables             scored eval parquets -> tables/main_results.{csv,md,tex},
#                      main_results_by_seed.csv, two_stage.*, coverage.*, lengths.csv
#   examples           scored eval parquets -> tables/examples.csv (example generations)
#   trajectory_table   scored first/best/last checkpoints (+ a second stage's start) -> tables/trajectory.csv
#   figures            tables -> figures/{tradeoff,two_stage,lengths}.png
#   figure_trajectory  tables/trajectory.csv -> figures/trajectory{,_sets,_lengths}.png
#   provenance         config, git commit, sources + sha256, every job's provenance sidecar
#                      (reset/sidecar.py), the report host's packages and hardware -> provenance.json
#   report             everything above -> report.html (self-contained)
# Outputs are also wrapped in report() so `snakemake --report report.html` works.

import json
import os


report: "../report/workflow.rst"


rule claims:
    conda:
        "../envs/report.yaml"
    input:
        main=all_eval_scored(),
        points=claims_trajectory_inputs(),
    output:
        csv=report(res("tables", "claims.csv"), caption="../report/claims.rst", category="Verdicts"),
        md=res("tables", "claims.md"),
        tex=res("tables", "claims.tex"),
    params:
        args=report_flags("bootstrap_resamples", "seed", "similarity_margin"),
        sets=eval_set_args(),
        eval_dir=lambda w, input: eval_root(input.main[0]),
        # without trajectories the checkpoint claims are reported as not tested
        trajectory=lambda w, input: f"--trajectory-dir {trajectory_root(input.points[0])}" if input.points else "",
        out_dir=lambda w, output: os.path.dirname(output.csv),
    localrule: True
    log:
        logs("report", "claims.log"),
    benchmark:
        bench("report", "claims.tsv")
    shell:
        "python -m reset.claims --eval-dir {params.eval_dir} {params.trajectory} {params.args} {params.sets}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule figure_claims:
    conda:
        "../envs/report.yaml"
    input:
        res("tables", "claims.csv"),
    output:
        report(res("figures", "claims_forest.png"), caption="../report/claims_forest.rst", category="Verdicts"),
    params:
        margin=report_flags("similarity_margin"),
        experiment=EXP,
    localrule: True
    log:
        logs("report", "figure_claims.log"),
    benchmark:
        bench("report", "figure_claims.tsv")
    shell:
        "python -m reset.report figure-claims --table {input} {params.margin} --out {output}"
        " --experiment {params.experiment} > {log} 2>&1"


rule examples:
    conda:
        "../envs/report.yaml"
    input:
        all_eval_scored(),
    output:
        report(res("tables", "examples.csv"), caption="../report/examples.rst", category="Tables"),
    params:
        eval_dir=lambda w, input: eval_root(input[0]),
        variants=" ".join(VARIANTS),
        sets=eval_set_args(),
        report=report_flags("seed", "examples_per_set"),
    localrule: True
    log:
        logs("report", "examples.log"),
    benchmark:
        bench("report", "examples.tsv")
    shell:
        "python -m reset.report examples --eval-dir {params.eval_dir} --variants {params.variants} {params.sets}"
        " {params.report} --out {output} > {log} 2>&1"


rule tables:
    conda:
        "../envs/report.yaml"
    input:
        all_eval_scored(),
        curation=curation_summaries(),
    output:
        main_csv=report(res("tables", "main_results.csv"), caption="../report/main_results.rst",
                        category="Tables"),
        main_md=res("tables", "main_results.md"),
        main_tex=res("tables", "main_results.tex"),
        by_seed=res("tables", "main_results_by_seed.csv"),
        two_stage_csv=report(res("tables", "two_stage.csv"), caption="../report/two_stage_table.rst",
                             category="Tables"),
        two_stage_md=res("tables", "two_stage.md"),
        two_stage_tex=res("tables", "two_stage.tex"),
        coverage_csv=report(res("tables", "coverage.csv"), caption="../report/coverage.rst", category="Tables"),
        coverage_md=res("tables", "coverage.md"),
        coverage_tex=res("tables", "coverage.tex"),
        lengths=res("tables", "lengths.csv"),
    params:
        eval_dir=lambda w, input: eval_root(input[0]),
        out_dir=lambda w, output: os.path.dirname(output.main_csv),
        variants=" ".join(VARIANTS),
        sets=eval_set_args(),
        experiment=EXP,
    localrule: True
    log:
        logs("report", "tables.log"),
    benchmark:
        bench("report", "tables.tsv")
    shell:
        "python -m reset.report tables --eval-dir {params.eval_dir} --variants {params.variants} {params.sets}"
        " --curation-summaries {input.curation}"
        " --out-dir {params.out_dir} --experiment {params.experiment} > {log} 2>&1"


rule trajectory_table:
    conda:
        "../envs/report.yaml"
    input:
        points=all_trajectory_scored(),
        # a second stage starts at the main evaluation of the model it was trained from
        starts=trajectory_start_scored(),
    output:
        report(res("tables", "trajectory.csv"), caption="../report/trajectory_table.rst", category="Tables"),
    params:
        eval_dir=lambda w, input: trajectory_root(input.points[0]),
        start=lambda w, input: f"--start-eval-dir {eval_root(input.starts[0])}" if input.starts else "",
        variants=" ".join(TRAJECTORY_VARIANTS),
        sets=eval_set_args(),
    localrule: True
    log:
        logs("report", "trajectory_table.log"),
    benchmark:
        bench("report", "trajectory_table.tsv")
    shell:
        "python -m reset.report trajectory --eval-dir {params.eval_dir} --variants {params.variants}"
        " {params.sets} {params.start} --out {output} > {log} 2>&1"


rule figures:
    conda:
        "../envs/report.yaml"
    input:
        main=res("tables", "main_results.csv"),
        two_stage=res("tables", "two_stage.csv"),
        lengths=res("tables", "lengths.csv"),
    output:
        tradeoff=report(res("figures", "tradeoff.png"), caption="../report/tradeoff.rst", category="Figures"),
        two_stage=report(res("figures", "two_stage.png"), caption="../report/two_stage.rst", category="Figures"),
        lengths=report(res("figures", "lengths.png"), caption="../report/lengths.rst", category="Figures"),
    params:
        tables_dir=lambda w, input: os.path.dirname(input.main),
        out_dir=lambda w, output: os.path.dirname(output.tradeoff),
        experiment=EXP,
    localrule: True
    log:
        logs("report", "figures.log"),
    benchmark:
        bench("report", "figures.tsv")
    shell:
        "python -m reset.report figures --tables-dir {params.tables_dir} --out-dir {params.out_dir}"
        " --experiment {params.experiment} > {log} 2>&1"


rule figure_trajectory:
    conda:
        "../envs/report.yaml"
    input:
        res("tables", "trajectory.csv"),
    output:
        macro=report(res("figures", "trajectory.png"), caption="../report/trajectory.rst", category="Figures"),
        sets=report(res("figures", "trajectory_sets.png"), caption="../report/trajectory_sets.rst",
                    category="Figures"),
        lengths=report(res("figures", "trajectory_lengths.png"), caption="../report/trajectory_lengths.rst",
                       category="Figures"),
    params:
        out_dir=lambda w, output: os.path.dirname(output.macro),
        experiment=EXP,
    localrule: True
    log:
        logs("report", "figure_trajectory.log"),
    benchmark:
        bench("report", "figure_trajectory.tsv")
    shell:
        "python -m reset.report figure-trajectory --table {input} --out-dir {params.out_dir}"
        " --experiment {params.experiment} > {log} 2>&1"


rule provenance:
    conda:
        "../envs/report.yaml"
    input:
        # the hub commits the preflight resolved are recorded beside each source
        preflight=preflight_done(),
        # re-run whenever the results change, so the recorded commit and versions are the ones used
        tables=res("tables", "main_results.csv"),
        filter_reports=[res("data", name, "filter_report.json") for name in DATASETS],
        eval_summaries=all_eval_summaries,
        # the trajectory evaluations are the only computing jobs the main table does not wait for
        trajectory=[res("tables", "trajectory.csv")] if trajectories_enabled() else [],
    output:
        res("provenance.json"),
    params:
        # the config as run; Runtime: a runtime key's change alone re-makes no provenance (docs/config.md)
        config=Runtime(cli_args({"--config-json": json.dumps(config)})),
        # data/{dataset}/filter_report.json -> data
        data_dir=lambda w, input: os.path.dirname(os.path.dirname(input.filter_reports[0])),
        repo=workflow.basedir,
        results_dir=lambda w, output: os.path.dirname(output[0]),
    localrule: True
    log:
        logs("report", "provenance.log"),
    benchmark:
        bench("report", "provenance.tsv")
    shell:
        "python -m reset.report provenance {params.config} --data-dir {params.data_dir} --repo {params.repo}"
        " --eval-summaries {input.eval_summaries} --preflight {input.preflight} --results-dir {params.results_dir}"
        " --out {output} > {log} 2>&1"


rule report:
    conda:
        "../envs/report.yaml"
    input:
        tables=report_inputs(),
        provenance=res("provenance.json"),
        curation=curation_summaries(),
    output:
        report(res("report.html"), caption="../report/report_html.rst", category="Report"),
    params:
        tables_dir=lambda w, input: os.path.join(os.path.dirname(input.provenance), "tables"),
        figures_dir=lambda w, input: os.path.join(os.path.dirname(input.provenance), "figures"),
        trajectory="" if trajectories_enabled() else "--no-trajectory",
        experiment=EXP,
    localrule: True
    log:
        logs("report", "report.log"),
    benchmark:
        bench("report", "report.tsv")
    shell:
        "python -m reset.report html --tables-dir {params.tables_dir} --figures-dir {params.figures_dir}"
        " --provenance {input.provenance} --experiment {params.experiment} {params.trajectory}"
        " --curation-summaries {input.curation}"
        " --out {output} > {log} 2>&1"


TARGETS.append(report_targets)
