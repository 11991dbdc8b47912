"""SummaC-ZS, the two NLI back-ends, sentence splitting and faithfulness by task kind."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from reset.faithfulness import (
    PUNKT_FILES,
    build_punkt_data,
    faithfulness_scores,
    load_nli,
    split_sentences,
    summac_zs,
)
from reset.metrics import span_coverage

REPO = Path(__file__).resolve().parents[1]

CONTEXT = ("The city council of Port Ellis voted on Tuesday to close the old harbour bridge for repairs. "
           "Engineers found corrosion in two of the bridge's steel supports during an inspection. "
           "The repairs will take about eight months. Shops fear losing customers.")
ANSWERS = [
    "Port Ellis will close its harbour bridge for repairs. The work takes about eight months.",
    "The bridge stays open. Nobody found any corrosion in the supports.",
    "Closed. Repairs.",                      # every sentence is 10 characters or fewer
    "",
]
ROWS = [{"id": f"case-{i}", "question": "", "context": CONTEXT, "prediction": a} for i, a in enumerate(ANSWERS)]


def _parity_builder():
    spec = importlib.util.spec_from_file_location("summac_parity_model", REPO / "scripts" / "summac_parity_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def random_nli_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised 3-label BERT NLI model with a WordPiece vocabulary of our texts."""
    out = tmp_path_factory.mktemp("nli") / "random"
    rows = ROWS + [{"question": "", "context": "The bridge is open. The bridge is closed.", "prediction": ""}]
    _parity_builder().build_model(rows, out, seed=0)
    return out


@pytest.fixture(scope="module")
def constant_nli_dir(random_nli_dir, tmp_path_factory) -> Path:
    """The same model with a zero classifier: every pair gets softmax(bias) = softmax([2, 0, 1])."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("nli") / "constant"
    model = AutoModelForSequenceClassification.from_pretrained(random_nli_dir)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([2.0, 0.0, 1.0]))
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(random_nli_dir).save_pretrained(out)
    return out


# ---------------------------------------------------------------- sentences


def test_split_sentences_keeps_sentences_longer_than_10_chars():
    text = "Dr. Smith met Mr. Jones in the U.S. capital. It rained. They talked for hours about it."
    assert split_sentences(text) == ("Dr. Smith met Mr. Jones in the U.S. capital.", "They talked for hours about it.")
    assert split_sentences("It closed. Ferry runs.") == ("Ferry runs.",)   # 10 chars dropped, 11 kept
    assert split_sentences("") == ()


def test_built_punkt_data_is_what_nltk_loads(tmp_path, monkeypatch):
    import nltk.data
    import punkt
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    root = build_punkt_data(tmp_path)
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in lang_dir.iterdir()) == sorted(PUNKT_FILES)
    monkeypatch.setattr(nltk.data, "path", [str(root), *nltk.data.path])   # NLTK reads only its data paths
    params = load_punkt_params(nltk.data.FileSystemPathPointer(str(lang_dir)))
    assert "dr" in params.abbrev_types and "u.s" in params.abbrev_types
    assert len(params.ortho_context) > 10_000
    text = ("Prof. Adams arrived at 5 p.m. on Jan. 3rd. The meeting, held at St. Paul's, ran late. "
            "Was it worth it? Most people said yes! The U.S. delegation left early.")
    ours = PunktSentenceTokenizer(params).tokenize(text)
    assert ours == punkt.sent_tokenize(text)          # the package's own tokenizer agrees
    assert ours[0] == "Prof. Adams arrived at 5 p.m. on Jan. 3rd." and len(ours) == 5
    assert build_punkt_data(tmp_path) == root         # a second call reuses the files


# ---------------------------------------------------------------- seq_cls back-end


def test_constant_model_gives_entail_minus_contradict(constant_nli_dir):
    p = np.exp([2.0, 0.0, 1.0]) / np.exp([2.0, 0.0, 1.0]).sum()   # softmax over all three labels
    nli = load_nli("seq_cls", constant_nli_dir, ent_idx=0, con_idx=1, progress=False)
    probs = nli.probs([("a premise", "a hypothesis"), ("another premise", "x")])
    np.testing.assert_allclose(probs, [[p[0], p[1]], [p[0], p[1]]], atol=1e-6)
    scores = summac_zs(nli, [r["context"] for r in ROWS], ANSWERS)
    assert scores[:2] == pytest.approx([p[0] - p[1]] * 2, abs=1e-6)
    assert scores[2:] == [0.0, 0.0]                   # no usable answer sentence
    swapped = load_nli("seq_cls", constant_nli_dir, ent_idx=2, con_idx=0, progress=False)
    assert summac_zs(swapped, [CONTEXT], [ANSWERS[0]]) == pytest.approx([p[2] - p[0]], abs=1e-6)


def _by_hand(nli, premise, hypothesis, max_chunks=100):
    """SummaC-ZS computed one pair at a time, the plain way."""
    context, answer = split_sentences(premise)[:max_chunks], split_sentences(hypothesis)
    if not context or not answer:
        return 0.0, 0.0
    per_sentence, per_sentence_joint = [], []
    for a in answer:
        rows = [nli.probs([(c, a)])[0] for c in context]
        per_sentence.append(max(r[0] for r in rows) - max(r[1] for r in rows))
        per_sentence_joint.append(max(r[0] - r[1] for r in rows))
    return float(np.mean(per_sentence)), float(np.mean(per_sentence_joint))


def test_summac_aggregation_matches_pairwise_computation(random_nli_dir):
    batched = load_nli("seq_cls", random_nli_dir, batch_size=4, progress=False)
    single = load_nli("seq_cls", random_nli_dir, batch_size=1, progress=False)
    premises = [r["context"] for r in ROWS] + ["The bridge is open. The bridge is closed."]
    hypotheses = ANSWERS + [ANSWERS[0]]
    scores = summac_zs(batched, premises, hypotheses)
    separate_max_differs = False
    for premise, hypothesis, score in zip(premises, hypotheses, scores, strict=True):
        expected, joint = _by_hand(single, premise, hypothesis)
        assert score == pytest.approx(expected, abs=1e-5)
        separate_max_differs |= abs(expected - joint) > 1e-3
    # the test tells "max entail - max contradict" from "max (entail - contradict)"
    assert separate_max_differs
    assert len(set(np.round(scores[:2], 4))) == 2       # the model does tell the answers apart


def test_max_chunks_caps_context_sentences(random_nli_dir):
    nli = load_nli("seq_cls", random_nli_dir, progress=False)
    capped = summac_zs(nli, [CONTEXT], [ANSWERS[0]], max_chunks=1)
    assert capped == pytest.approx([_by_hand(nli, CONTEXT, ANSWERS[0], max_chunks=1)[0]], abs=1e-5)
    assert capped != pytest.approx(summac_zs(nli, [CONTEXT], [ANSWERS[0]]), abs=1e-4)


def test_probs_deduplicate_and_cache(random_nli_dir):
    nli = load_nli("seq_cls", random_nli_dir, batch_size=2, progress=False)
    pairs = [("The bridge is open.", "The bridge is closed."), ("Shops fear losing customers.", "Shops are worried.")]
    first = nli.probs(pairs * 3)
    assert first.shape == (6, 2) and len(nli.cache) == 2
    np.testing.assert_allclose(first[:2], first[2:4])
    assert ((first >= 0) & (first <= 1)).all()
    np.testing.assert_allclose(nli.probs(pairs[::-1]), first[:2][::-1])
    assert nli.probs([]).shape == (0, 2)


def test_truncation_to_max_length(random_nli_dir):
    nli = load_nli("seq_cls", random_nli_dir, max_length=32, progress=False)
    long = " ".join(["the engineers found corrosion in the steel supports"] * 20)
    (features,) = nli._encode([(long, "The bridge is closed.")])
    assert len(features["input_ids"]) == 32
    assert nli.probs([(long, "The bridge is closed.")]).shape == (1, 2)


def test_load_nli_rejects_bad_settings(random_nli_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown NLI backend"):
        load_nli("bert", random_nli_dir)
    with pytest.raises(ValueError, match="con_idx=3 is out of range"):
        load_nli("seq_cls", random_nli_dir, ent_idx=0, con_idx=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_nli("seq_cls", tmp_path / "missing")


# ---------------------------------------------------------------- faithfulness by kind


def test_faithfulness_scores_dispatch_by_kind(random_nli_dir):
    nli = load_nli("seq_cls", random_nli_dir, progress=False)
    question = "Why is the bridge closing?"
    rows = [
        {"kind": "extractive_qa", "context": CONTEXT, "question": question, "prediction": "the old harbour bridge"},
        {"kind": "extractive_qa", "context": CONTEXT, "question": question, "prediction": "the new bridge"},
        {"kind": "abstractive_qa", "context": CONTEXT, "question": question, "prediction": ANSWERS[0]},
        {"kind": "summarization", "context": CONTEXT, "question": "", "prediction": ANSWERS[1]},
        {"kind": "if", "context": "", "question": "", "prediction": "Sure, here is a poem about bridges."},
    ]
    scores = faithfulness_scores(rows, nli)
    assert scores[:2] == [span_coverage("the old harbour bridge", CONTEXT), 0.0] == [1.0, 0.0]
    assert scores[2] == pytest.approx(summac_zs(nli, [question + "\n" + CONTEXT], [ANSWERS[0]])[0])
    assert scores[3] == pytest.approx(summac_zs(nli, [CONTEXT], [ANSWERS[1]])[0])
    assert math.isnan(scores[4])
    with pytest.raises(ValueError, match="row 0 .*unknown kind 'translation'"):
        faithfulness_scores([{"kind": "translation", "prediction": "x"}], nli)
    with pytest.raises(ValueError, match="no NLI model"):
        faithfulness_scores(rows, None)
    assert faithfulness_scores(rows[:2], None) == [1.0, 0.0]    # span coverage needs no model


# ---------------------------------------------------------------- lm back-end


def test_lm_backend_prompt_fits_max_length(tiny_llama_dir):
    nli = load_nli("lm", tiny_llama_dir, max_length=120, progress=False)
    long = " ".join(["The engineers found corrosion in two of the steel supports."] * 40)
    (features,) = nli._encode([(long, "The bridge is closed.")])
    ids = features["input_ids"]
    assert len(ids) <= 120
    # the premise was cut, not the question: the prompt still ends with the answer cue
    assert nli.tokenizer.decode(ids).endswith(nli._suffix)
    probs = nli.probs([(long, "The bridge is closed."), ("Short premise here.", "Short hypothesis.")])
    assert probs.shape == (2, 2) and ((probs >= 0) & (probs.sum(1) <= 1 + 1e-6)).all()


def test_lm_backend_orders_obvious_pairs(smollm2_dir):
    nli = load_nli("lm", smollm2_dir, batch_size=8, progress=False)
    cases = [
        ("The water in the pot is boiling on the stove.", "The water is hot.", "The water is frozen solid."),
        ("Maria won the chess tournament on Saturday.", "Maria won the tournament.",
         "Maria lost every game of the tournament."),
        ("The dog is sleeping in its basket.", "The dog is sleeping.", "The dog is running in the park."),
    ]
    probs = nli.probs([pair for p, e, c in cases for pair in ((p, e), (p, c))])
    margin = probs[:, 0] - probs[:, 1]
    for i, (premise, entailed, contradicted) in enumerate(cases):
        assert margin[2 * i] > margin[2 * i + 1], f"{entailed!r} should beat {contradicted!r} given {premise!r}"
        assert probs[2 * i, 0] > probs[2 * i + 1, 0]
    context = ("Maria Lopez won the city chess tournament on Saturday. She beat the defending champion in the "
               "final round. The tournament was held at the public library.")
    good, bad = summac_zs(nli, [context, context], ["Maria Lopez won the chess tournament.",
                                                    "Maria Lopez lost every game of the tournament."])
    assert -1.0 <= bad < good <= 1.0


def test_lm_backend_shared_prefix_cache_gives_the_full_prompt_result(smollm2_dir):
    """Prompts share the chat frame and worked examples; scoring only their tails on a cached
    prefix must give what the whole prompt gives, including in mixed batches with a truncated one."""
    import torch

    nli = load_nli("lm", smollm2_dir, max_length=200, batch_size=8, progress=False)
    long = " ".join(["The committee met again to review the budget for the new library."] * 20)
    pairs = [("The cat sat on the mat in the kitchen.", "A cat was on a mat."),
             ("Paris is the capital of France.", "Berlin is the capital of France."),
             ("The meeting moved to Tuesday afternoon after a long discussion.", "The meeting is on Tuesday."),
             (long, "The committee reviewed the budget."),     # premise cut at its end: still shared
             ("The committee met.", long)]                  # hypothesis alone too long: front cut off
    features = nli._encode(pairs)
    shared = nli.shared_prefix()
    assert len(shared.ids) > 50   # the worked examples are shared
    assert [shared.covers(f["input_ids"]) for f in features] == [True, True, True, True, False]
    with torch.inference_mode():
        whole = nli._label_probs(shared.whole_logits([f["input_ids"] for f in features],
                                                     nli.tokenizer.pad_token_id)[:, 0])
        cached = nli._forward(features)
    np.testing.assert_allclose(cached, whole, atol=1e-4)
    assert np.allclose(nli.probs(pairs), whole, atol=1e-4)


def test_lm_backend_premise_groups_give_the_whole_prompt_result(smollm2_dir):
    """Pairs sharing a premise run it once (SharedPrefix.branched_last_logits): every pair must still get
    what its whole prompt gives, whatever the group sizes, the batch size and the chunking of stems."""
    import torch

    nli = load_nli("lm", smollm2_dir, max_length=200, batch_size=3, progress=False)
    premises = ["The cat sat on the mat in the kitchen.", "Paris is the capital of France.",
                "The meeting moved to Tuesday afternoon after a long discussion about the budget.",
                "Rain fell.", " ".join(["The committee met again to review the budget."] * 20)]
    hypotheses = ["A cat was on a mat.", "Berlin is the capital of France.", "The meeting is on Tuesday.",
                  "It rained all week in the city.", "The committee reviewed the budget.", "No."]
    # 5 premises x 6 hypotheses: groups of 6 > batch 3, the long premise is cut to fit, one hypothesis
    # is too long for any premise to fit in front of it (runs whole)
    pairs = [(p, h) for p in premises for h in hypotheses] + [("The committee met.", "word " * 300)]
    features = nli._encode(pairs)
    shared = nli.shared_prefix()
    assert not shared.covers(features[-1]["input_ids"])
    with torch.inference_mode():
        whole = np.concatenate([
            nli._label_probs(shared.whole_logits([f["input_ids"] for f in features[i:i + 4]],
                                                 nli.tokenizer.pad_token_id)[:, 0])
            for i in range(0, len(features), 4)])
    np.testing.assert_allclose(nli.probs(pairs), whole, atol=1e-4)   # batches of up to 3 rows, one chunk
    nli.clear_cache()
    nli.batch_size = 1   # 5 stems > one chunk (4 x batch size): two chunks
    np.testing.assert_allclose(nli.probs(pairs), whole, atol=1e-4)


def test_length_batches_bound_rows_and_padding():
    from reset.inference import length_batches

    lengths = [5, 50, 48, 7, 49, 6, 20, 5]
    batches = length_batches(lengths, max_rows=2, waste=0.1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 for b in batches)
    for b in batches:   # longest first, and padding to the first costs at most 10% of the batch
        width = lengths[b[0]]
        assert all(lengths[i] <= width for i in b)
        assert len(b) * width - sum(lengths[i] for i in b) <= 0.1 * len(b) * width
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert length_batches([], 4) == []
