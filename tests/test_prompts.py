"""The prompt template: Alpaca layout, our task instructions, question after the passages."""

import pytest

from reset.prompts import HEADER, KINDS, render_prompt, task_instruction


def test_if_prompt_has_no_input_block_and_ends_with_response_marker():
    prompt = render_prompt("if", "  Name three primary colours.  ")
    assert prompt.startswith(HEADER + "\n\n")
    assert "### Instruction:\nName three primary colours.\n\n" in prompt
    assert "### Input:" not in prompt
    assert prompt.endswith("\n\n### Response:\n")
    assert prompt.count("### Response:") == 1


def test_if_prompt_with_context_gets_an_input_block():
    prompt = render_prompt("if", "Translate to French.", context="Good morning")
    assert "### Input:\nGood morning\n\n### Response:\n" in prompt


def test_qa_prompt_puts_question_after_passages():
    context = "Passage one about Jupiter.\nPassage two about Saturn."
    prompt = render_prompt("extractive_qa", task_instruction("extractive_qa"), context, "largest planet?")
    body = prompt.split("### Input:\n", 1)[1]
    assert body.startswith(context)
    assert body.index("Question: largest planet?") > body.index("Passage two about Saturn.")
    assert body.endswith("Question: largest planet?\n\n### Response:\n")
    # the task instruction sits in the Instruction block, before the input
    assert prompt.index(task_instruction("extractive_qa")) < prompt.index("### Input:")


def test_summarization_prompt_has_article_and_no_question():
    prompt = render_prompt("summarization", "", context="An article.")
    assert "### Instruction:\n" + task_instruction("summarization") in prompt  # empty instruction falls back
    assert "### Input:\nAn article.\n\n### Response:\n" in prompt
    assert "Question:" not in prompt


def test_task_instructions_are_objective_aligned_and_distinct():
    extractive = task_instruction("extractive_qa").lower()
    assert "extract" in extractive and "span" in extractive and "passages" in extractive
    assert "only" in task_instruction("abstractive_qa").lower()
    assert "summar" in task_instruction("summarization").lower()
    assert "only" in task_instruction("summarization").lower()
    texts = {task_instruction(k) for k in KINDS if k != "if"}
    assert len(texts) == 3


def test_errors_for_unknown_kind_missing_if_instruction_and_missing_question():
    with pytest.raises(ValueError, match="unknown task kind"):
        render_prompt("chat", "hi")
    with pytest.raises(ValueError, match="user's own instruction"):
        task_instruction("if")
    with pytest.raises(ValueError, match="user's own instruction"):
        render_prompt("if", "   ")
    with pytest.raises(ValueError, match="needs a question"):
        render_prompt("abstractive_qa", "", context="passage")


def test_rendering_is_deterministic():
    args = ("abstractive_qa", "", "p1\np2", "why?")
    assert render_prompt(*args) == render_prompt(*args)
