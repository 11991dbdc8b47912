"""Score the parity cases with the reference summac package (run in .cache/summac-env).

summac only accepts model names from its own table (`model_map`), so the local
model directory is registered there under a name of our own, with the label
indices of the vitaminc models (entailment 0, contradiction 1). Everything else
is the package's default SummaCZS at sentence granularity: max input length
500, at most 100 document sentences, max over context sentences, mean over
answer sentences, entailment minus contradiction.

Usage: python scripts/summac_parity_reference.py --model DIR --cases CASES.jsonl --out OUT.json
Writes {"scores": [...], "premise_sentences": [[...]], "answer_sentences": [[...]]}.
"""

import argparse
import json
import sys

LOCAL_NAME = "parity-local"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local NLI model directory")
    parser.add_argument("--cases", required=True, help="JSONL with question, context, prediction")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    from summac import model_summac

    model_summac.model_map[LOCAL_NAME] = {"model_card": args.model, "entailment_idx": 0, "contradiction_idx": 1}
    scorer = model_summac.SummaCZS(model_name=LOCAL_NAME, granularity="sentence", imager_load_cache=False,
                                   device="cpu")

    with open(args.cases, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    # abstractive QA: the question is prefixed to the context (docs/metrics.md)
    premises = [f"{r['question']}\n{r['context']}" if r.get("question") else r["context"] for r in rows]
    answers = [r["prediction"] for r in rows]
    scores = scorer.score(premises, answers)["scores"]
    imager = scorer.imager
    result = {
        "scores": [float(s) for s in scores],
        "premise_sentences": [imager.split_text(p, granularity="sentence") for p in premises],
        "answer_sentences": [imager.split_text(a, granularity="sentence") for a in answers],
        "max_doc_sents": imager.max_doc_sents,
        "max_input_length": imager.max_input_length,
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
