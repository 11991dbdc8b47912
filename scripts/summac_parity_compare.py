"""Compare our SummaC-ZS scores with the reference package's, case by case.

Reads the parity cases, the reference output (scripts/summac_parity_reference.py)
and ours (`python -m reset.score summac_zs` JSONL); also checks that both sides
cut every text into the same sentences. Prints a JSON report on stdout and
exits 1 when a score differs by more than the tolerance or a split differs.

Usage: python scripts/summac_parity_compare.py --cases C.jsonl --reference R.json --ours O.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compare(cases, reference, ours, tolerance):
    from reset.faithfulness import qa_premise, split_sentences

    if not (len(cases) == len(reference["scores"]) == len(ours)):
        raise ValueError(f"case counts differ: {len(cases)} cases, {len(reference['scores'])} reference "
                         f"scores, {len(ours)} of ours")
    rows, split_mismatches = [], []
    for i, case in enumerate(cases):
        ref, mine = reference["scores"][i], ours[i]["score"]
        rows.append({"id": case["id"], "reference": ref, "ours": mine, "abs_diff": abs(ref - mine)})
        premise = qa_premise(case.get("question") or "", case["context"])
        for side, text, theirs in (("premise", premise, reference["premise_sentences"][i]),
                                   ("answer", case["prediction"], reference["answer_sentences"][i])):
            if list(split_sentences(text)) != theirs:
                split_mismatches.append({"id": case["id"], "side": side, "ours": list(split_sentences(text)),
                                         "reference": theirs})
    max_diff = max(r["abs_diff"] for r in rows)
    return {
        "ok": max_diff <= tolerance and not split_mismatches,
        "tolerance": tolerance,
        "n_cases": len(rows),
        "max_abs_diff": max_diff,
        "n_sentence_pairs": sum(len(p) * len(a) for p, a in zip(
            [s[:reference["max_doc_sents"]] for s in reference["premise_sentences"]],
            reference["answer_sentences"], strict=True)),
        "split_mismatches": split_mismatches,
        "cases": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--ours", required=True, type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    report = compare(read_jsonl(args.cases), json.loads(args.reference.read_text()), read_jsonl(args.ours),
                     args.tolerance)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
