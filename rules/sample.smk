# sample stage (see docs/design.md, docs/reset.md): the ReSet decoding sweep.
#
#   sampling_subset   sampling/subset.parquet   seeded sampling.subset_per_dataset examples per
#                                               pool (if_mix = the four IF train splits, nq,
#                                               msmarco, cnn_dailymail), column `pool` added
#   sample            sampling/shard{i}.parquet one shard of the sweep from instruct_mtl
#                                               (seed sampling.source_seed): every example x
#                                               round x the 7 values of its round's parameter;
#                                               with sampling.per_seed sampling/seed{n}/shard{i}
#                                               from instruct_mtl of seed n (same subset)
# Examples go to shards round-robin, so a crashed shard is the only one re-run, and
# every candidate's seed comes from (example, round, setting): shards are reproducible.


rule sampling_subset:
    conda:
        "../envs/data.yaml"
    input:
        **sampling_pool_inputs(),
    output:
        subset=res("sampling", "subset.parquet"),
        report=res("sampling", "subset_report.json"),
    params:
        pools=sampling_pool_args,
        args=sampling_subset_args(),
    priority: COLLECTION_PRIORITY
    log:
        logs("sampling", "subset.log"),
    benchmark:
        bench("sampling", "subset.tsv")
    shell:
        "python -m reset.sample subset {params.pools} {params.args}"
        " --out {output.subset} --report {output.report} > {log} 2>&1"


rule sample:
    conda:
        "../envs/torch.yaml"
    input:
        preflight=preflight_done(),
        subset=res("sampling", "subset.parquet"),
        model=sampling_model_dir(),
    output:
        collection("sampling", "shard{shard}.parquet"),
    params:
        args=sweep_args(),
    threads: 1
    priority: COLLECTION_PRIORITY
    log:
        logs(policy.collection_path(CFG, "sampling", "shard{shard}.log")),
    benchmark:
        bench(policy.collection_path(CFG, "sampling", "shard{shard}.tsv"))
    shell:
        "python -m reset.sample sweep --subset {input.subset} --model {input.model}"
        " --shard {wildcards.shard} {params.args} --threads {threads} --out {output} > {log} 2>&1"
