"""SummaC-ZS: our scorer against the reference `summac` package, same model, same inputs.

Both sides load the same local NLI classifier (a randomly initialised BERT or
ALBERT of a chosen shape whose WordPiece vocabulary covers the inputs; no NLI
weights are reachable offline) and score the same candidate set. The reference
runs in the parity environment (.cache/summac-env, built by
scripts/summac_parity.sh --setup-only when missing) as a subprocess that loads
the model once and then times `SummaCZS.score` on request
(benchmarks/summac_zs_reference.py). Only the scoring is timed on both sides, with
the same torch thread count, and the repeats alternate between the two sides.

The inputs mirror what ReSet scores: for each summarisation / abstractive QA
example of the shipped demo data (CNN/DM, WikiSum, MS MARCO) the candidates of
its sweep rounds (`--rounds`, 2 as at paper scale: 14 candidates), built from the reference answer
the way sampled answers relate to the greedy one (see `workload`): a temperature
round repeats the greedy answer at its lowest settings, higher settings and
top-k rounds edit it (a sentence copied from the context, dropped, added, or
given a fact from another example, which makes it unfaithful).

Figures: scores must agree within 1e-4 (against both reference paths);
ratio = the faster reference path's seconds / ours (best of the repeats each),
with each path's own ratio beside it; sentence pairs per second on every side.

Usage: python -m benchmarks.summac_zs [--examples N] [--rounds R] [--shape small|vitc-base]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

from benchmarks import CACHE, REPO, emit, interleave, log, set_threads, summary, thread_env

REFERENCE_ENV = CACHE / "summac-env"
RAW = REPO / "resources" / "demo" / "raw"
TOLERANCE = 1e-4
SWEEP_SIZE = 7   # settings per round (docs/reset.md)
TARGET_RATIO = 3.0

# classifier shapes: "small" keeps a 2-core run at a minute; "vitc-base" is the
# shape of tals/albert-base-vitaminc-mnli (the summac package's "vitc-base")
SHAPES = {
    "tiny": {"arch": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128},
    "small": {"arch": "bert", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024},
    "vitc-base": {"arch": "albert", "embedding_size": 128, "hidden_size": 768, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "intermediate_size": 3072},
}


# ---------------------------------------------------------------- inputs


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue   # the demo files carry malformed rows on purpose (filter tests)
    return rows


def demo_examples() -> list[dict]:
    """(question, context, references) of the shipped CNN/DM, WikiSum and MS MARCO rows."""
    out = []
    for row in _jsonl(RAW / "cnn_dailymail.jsonl"):
        if isinstance(row.get("article"), str) and isinstance(row.get("highlights"), str) and row["article"]:
            out.append({"question": "", "context": row["article"],
                        "references": [s.strip(" .") + "." for s in row["highlights"].split("\n") if s.strip()]})
    for row in _jsonl(RAW / "wikisum.jsonl"):
        if isinstance(row.get("article"), str) and isinstance(row.get("summary"), str) and row["article"]:
            out.append({"question": "", "context": row["article"], "references": [row["summary"]]})
    for row in _jsonl(RAW / "msmarco.jsonl"):
        passages = (row.get("passages") or {}).get("passage_text") if isinstance(row.get("passages"), dict) else None
        answers = row.get("wellFormedAnswers") or row.get("answers") or []
        if isinstance(row.get("query"), str) and passages and answers and all(isinstance(p, str) for p in passages):
            out.append({"question": row["query"], "context": "\n".join(passages[:5]), "references": list(answers)})
    return [ex for ex in out if any(len(r) > 10 for r in ex["references"])]


def _swap_fact(sentence: str, donor: str, rng: random.Random) -> str:
    """`sentence` with one name or number replaced by one from `donor`, else negated (unfaithful either way)."""
    words = sentence.split()
    spots = [i for i, w in enumerate(words[1:], 1) if w[:1].isupper() or w[:1].isdigit()]
    fillers = [w for w in donor.split()[1:] if w[:1].isupper() or w[:1].isdigit()]
    if spots and fillers:
        words[rng.choice(spots)] = rng.choice(fillers)
    else:
        words.insert(min(2, len(words)), "never")
    return " ".join(words)


def _sampled(greedy: list[str], context: list[str], donor: str, rng: random.Random, early: bool) -> list[str]:
    """A sampled-looking answer: the greedy answer's first sentences, then a tail of its own.

    Sampling departs from the greedy path at some token and never rejoins it,
    so a sample keeps a prefix of the greedy sentences and continues with other
    ones: sentences copied from the context, or a greedy / context sentence
    with a fact swapped in from another example (unfaithful). `early` lets the
    departure happen in the first sentence (a hotter setting).
    """
    keep = rng.randrange(0 if early else min(1, len(greedy) - 1), len(greedy))
    tail = []
    for _ in range(max(1, len(greedy) - keep + rng.choice([-1, 0, 1]))):
        if rng.random() < 0.5:
            tail.append(rng.choice(context))
        else:
            tail.append(_swap_fact(rng.choice(greedy + context), donor, rng))
    return greedy[:keep] + tail


def workload(n_examples: int, rounds: int = 2, seed: int = 0) -> list[dict]:
    """Candidate rows {question, context, prediction}: `rounds` sweep rounds of 7 per example (demo rows, cycled).

    The candidate-scoring step scores every round's candidates at once (two
    rounds at paper scale, for ReSet-S), so that is the default. Each round's
    parameter is drawn as the sweep draws it. A temperature round's three lowest
    settings reproduce the greedy answer (here the reference), the others
    depart from it after its first sentence; a top-k round (temperature 1.0)
    departs anywhere (see `_sampled`).
    """
    from reset.faithfulness import split_sentences
    from reset.sample import round_param

    examples = demo_examples()
    if not examples:
        raise RuntimeError(f"no usable summarisation / QA rows under {RAW}")
    rng = random.Random(seed)
    rows = []
    for n in range(n_examples):
        ex = examples[n % len(examples)]
        donor = examples[(n * 7 + 3) % len(examples)]["context"]
        context = list(split_sentences(ex["context"])) or [ex["context"]]
        greedy = [s for r in ex["references"] for s in (split_sentences(r) or (r,))]
        for round_no in range(1, rounds + 1):
            param = round_param(f"bench-{n}", round_no, seed)
            for k in range(SWEEP_SIZE):
                if param == "temperature" and k < 3:
                    text = greedy
                else:
                    text = _sampled(greedy, context, donor, rng, early=param == "top_k")
                rows.append({"question": ex["question"], "context": ex["context"], "prediction": " ".join(text)})
    return rows


def pair_counts(rows, max_chunks: int = 100) -> dict:
    """Candidates and NLI sentence pairs, all and unique (what the cache and de-dup can save)."""
    from reset.faithfulness import qa_premise, split_sentences

    pairs, unique_rows = [], set()
    for r in rows:
        premise = qa_premise(r["question"], r["context"])
        unique_rows.add((premise, r["prediction"]))
        context, answer = split_sentences(premise)[:max_chunks], split_sentences(r["prediction"])
        pairs.extend((c, a) for c in context for a in answer)
    return {"candidates": len(rows), "unique_candidates": len(unique_rows), "pairs": len(pairs),
            "unique_pairs": len(set(pairs))}


# ---------------------------------------------------------------- the NLI model both sides load


def _parity_builder():
    """scripts/summac_parity_model.py (its WordPiece vocabulary builder), loaded by path."""
    path = REPO / "scripts" / "summac_parity_model.py"
    spec = importlib.util.spec_from_file_location("summac_parity_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_nli_model(rows, shape: str, out_dir: Path, seed: int = 0) -> None:
    """A random NLI classifier of `shape` whose vocabulary covers `rows`, probabilities spread over [0, 1]."""
    import torch
    from transformers import (
        AlbertConfig,
        AlbertForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
    )

    from reset.io import atomic_dir

    texts = [r.get(key) or "" for r in rows for key in ("question", "context", "prediction")]
    vocab = _parity_builder().build_vocab(texts)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    sizes = dict(SHAPES[shape])
    arch = sizes.pop("arch")
    labels = {"id2label": {0: "entailment", 1: "contradiction", 2: "neutral"},
              "label2id": {"entailment": 0, "contradiction": 1, "neutral": 2}}
    common = {"vocab_size": len(tokenizer), "max_position_embeddings": 512, "num_labels": 3,
              "pad_token_id": tokenizer.pad_token_id, "initializer_range": 0.2, **labels, **sizes}
    torch.manual_seed(seed)
    if arch == "albert":
        model = AlbertForSequenceClassification(AlbertConfig(classifier_dropout_prob=0.0, **common))
    else:
        model = BertForSequenceClassification(BertConfig(**common))
    model.eval()
    _spread_logits(model, tokenizer, [(r["context"], r["prediction"] or ".") for r in rows[:64]])
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _spread_logits(model, tokenizer, pairs, target_std: float = 2.5) -> None:
    """Re-centre and scale the random classifier so its probabilities vary (see summac_parity_model.py)."""
    import torch

    with torch.no_grad():
        enc = tokenizer([p for p, _ in pairs], [h for _, h in pairs], truncation=True, max_length=128,
                        padding=True, return_tensors="pt")
        pooled = model.base_model(**enc).pooler_output
        weight = model.classifier.weight
        weight.mul_(target_std / ((pooled - pooled.mean(0)) @ weight.T).std())
        model.classifier.bias.copy_(-(pooled.mean(0) @ weight.T))


def cached_nli_model(rows, shape: str) -> Path:
    """The model for these inputs and shape, built once under .cache/bench/."""
    key = hashlib.sha1(json.dumps([shape, rows], sort_keys=True).encode()).hexdigest()[:12]
    out = CACHE / "bench" / f"summac-nli-{shape}-{key}"
    if not (out / "model.safetensors").exists():
        log(f"building the {shape} NLI model -> {out}")
        build_nli_model(rows, shape, out)
    return out


# ---------------------------------------------------------------- the two sides


def ensure_reference_env() -> Path:
    """The parity environment's interpreter, creating the environment once if needed."""
    python = REFERENCE_ENV / "bin" / "python"
    ok = python.exists() and subprocess.run([str(python), "-c", "import summac"], capture_output=True).returncode == 0
    if not ok:
        log("creating the summac reference environment (scripts/summac_parity.sh --setup-only; a few minutes)")
        subprocess.run(["bash", str(REPO / "scripts" / "summac_parity.sh"), "--setup-only"], cwd=REPO, check=True)
    return python


class Reference:
    """The reference scorer in its own process: model loaded once, each `run()` timed inside."""

    def __init__(self, model_dir: Path, premises, hypotheses, threads: int, nltk_data: Path):
        python = ensure_reference_env()
        env = thread_env(threads)
        env["NLTK_DATA"] = str(nltk_data)
        self.proc = subprocess.Popen([str(python), str(REPO / "benchmarks" / "summac_zs_reference.py")], cwd=REPO,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._send(json.dumps({"model": str(model_dir), "threads": threads, "premises": premises,
                               "hypotheses": hypotheses}))
        self.ready = self._receive()

    def _send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference process exited (code {self.proc.wait()}); see its stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"reference: {reply['error']}")
        return reply

    def run(self, mode: str) -> dict:
        """One timed scoring of the inputs: mode "batched" or "per_example"."""
        self._send(mode)
        return self._receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self._send("quit")
            self.proc.wait(timeout=60)


def run(examples: int = 16, rounds: int = 2, shape: str = "small", threads: int = 1, repeats: int = 3,
        batch_size: int = 32, seed: int = 0) -> dict:
    """Time both scorers on the same workload; returns the benchmark's JSON record."""
    from reset.faithfulness import build_punkt_data, load_nli, qa_premise, split_sentences, summac_zs

    set_threads(threads)
    rows = workload(examples, rounds, seed)
    counts = pair_counts(rows)
    premises = [qa_premise(r["question"], r["context"]) for r in rows]
    hypotheses = [r["prediction"] for r in rows]
    model_dir = cached_nli_model(rows, shape)
    nltk_data = build_punkt_data()

    ours = load_nli("seq_cls", model_dir, ent_idx=0, con_idx=1, max_length=500, batch_size=batch_size,
                    device="cpu", progress=False)
    reference = Reference(model_dir, premises, hypotheses, threads, nltk_data)
    last = {}

    def ours_once():
        import time

        ours.clear_cache()
        split_sentences.cache_clear()
        start = time.perf_counter()
        last["ours"] = summac_zs(ours, premises, hypotheses, max_chunks=100)
        return time.perf_counter() - start

    def reference_once(mode):
        def once():
            reply = reference.run(mode)
            last[mode] = reply["scores"]
            return reply["seconds"]
        return once

    sides = {"per_example": reference_once("per_example"), "batched": reference_once("batched"), "ours": ours_once}
    try:
        log(f"summac: {counts['candidates']} candidates, {counts['pairs']} sentence pairs, {repeats} repeats a side")
        for once in sides.values():   # warm-up, untimed: first calls load Punkt and allocate
            once()
        times = interleave(sides, repeats)
    finally:
        reference.close()
    diff = max(abs(a - b) for mode in ("batched", "per_example")
               for a, b in zip(last["ours"], last[mode], strict=True))
    ratios = {mode: min(times[mode]) / min(times["ours"]) for mode in ("per_example", "batched")}
    ratio = min(ratios.values())   # against whichever reference path was faster in this run
    return {
        "name": "summac_zs",
        "baseline": "summac 0.0.4 SummaCZS(granularity='sentence'), the faster of score_one per candidate "
                    "(per_example) and score() over all candidates (batched, 128 pairs a batch)",
        "model_shape": shape, "threads": threads, "our_batch_size": batch_size, **counts,
        "max_abs_score_diff": diff, "scores_equal": diff <= TOLERANCE,
        **{side: summary(times[side]) for side in ("ours", "per_example", "batched")},
        "pairs_per_s": {side: round(counts["pairs"] / min(times[side]), 1) for side in times},
        "ratio": round(ratio, 2), "ratio_by_path": {mode: round(r, 2) for mode, r in ratios.items()},
        "target_ratio": TARGET_RATIO,
        "ok": diff <= TOLERANCE and ratio >= TARGET_RATIO,
    }


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=int, default=16, help="examples (demo rows, cycled) to score")
    parser.add_argument("--rounds", type=int, default=2, help="sweep rounds (7 candidates each) per example; "
                        "the paper samples 2")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small", help="NLI classifier shape")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same on both sides")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side, interleaved")
    parser.add_argument("--batch-size", type=int, default=32, help="our NLI batch size")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.summac_zs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    emit(run(args.examples, args.rounds, args.shape, args.threads, args.repeats, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
