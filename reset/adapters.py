"""One adapter per dataset (docs/datasets.md): raw rows in the source's own format -> examples.

An adapter reads the rows of one source and yields exactly one result per raw
row: an `Example`, or a `Drop` naming why the row was left out. Row-level
problems (a missing field, a value of the wrong type, an empty text) are drops,
never crashes, so every row is accounted for in the filter report.

Filters that need the whole dataset (exact duplicates, IF evaluation
instructions already seen in training) live in `reset.data`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reset.metrics import normalize
from reset.prompts import task_instruction


@dataclass
class Example:
    identity: str  # raw identity of the example; the stable id is a hash of it
    instruction: str
    references: list[str]
    context: str = ""
    question: str = ""
    response_for_dedup: str = ""  # IF training sets: the response that joins the dedup key


class Drop(Exception):
    """A raw row left out, with a short reason that becomes a filter-report key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Options:
    lang: str | None = "en"  # oasst1 language filter (None keeps every language)
    max_passages: int = 5  # QA passages kept per example


# ---------------------------------------------------------------- field helpers


def text(row: dict, key: str, label: str | None = None) -> str:
    """A required, non-empty string field (stripped)."""
    label = label or key
    value = row.get(key)
    if value is None:
        raise Drop(f"missing_{key}")
    if not isinstance(value, str):
        raise Drop(f"bad_{key}")
    value = value.strip()
    if not value:
        raise Drop(f"empty_{label}")
    return value


def optional_text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Drop(f"bad_{key}")
    return value.strip()


def string_list(value, key: str) -> list[str]:
    """A list of strings (non-strings and blanks removed); a bare string counts as one item."""
    if value is None:
        raise Drop(f"missing_{key}")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise Drop(f"bad_{key}")
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def identity_of(row: dict, key: str, fallback: str) -> str:
    """The source's own id field when it has one, else the given content."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return fallback
    return f"{key}={value}"


def _each(rows: Iterable[dict], convert) -> Iterator[Example | Drop]:
    for row in rows:
        if not isinstance(row, dict):
            yield Drop("not_an_object")
            continue
        try:
            yield convert(row)
        except Drop as drop:
            yield drop


def _if_example(identity: str, instruction: str, response: str) -> Example:
    return Example(identity=identity, instruction=instruction, references=[response],
                   response_for_dedup=response)


# ---------------------------------------------------------------- IF training sets


def dolly(rows, opts: Options):
    """databricks-dolly-15k: instruction, context, response, category; rows with a context are dropped."""

    def convert(row):
        instruction = text(row, "instruction")
        if optional_text(row, "context"):
            raise Drop("has_context")
        response = text(row, "response")
        return _if_example(f"{instruction}\x1f{response}", instruction, response)

    return _each(rows, convert)


HUMAN_ROLES = {"human", "user"}
GPT_ROLES = {"gpt", "chatgpt", "assistant"}


def first_human_gpt_pair(conversation) -> tuple[str, str]:
    """The first human turn that is directly answered by a gpt turn."""
    if conversation is None:
        raise Drop("missing_conversations")
    if not isinstance(conversation, list):
        raise Drop("bad_conversations")
    turns = [t for t in conversation if isinstance(t, dict)]
    for asked, answered in zip(turns, turns[1:], strict=False):
        if str(asked.get("from", "")).lower() in HUMAN_ROLES and str(answered.get("from", "")).lower() in GPT_ROLES:
            question, answer = asked.get("value"), answered.get("value")
            if not isinstance(question, str) or not isinstance(answer, str):
                raise Drop("bad_turn_value")
            return question.strip(), answer.strip()
    raise Drop("no_human_gpt_pair")


def sharegpt(rows, opts: Options, min_words: int = 10):
    """ShareGPT: the first human->gpt pair; the response must have more than `min_words` words."""

    def convert(row):
        instruction, response = first_human_gpt_pair(row.get("conversations"))
        if not instruction:
            raise Drop("empty_instruction")
        if not response:
            raise Drop("empty_response")
        if len(response.split()) <= min_words:
            raise Drop("short_response")
        return _if_example(f"{instruction}\x1f{response}", instruction, response)

    return _each(rows, convert)


_OUTPUT_MARKER = re.compile(r"\s*Output:\s*$")
_END_OF_TEXT = "<|endoftext|>"


def self_instruct(rows, opts: Options):
    """Self-Instruct GPT-3 fine-tuning rows: strip "Output:" off the prompt and <|endoftext|> off the completion."""

    def convert(row):
        prompt = text(row, "prompt", "instruction")
        completion = text(row, "completion", "response")
        instruction = _OUTPUT_MARKER.sub("", prompt).strip()
        response = completion.replace(_END_OF_TEXT, "").strip()
        if not instruction:
            raise Drop("empty_instruction")
        if not response:
            raise Drop("empty_response")
        return _if_example(f"{instruction}\x1f{response}", instruction, response)

    return _each(rows, convert)


def quality_label(labels) -> tuple[float, int]:
    """(average value, count) of the `quality` label of an oasst1 message."""
    if labels is None:
        raise Drop("no_labels")
    if isinstance(labels, list):  # a list of {name, value, count} objects
        labels = {
            "name": [x.get("name") for x in labels if isinstance(x, dict)],
            "value": [x.get("value") for x in labels if isinstance(x, dict)],
            "count": [x.get("count") for x in labels if isinstance(x, dict)],
        }
    if not isinstance(labels, dict):
        raise Drop("bad_labels")
    names, values, counts = labels.get("name"), labels.get("value"), labels.get("count")
    if not (isinstance(names, list) and isinstance(values, list) and isinstance(counts, list)) or not (
        len(names) == len(values) == len(counts)
    ):
        raise Drop("bad_labels")
    if "quality" not in names:
        raise Drop("no_quality_label")
    i = names.index("quality")
    value, count = values[i], counts[i]
    if not isinstance(value, (int, float)) or not isinstance(count, (int, float)) or isinstance(value, bool):
        raise Drop("bad_labels")
    return float(value), int(count)


def oasst1(rows, opts: Options, min_quality: float = 0.5, min_count: int = 2):
    """OpenAssistant messages: each assistant reply paired with its parent prompter message.

    Kept when the reply's `quality` label averages more than `min_quality` over
    at least `min_count` ratings and its language is `opts.lang`. Prompter
    messages are consumed as parents and counted as `prompter_message`. `rows`
    is read twice (parents first), so it must be a re-iterable sequence.
    """
    parents = {}
    for row in rows:
        if isinstance(row, dict) and row.get("message_id") is not None:
            parents[str(row["message_id"])] = (row.get("role"), row.get("text"))

    def convert(row):
        role = row.get("role")
        if role is None:
            raise Drop("missing_role")
        if role == "prompter":
            raise Drop("prompter_message")
        if role != "assistant":
            raise Drop("bad_role")
        message_id = row.get("message_id")
        if message_id is None:
            raise Drop("missing_message_id")
        if opts.lang and row.get("lang") != opts.lang:
            raise Drop("other_language")
        value, count = quality_label(row.get("labels"))
        if count < min_count:
            raise Drop("few_quality_ratings")
        if value <= min_quality:
            raise Drop("low_quality")
        response = text(row, "text", "response")
        parent_id = row.get("parent_id")
        if parent_id is None:
            raise Drop("missing_parent_id")
        if str(parent_id) not in parents:
            raise Drop("parent_not_found")
        parent_role, parent_text = parents[str(parent_id)]
        if parent_role != "prompter":
            raise Drop("parent_not_prompter")
        if not isinstance(parent_text, str):
            raise Drop("bad_parent_text")
        instruction = parent_text.strip()
        if not instruction:
            raise Drop("empty_instruction")
        return _if_example(f"message_id={message_id}", instruction, response)

    return _each(rows, convert)


# ---------------------------------------------------------------- IF evaluation sets


def alpaca_eval(rows, opts: Options):
    """AlpacaEval: instruction and the reference model's output (kept as the reference)."""

    def convert(row):
        instruction = text(row, "instruction")
        output = optional_text(row, "output")
        return Example(identity=instruction, instruction=instruction, references=[output] if output else [])

    return _each(rows, convert)


def vicuna_eval(rows, opts: Options):
    """Vicuna bench questions: the first turn is the instruction; no reference answer.

    The older FastChat question file has a single `text` field instead of `turns`.
    """

    def convert(row):
        turns = row.get("turns")
        if turns is None and isinstance(row.get("text"), str):
            turns = [row["text"]]
        if turns is None:
            raise Drop("missing_turns")
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], str):
            raise Drop("bad_turns")
        instruction = turns[0].strip()
        if not instruction:
            raise Drop("empty_instruction")
        return Example(identity=identity_of(row, "question_id", instruction), instruction=instruction, references=[])

    return _each(rows, convert)


def koala_eval(rows, opts: Options):
    """Koala test set: `prompt` is the instruction; no reference answer."""

    def convert(row):
        instruction = text(row, "prompt", "instruction")
        return Example(identity=identity_of(row, "id", instruction), instruction=instruction, references=[])

    return _each(rows, convert)


# ---------------------------------------------------------------- context-dependent sets


def mentions(answer: str, normalized_passages: list[str]) -> bool:
    """Whether the normalised answer occurs as whole tokens in a normalised passage."""
    needle = normalize(answer)
    return bool(needle) and any(f" {needle} " in f" {p} " for p in normalized_passages)


def dpr_qa(rows, opts: Options):
    """DPR retriever results (NQ, BioASQ, SearchQA from RobustQA).

    The first `max_passages` non-empty passages in retriever order form the
    context; the example is kept only when a gold answer is mentioned in one
    of them. Answers found in the passages come first among the references.
    """
    kind = "extractive_qa"

    def convert(row):
        question = text(row, "question")
        answers = string_list(row.get("answers"), "answers")
        if not answers:
            raise Drop("no_answer")
        ctxs = row.get("ctxs")
        if ctxs is None:
            raise Drop("missing_ctxs")
        if not isinstance(ctxs, list):
            raise Drop("bad_ctxs")
        passages = [c["text"].strip() for c in ctxs
                    if isinstance(c, dict) and isinstance(c.get("text"), str) and c["text"].strip()]
        passages = passages[: opts.max_passages]
        if not passages:
            raise Drop("no_passages")
        normalized = [normalize(p) for p in passages]
        found = [a for a in answers if mentions(a, normalized)]
        if not found:
            raise Drop("answer_not_in_passages")
        references = found + [a for a in answers if a not in found]
        return Example(identity=identity_of(row, "id", question), instruction=task_instruction(kind),
                       references=references, context="\n".join(passages), question=question)

    return _each(rows, convert)


def msmarco_passages(passages) -> list[tuple[bool, str]]:
    """(is_selected, text) pairs from the hub layout {is_selected[], passage_text[], url[]} or a list of objects."""
    if passages is None:
        raise Drop("missing_passages")
    if isinstance(passages, dict):
        texts, selected = passages.get("passage_text"), passages.get("is_selected")
        if not isinstance(texts, list):
            raise Drop("bad_passages")
        if not isinstance(selected, list) or len(selected) != len(texts):
            selected = [0] * len(texts)
        pairs = list(zip(selected, texts, strict=True))
    elif isinstance(passages, list):
        pairs = [(p.get("is_selected", 0), p.get("passage_text")) for p in passages if isinstance(p, dict)]
    else:
        raise Drop("bad_passages")
    return [(bool(sel), t.strip()) for sel, t in pairs if isinstance(t, str) and t.strip()]


def msmarco(rows, opts: Options):
    """MS MARCO v2.1: needs a well-formed answer; selected passages first, then retriever order."""
    kind = "abstractive_qa"

    def convert(row):
        query = text(row, "query", "question")
        well_formed = string_list(row.get("wellFormedAnswers"), "wellFormedAnswers")
        well_formed = [a for a in well_formed if a != "[]"]  # the original JSON writes "[]" for none
        if not well_formed:
            raise Drop("no_well_formed_answer")
        pairs = msmarco_passages(row.get("passages"))
        ordered = [t for sel, t in pairs if sel] + [t for sel, t in pairs if not sel]
        passages = ordered[: opts.max_passages]
        if not passages:
            raise Drop("no_passages")
        return Example(identity=identity_of(row, "query_id", query), instruction=task_instruction(kind),
                       references=well_formed, context="\n".join(passages), question=query)

    return _each(rows, convert)


def cnn_dailymail(rows, opts: Options):
    """CNN/DailyMail 3.0.0: article -> highlights."""
    kind = "summarization"

    def convert(row):
        article = text(row, "article")
        highlights = text(row, "highlights")
        return Example(identity=identity_of(row, "id", article), instruction=task_instruction(kind),
                       references=[highlights], context=article)

    return _each(rows, convert)


def wikisum(rows, opts: Options):
    """WikiSum (WikiHow): article -> summary."""
    kind = "summarization"

    def convert(row):
        article = text(row, "article")
        summary = text(row, "summary")
        return Example(identity=identity_of(row, "url", article), instruction=task_instruction(kind),
                       references=[summary], context=article)

    return _each(rows, convert)


ADAPTERS = {
    "dolly": dolly,
    "sharegpt": sharegpt,
    "self_instruct": self_instruct,
    "oasst1": oasst1,
    "alpaca_eval": alpaca_eval,
    "vicuna_eval": vicuna_eval,
    "koala_eval": koala_eval,
    "nq": dpr_qa,
    "bioasq": dpr_qa,
    "searchqa": dpr_qa,
    "msmarco": msmarco,
    "cnn_dailymail": cnn_dailymail,
    "wikisum": wikisum,
}
