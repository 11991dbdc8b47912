"""The config schema stops a bad run before any job, naming the offending key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reset import settings

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(tmp_path, overlay: dict, *targets: str):
    cfg = tmp_path / "overlay.yaml"
    cfg.write_text(yaml.safe_dump(overlay))
    return subprocess.run(
        [*SNAKEMAKE, "-n", "--quiet", "--configfile", str(cfg), *targets],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_default_config_is_valid():
    import jsonschema

    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    jsonschema.validate(config, schema)


def test_paper_overlay_is_valid():
    import jsonschema

    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "experiments/paper.yaml").read_text())

    jsonschema.validate(settings.merge(config, paper), schema)


@pytest.mark.parametrize(
    "overlay, named",
    [
        ({"training": {"learnig_rate": 1e-5}}, "learnig_rate"),
        ({"training": {"max_seq_length": "long"}}, "max_seq_length"),
        ({"sampling": {"shards": 0}}, "shards"),
        ({"judges": {"if": {"provider": "anthropic"}}}, "provider"),
        ({"datasets": {"imdb": {"source": "x.jsonl"}}}, "imdb"),
        ({"evaluation": {"unseen": ["imdb"]}}, "imdb"),
    ],
)
def test_invalid_config_stops_before_any_job_and_names_the_key(tmp_path, overlay, named):
    result = dry_run(tmp_path, overlay)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert named in message, message[-2000:]
    assert "Job stats" not in message
