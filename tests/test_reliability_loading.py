"""Safe loading: weights come from safetensors only, and remote code runs only for a model the config names.

The remote-code model here is the tiny LLaMA with an `auto_map` pointing at a
Python file that leaves a marker file when it is imported: the marker proves
whether the code ran. The config path is checked end to end, through the real
Snakemake `prepare_model` job: models.trust_remote_code -> --trust-remote-code.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_support import REPO, env, shipped_datasets, snakemake, tail, write_overlay

from reset.models import source_slug

EXP = "loading"
MARKER_ENV = "RESET_REMOTE_CODE_MARKER"
CUSTOM_CODE = '''
import os
import pathlib

pathlib.Path(os.environ["RESET_REMOTE_CODE_MARKER"]).write_text("remote code ran")

from transformers import LlamaConfig, LlamaForCausalLM


class CustomConfig(LlamaConfig):
    model_type = "reset_custom_llama"


class CustomLlama(LlamaForCausalLM):
    config_class = CustomConfig
'''


@pytest.fixture
def remote_code_model(tiny_llama_dir, tmp_path) -> Path:
    out = tmp_path / "custom-model"
    shutil.copytree(tiny_llama_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="reset_custom_llama", architectures=["CustomLlama"],
                  auto_map={"AutoConfig": "custom_model.CustomConfig",
                            "AutoModelForCausalLM": "custom_model.CustomLlama"})
    (out / "config.json").write_text(json.dumps(config))
    (out / "custom_model.py").write_text(CUSTOM_CODE)
    return out


def overlay(tmp_path, base, instruct, trusted):
    return write_overlay(tmp_path / "overlay.yaml", {
        "experiment": EXP, "datasets": shipped_datasets(),
        "models": {"base": {"source": str(base)}, "instruct": {"source": str(instruct)},
                   "trust_remote_code": [str(t) for t in trusted]},
    })


def test_remote_code_runs_only_when_the_config_names_the_model(remote_code_model, tiny_llama_dir, tmp_path):
    marker = tmp_path / "marker"
    slug = source_slug(str(remote_code_model))
    target = f"results/{EXP}/models/pretrained/{slug}"
    log = tmp_path / "logs" / EXP / "models" / "pretrained" / f"{slug}.log"

    # not listed: the job refuses, the code never ran, no model directory is left
    config = overlay(tmp_path, remote_code_model, tiny_llama_dir, trusted=[])
    refused = snakemake(tmp_path, config, args=[target], extra_env={MARKER_ENV: marker})
    assert refused.returncode != 0
    assert "contains custom code" in log.read_text(), tail(log)
    assert f"list {str(remote_code_model)!r} under models.trust_remote_code" in log.read_text(), tail(log)
    assert "Traceback" not in log.read_text(), tail(log)
    assert not marker.exists(), "remote code ran although the config does not trust the model"
    assert not (tmp_path / target).exists()

    # listed by its exact source string: the flag reaches the job, the code runs, safetensors come out
    config = overlay(tmp_path, remote_code_model, tiny_llama_dir, trusted=[remote_code_model])
    allowed = snakemake(tmp_path, config, args=[target], extra_env={MARKER_ENV: marker})
    assert allowed.returncode == 0, tail(log)
    assert "--trust-remote-code" in allowed.stdout + allowed.stderr
    assert marker.read_text() == "remote code ran"
    assert list((tmp_path / target).glob("*.safetensors")) and not list((tmp_path / target).glob("*.bin"))


def test_trust_flag_goes_only_to_the_named_model(remote_code_model, tiny_llama_dir, tmp_path):
    """Dry run: prepare_model of the listed source gets the flag, every other source does not."""
    config = overlay(tmp_path, remote_code_model, tiny_llama_dir, trusted=[remote_code_model])
    trusted, plain = source_slug(str(remote_code_model)), source_slug(str(tiny_llama_dir))
    plan = snakemake(tmp_path, config, args=[f"results/{EXP}/models/pretrained/{trusted}",
                                             f"results/{EXP}/models/pretrained/{plain}",
                                             "--dry-run", "--printshellcmds"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    commands = [line for line in plan.stdout.splitlines() if "python -m reset.models prepare" in line]
    assert len(commands) == 2, plan.stdout
    flagged = {line.split("--source ")[1].split()[0] for line in commands if "--trust-remote-code" in line}
    assert flagged == {str(remote_code_model)}

    # with the default config nothing is trusted anywhere in the DAG
    default = overlay(tmp_path, tiny_llama_dir, tiny_llama_dir, trusted=[])
    plan = snakemake(tmp_path, default, args=["--dry-run", "--printshellcmds"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "python -m reset.models prepare" in plan.stdout and "--trust-remote-code" not in plan.stdout


def test_trust_flag_follows_the_named_model_through_the_dag(remote_code_model, tiny_llama_dir, tmp_path):
    """Dry run of the whole DAG: every job that loads the trusted model or a model fine-tuned from
    it (training, sampling, evaluation, NLI) gets the flag; the jobs of every other model do not."""
    config = write_overlay(tmp_path / "overlay.yaml", {
        "experiment": EXP, "datasets": shipped_datasets(),
        "models": {"base": {"source": str(remote_code_model)}, "instruct": {"source": str(tiny_llama_dir)},
                   "trust_remote_code": [str(remote_code_model)]},
        "judges": {"if": {"provider": "local", "model": str(tiny_llama_dir)},
                   "if_supercharged": {"provider": "local", "model": str(tiny_llama_dir)},
                   "nli": {"backend": "lm", "model": str(remote_code_model)}},
    })
    plan = snakemake(tmp_path, config, args=["--dry-run", "--printshellcmds", "--forceall"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    commands = [line.strip() for line in plan.stdout.splitlines() if "python -m reset." in line]

    def flagged(module, flag="--trust-remote-code"):
        """(trusted, untrusted) commands of one CLI, by whether they carry the flag."""
        lines = [c for c in commands if f"python -m {module}" in c]
        assert lines, f"no {module} job planned"
        return [c for c in lines if flag in c.split()], [c for c in lines if flag not in c.split()]

    trusted, plain = flagged("reset.train")
    assert {c.split("--out ")[1].split()[0].split("/")[3] for c in trusted} == {"base_cd", "base_cd_if"}
    assert plain and all("/models/base_cd" not in c.split("--out ")[1] for c in plain)
    trusted, plain = flagged("reset.evaluate generate")
    assert trusted and all("/base_cd" in c.split("--model ")[1].split()[0] for c in trusted)
    assert plain and not any("/base_cd" in c.split("--model ")[1].split()[0] for c in plain)
    trusted, plain = flagged("reset.sample sweep")   # sampling loads instruct_mtl: instruct's family
    assert not trusted and plain
    # the NLI model is trusted, the judge model is not
    trusted, plain = flagged("reset.curate score faithfulness", "--nli-trust-remote-code")
    assert trusted and not plain
    trusted, plain = flagged("reset.judge --settings")
    assert not trusted and plain
    scoring = [c for c in commands if "python -m reset.evaluate score" in c]
    assert scoring and all("--nli-trust-remote-code" in c.split() and "--judge-trust-remote-code" not in c.split()
                           for c in scoring)


def test_sampling_judge_and_nli_loaders_run_custom_code_only_when_told(remote_code_model, tmp_path, monkeypatch):
    from reset.faithfulness import load_nli
    from reset.judge import make_judge
    from reset.models import load_causal_lm

    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    judge_cfg = {"provider": "local", "model": "custom"}
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_nli("lm", remote_code_model, progress=False)
    assert not marker.exists(), "custom code ran without the flag"
    for load in (lambda trust: load_causal_lm(remote_code_model, trust_remote_code=trust),
                 lambda trust: load_nli("lm", remote_code_model, progress=False, trust_remote_code=trust),
                 lambda trust: make_judge(judge_cfg, model_dir=remote_code_model, trust_remote_code=trust)):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(False)
        assert load(True) is not None
    # the module is imported once per process: the first trusted load ran it, no refused one did
    assert marker.read_text() == "remote code ran"


def test_pickled_source_weights_are_refused_unless_allowed(tiny_llama_dir, tmp_path):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-model"
    shutil.copytree(tiny_llama_dir, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")

    def prepare(out, *flags):
        return subprocess.run([sys.executable, "-m", "reset.models", "prepare", "--source", str(pickled),
                               "--out", str(out), *flags], capture_output=True, text=True, cwd=REPO, env=env())

    refused = prepare(tmp_path / "refused")
    assert refused.returncode == 2 and "holds no .safetensors weights" in refused.stderr, refused.stderr[-2000:]
    assert "allow_pickle_weights: true" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()
    allowed = prepare(tmp_path / "allowed", "--allow-pickle-weights")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert [p.name for p in (tmp_path / "allowed").glob("*.safetensors")] == ["model.safetensors"]
    assert not list((tmp_path / "allowed").glob("*.bin"))
    converted = load_file(tmp_path / "allowed" / "model.safetensors")
    assert all(torch.equal(converted[k], state[k]) for k in converted if k in state)


# ---------------------------------------------------------------- static guard over the package


def calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == name]


def keyword(call, name):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def test_package_never_loads_pickles_or_trusts_remote_code_by_itself():
    """Every weight-loading call in reset/ forces safetensors; no literal trust_remote_code=True; no torch.load."""
    for path in sorted((REPO / "reset").rglob("*.py")):   # packages (reset/judge/) included
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in calls(tree, "from_pretrained"):
            owner = ast.unparse(call.func.value)
            where = f"{path.name}:{call.lineno}"
            trust = keyword(call, "trust_remote_code")
            assert not (isinstance(trust, ast.Constant) and trust.value is True), f"{where}: literal trust_remote_code=True"
            if "Model" in owner and keyword(call, "gguf_file") is None:  # weights, not a tokenizer or a GGUF file
                flag = keyword(call, "use_safetensors")
                assert flag is not None, f"{where}: {owner}.from_pretrained without use_safetensors"
                text = ast.unparse(flag)
                assert text == "True" or text == "None if allow_pickle_weights else True", f"{where}: {text}"
        for call in calls(tree, "load"):
            owner = ast.unparse(call.func.value)
            assert owner not in ("torch", "pickle"), f"{path.name}:{call.lineno}: {owner}.load"
