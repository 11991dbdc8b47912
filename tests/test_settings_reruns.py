"""Reruns follow outputs: on the finished tiny run, a runtime key reruns nothing, an output key
reruns exactly the jobs whose outputs depend on it (docs/config.md, "Output and runtime keys")."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from e2e_support import snakemake

from reset import settings


def runtime_keys():
    """Every key declared output=False, as a path into the config (both IF judges)."""
    out = []

    def walk(cls, path):
        for f in dataclasses.fields(cls):
            _, inner = settings._is_optional(settings._hint(cls, f.name))
            key = [*path, settings._key(f)]
            if isinstance(inner, type) and issubclass(inner, settings.Section):
                walk(inner, key)
            elif not f.metadata["output"]:
                out.append(tuple(key))

    walk(settings.Config, [])
    return out


def changed(value):
    if value is None:            # an unset cap (judges.max_usd)
        return 1000.0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    raise AssertionError(f"no change rule for {value!r}")


def planned_jobs(run, path, value) -> dict[str, int]:
    """Job counts per rule that `snakemake -n` plans after setting config key `path` to `value`."""
    workdir, _, _ = run
    config = yaml.safe_load((workdir / "e2e.yaml").read_text())
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    overlay = workdir / "changed.yaml"
    overlay.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(workdir, overlay, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:", 1)[1]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, re.M) if rule != "total"}


def current(run, path):
    workdir, _, _ = run
    merged = settings.merge(yaml.safe_load((settings_repo() / "config.yaml").read_text()),
                            yaml.safe_load((workdir / "e2e.yaml").read_text()))
    typed = settings.load(merged)
    node = typed
    for part in path:
        node = getattr(node, part + "_" if part == "if" else part)
    return node


def settings_repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_the_runtime_keys_include_logging_retries_and_concurrency():
    keys = {".".join(k) for k in runtime_keys()}
    assert {"training.logging_steps", "judges.if.concurrency", "judges.if.max_retries",
            "judges.if_supercharged.timeout_s"} <= keys


def test_a_runtime_key_reruns_nothing(e2e_run):
    for path in runtime_keys():
        jobs = planned_jobs(e2e_run, path, changed(current(e2e_run, path)))
        assert jobs == {}, f"changing runtime key {'.'.join(path)} plans {jobs}"


TRAINED_PER_SEED = 7
RESET_TRAININGS = 3  # instruct_mtl_reset, instruct_mtl_reset_s, instruct_reset


def test_gates_hide_no_output_change(e2e_run):
    """A price and the budget changed with an output key: the output key still reruns its jobs.

    A gate re-made in the same invocation would make Snakemake skip the params check of every
    job behind it (docs/config.md, "Gates"): the judge's and the trainings' changes would be lost.
    """
    workdir, _, _ = e2e_run
    config = yaml.safe_load((workdir / "e2e.yaml").read_text())
    judge = config.setdefault("judges", {}).setdefault("if", {})
    judge.update(price_prompt_per_1k=0.5, max_input_tokens=1024)
    config["judges"]["max_usd"] = 1000.0
    config.setdefault("training", {})["reset_learning_rate"] = 3e-6
    overlay = workdir / "changed.yaml"
    overlay.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(workdir, overlay, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = (result.stdout + result.stderr).split("Job stats:", 1)[1]
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}
    assert jobs.get("judge_candidates") == 1 and jobs.get("train") == 2 * RESET_TRAININGS, jobs
    assert "judge_cost_estimate" not in jobs and "preflight" not in jobs, jobs


@pytest.mark.parametrize("path, value, expect, absent", [
    # ReSet's learning rate: only the three ReSet trainings (x 2 seeds) and what reads them
    (("training", "reset_learning_rate"), 3e-6, {"train": 2 * RESET_TRAININGS},
     {"sample", "judge_candidates", "prepare_dataset", "prepare_model"}),
    # the main IF judge's prompt length: its judgements, every evaluation score, and the ReSet
    # trainings fed by the main curated set (instruct_mtl_reset, instruct_reset), not ReSet-S
    (("judges", "if", "max_input_tokens"), 1024, {"judge_candidates": 1, "train": 2 * 2, "eval_generate": 2 * 2},
     {"sample", "prepare_model", "score_faithfulness"}),
    # decoding of evaluation: every generation job, no training
    (("evaluation", "max_new_tokens"), 9, {}, {"train", "sample", "judge_candidates"}),
    # the verdicts' margin: the claims table and its figure (and the report), nothing upstream
    (("report", "similarity_margin"), 0.05, {"claims": 1, "figure_claims": 1},
     {"train", "eval_score", "tables", "examples", "trajectory_table"}),
    # the report's seed: the bootstrap and the example draw, not the main tables
    (("report", "seed"), 7, {"claims": 1, "examples": 1}, {"train", "eval_score", "tables", "figures"}),
    # the cut-off policy: which candidates are judged and ranked, and what trains on the curated sets;
    # not the sampling or the faithfulness / task scores (they cover every candidate)
    (("curation", "allow_truncated"), False, {"judge_items": 2, "curate": 2},
     {"sample", "score_faithfulness", "score_task", "prepare_model"}),
    # a third seed: only its own jobs
    (("seeds",), [1, 2, 3], {"train": TRAINED_PER_SEED}, {"prepare_dataset", "sample"}),
])
def test_an_output_key_reruns_exactly_its_jobs(e2e_run, path, value, expect, absent):
    jobs = planned_jobs(e2e_run, path, value)
    assert jobs, f"changing {'.'.join(path)} plans nothing"
    for rule, count in expect.items():
        assert jobs.get(rule) == count, f"{'.'.join(path)}: {rule} x{jobs.get(rule)}, expected {count}: {jobs}"
    assert not absent & set(jobs), f"{'.'.join(path)} reruns {sorted(absent & set(jobs))}: {jobs}"
