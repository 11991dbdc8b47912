"""Our SummaC-ZS against the reference `summac` package (scripts/summac_parity.sh).

The first run creates the reference environment at .cache/summac-env (transformers
4.35.2, summac 0.0.4; about a minute with a warm pip cache); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "summac_parity.sh"


def test_summac_parity_with_reference(tmp_path):
    work = tmp_path / "parity"
    proc = subprocess.run(["bash", str(SCRIPT), "--keep", str(work)], capture_output=True, text=True, cwd=REPO,
                          timeout=1800)
    assert proc.stdout.strip(), proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, json.dumps(report, indent=1)[:4000]
    assert report["ok"] and report["max_abs_diff"] <= 1e-4
    assert report["split_mismatches"] == []
    assert report["n_cases"] == 12 and report["n_sentence_pairs"] > 200
    scores = {c["id"]: c["reference"] for c in report["cases"]}
    # the cases exercise the edge paths and the model's scores are far from constant
    assert scores["empty-answer"] == 0.0 and scores["no-long-sentence"] == 0.0
    assert scores["news-faithful"] == scores["news-faithful-duplicate"]
    assert max(scores.values()) - min(scores.values()) > 0.3

    # the comparison itself can fail: shift one of our scores past the tolerance
    ours = [json.loads(line) for line in (work / "ours.jsonl").read_text().splitlines()]
    ours[0]["score"] += 2e-4
    (work / "shifted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ours))
    shifted = subprocess.run(
        [sys.executable, "scripts/summac_parity_compare.py", "--cases", "scripts/summac_parity_cases.jsonl",
         "--reference", str(work / "reference.json"), "--ours", str(work / "shifted.jsonl")],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "RESET_NLTK_DATA": str(work / "nltk_data"), "NLTK_DATA": str(work / "nltk_data")})
    assert shifted.returncode == 1, shifted.stderr
    assert json.loads(shifted.stdout)["ok"] is False
