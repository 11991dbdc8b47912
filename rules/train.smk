# train stage (see docs/design.md): one rule fine-tunes every trained variant.
#
# A variant's start model is a pretrained model or the best checkpoint of the
# variant it continues (VARIANTS[...]["init"]), so the DAG is the paper's
# two-stage figure: base -> base_cd -> base_cd_if, instruct -> instruct_mtl ->
# instruct_mtl_reset(_s). Trainer checkpoints live in results/{exp}/checkpoints/
# (not an output: they survive a killed job, which resumes from the last
# complete one when re-run) and are removed after success.
#   models/{variant}/seed{seed}/          best checkpoint + training_summary.json
#   trajectory/{variant}/seed{seed}/      first/ and last/ checkpoints + points.json
# With resources gpu=N > 0 the job runs N processes under DeepSpeed ZeRO-3.


rule train:
    conda:
        "../envs/torch.yaml"
    input:
        preflight=preflight_done(),
        model=lambda w: variant_init_dir(w.trained, w.seed),
        train=lambda w: variant_train_data(w.trained, w.seed),
        dev=lambda w: variant_dev_data(w.trained),
    output:
        model=directory(res("models", "{trained}", "seed{seed}")),
        summary=res("models", "{trained}", "seed{seed}", "training_summary.json"),
        first=directory(res("trajectory", "{trained}", "seed{seed}", "first")),
        last=directory(res("trajectory", "{trained}", "seed{seed}", "last")),
        points=res("trajectory", "{trained}", "seed{seed}", "points.json"),
    params:
        launcher=train_launcher,
        args=train_args,
        runtime=runtime_flags(S.training),
        checkpoints=lambda w: checkpoint_dir(w.trained, w.seed),
        trajectory=lambda w: res("trajectory", w.trained, f"seed{w.seed}"),
    threads: 2
    resources:
        gpu=0,
    log:
        logs("train", "{trained}", "seed{seed}.log"),
    benchmark:
        bench("train", "{trained}", "seed{seed}.tsv")
    shell:
        "{params.launcher} --model {input.model} --train {input.train} --dev {input.dev}"
        " --out {output.model} --trajectory-out {params.trajectory} --checkpoint-dir {params.checkpoints}"
        " --threads {threads} {params.args} {params.runtime} > {log} 2>&1"


TARGETS.append(training_targets)
