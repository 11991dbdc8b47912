# evaluate stage (see docs/design.md): greedy generations of every variant x seed
# on every evaluation set, then their scores.
#
# Each distinct model is evaluated once: generation and scoring jobs look their
# key (model digest + data + settings) up in results/{exp}/eval_store/ and copy a
# complete entry instead of computing (reset/eval_store.py, docs/performance.md).
#
# Few jobs on purpose: one generation job per (model, shard) covering all
# evaluation sets, then one scoring job per model that loads the judge and the
# NLI model once and writes one scored parquet per set.
#   eval_generate / eval_score                 results/{exp}/eval/{variant}/seed{seed}/
#   eval_trajectory_generate / _score          first and last kept checkpoints of
#                                              TRAJECTORY_VARIANTS (evaluation.trajectories);
#                                              a point at the best checkpoint's step (points.json)
#                                              copies the main evaluation instead
#   eval_trajectory_best                       the best checkpoint = the main evaluation

rule eval_generate:
    conda:
        "../envs/torch.yaml"
    input:
        model=lambda w: variant_model_dir(w.variant, w.seed),
        data=eval_data(),
    output:
        res("eval", "{variant}", "seed{seed}", "generations", "shard{shard}.parquet"),
    params:
        args=eval_generate_args,
        store=eval_store(),
    threads: 1
    log:
        logs("eval", "{variant}", "seed{seed}", "generate_shard{shard}.log"),
    benchmark:
        bench("eval", "{variant}", "seed{seed}", "generate_shard{shard}.tsv")
    shell:
        "python -m reset.evaluate generate --model {input.model} --data {input.data}"
        " --shard {wildcards.shard} {params.args} --store {params.store} --out {output} > {log} 2>&1"


rule eval_score:
    conda:
        "../envs/torch.yaml"
    input:
        generations=expand(res("eval", "{{variant}}", "seed{{seed}}", "generations", "shard{shard}.parquet"),
                           shard=eval_shards()),
        models=eval_score_models(),
    output:
        scored=expand(res("eval", "{{variant}}", "seed{{seed}}", "{dataset}.parquet"), dataset=EVAL_DATASETS),
        summary=res("eval", "{variant}", "seed{seed}", "summary.json"),
    params:
        args=eval_score_args(),
        store=eval_store(),
        out_dir=lambda w: res("eval", w.variant, f"seed{w.seed}"),
    threads: 1
    log:
        logs("eval", "{variant}", "seed{seed}", "score.log"),
    benchmark:
        bench("eval", "{variant}", "seed{seed}", "score.tsv")
    shell:
        "python -m reset.evaluate score --generations {input.generations} {params.args}"
        " --store {params.store} --out-dir {params.out_dir} --summary {output.summary} > {log} 2>&1"


rule eval_trajectory_generate:
    conda:
        "../envs/torch.yaml"
    input:
        model=lambda w: trajectory_model_dir(w.variant, w.seed, w.point),
        data=eval_data(),
        # a point that is the best checkpoint (same step) copies the main evaluation
        points=res("trajectory", "{variant}", "seed{seed}", "points.json"),
        best=res("eval", "{variant}", "seed{seed}", "generations", "shard{shard}.parquet"),
    output:
        res("eval_trajectory", "{variant}", "seed{seed}", "{point}", "generations", "shard{shard}.parquet"),
    wildcard_constraints:
        point="first|last",
        variant="|".join(TRAJECTORY_VARIANTS),
    params:
        args=eval_generate_args,
        store=eval_store(),
    threads: 1
    log:
        logs("eval_trajectory", "{variant}", "seed{seed}", "{point}", "generate_shard{shard}.log"),
    benchmark:
        bench("eval_trajectory", "{variant}", "seed{seed}", "{point}", "generate_shard{shard}.tsv")
    shell:
        "python -m reset.evaluate generate --model {input.model} --data {input.data}"
        " --shard {wildcards.shard} {params.args} --points {input.points} --point {wildcards.point}"
        " --reuse {input.best} --store {params.store} --out {output} > {log} 2>&1"


rule eval_trajectory_score:
    conda:
        "../envs/torch.yaml"
    input:
        generations=expand(
            res("eval_trajectory", "{{variant}}", "seed{{seed}}", "{{point}}", "generations", "shard{shard}.parquet"),
            shard=eval_shards(),
        ),
        models=eval_score_models(),
        points=res("trajectory", "{variant}", "seed{seed}", "points.json"),
        best=lambda w: eval_scored(w.variant, w.seed) + [res("eval", w.variant, f"seed{w.seed}", "summary.json")],
    output:
        scored=expand(res("eval_trajectory", "{{variant}}", "seed{{seed}}", "{{point}}", "{dataset}.parquet"),
                      dataset=EVAL_DATASETS),
        summary=res("eval_trajectory", "{variant}", "seed{seed}", "{point}", "summary.json"),
    wildcard_constraints:
        point="first|last",
        variant="|".join(TRAJECTORY_VARIANTS),
    params:
        args=eval_score_args(),
        store=eval_store(),
        out_dir=lambda w: res("eval_trajectory", w.variant, f"seed{w.seed}", w.point),
        best_dir=lambda w: res("eval", w.variant, f"seed{w.seed}"),
    threads: 1
    log:
        logs("eval_trajectory", "{variant}", "seed{seed}", "{point}", "score.log"),
    benchmark:
        bench("eval_trajectory", "{variant}", "seed{seed}", "{point}", "score.tsv")
    shell:
        "python -m reset.evaluate score --generations {input.generations} {params.args}"
        " --points {input.points} --point {wildcards.point} --reuse {params.best_dir}"
        " --store {params.store} --out-dir {params.out_dir} --summary {output.summary} > {log} 2>&1"


rule eval_trajectory_best:
    conda:
        "../envs/data.yaml"
    input:
        lambda w: eval_scored(w.variant, w.seed),
    output:
        expand(res("eval_trajectory", "{{variant}}", "seed{{seed}}", "best", "{dataset}.parquet"),
               dataset=EVAL_DATASETS),
    wildcard_constraints:
        variant="|".join(TRAJECTORY_VARIANTS),
    params:
        src=lambda w: res("eval", w.variant, f"seed{w.seed}"),
        out_dir=lambda w: res("eval_trajectory", w.variant, f"seed{w.seed}", "best"),
        datasets=" ".join(EVAL_DATASETS),
    localrule: True
    log:
        logs("eval_trajectory", "{variant}", "seed{seed}", "best", "copy.log"),
    benchmark:
        bench("eval_trajectory", "{variant}", "seed{seed}", "best", "copy.tsv")
    shell:
        "python -m reset.evaluate copy --src-dir {params.src} --datasets {params.datasets}"
        " --out-dir {params.out_dir} > {log} 2>&1"


TARGETS.append(evaluation_targets)
