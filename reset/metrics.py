"""Text metrics: normalisation, span and n-gram coverage, exact match, ROUGE-L.

All comparisons work on `normalize`d text (docs/metrics.md, the paper's appendix):
spaces around hyphens and slashes and before "'s" are removed, then the text is
lowercased, punctuation and the articles a / an / the are dropped and white
space is collapsed.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

_JOINERS = re.compile(r"\s*([-\u2010\u2011/])\s*")  # hyphens and slashes, not en/em dashes
_POSSESSIVE = re.compile(r"\s+(['\u2019]s)\b")         # "Obama 's" -> "Obama's"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    # Unicode punctuation (P*) plus the ASCII symbols string.punctuation counts ($ + < = > ^ ` | ~)
    return unicodedata.category(char).startswith("P") or char in "$+<=>^`|~"


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if not _is_punctuation(ch))


def as_text(value) -> str:
    """A text field as a string: None and NaN (a missing value in a data frame) become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def normalize(text: str) -> str:
    """Normalise text for comparison: see the module docstring."""
    text = _JOINERS.sub(r"\1", as_text(text))
    text = _POSSESSIVE.sub(r"\1", text)
    text = _strip_punctuation(text.lower())
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _tokens(text: str) -> list[str]:
    normalised = normalize(text)
    return normalised.split(" ") if normalised else []


def span_coverage(prediction: str, context: str) -> float:
    """1.0 if the normalised prediction is a contiguous run of whole context tokens, else 0.0."""
    pred = _tokens(prediction)
    if not pred:
        return 0.0
    # Compare on token boundaries: " a b " inside " x a b y " but "ar" never inside "bar".
    return float(f" {' '.join(pred)} " in f" {' '.join(_tokens(context))} ")


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_coverage(prediction: str, context: str, n: int) -> float:
    """Share of the prediction's normalised n-grams (with repeats) that occur in the context.

    A prediction with fewer than n tokens has no n-grams and scores 0.0, like an
    empty prediction in span coverage: there is nothing grounded to credit.
    """
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    pred = _ngrams(_tokens(prediction), n)
    if not pred:
        return 0.0
    seen = set(_ngrams(_tokens(context), n))
    return sum(gram in seen for gram in pred) / len(pred)


def _as_list(references) -> list[str]:
    if references is None:
        return []
    if isinstance(references, str):
        return [references]
    return [str(r) for r in references]


def exact_match(prediction: str, references) -> float:
    """1.0 if the normalised prediction equals any normalised reference."""
    pred = normalize(prediction)
    return float(any(pred == normalize(ref) for ref in _as_list(references)))


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references) -> float:
    """ROUGE-L F-measure (rouge-score, stemming on), best over the references; 0.0 without any."""
    refs = _as_list(references)
    if not refs:
        return 0.0
    scorer = _rouge_scorer()
    return max(scorer.score(ref, as_text(prediction))["rougeL"].fmeasure for ref in refs)


def task_score(kind: str, prediction: str, references) -> float:
    """Task performance by task kind: EM for extractive QA, ROUGE-L otherwise."""
    if kind == "extractive_qa":
        return exact_match(prediction, references)
    if kind in ("abstractive_qa", "summarization", "if"):
        return rouge_l(prediction, references)
    raise ValueError(f"unknown task kind {kind!r}; expected if, extractive_qa, abstractive_qa or summarization")
