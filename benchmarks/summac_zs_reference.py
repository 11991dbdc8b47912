"""Timing server for the reference `summac` package (runs in .cache/summac-env).

Started by benchmarks/summac_zs.py as a subprocess of the parity environment's
interpreter; it does not import our package. The model is loaded once, before
any timing. Protocol, one JSON object per line:

    stdin  {"model": DIR, "threads": N, "premises": [...], "hypotheses": [...]}   once
    stdout {"ready": true, "load_s": ...}
    stdin  "batched" | "per_example"  -> stdout {"seconds": ..., "scores": [...]}   (cache emptied first)
    stdin  "quit"  -> exit

Two ways the package scores, at sentence granularity with the vitaminc label
indices (entailment 0, contradiction 1):
  batched      `SummaCZS.score(sources, generateds)`: every example's sentence
               pairs in batches of 128, in input order (the package's fastest path)
  per_example  `SummaCZS.score_one(source, generated)` per candidate, as its
               README scores one document and summary (batches of 20 pairs
               within one example; a repeated candidate comes from its cache)

Usage: .cache/summac-env/bin/python benchmarks/summac_zs_reference.py   (then speak the protocol)
"""

import json
import sys
import time

LOCAL_NAME = "bench-local"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    out, sys.stdout = sys.stdout, sys.stderr   # anything the libraries print goes to stderr
    request = json.loads(sys.stdin.readline())

    import torch

    torch.set_num_threads(int(request["threads"]))
    from summac import model_summac

    model_summac.model_map[LOCAL_NAME] = {"model_card": request["model"], "entailment_idx": 0,
                                          "contradiction_idx": 1}
    start = time.perf_counter()
    scorer = model_summac.SummaCZS(model_name=LOCAL_NAME, granularity="sentence", imager_load_cache=False,
                                   device="cpu")
    scorer.imager.load_nli()
    load_s = time.perf_counter() - start
    premises, hypotheses = request["premises"], request["hypotheses"]
    print(json.dumps({"ready": True, "load_s": load_s, "torch_threads": torch.get_num_threads()}), file=out,
          flush=True)

    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command not in ("batched", "per_example"):
            print(json.dumps({"error": f"unknown command {command!r}"}), file=out, flush=True)
            continue
        scorer.imager.cache = {}   # every run scores from scratch
        start = time.perf_counter()
        if command == "batched":
            scores = scorer.score(premises, hypotheses)["scores"]
        else:
            scores = [scorer.score_one(p, h)["score"] for p, h in zip(premises, hypotheses, strict=True)]
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "scores": [float(s) for s in scores]}), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
