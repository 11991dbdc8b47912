# data stage (see docs/design.md, docs/datasets.md): raw sources -> filtered
# parquet per dataset -> training mixtures; model sources -> local safetensors.
#
# Datasets differ in the splits they produce (reset.variants.SPLITS), and a rule
# has one fixed set of outputs, so there is one rule per split shape:
#   prepare_dataset       train + dev          dolly, sharegpt, self_instruct, oasst1
#   prepare_dataset_cd    train + dev + eval   nq, msmarco, cnn_dailymail
#   prepare_dataset_eval  eval                 IF eval sets, bioasq, searchqa, wikisum
# IF evaluation sets read the prepared IF training splits (unseen-instruction filter).

import os
import re


rule prepare_dataset:
    conda:
        "../envs/data.yaml"
    input:
        raw=dataset_raw_inputs,
    output:
        train=res("data", "{dataset}", "train.parquet"),
        dev=res("data", "{dataset}", "dev.parquet"),
        report=res("data", "{dataset}", "filter_report.json"),
    wildcard_constraints:
        dataset="|".join(DATASETS_OF_SHAPE[("train", "dev")]),
    params:
        args=dataset_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.report),
    log:
        logs("data", "{dataset}.log"),
    benchmark:
        bench("data", "{dataset}.tsv")
    shell:
        "python -m reset.data prepare {params.args} --out-dir {params.out_dir} > {log} 2>&1"


rule prepare_dataset_cd:
    conda:
        "../envs/data.yaml"
    input:
        raw=dataset_raw_inputs,
    output:
        train=res("data", "{dataset}", "train.parquet"),
        dev=res("data", "{dataset}", "dev.parquet"),
        eval=res("data", "{dataset}", "eval.parquet"),
        report=res("data", "{dataset}", "filter_report.json"),
    wildcard_constraints:
        dataset="|".join(DATASETS_OF_SHAPE[("train", "dev", "eval")]),
    params:
        args=dataset_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.report),
    log:
        logs("data", "{dataset}.log"),
    benchmark:
        bench("data", "{dataset}.tsv")
    shell:
        "python -m reset.data prepare {params.args} --out-dir {params.out_dir} > {log} 2>&1"


rule prepare_dataset_eval:
    conda:
        "../envs/data.yaml"
    input:
        raw=dataset_raw_inputs,
        seen=dataset_seen_inputs,
    output:
        eval=res("data", "{dataset}", "eval.parquet"),
        report=res("data", "{dataset}", "filter_report.json"),
    wildcard_constraints:
        dataset="|".join(DATASETS_OF_SHAPE[("eval",)]),
    params:
        args=dataset_args,
        seen=dataset_seen_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.report),
    log:
        logs("data", "{dataset}.log"),
    benchmark:
        bench("data", "{dataset}.tsv")
    shell:
        "python -m reset.data prepare {params.args} {params.seen} --out-dir {params.out_dir} > {log} 2>&1"


rule build_mixture:
    conda:
        "../envs/data.yaml"
    input:
        train=mixture_inputs("train"),
        dev=mixture_inputs("dev"),
    output:
        train=res("data", "mixtures", "{mixture}", "train.parquet"),
        dev=res("data", "mixtures", "{mixture}", "dev.parquet"),
        report=res("data", "mixtures", "{mixture}", "report.json"),
    params:
        seed=S.data.split_seed,
        out_dir=lambda wildcards, output: os.path.dirname(output.report),
    log:
        logs("data", "mixtures", "{mixture}.log"),
    benchmark:
        bench("data", "mixtures", "{mixture}.tsv")
    shell:
        "python -m reset.data mixture --name {wildcards.mixture} --train {input.train} --dev {input.dev}"
        " --seed {params.seed} --out-dir {params.out_dir} > {log} 2>&1"


rule prepare_model:
    conda:
        "../envs/torch.yaml"
    output:
        directory(res("models", "pretrained", "{slug}")),
    wildcard_constraints:
        slug="|".join(re.escape(slug) for slug in all_model_sources()),
    params:
        args=model_prepare_args,
    log:
        logs("models", "pretrained", "{slug}.log"),
    benchmark:
        bench("models", "pretrained", "{slug}.tsv")
    shell:
        "python -m reset.models prepare {params.args} --out {output} > {log} 2>&1"


TARGETS.append(data_mixture_targets)
