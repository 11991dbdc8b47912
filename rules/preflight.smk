# preflight (docs/preflight.md): every dataset, model, NLI, judge, cluster and disk
# check of the config, in seconds, before any GPU hour or paid judge call.
#   preflight   results/{experiment}/preflight.json   {"ok", "checks": [...]}
# Every GPU job and the paid judge job take it as an input (preflight_done() in
# common.smk, marked ancient: a re-run preflight never re-runs finished jobs).
# A failed preflight leaves preflight.failed.json beside the missing output.


rule preflight:
    conda:
        "../envs/torch.yaml"
    output:
        res("preflight.json"),
    params:
        # No tracked params: a preflight that re-ran on a config change would make Snakemake skip the
        # params check of every job behind it (they take it as an ancient input), so an output key's
        # change would re-run only the preflight. To check a changed config: docs/preflight.md (never delete it).
        config=preflight_config_args(),
        cluster=lambda w: Runtime(cli_args({"--executor": preflight_executor(),
                                            "--resources-json": preflight_resources()})),
    localrule: True
    log:
        logs("preflight.log"),
    benchmark:
        bench("preflight.tsv")
    shell:
        "python -m reset.preflight {params.config} {params.cluster} --out {output} > {log} 2>&1"
