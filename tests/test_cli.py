"""Every `python -m reset.*` command ends the same way (reset/cli.py) and leaves a provenance sidecar.

The exit codes and the one-line errors are checked on the real `sample` and `evaluate` CLIs with
bad input; the sidecar on two cheap real jobs (data prepare, then the ReSet subset drawn from it),
run with a sentinel API key in the environment that must never reach a sidecar.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reset import cli, sidecar
from reset.provenance import collect_jobs
from reset.report import _jobs_html

REPO = Path(__file__).resolve().parents[1]
SENTINEL = "sk-sentinel-0123456789abcdef"


def run(*args, cwd=REPO, **env):
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=environ)


def one_error_line(proc, prog):
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_sample_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere.parquet"
    proc = run("reset.sample", "sweep", "--subset", missing, "--model", tmp_path, "--temperatures", "1",
               "--top-ks", "0", "--max-new-tokens", "4", "--out", tmp_path / "o.parquet")
    assert proc.returncode == 2 and str(missing) in one_error_line(proc, "reset.sample")
    proc = run("reset.sample", "sweep", "--subset", missing, "--model", tmp_path, "--temperatures", "1",
               "--top-ks", "0", "--max-new-tokens", "4", "--out", tmp_path / "o.parquet", "--shard", "5")
    assert proc.returncode == 2 and "--shard 5 is outside 0..0" in one_error_line(proc, "reset.sample")
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"id": ["a"]}).to_parquet(bad)
    proc = run("reset.sample", "subset", "--pool", "nq", bad, "--per-pool", "1", "--out", tmp_path / "s.parquet")
    line = one_error_line(proc, "reset.sample")
    assert proc.returncode == 2 and str(bad) in line and "prompt" in line
    assert not list(tmp_path.glob("*.provenance.json"))  # a failed job writes no sidecar


def test_evaluate_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = run("reset.evaluate", "score", "--generations", tmp_path / "g.parquet", "--datasets", "nq",
               "--out-dir", tmp_path / "o", "--judge-provider", "openai", "--judge-api-key-env", "not a name")
    assert proc.returncode == 2 and "judges.if.model is required" in one_error_line(proc, "reset.evaluate")
    proc = run("reset.evaluate", "generate", "--model", tmp_path, "--data", tmp_path / "x.parquet",
               "--max-new-tokens", "2", "--out", tmp_path / "o.parquet", "--point", "first")
    assert proc.returncode == 2 and "go together" in one_error_line(proc, "reset.evaluate")
    proc = run("reset.evaluate", "copy", "--src-dir", tmp_path, "--datasets", "wikisum", "--out-dir", tmp_path / "o")
    assert proc.returncode == 2 and "wikisum" in one_error_line(proc, "reset.evaluate")
    proc = run("reset.evaluate", "generate", "--bogus")
    assert proc.returncode == 2 and "arguments are required" in proc.stderr


def test_run_cli_maps_errors_to_exit_codes(capsys):
    def raises(err):
        def main(argv=None):
            raise err
        return main

    def ours(argv=None):
        from reset.io import read_jsonl

        return read_jsonl(__file__)  # a Python file is not JSONL: a ValueError raised in the package

    assert cli.run_cli(ours, sidecar=False, prog="t") == 2
    assert "t: error:" in capsys.readouterr().err
    assert cli.run_cli(raises(cli.InputError("bad key x")), sidecar=False, prog="t") == 2
    assert cli.run_cli(raises(cli.RunFailure("gave up")), sidecar=False, prog="t") == 1
    assert cli.run_cli(raises(SystemExit("--n must be at least 1")), sidecar=False, prog="t") == 2
    assert capsys.readouterr().err.splitlines()[-1] == "t: error: --n must be at least 1"
    assert cli.run_cli(lambda argv: 3, sidecar=False, prog="t") == 3

    def foreign(argv=None):
        return int("not a number")  # a ValueError from outside the package is a bug: traceback kept

    with pytest.raises(ValueError, match="invalid literal"):
        cli.run_cli(foreign, sidecar=False, prog="t")
    with pytest.raises(KeyError):
        cli.run_cli(raises(KeyError("x")), sidecar=False, prog="t")


def test_sidecars_of_real_jobs_hold_provenance_and_no_secret(tmp_path):
    results = tmp_path / "results"
    raw = REPO / "resources" / "demo" / "raw" / "dolly.jsonl"
    env = {"OPENAI_API_KEY": SENTINEL, "HF_TOKEN": SENTINEL[::-1]}
    prep = run("reset.data", "prepare", "--dataset", "dolly", "--source", raw, "--revision", "v1",
               "--out-dir", results / "data" / "dolly", **env)
    assert prep.returncode == 0, prep.stderr[-3000:]
    subset = run("reset.sample", "subset", "--pool", "if_mix", results / "data" / "dolly" / "train.parquet",
                 "--per-pool", "2", "--seed", "3", "--out", results / "sampling" / "subset.parquet",
                 "--report", SENTINEL, **env)  # a secret passed by mistake on the command line
    assert subset.returncode == 0, subset.stderr[-3000:]

    side = json.loads((results / "sampling" / "subset.parquet.provenance.json").read_text())
    assert side["job"] == "reset.sample subset" and side["output"].endswith("subset.parquet")
    assert side["settings"]["per_pool"] == 2 and side["settings"]["seed"] == 3
    assert side["settings"]["report"] == sidecar.REDACTED and sidecar.REDACTED in " ".join(side["command"])
    assert side["settings_hash"] == sidecar.settings_hash(side["settings"])
    assert side["read"]["datasets"] == [{"dataset": "dolly", "path": str(results / "data" / "dolly" / "train.parquet"),
                                         "sources": {"all": str(raw)}, "revision": "v1"}]
    host = side["host"]
    assert host["cpu_count"] == os.cpu_count() and host["hostname"] and "gpus" in host and "driver" in host
    assert side["wall_seconds"] > 0 and side["peak_memory"]["rss_mb"] > 10
    assert set(sidecar.PACKAGES) <= set(side["packages"]) and side["packages"]["pandas"] == pd.__version__
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # read from .git without git; must agree with git itself
        assert side["git"]["commit"] == head.stdout.strip()

    prepared = json.loads((results / "data" / "dolly.provenance.json").read_text())
    assert prepared["job"] == "reset.data prepare" and prepared["settings"]["revision"] == "v1"

    jobs = collect_jobs(results)
    assert [j["sidecar"] for j in jobs] == ["data/dolly.provenance.json", "sampling/subset.parquet.provenance.json"]
    table = _jobs_html(jobs)  # the report's per-job table
    assert "reset.sample subset" in table and side["settings_hash"] in table and host["hostname"] in table
    for path in results.rglob("*.provenance.json"):
        text = path.read_text()
        assert SENTINEL not in text and SENTINEL[::-1] not in text, path


def test_model_directories_and_git_are_read_without_tools(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "SOURCE.json").write_text(json.dumps({"source": "org/model", "revision": "abc", "task": "causal-lm",
                                                   "resolved_commit": "f" * 40}))
    args = argparse.Namespace(model=model, out=tmp_path / "out.parquet", n=1)
    read = sidecar.inputs_read(args, outputs=[args.out])
    assert read["models"] == [{"path": str(model), "source": "org/model", "revision": "abc", "task": "causal-lm",
                               "resolved_commit": "f" * 40}]
    # a worktree's .git file and a packed ref
    common = tmp_path / "repo.git"
    (common / "worktrees" / "w").mkdir(parents=True)
    (common / "worktrees" / "w" / "HEAD").write_text("ref: refs/heads/topic\n")
    (common / "worktrees" / "w" / "commondir").write_text("../..\n")
    (common / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/topic\n")
    checkout = tmp_path / "w"
    (checkout / "pkg").mkdir(parents=True)
    (checkout / ".git").write_text(f"gitdir: {common / 'worktrees' / 'w'}\n")
    assert sidecar.git_commit(checkout / "pkg")["commit"] == "a" * 40
    assert sidecar.git_commit(Path("/"))["commit"] is None
