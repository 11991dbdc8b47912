# judge stage (see docs/design.md, docs/reset.md): scores of the sampled candidates.
#
# Every step scores unique (id, text) pairs only and writes *_dedup.json with the
# candidates it saw and the calls de-duplication saved.
#   judge_items          scores/candidates/{judge}_items.parquet   IF candidates as judge input:
#                        judge "if" = round 1 (ReSet), "if_supercharged" = the ReSet-S rounds
#   judge_cost_estimate  judge_cost_estimate.json   calls, tokens, dollars of both IF judge
#                        steps; fails when the total exceeds judges.max_usd. Made once, before
#                        the first paid call (a gate: ancient, never re-made while it exists)
#   judge_candidates     scores/candidates/{judge}.parquet   IF judge (python -m reset.judge);
#                        needs the estimate, so nothing is spent before it passed; checks its own
#                        calls against judges.max_usd at the prices of the day before its first call
#   score_faithfulness   scores/candidates/faithfulness.parquet   span coverage / SummaC-ZS
#   score_task           scores/candidates/task.parquet   EM / ROUGE-L (IF: vs the reference)
# With sampling.per_seed every path but the estimate is under scores/candidates/seed{n}/
# (reset/policy.py); the one estimate covers every seed's items before any call.
# Cut-off candidates are not judged unless curation.allow_truncated (they are never ranked).
# The API key never appears here: the judge reads the variable named by api_key_env.


rule judge_items:
    conda:
        "../envs/data.yaml"
    input:
        candidates=sampling_shards(),
        subset=res("sampling", "subset.parquet"),
    output:
        judge_items=candidate_scores("{judge}_items.parquet"),
        dedup=candidate_scores("{judge}_dedup.json"),
    params:
        rounds=lambda w: judge_rounds(w.judge),
        truncated=truncated_flag(),
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.candidate_scores_path(CFG, "{judge}_items.log")),
    benchmark:
        bench(policy.candidate_scores_path(CFG, "{judge}_items.tsv"))
    shell:
        "python -m reset.curate items --candidates {input.candidates} --subset {input.subset}"
        " --max-round {params.rounds} {params.truncated} --out {output.judge_items} --summary {output.dedup}"
        " > {log} 2>&1"


rule judge_cost_estimate:
    conda:
        "../envs/torch.yaml"
    input:
        # ancient and without tracked params: a gate that re-ran would hide the params changes of every
        # job behind it from Snakemake (docs/config.md, "Gates"); made once, before the first paid call
        **{j: ancient(judge_items_all(j)) for j in ("if", "if_supercharged")},
    output:
        res("judge_cost_estimate.json"),
    params:
        args=judge_cost_args,
    log:
        logs("judge_cost_estimate.log"),
    benchmark:
        bench("judge_cost_estimate.tsv")
    shell:
        "python -m reset.judge estimate {params.args} --out {output} > {log} 2>&1"


rule judge_candidates:
    conda:
        "../envs/torch.yaml"
    input:
        unpack(candidate_judge_inputs),
        preflight=preflight_done(),
    output:
        scores=candidate_scores("{judge}.parquet"),
        summary=candidate_scores("{judge}_summary.json"),
    params:
        args=candidate_judge_args,
        runtime=candidate_judge_runtime,
    threads: 1
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.candidate_scores_path(CFG, "{judge}.log")),
    benchmark:
        bench(policy.candidate_scores_path(CFG, "{judge}.tsv"))
    shell:
        "python -m reset.judge {params.args} {params.runtime} --in {input.judge_items} --out {output.scores}"
        " --summary {output.summary} > {log} 2>&1"


rule score_faithfulness:
    conda:
        "../envs/torch.yaml"
    input:
        preflight=preflight_done(),
        candidates=sampling_shards(),
        subset=res("sampling", "subset.parquet"),
        nli=nli_model_dir(),
    output:
        scores=candidate_scores("faithfulness.parquet"),
        dedup=candidate_scores("faithfulness_dedup.json"),
    params:
        args=candidate_nli_args(),
    threads: 1
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.candidate_scores_path(CFG, "faithfulness.log")),
    benchmark:
        bench(policy.candidate_scores_path(CFG, "faithfulness.tsv"))
    shell:
        "python -m reset.curate score faithfulness --candidates {input.candidates} --subset {input.subset}"
        " {params.args} --threads {threads} --out {output.scores} --summary {output.dedup} > {log} 2>&1"


rule score_task:
    conda:
        "../envs/torch.yaml"
    input:
        candidates=sampling_shards(),
        subset=res("sampling", "subset.parquet"),
    output:
        scores=candidate_scores("task.parquet"),
        dedup=candidate_scores("task_dedup.json"),
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.candidate_scores_path(CFG, "task.log")),
    benchmark:
        bench(policy.candidate_scores_path(CFG, "task.tsv"))
    shell:
        "python -m reset.curate score task --candidates {input.candidates} --subset {input.subset}"
        " --out {output.scores} --summary {output.dedup} > {log} 2>&1"
