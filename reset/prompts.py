"""The prompt template (docs/datasets.md#prompt-template): Alpaca layout with our objective-aligned task instructions.

Every example, in training and in evaluation, is rendered the same way:

    <header sentence>

    ### Instruction:
    <instruction>

    ### Input:                      (only when there is a context or a question)
    <context>

    Question: <question>            (QA only: the question comes after the passages)

    ### Response:

Instruction-following (IF) examples carry the user's own instruction; the
context-dependent kinds carry the fixed instruction of `TASK_INSTRUCTIONS`, which
asks for an answer grounded in the input, so that learning to follow
instructions also means learning to stay with the given text.
"""

from __future__ import annotations

KINDS = ("if", "extractive_qa", "abstractive_qa", "summarization")

HEADER = (
    "You are given a task to complete. Read the instruction carefully, rely on the "
    "input when one is provided, and write a response that does exactly what is asked."
)

TASK_INSTRUCTIONS = {
    "extractive_qa": (
        "Answer the question by extracting a specific text span from the given passages. "
        "Copy the span exactly as it is written in the passages and add nothing else."
    ),
    "abstractive_qa": (
        "Answer the question with a complete, well-formed sentence. Use only facts that "
        "are stated in the given passages; do not add outside knowledge."
    ),
    "summarization": (
        "Summarize the given article in a few sentences. Use only facts that are stated "
        "in the article; do not add outside knowledge."
    ),
}

RESPONSE_MARKER = "### Response:\n"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")


def task_instruction(kind: str) -> str:
    """The fixed instruction of a context-dependent kind.

    IF examples have no fixed instruction: they use the user's own, so asking
    for kind "if" is an error rather than a silent empty string.
    """
    _check_kind(kind)
    if kind == "if":
        raise ValueError("IF examples use the user's own instruction; there is no task instruction for kind 'if'")
    return TASK_INSTRUCTIONS[kind]


def render_input(context: str = "", question: str = "") -> str:
    """The body of the Input block: the context, then the question (QA)."""
    parts = []
    if context and context.strip():
        parts.append(context.strip())
    if question and question.strip():
        parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts)


def render_prompt(kind: str, instruction: str, context: str = "", question: str = "") -> str:
    """Render one example; the text ends with "### Response:\\n" and the target follows it.

    An empty instruction of a context-dependent kind falls back to
    `task_instruction(kind)`; an IF example without an instruction is an error.
    """
    _check_kind(kind)
    instruction = (instruction or "").strip()
    if not instruction:
        instruction = task_instruction(kind)
    if kind in ("extractive_qa", "abstractive_qa") and not (question or "").strip():
        raise ValueError(f"a {kind} prompt needs a question")
    blocks = [HEADER, f"### Instruction:\n{instruction}"]
    body = render_input(context, question)
    if body:
        blocks.append(f"### Input:\n{body}")
    blocks.append(RESPONSE_MARKER)
    return "\n\n".join(blocks)
