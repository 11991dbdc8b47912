# ReSet: rejection sampling for continued self-instruction tuning.
# `snakemake -c2` runs the embedded demo; `--configfile experiments/paper.yaml`
# switches to the paper's scale. Every output lands under results/{experiment}/.

import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# Rules call `python -m reset...`: make that the interpreter running Snakemake
# (the project's .venv), whatever PATH the user's shell has.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


configfile: "config.yaml"


envvars:
    "PATH",


include: "rules/common.smk"
include: "rules/preflight.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/curate.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
