"""Bad input ends in a clear error or a counted drop, and never in an output Snakemake would take as complete.

Each case runs the real Snakemake rule in a temporary working directory: first a
good run (so stale outputs exist), then the raw file is broken and the rule runs
again. The job must fail with a message naming the file and line (or byte), and
none of its outputs, old or new, may remain: Snakemake would otherwise skip the
job next time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from reliability_support import REPO, leftovers, shipped_datasets, snakemake, tail, write_overlay

EXP = "badinput"
DOLLY = REPO / "resources" / "demo" / "raw" / "dolly.jsonl"
OUTPUTS = ["train.parquet", "dev.parquet", "filter_report.json"]


def good_rows() -> list[str]:
    return DOLLY.read_text(encoding="utf-8").splitlines()


def broken_line(path):
    lines = good_rows()
    lines[2] = lines[2][:-1]  # line 3 loses its closing brace
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{path}:3: not valid JSON"


def non_utf8(path):
    lines = [line.encode() for line in good_rows()]
    bad = '{"instruction": "Describe a caf\u00e9.", "context": "", "response": "Small.", "category": "x"}'
    data = b"\n".join(lines[:4]) + b"\n" + bad.encode("latin-1") + b"\n"
    path.write_bytes(data)
    offset = data.index(b"caf\xe9") + 3
    return f"{path}: not valid UTF-8 at byte offset {offset} (line 5)"


def not_an_object(path):
    lines = good_rows()
    lines.insert(1, "[1, 2, 3]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{path}:2: expected one JSON object per line, got list"


def empty_after_filtering(path):
    rows = [json.loads(line) for line in good_rows()]
    for row in rows:
        row["context"] = "Some passage."  # dolly drops every row that comes with a context
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return "dataset dolly: no example left after filtering"


def empty_file(path):
    path.write_text("\n\n")
    return f"{path}: file is empty"


def missing_file(path):
    path.unlink()
    return f"{path}: no such file"


@pytest.fixture
def workdir(tmp_path):
    raw = tmp_path / "dolly.jsonl"
    raw.write_bytes(DOLLY.read_bytes())
    datasets = shipped_datasets()
    datasets["dolly"]["source"] = str(raw)
    config = write_overlay(tmp_path / "overlay.yaml", {"experiment": EXP, "datasets": datasets})
    return tmp_path, raw, config


def test_broken_raw_file_fails_naming_it_and_leaves_no_output(workdir):
    """Good run, break the file, run (fails, outputs gone), repair, run again (re-planned, succeeds)."""
    tmp_path, raw, config = workdir
    target = f"results/{EXP}/data/dolly/filter_report.json"
    out_dir = tmp_path / "results" / EXP / "data" / "dolly"
    log = tmp_path / "logs" / EXP / "data" / "dolly.log"
    for breaker in (broken_line, non_utf8, empty_after_filtering, missing_file):
        raw.write_bytes(DOLLY.read_bytes())
        good = snakemake(tmp_path, config, args=[target])
        assert good.returncode == 0, (breaker.__name__, good.stderr[-3000:])
        assert all((out_dir / name).exists() for name in OUTPUTS)

        message = breaker(raw)
        bad = snakemake(tmp_path, config, args=[target])
        assert bad.returncode != 0, (breaker.__name__, bad.stderr[-3000:])
        assert message in log.read_text(), (breaker.__name__, tail(log))
        assert "Traceback" not in log.read_text(), tail(log)  # a clear error, not a crash
        # neither the new nor the stale outputs survive, and no temporary file is left behind
        assert [name for name in OUTPUTS if (out_dir / name).exists()] == [], breaker.__name__
        assert leftovers(tmp_path / "results") == []


@pytest.mark.parametrize("breaker", [not_an_object, empty_file])
def test_other_broken_files_name_file_and_line_from_the_cli(tmp_path, breaker):
    raw = tmp_path / "dolly.jsonl"
    message = breaker(raw)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "reset.data", "prepare", "--dataset", "dolly", "--source", str(raw),
                           "--out-dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() or list(out.iterdir()) == []


def test_malformed_rows_are_counted_drops_in_report_and_log(workdir):
    tmp_path, raw, config = workdir
    rows = good_rows()
    bad = [
        {"instruction": ["not", "a", "string"], "context": "", "response": "r", "category": "x"},
        {"instruction": "No response field.", "context": "", "category": "x"},
        {"instruction": "   ", "context": "", "response": "blank instruction", "category": "x"},
        {"instruction": "Empty response.", "context": "", "response": "", "category": "x"},
    ]
    raw.write_text("\n".join(rows + [json.dumps(b) for b in bad]) + "\n", encoding="utf-8")
    target = f"results/{EXP}/data/dolly/filter_report.json"
    run = snakemake(tmp_path, config, args=[target])
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / target).read_text())
    for reason in ("bad_instruction", "missing_response", "empty_instruction", "empty_response"):
        assert report["dropped"].get(reason, 0) >= 1, report
    assert report["read"] == len(rows) + len(bad)
    assert report["read"] == report["kept"] + sum(report["dropped"].values())
    log = (tmp_path / "logs" / EXP / "data" / "dolly.log").read_text()
    assert "bad_instruction=1" in log and "missing_response=" in log, log[-2000:]


def test_missing_model_path_fails_the_prepare_job_naming_the_path(tmp_path):
    from reset.models import source_slug

    missing = str(tmp_path / "no-such-model")
    config = write_overlay(tmp_path / "overlay.yaml", {
        "experiment": EXP, "datasets": shipped_datasets(),
        "models": {"base": {"source": missing}, "instruct": {"source": missing}},
    })
    slug = source_slug(missing)
    run = snakemake(tmp_path, config, args=[f"results/{EXP}/models/pretrained/{slug}"])
    log = tmp_path / "logs" / EXP / "models" / "pretrained" / f"{slug}.log"
    assert run.returncode != 0
    assert f"model source {missing!r} is neither a local directory nor a hub id" in log.read_text(), tail(log)
    assert "Traceback" not in log.read_text(), tail(log)
    pretrained = tmp_path / "results" / EXP / "models" / "pretrained"
    assert not pretrained.exists() or list(pretrained.iterdir()) == []


def test_unknown_dataset_name_is_refused_by_the_cli():
    proc = subprocess.run([sys.executable, "-m", "reset.data", "prepare", "--dataset", "imdb", "--source", "x.jsonl",
                           "--out-dir", "unused"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "invalid choice: 'imdb'" in proc.stderr and "dolly" in proc.stderr


@pytest.mark.parametrize("overlay, named", [
    ({"data": {"dev_fraction": 1.5}}, "dev_fraction"),
    ({"experiment": "../escape"}, "experiment"),
])
def test_invalid_config_stops_before_any_job(tmp_path, overlay, named):
    config = write_overlay(tmp_path / "overlay.yaml", {**overlay, "datasets": shipped_datasets()})
    run = snakemake(tmp_path, config, args=["--dry-run", "--quiet"])
    message = run.stdout + run.stderr
    assert run.returncode != 0 and named in message, message[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path):
    """api_key_env names the variable; a pasted key stops the run and is written to no log."""
    key = "sk-proj-PASTED-0e7f3a9c41d2"
    config = write_overlay(tmp_path / "overlay.yaml", {"datasets": shipped_datasets(),
                                                       "judges": {"if_supercharged": {"api_key_env": key}}})
    run = snakemake(tmp_path, config, args=[f"results/{EXP}/data/dolly/filter_report.json"])
    message = run.stdout + run.stderr
    assert run.returncode != 0
    assert "judges.if_supercharged.api_key_env" in message and "name of an environment variable" in message, message
    assert key not in message and key[8:] not in message
    for path in (tmp_path / ".snakemake").rglob("*"):
        if path.is_file():
            assert key[8:].encode() not in path.read_bytes(), path
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- very long contexts


def test_over_long_prompts_are_cut_to_the_context_window_and_counted(tiny_llama_dir, caplog):
    from reset.inference import generate
    from reset.models import load_causal_lm, load_tokenizer
    from reset.prompts import render_prompt

    model, tokenizer = load_causal_lm(tiny_llama_dir), load_tokenizer(tiny_llama_dir)
    window = model.config.max_position_embeddings
    long_context = " ".join(f"Passage sentence number {i} says nothing new." for i in range(window // 4))
    prompts = [render_prompt("summarization", "Summarise the text.", long_context),
               render_prompt("if", "Name a colour.")]
    assert len(tokenizer(prompts[0]).input_ids) > window
    with caplog.at_level("WARNING", logger="reset.sample"):
        out = generate(model, tokenizer, prompts, [{"do_sample": False}] * 2, [0, 0], max_new_tokens=8, batch_size=2)
    assert [o["prompt_truncated"] for o in out] == [True, False]
    assert "1 of 2 prompts are longer than the model's context window" in caplog.text
    # the short prompt is unaffected by its long neighbour
    alone = generate(model, tokenizer, prompts[1:], [{"do_sample": False}], [0], max_new_tokens=8, batch_size=1)
    assert alone[0]["text"] == out[1]["text"]


def test_fit_context_keeps_head_and_tail():
    from reset.inference import fit_context

    ids = list(range(100))
    (cut,), which = fit_context([ids], 40)
    assert which == {0} and len(cut) == 40
    assert cut[:10] == ids[:10] and cut[10:] == ids[-30:]
    assert fit_context([ids], 100) == ([ids], set())


def test_over_long_judge_input_is_cut_and_counted(tiny_llama_dir):
    from reset.judge import make_judge

    judge = make_judge({"provider": "local", "model": "tiny", "max_input_tokens": 512, "batch_size": 2},
                       model_dir=tiny_llama_dir)
    items = [{"id": "short", "question": "Name a colour.", "answer": "Blue."},
             {"id": "long", "question": "Summarise.", "answer": "Very long answer. " * 2000}]
    rows = judge.judge(items)
    assert [r["error"] for r in rows] == [None, None] and all(1 <= r["rating"] <= 10 for r in rows)
    assert judge.summary()["truncated"] == 1
