"""Dataset adapters and filters (docs/datasets.md#formats-and-filters): every filter's keep and drop cases."""

import json

import pyarrow.parquet as pq
import pytest

from reset import adapters
from reset.adapters import Drop, Example, Options
from reset.data import DataError, prepare_dataset, stable_id, write_prepared

SETTINGS = {"split_seed": 0, "dev_fraction": 0.1, "eval_fraction": 0.2, "dev_min": 1, "eval_cap": None,
            "max_passages": 5, "lang": "en"}
LONG = "This answer has clearly more than ten words in it, so it is long enough."


def run(adapter, rows, **opts):
    return list(adapter(rows, Options(**opts)))


def reasons(results):
    return [r.reason if isinstance(r, Drop) else "kept" for r in results]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- IF training sets


def test_dolly_drops_context_rows_empty_fields_and_missing_fields():
    rows = [
        {"instruction": "Name a fruit.", "context": "", "response": "Apple.", "category": "open_qa"},
        {"instruction": "When did it open?", "context": "It opened in 2018.", "response": "2018", "category": "closed_qa"},
        {"instruction": "  ", "context": "", "response": "x", "category": "open_qa"},
        {"instruction": "Say hi.", "context": "", "response": "", "category": "open_qa"},
        {"instruction": "Say hi.", "context": None, "category": "open_qa"},
        {"instruction": 42, "context": "", "response": "x"},
    ]
    results = run(adapters.dolly, rows)
    assert reasons(results) == ["kept", "has_context", "empty_instruction", "empty_response",
                                "missing_response", "bad_instruction"]
    kept = results[0]
    assert (kept.instruction, kept.references, kept.context) == ("Name a fruit.", ["Apple."], "")


def test_sharegpt_uses_first_human_gpt_pair_and_needs_more_than_ten_words():
    ten = "one two three four five six seven eight nine ten"
    rows = [
        {"id": "a", "conversations": [{"from": "gpt", "value": "Welcome back."},
                                      {"from": "human", "value": "First question"},
                                      {"from": "gpt", "value": LONG},
                                      {"from": "human", "value": "Second question"},
                                      {"from": "gpt", "value": "Another long answer " * 5}]},
        {"id": "b", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ten}]},
        {"id": "c", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ten + " eleven"}]},
        {"id": "d", "conversations": [{"from": "human", "value": "only a question"}]},
        {"id": "e"},
        {"id": "f", "conversations": "not a list"},
        {"id": "g", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": LONG}]},
    ]
    results = run(adapters.sharegpt, rows)
    assert reasons(results) == ["kept", "short_response", "kept", "no_human_gpt_pair", "missing_conversations",
                                "bad_conversations", "empty_instruction"]
    assert results[0].instruction == "First question"
    assert results[0].references == [LONG]


def test_self_instruct_strips_output_marker_and_end_of_text():
    rows = [
        {"prompt": "Sort the numbers.\nInput: 3, 1, 2\n\nOutput:", "completion": " 1, 2, 3<|endoftext|>"},
        {"prompt": "Write a slogan. Output:  ", "completion": "Refill, repeat. <|endoftext|>"},
        {"prompt": "Output:", "completion": " text<|endoftext|>"},
        {"prompt": "Name a colour.\n\nOutput:", "completion": " <|endoftext|>"},
        {"prompt": "No completion field.\n\nOutput:"},
    ]
    results = run(adapters.self_instruct, rows)
    assert reasons(results) == ["kept", "kept", "empty_instruction", "empty_response", "missing_completion"]
    assert results[0].instruction == "Sort the numbers.\nInput: 3, 1, 2"
    assert results[0].references == ["1, 2, 3"]
    assert results[1].instruction == "Write a slogan."
    assert results[1].references == ["Refill, repeat."]


def quality(value, count, names=("spam", "quality", "humor")):
    return {"name": list(names), "value": [0.0, value, 0.2][: len(names)], "count": [count] * len(names)}


def oasst_rows():
    prompter = {"message_id": "p1", "parent_id": None, "role": "prompter", "text": "How do magnets work?",
                "lang": "en", "labels": None}
    german = {"message_id": "p2", "parent_id": None, "role": "prompter", "text": "Wie geht das?", "lang": "de"}
    reply = {"role": "assistant", "lang": "en", "text": "Moving charges create magnetic fields.", "parent_id": "p1"}
    return [
        prompter, german,
        {**reply, "message_id": "a1", "labels": quality(0.75, 2)},           # kept (boundary count 2)
        {**reply, "message_id": "a2", "labels": quality(0.5, 3)},            # average not above 0.5
        {**reply, "message_id": "a3", "labels": quality(0.9, 1)},            # one rating only
        {**reply, "message_id": "a4", "labels": None},                       # unlabelled
        {**reply, "message_id": "a5", "labels": quality(0.9, 3, names=("spam", "humor"))},  # no quality label
        {**reply, "message_id": "a6", "labels": quality(0.9, 3), "parent_id": "p2", "lang": "de"},
        {**reply, "message_id": "a7", "labels": quality(0.9, 3), "parent_id": "nowhere"},
        {**reply, "message_id": "a8", "labels": quality(0.9, 3), "parent_id": "a1"},
        {k: v for k, v in {**reply, "message_id": "a9", "labels": quality(0.9, 3)}.items() if k != "text"},
        {**reply, "message_id": "a10", "labels": [{"name": "quality", "value": 0.6, "count": 4}]},  # list layout
    ]


def test_oasst1_pairs_replies_with_prompter_parents_and_applies_quality_and_language():
    results = run(adapters.oasst1, oasst_rows())
    assert reasons(results) == ["prompter_message", "prompter_message", "kept", "low_quality",
                                "few_quality_ratings", "no_labels", "no_quality_label", "other_language",
                                "parent_not_found", "parent_not_prompter", "missing_text", "kept"]
    assert results[2].instruction == "How do magnets work?"
    assert results[2].references == ["Moving charges create magnetic fields."]
    assert results[2].identity == "message_id=a1"


def test_oasst1_language_is_configurable():
    results = run(adapters.oasst1, oasst_rows(), lang="de")
    assert reasons(results)[7] == "kept"
    assert reasons(results)[2] == "other_language"
    assert reasons(run(adapters.oasst1, oasst_rows(), lang=None))[7] == "kept"


# ---------------------------------------------------------------- IF evaluation sets


def test_if_eval_adapters():
    alpaca = run(adapters.alpaca_eval, [{"instruction": "Plan a trip.", "output": "Day 1: ...", "generator": "x"},
                                        {"instruction": "No output."}, {"output": "orphan"}])
    assert reasons(alpaca) == ["kept", "kept", "missing_instruction"]
    assert alpaca[0].references == ["Day 1: ..."] and alpaca[1].references == []
    vicuna = run(adapters.vicuna_eval, [{"question_id": 1, "turns": ["First turn", "Second turn"]},
                                        {"question_id": 2, "turns": []}, {"question_id": 3},
                                        {"question_id": 4, "text": "Old layout question?", "category": "generic"}])
    assert reasons(vicuna) == ["kept", "bad_turns", "missing_turns", "kept"]
    assert vicuna[3].instruction == "Old layout question?"
    assert vicuna[0].instruction == "First turn" and vicuna[0].identity == "question_id=1"
    koala = run(adapters.koala_eval, [{"id": "koala_1", "prompt": "Tell a joke."}, {"id": "koala_2", "prompt": " "}])
    assert reasons(koala) == ["kept", "empty_instruction"]


# ---------------------------------------------------------------- context-dependent sets


def dpr(question, answers, texts):
    return {"question": question, "answers": answers,
            "ctxs": [{"id": str(i), "title": "t", "text": t, "score": 1.0 - i / 10, "has_answer": False}
                     for i, t in enumerate(texts)]}


def test_qa_keeps_at_most_max_passages_and_needs_the_answer_in_a_kept_passage():
    filler = [f"Filler passage number {i}." for i in range(5)]
    rows = [
        dpr("who wrote it", ["Jane Austen"], ["The novel was written by JANE AUSTEN in 1813.", "Other text."]),
        dpr("which one", ["femur"], [*filler, "The femur is the longest bone."]),  # only in passage 6
        dpr("which one", ["femur"], [*filler[:4], "The femur is the longest bone.", "Extra."]),  # passage 5
        dpr("partial word", ["art"], ["The party started late."]),  # "art" is not a whole word here
        dpr("no answers", [], ["text"]),
        {"question": "no passages", "answers": ["x"]},
        dpr("empty passages", ["x"], ["", "  "]),
        dpr("", ["x"], ["x"]),
    ]
    results = run(adapters.dpr_qa, rows)
    assert reasons(results) == ["kept", "answer_not_in_passages", "kept", "answer_not_in_passages",
                                "no_answer", "missing_ctxs", "no_passages", "empty_question"]
    assert results[0].context == "The novel was written by JANE AUSTEN in 1813.\nOther text."
    assert results[0].question == "who wrote it"
    assert results[2].context.count("\n") == 4  # five passages joined with "\n"
    assert "Extra." not in results[2].context


def test_qa_references_put_answers_found_in_passages_first():
    results = run(adapters.dpr_qa, [dpr("q", ["Mr. Smith", "John Smith"], ["Witness: john smith, aged 40."])])
    assert results[0].references == ["John Smith", "Mr. Smith"]


def test_qa_max_passages_option():
    results = run(adapters.dpr_qa, [dpr("q", ["B"], ["a A", "b B", "c C"])], max_passages=1)
    assert reasons(results) == ["answer_not_in_passages"]


def marco(query_id, well_formed, selected, texts):
    return {"query": f"query {query_id}", "query_id": query_id, "query_type": "DESCRIPTION", "answers": ["a"],
            "wellFormedAnswers": well_formed,
            "passages": {"is_selected": selected, "passage_text": texts, "url": ["u"] * len(texts)}}


def test_msmarco_needs_a_well_formed_answer_and_puts_selected_passages_first():
    texts = [f"passage {i}" for i in range(7)]
    rows = [
        marco(1, ["A full sentence answer."], [0, 0, 0, 0, 0, 0, 1], texts),
        marco(2, [], [1, 0], texts[:2]),
        marco(3, "[]", [1], texts[:1]),  # the original JSON's spelling of "none"
        {"query": "no passages", "query_id": 4, "wellFormedAnswers": ["Yes it is."]},
        marco(5, ["Answer."], [0, 0], ["", " "]),
    ]
    results = run(adapters.msmarco, rows)
    assert reasons(results) == ["kept", "no_well_formed_answer", "no_well_formed_answer", "missing_passages",
                                "no_passages"]
    kept = results[0]
    assert kept.context.split("\n") == ["passage 6", "passage 0", "passage 1", "passage 2", "passage 3"]
    assert kept.references == ["A full sentence answer."]
    assert kept.question == "query 1" and kept.identity == "query_id=1"


def test_msmarco_accepts_a_list_of_passage_objects():
    row = {"query": "q", "query_id": 9, "wellFormedAnswers": ["W."],
           "passages": [{"is_selected": 0, "passage_text": "first"}, {"is_selected": 1, "passage_text": "second"}]}
    assert run(adapters.msmarco, [row])[0].context == "second\nfirst"


def test_summarization_adapters():
    cnn = run(adapters.cnn_dailymail, [{"article": "Story.", "highlights": "Point .\nPoint two .", "id": "abc"},
                                       {"article": "Story.", "highlights": "", "id": "d"},
                                       {"highlights": "h", "id": "e"}])
    assert reasons(cnn) == ["kept", "empty_highlights", "missing_article"]
    assert cnn[0].context == "Story." and cnn[0].references == ["Point .\nPoint two ."]
    assert cnn[0].identity == "id=abc" and cnn[0].question == ""
    wiki = run(adapters.wikisum, [{"url": "u", "title": "How to", "summary": "S.", "article": "A.",
                                   "step_headers": "x"}, {"url": "v", "article": "A."}])
    assert reasons(wiki) == ["kept", "missing_summary"]


def test_non_object_rows_are_counted_drops():
    assert reasons(run(adapters.dolly, ["just a string", None])) == ["not_an_object", "not_an_object"]


# ---------------------------------------------------------------- dataset-wide filters


def test_if_training_sets_drop_duplicates_of_normalised_instruction_and_response(tmp_path):
    rows = [
        {"instruction": "What is the capital of France?", "context": "", "response": "Paris is the capital."},
        {"instruction": "what is the capital of france", "context": "", "response": "Paris is the capital!"},
        {"instruction": "What is the capital of France?", "context": "", "response": "It is Paris."},
        {"instruction": "Name a river.", "context": "", "response": "The Nile."},
    ]
    splits, report = prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", rows), SETTINGS)
    assert report["dropped"] == {"duplicate": 1}
    kept = [r for rows in splits.values() for r in rows]
    assert sorted(r["references"][0] for r in kept) == ["It is Paris.", "Paris is the capital.", "The Nile."]


def test_if_eval_drops_instructions_seen_in_training(tmp_path):
    train = [{"instruction": f"Training instruction {i}.", "context": "", "response": f"Answer {i}."}
             for i in range(6)]
    splits, report = prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", train), SETTINGS)
    write_prepared(splits, report, tmp_path / "dolly")
    evals = [{"question_id": 1, "turns": ["training instruction 3"]},  # seen (normalised)
             {"question_id": 2, "turns": ["A new question?"]},
             {"question_id": 3, "turns": ["a new question"]}]  # duplicate of the previous one
    seen = [tmp_path / "dolly" / "train.parquet", tmp_path / "dolly" / "dev.parquet"]
    splits, report = prepare_dataset("vicuna_eval", write_jsonl(tmp_path / "v.jsonl", evals), SETTINGS, seen)
    assert report["dropped"] == {"seen_in_training": 1, "duplicate": 1}
    assert [r["instruction"] for r in splits["eval"]] == ["A new question?"]
    assert report["seen_instructions"] == 6


def test_unified_schema_and_stable_ids(tmp_path):
    rows = [dpr("who wrote it", ["Austen"], ["Written by Austen."]),
            dpr("what is it", ["a rock"], ["It is a rock."])] * 1
    source = write_jsonl(tmp_path / "bio.jsonl", rows)
    splits, report = prepare_dataset("bioasq", source, SETTINGS)
    write_prepared(splits, report, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "eval.parquet")
    assert table.column_names == ["id", "dataset", "kind", "instruction", "context", "question", "references",
                                  "prompt"]
    assert str(table.schema.field("references").type) == "list<element: string>"
    first = table.to_pylist()[0]
    assert first["id"] == stable_id("bioasq", "who wrote it") and first["id"].startswith("bioasq-")
    assert first["kind"] == "extractive_qa" and first["dataset"] == "bioasq"
    assert first["prompt"].endswith("### Response:\n") and "Question: who wrote it" in first["prompt"]
    again, _ = prepare_dataset("bioasq", source, SETTINGS)
    assert [r["id"] for r in again["eval"]] == [r["id"] for r in splits["eval"]]


def test_example_identity_duplicates_are_dropped(tmp_path):
    rows = [{"article": "One.", "highlights": "1", "id": "same"}, {"article": "Two.", "highlights": "2", "id": "same"},
            *[{"article": f"Story {i}.", "highlights": f"h{i}", "id": f"x{i}"} for i in range(8)]]
    _, report = prepare_dataset("cnn_dailymail", write_jsonl(tmp_path / "c.jsonl", rows), SETTINGS)
    assert report["dropped"] == {"duplicate": 1}
    assert report["read"] == 10 and report["kept"] == 9


def test_empty_result_is_an_error_naming_dataset_and_filters(tmp_path):
    rows = [{"instruction": "q", "context": "has one", "response": "r"},
            {"instruction": "q2", "context": "", "response": ""}]
    with pytest.raises(DataError, match=r"dataset dolly: no example left.*has_context=1.*empty_response=1"):
        prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", rows), SETTINGS)


def test_example_dataclass_defaults():
    example = Example(identity="x", instruction="i", references=["r"])
    assert example.context == "" and example.question == ""
