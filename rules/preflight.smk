# preflight (docs/preflight.md): every dataset, model, NLI, judge, cluster and disk
# check of the config, in seconds, before any GPU hour or paid judge call.
#   preflight   results/{experiment}/preflight.json   {"ok", "checks": [...]}
# Every GPU job and the paid judge job take it as an input (preflight_done() in
# common.smk, marked ancient: a re-run preflight never re-runs finished jobs).
# A failed preflight leaves preflight.failed.json beside the missing output.

import json


def preflight_executor():
    """The executor's name (slurm turns the cluster check on)."""
    plugin = workflow.executor_plugin
    return plugin.name if plugin is not None else "local"


def preflight_resources():
    """default-resources and set-resources as the profile gave them: the cluster check reads them."""
    rs = workflow.resource_settings

    def plain(resources):
        items = resources.unwrapped_items() if hasattr(resources, "unwrapped_items") else dict(resources or {}).items()
        return {str(k): (v if isinstance(v, (int, float, str, type(None))) else str(v)) for k, v in items}

    return json.dumps({"default": plain(rs.default_resources),
                       "rules": {rule: plain(r) for rule, r in dict(rs.overwrite_resources or {}).items()}},
                      sort_keys=True)


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
