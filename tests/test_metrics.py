"""Text metrics: normalisation, coverage, exact match, ROUGE-L, task score by kind."""

from __future__ import annotations

import pytest

from reset.metrics import exact_match, ngram_coverage, normalize, rouge_l, span_coverage, task_score


@pytest.mark.parametrize("text, expected", [
    # spaces around hyphens and slashes go before punctuation does, so the parts fuse
    ("state - of - the - art", "stateoftheart"),
    ("state-of-the-art", "stateoftheart"),
    ("input / output", "inputoutput"),
    ("and/or", "andor"),
    # the possessive attaches to its word
    ("Barack Obama 's wife", "barack obamas wife"),
    ("Barack Obama's wife", "barack obamas wife"),
    # articles are whole words only
    ("The Apple and an orange, a day", "apple and orange day"),
    ("Theatre an Anthem", "theatre anthem"),
    # punctuation, including Unicode quotes and dashes; a dash between words is not a hyphen
    ("“Hello,” she said — twice!", "hello she said twice"),
    ("U.S.A. (1776)", "usa 1776"),
    ("  many   spaces\tand\nnewlines ", "many spaces and newlines"),
    ("", ""),
    ("The", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_normalize_is_idempotent():
    text = "The U.S. - based firm's CEO, a 'visionary' / founder"
    assert normalize(normalize(text)) == normalize(text)


CONTEXT = "Barack Obama was the 44th president of the United States. He was born in Honolulu, Hawaii."


@pytest.mark.parametrize("prediction, expected", [
    ("Barack Obama", 1.0),
    ("the 44th President", 1.0),                  # articles and case do not matter
    ("Honolulu, Hawaii.", 1.0),                   # punctuation does not matter
    ("United States He was born", 1.0),           # a run across a sentence end is still a run
    ("Obama was born in Honolulu", 0.0),          # words of the context, but not contiguous
    ("Obam", 0.0),                                # part of a token is not a whole token
    ("ama was", 0.0),
    ("president of the United Kingdom", 0.0),
    ("", 0.0),
    ("  the  ", 0.0),                             # nothing left after normalisation
])
def test_span_coverage(prediction, expected):
    assert span_coverage(prediction, CONTEXT) == expected


def test_span_coverage_uses_normalised_hyphens():
    assert span_coverage("well - known", "a well-known fact") == 1.0
    assert span_coverage("well", "a well-known fact") == 0.0   # "wellknown" is one token


def test_ngram_coverage():
    context = "the cat sat on the mat"
    assert ngram_coverage("cat sat", context, 1) == 1.0
    assert ngram_coverage("cat sat on a dog", context, 1) == pytest.approx(3 / 4)   # "a" is dropped
    assert ngram_coverage("cat sat mat", context, 2) == pytest.approx(1 / 2)       # "sat mat" is missing
    assert ngram_coverage("sat on mat", context, 2) == 1.0    # the context's "on the mat" normalises to "on mat"
    assert ngram_coverage("mat cat", context, 2) == 0.0
    # repeats count: every occurrence of a missing unigram counts against the prediction
    assert ngram_coverage("dog dog cat", context, 1) == pytest.approx(1 / 3)


def test_ngram_coverage_without_ngrams_is_zero():
    assert ngram_coverage("", "anything", 1) == 0.0
    assert ngram_coverage("cat", "the cat", 2) == 0.0
    with pytest.raises(ValueError, match="n-gram order"):
        ngram_coverage("cat", "cat", 0)


def test_exact_match():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel Tower", ["Louvre", "the eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert exact_match("Eiffel Tower", "Eiffel Tower") == 1.0     # a single string is one reference
    assert exact_match("anything", []) == 0.0


def test_rouge_l():
    # rouge-score keeps articles: LCS "the cat sat mat" = 4 tokens, P = 4/4, R = 4/5
    score = rouge_l("the cat sat mat", ["the cat sat on mat"])
    assert score == pytest.approx(2 * (4 / 4) * (4 / 5) / (4 / 4 + 4 / 5))
    # stemming on: cats -> cat, running and runs -> run; LCS 3 of 4 predicted and of 3 reference tokens
    assert rouge_l("the cats are running", ["the cat runs"]) == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))
    assert rouge_l("same words", ["same words"]) == 1.0
    assert rouge_l("unrelated", ["nothing in common"]) == 0.0
    assert rouge_l("", ["a reference"]) == 0.0
    assert rouge_l("anything", []) == 0.0


def test_rouge_l_takes_the_best_reference():
    assert rouge_l("paris is the capital", ["berlin", "paris is the capital"]) == 1.0
    assert rouge_l("paris is the capital", ["paris is the capital", "berlin"]) == 1.0


def test_task_score_by_kind():
    assert task_score("extractive_qa", "The Eiffel Tower", ["eiffel tower"]) == 1.0
    assert task_score("extractive_qa", "Eiffel", ["eiffel tower"]) == 0.0           # EM, not overlap
    for kind in ("abstractive_qa", "summarization", "if"):
        assert 0.0 < task_score(kind, "Eiffel", ["eiffel tower"]) < 1.0            # ROUGE-L
    with pytest.raises(ValueError, match="unknown task kind"):
        task_score("translation", "a", ["a"])


def test_missing_values_count_as_empty_text():
    # a prediction column read from parquet may hold None or NaN
    assert normalize(None) == "" and normalize(float("nan")) == ""
    assert span_coverage(float("nan"), "nan is not a word here") == 0.0
    assert exact_match(None, ["something"]) == 0.0
    assert rouge_l(None, ["something"]) == 0.0
