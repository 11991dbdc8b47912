"""reset/settings.py is the one definition of every config key: the schema, docs and CLIs follow it."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from reset import settings

REPO = Path(__file__).resolve().parents[1]


def merged(*names) -> dict:
    out: dict = {}
    for name in names:
        out = settings.merge(out, yaml.safe_load((REPO / name).read_text()))
    return out


def test_committed_schema_is_the_generated_one():
    committed = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    assert committed == settings.json_schema(), "run: python -m reset.settings schema --out schemas/config.schema.yaml"


def test_committed_docs_reference_is_the_generated_one():
    text = (REPO / "docs" / "config.md").read_text()
    assert settings.render_docs(text) == text, "run: python -m reset.settings docs --out docs/config.md"


def all_keys(cls=settings.Config, path=""):
    """(dotted key, field) of every leaf key of the definitions."""
    for f in dataclasses.fields(cls):
        _, inner = settings._is_optional(settings._hint(cls, f.name))
        key = f"{path}.{settings._key(f)}" if path else settings._key(f)
        if isinstance(inner, type) and issubclass(inner, settings.Section):
            yield from all_keys(inner, key)
        elif getattr(inner, "__origin__", None) is dict:
            yield from all_keys(inner.__args__[1], f"{key}.<name>")
        else:
            yield key, f


def test_every_key_has_a_doc_and_appears_in_the_docs():
    text = (REPO / "docs" / "config.md").read_text()
    for key, f in all_keys():
        assert f.metadata["doc"], f"{key} has no doc"
        if not key.startswith("judges.if_supercharged."):
            assert f"`{key}`" in text, f"{key} missing from docs/config.md"


@pytest.mark.parametrize("files", [["config.yaml"], ["config.yaml", "experiments/paper.yaml"],
                                   ["config.yaml", "tests/e2e_config.yaml"]])
def test_shipped_configs_load_and_validate(files):
    config = merged(*files)
    jsonschema.validate(config, settings.json_schema())
    typed = settings.load(config)
    assert typed.experiment == config["experiment"]
    assert typed.judges.if_.provider == config["judges"]["if"]["provider"]


def test_defaults_fill_missing_keys_and_paper_values_are_the_defaults():
    config = merged("config.yaml")
    del config["training"]["warmup_ratio"], config["sampling"]["seed"]
    typed = settings.load(config)
    assert typed.training.warmup_ratio == 0.03  # the paper's value, defined once
    assert typed.sampling.seed == 0
    assert settings.load({**config, "curation": {}}).curation.per_dataset == 2000


@pytest.mark.parametrize("change, message", [
    (lambda c: c["training"].update(learning_rat=1e-5), "training.learning_rat"),
    (lambda c: c["judges"]["if"].update(concurrency="four"), "judges.if.concurrency"),
    (lambda c: c["sampling"].update(temperatures=0.3), "sampling.temperatures"),
    (lambda c: c["models"].pop("base"), "models.base is required"),
    (lambda c: c["evaluation"].update(trajectories="yes"), "evaluation.trajectories"),
])
def test_bad_config_names_the_key(change, message):
    config = merged("config.yaml")
    change(config)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        settings.load(config)


def test_flags_are_the_key_names_and_round_trip():
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, settings.Training)
    defaults = parser.parse_args([])
    assert settings.from_args(settings.Training, defaults) == settings.Training()
    typed = settings.load(merged("config.yaml")).training
    args = parser.parse_args(sys_split(settings.flags(typed, output=None)))
    assert settings.from_args(settings.Training, args) == typed
    assert "--logging-steps" in settings.flags(typed, output=False)
    assert "--logging-steps" not in settings.flags(typed, output=True)
    assert "--learning-rate" in settings.flags(typed, output=True)


def sys_split(text):
    import shlex

    return shlex.split(text)


def test_train_cli_takes_the_training_keys_with_their_defaults():
    from reset.train import JOB_SPECIFIC, build_parser

    parser = build_parser()
    required = ["--model", "m", "--train", "t", "--dev", "d", "--out", "o", "--trajectory-out", "x",
                "--checkpoint-dir", "c", "--learning-rate", "1e-5", "--effective-batch", "4", "--seed", "1"]
    args = parser.parse_args(required)
    for f in dataclasses.fields(settings.Training):
        if f.name in JOB_SPECIFIC:
            continue
        assert getattr(args, f.name) == f.default, f.name


def test_cli_check_reports_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  logging_step: 3\n")
    result = subprocess.run([sys.executable, "-m", "reset.settings", "check", "--configfile",
                             str(REPO / "config.yaml"), str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and "training.logging_step" in result.stderr


def test_the_sidecar_settings_hash_leaves_runtime_flags_out():
    """Two jobs that differ only in a runtime flag hash alike; an output flag changes the hash."""

    from reset.sidecar import settings_hash, settings_of

    parser = settings.add_flags(argparse.ArgumentParser(), settings.Training)

    def digest(*argv):
        return settings_hash(settings_of(parser.parse_args(list(argv))))

    assert digest("--logging-steps", "7") == digest("--logging-steps", "50") == digest()
    assert digest("--learning-rate", "0.5") != digest()
