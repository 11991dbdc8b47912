"""Score JSONL rows with one metric: `python -m reset.score METRIC < in.jsonl > out.jsonl`.

Each input line is a JSON object with some of `prediction`, `context`,
`question`, `references` (a list of strings, or one string); each output line is
the same object plus `score`. Metrics:

  span_coverage      prediction is a run of whole context tokens (1.0 / 0.0)
  unigram_coverage   share of the prediction's unigrams found in the context
  bigram_coverage    share of the prediction's bigrams found in the context
  exact_match        prediction equals a reference after normalisation
  rouge_l            ROUGE-L F-measure, best over the references
  summac_zs          SummaC-ZS of the prediction against the context (the question,
                     when non-empty, is prefixed to it); needs --nli-model

Texts are normalised as in docs/metrics.md before every comparison but ROUGE-L's.
"""

from __future__ import annotations

import argparse
import json
import sys

from reset import metrics
from reset.faithfulness import add_nli_flags, load_nli_from, nli_options

NEEDS = {
    "span_coverage": ("prediction", "context"),
    "unigram_coverage": ("prediction", "context"),
    "bigram_coverage": ("prediction", "context"),
    "exact_match": ("prediction", "references"),
    "rouge_l": ("prediction", "references"),
    "summac_zs": ("prediction", "context"),
}


class InputError(ValueError):
    """A bad input line; the message names the line."""


def read_rows(lines) -> tuple[list[dict], list[int]]:
    """Parse JSONL lines (blank lines skipped) into rows and their line numbers.

    A bad line raises InputError naming it.
    """
    rows, linenos = [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"stdin line {lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise InputError(f"stdin line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        linenos.append(lineno)
    return rows, linenos


def check_rows(rows: list[dict], metric: str, linenos=None) -> None:
    """Every row has the keys `metric` needs, with the right types; else InputError."""
    linenos = linenos or range(1, len(rows) + 1)
    for row, lineno in zip(rows, linenos, strict=True):
        for key in NEEDS[metric]:
            if key not in row:
                raise InputError(f"stdin line {lineno}: missing key {key!r} (needed by {metric})")
            value = row[key]
            ok = isinstance(value, str) or (key == "references" and isinstance(value, list)
                                            and all(isinstance(v, str) for v in value))
            if not ok:
                want = "a string or a list of strings" if key == "references" else "a string"
                raise InputError(f"stdin line {lineno}: key {key!r} must be {want}, "
                                 f"got {type(value).__name__}")


def score_rows(rows: list[dict], metric: str, nli=None, max_chunks: int = 100) -> list[float]:
    """Scores of `rows` under `metric` (see the module docstring)."""
    check_rows(rows, metric)
    if metric == "span_coverage":
        return [metrics.span_coverage(r["prediction"], r["context"]) for r in rows]
    if metric in ("unigram_coverage", "bigram_coverage"):
        n = 1 if metric == "unigram_coverage" else 2
        return [metrics.ngram_coverage(r["prediction"], r["context"], n) for r in rows]
    if metric == "exact_match":
        return [metrics.exact_match(r["prediction"], r["references"]) for r in rows]
    if metric == "rouge_l":
        return [metrics.rouge_l(r["prediction"], r["references"]) for r in rows]
    if metric == "summac_zs":
        from reset.faithfulness import qa_premise, summac_zs

        premises = [qa_premise(r.get("question") or "", r["context"]) for r in rows]
        return summac_zs(nli, premises, [r["prediction"] for r in rows], max_chunks)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(NEEDS)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reset.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metric", choices=list(NEEDS), metavar="METRIC", help=", ".join(NEEDS))
    nli = add_nli_flags(parser, "NLI model (summac_zs only; the keys of judges.nli)")
    nli.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.metric == "summac_zs" and not args.nli_model:
        parser.error("summac_zs needs --nli-model DIR")
    try:
        rows, linenos = read_rows(sys.stdin)
        check_rows(rows, args.metric, linenos)
    except InputError as err:
        print(f"reset.score: {err}", file=sys.stderr)
        return 2
    nli = None
    if args.metric == "summac_zs":

        nli = load_nli_from(nli_options(args), device=args.device)
    scores = score_rows(rows, args.metric, nli, args.nli_max_chunks)
    out = sys.stdout
    for row, score in zip(rows, scores, strict=True):
        row["score"] = score
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    from reset.cli import run_cli

    sys.exit(run_cli(main))
