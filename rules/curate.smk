# curate stage (see docs/design.md, docs/reset.md): weighted ranking -> curated sets.
#
#   curate   curated/{curated}.parquet             reset: round 1, judges.if, curation.per_dataset
#                                                  per pool; reset_s: curation.reset_s.rounds
#                                                  rounds, judges.if_supercharged, reset_s.per_dataset
#            curated/{curated}_candidates.parquet  every ranked candidate, its scores, total, chosen
#            curated/{curated}_summary.json        counts, exclusions, dropped examples, data mode
# total = task + curation.if_weight * (1_IF * if_score + 1_CD * faithfulness), top-1 per example;
# cut-off candidates (finish_reason "length") are not ranked unless curation.allow_truncated.
# With sampling.per_seed the three files are curated/seed{n}/... for every seed n.
# The curated parquet is in the unified schema (references = [chosen text], gold in
# gold_references), so the train rule fine-tunes the ReSet variants on it as it is.


rule curate:
    conda:
        "../envs/data.yaml"
    input:
        candidates=sampling_shards(),
        subset=res("sampling", "subset.parquet"),
        if_scores=lambda w: candidate_scores(f"{CURATED_JUDGE[w.curated]}.parquet"),
        faithfulness=candidate_scores("faithfulness.parquet"),
        task=candidate_scores("task.parquet"),
    output:
        curated=collection("curated", "{curated}.parquet"),
        candidates=collection("curated", "{curated}_candidates.parquet"),
        summary=collection("curated", "{curated}_summary.json"),
    params:
        args=curate_args,
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.collection_path(CFG, "curated", "{curated}.log")),
    benchmark:
        bench(policy.collection_path(CFG, "curated", "{curated}.tsv"))
    shell:
        "python -m reset.curate select {params.args} --candidates {input.candidates} --subset {input.subset}"
        " --if-scores {input.if_scores} --faithfulness {input.faithfulness} --task {input.task}"
        " --out {output.curated} --candidates-out {output.candidates} --summary {output.summary} > {log} 2>&1"


TARGETS.append(reset_targets)
