# preflight (docs/preflight.md): every dataset, model, NLI, judge, cluster and disk
# check of the config, in seconds, before any GPU hour or paid judge call.
#   preflight   results/{experiment}/preflight.json   {"ok", "checks": [...]}
# Every GPU job and the paid judge job take it as an input (preflight_done() in
# common.smk, marked ancient: a re-run preflight never re-runs finished jobs).
# A failed preflight leaves preflight.failed.json beside the missing output.

import json


rule preflight:
    conda:
        "../envs/torch.yaml"
    output:
        res("preflight.json"),
    params:
        # the checks follow the config and the executor: either changing re-runs the preflight
        config=cli_args({"--config-json": json.dumps(config, sort_keys=True)}),
        cluster=lambda w: cli_args({"--executor": preflight_executor(), "--resources-json": preflight_resources()}),
    localrule: True
    log:
        logs("preflight.log"),
    benchmark:
        bench("preflight.tsv")
    shell:
        "python -m reset.preflight {params.config} {params.cluster} --out {output} > {log} 2>&1"
