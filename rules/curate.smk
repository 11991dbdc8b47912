# curate stage (see docs/design.md, docs/reset.md): weighted ranking -> curated sets.
#
#   curate   curated/{curated}.parquet             reset: round 1, judges.if, curation.per_dataset
#                                                  per pool; reset_s: curation.reset_s.rounds
#                                                  rounds, judges.if_supercharged, reset_s.per_dataset
#            curated/{curated}_candidates.parquet  every ranked candidate, its scores, total, chosen
#            curated/{curated}_summary.json        counts, exclusions, dropped examples
# total = task + curation.if_weight * (1_IF * if_score + 1_CD * faithfulness), top-1 per example.
# The curated parquet is in the unified schema (references = [chosen text], gold in
# gold_references), so the train rule fine-tunes the ReSet variants on it as it is.


rule curate:
    conda:
        "../envs/data.yaml"
    input:
        candidates=sampling_shards(),
        subset=res("sampling", "subset.parquet"),
        if_scores=lambda w: res("scores", "candidates", f"{CURATED_JUDGE[w.curated]}.parquet"),
        faithfulness=res("scores", "candidates", "faithfulness.parquet"),
        task=res("scores", "candidates", "task.parquet"),
    output:
        curated=res("curated", "{curated}.parquet"),
        candidates=res("curated", "{curated}_candidates.parquet"),
        summary=res("curated", "{curated}_summary.json"),
    params:
        args=curate_args,
    log:
        logs("curated", "{curated}.log"),
    benchmark:
        bench("curated", "{curated}.tsv")
    shell:
        "python -m reset.curate select {params.args} --candidates {input.candidates} --subset {input.subset}"
        " --if-scores {input.if_scores} --faithfulness {input.faithfulness} --task {input.task}"
        " --out {output.curated} --candidates-out {output.candidates} --summary {output.summary} > {log} 2>&1"


TARGETS.append(reset_targets)
