"""`python -m reset.score` end to end, through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reset.metrics import ngram_coverage, rouge_l

REPO = Path(__file__).resolve().parents[1]
CONTEXT = "Barack Obama was born in Honolulu, Hawaii. He served two terms as president of the United States."


def run_score(args, rows=None, text=None):
    stdin = text if text is not None else "".join(json.dumps(r) + "\n" for r in rows)
    return subprocess.run([sys.executable, "-m", "reset.score", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def outputs(proc):
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_help():
    proc = subprocess.run([sys.executable, "-m", "reset.score", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    for metric in ("span_coverage", "unigram_coverage", "bigram_coverage", "exact_match", "rouge_l", "summac_zs"):
        assert metric in proc.stdout


def test_text_metrics_end_to_end():
    rows = [
        {"id": "a", "prediction": "Honolulu, Hawaii", "context": CONTEXT, "references": ["Honolulu"], "extra": [1, 2]},
        {"id": "b", "prediction": "born in Chicago", "context": CONTEXT, "references": "born in Chicago"},
        {"id": "c", "prediction": "", "context": CONTEXT, "references": ["x"]},
    ]
    expected = {
        "span_coverage": [1.0, 0.0, 0.0],
        "unigram_coverage": [1.0, 2 / 3, 0.0],
        "bigram_coverage": [1.0, ngram_coverage("born in Chicago", CONTEXT, 2), 0.0],
        "exact_match": [0.0, 1.0, 0.0],
        "rouge_l": [rouge_l("Honolulu, Hawaii", ["Honolulu"]), 1.0, 0.0],
    }
    assert expected["bigram_coverage"][1] == 0.5
    for metric, scores in expected.items():
        out = outputs(run_score([metric], rows))
        assert [o["score"] for o in out] == pytest.approx(scores), metric
        # every input object comes back whole, in order, with the score added
        assert [{k: v for k, v in o.items() if k != "score"} for o in out] == rows


def test_blank_lines_are_skipped():
    text = "\n" + json.dumps({"prediction": "Hawaii", "context": CONTEXT}) + "\n\n"
    assert [o["score"] for o in outputs(run_score(["span_coverage"], text=text))] == [1.0]


@pytest.mark.parametrize("text, message", [
    ('{"prediction": "a", "context": "a"}\n{"prediction": "a", "context": \n', "stdin line 2: not valid JSON"),
    ('{"prediction": "a", "context": "a"}\n\n[1, 2]\n', "stdin line 3: expected a JSON object"),
    ('{"prediction": "a"}\n', "stdin line 1: missing key 'context'"),
    ('{"prediction": "a", "context": 5}\n', "stdin line 1: key 'context' must be a string"),
])
def test_bad_input_names_the_line(text, message):
    proc = run_score(["span_coverage"], text=text)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stdout == ""          # nothing half-written


def test_summac_needs_a_model():
    proc = run_score(["summac_zs"], rows=[{"prediction": "a", "context": "b"}])
    assert proc.returncode == 2 and "--nli-model" in proc.stderr


def test_summac_zs_end_to_end(tiny_llama_dir):
    from reset.faithfulness import load_nli, summac_zs

    context = "The harbour bridge in Port Ellis will close on Monday. Repairs will take about eight months."
    rows = [
        {"id": "qa", "question": "When does the bridge close?", "context": context,
         "prediction": "The bridge closes on Monday for repairs."},
        {"id": "sum", "question": "", "context": context, "prediction": "Repairs on the bridge take eight months."},
        {"id": "empty", "question": "", "context": context, "prediction": ""},
    ]
    proc = run_score(["summac_zs", "--nli-model", str(tiny_llama_dir), "--nli-backend", "lm", "--device", "cpu"],
                     rows)
    scores = [o["score"] for o in outputs(proc)]
    nli = load_nli("lm", tiny_llama_dir, device="cpu", progress=False)
    expected = summac_zs(nli, ["When does the bridge close?\n" + context, context, context],
                         [r["prediction"] for r in rows])
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scores[2] == 0.0 and all(-1.0 <= s <= 1.0 for s in scores)
