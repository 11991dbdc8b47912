"""Build a small randomly initialised NLI model for the SummaC parity check.

A 3-label BERT sequence classifier (entailment 0, contradiction 1, neutral 2,
the label order of the vitaminc models SummaC defaults to) whose WordPiece
vocabulary is built from the given texts. WordPiece, not BPE: the reference
environment's tokenizers 0.15 cannot read a BPE tokenizer.json written by
current tokenizers. Weights are saved as safetensors so both environments load
them. Initialisation is wide enough that the model's probabilities spread over
[0, 1]: a near-uniform model would make the comparison weak.

Usage: python scripts/summac_parity_model.py --cases CASES.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LOGIT_STD = 2.5


def words_of(texts) -> list[str]:
    """The lower-cased words and punctuation marks of `texts`, split the way BERT splits them."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words = set()
    for text in texts:
        words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    return sorted(words)


def build_vocab(texts) -> list[str]:
    words = words_of(texts)
    # every character alone and as a continuation piece, so any word still splits into pieces
    chars = sorted({c for w in words for c in w})
    vocab = SPECIALS + words + [c for c in chars if c not in words] + [f"##{c}" for c in chars]
    return list(dict.fromkeys(vocab))


def spread_logits(model, tokenizer, pairs, target_std: float = LOGIT_STD) -> None:
    """Centre and scale the random classifier on the pooled features of `pairs`.

    A random BERT maps every input to nearly the same pooled vector, so its
    probabilities barely move; re-centring the classifier on these inputs and
    scaling it to a logit spread of `target_std` makes them vary across [0, 1].
    """
    import torch

    with torch.no_grad():
        enc = tokenizer([p for p, _ in pairs], [h for _, h in pairs], truncation=True, max_length=128,
                        padding=True, return_tensors="pt")
        pooled = model.bert(**enc).pooler_output
        weight = model.classifier.weight
        weight.mul_(target_std / ((pooled - pooled.mean(0)) @ weight.T).std())
        model.classifier.bias.copy_(-(pooled.mean(0) @ weight.T))


def build_model(rows, out_dir: Path, seed: int = 0) -> None:
    """Write the model for `rows` (dicts with question, context, prediction) to `out_dir`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [row.get(key) or "" for row in rows for key in ("question", "context", "prediction")]
    vocab = build_vocab(texts)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    if tokenizer.tokenize("port ellis") != ["port", "ellis"]:
        raise RuntimeError("the WordPiece vocabulary did not reach the tokenizer")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=512, initializer_range=0.2, num_labels=3,
        id2label={0: "entailment", 1: "contradiction", 2: "neutral"},
        label2id={"entailment": 0, "contradiction": 1, "neutral": 2},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    spread_logits(model, tokenizer, [(row["context"], row["prediction"] or ".") for row in rows])
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, type=Path, help="JSONL with question, context, prediction")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.cases.read_text(encoding="utf-8").splitlines() if line.strip()]
    build_model(rows, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
