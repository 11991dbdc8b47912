"""The judge prompt of the paper's appendix and the parsing of a judge's reply."""

from __future__ import annotations

import math
import re

# The judge instructions of the paper's appendix (adopted from LLM-as-a-Judge),
# restated word for word because they are the evaluation protocol.
SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Begin your evaluation by providing a short explanation (strictly 1-2 short "
    "sentences). Be as objective as possible. After providing your explanation, please rate the "
    'response on a scale of 1 to 10 by strictly following this format: "rating", for example: '
    '"Rating: 5".'
)
ANSWER_START = "[The Start of Assistant's Answer]"
ANSWER_END = "[The End of Assistant's Answer]"
# The follow-up turn after a reply without a rating (judges.*.format_retries): it repeats the
# format the system prompt asks for, so the retry asks something new instead of the same prompt.
FORMAT_REMINDER = ('Your reply has no rating. Please rate the response on a scale of 1 to 10 by strictly '
                   'following this format: "Rating: N", for example: "Rating: 5".')


def judge_prompt(question: str, answer: str) -> list[dict]:
    """Chat messages (system + user) asking the judge to rate `answer` to `question`."""
    user = f"[Question]\n{question}\n\n{ANSWER_START}\nAnswer: {answer}\n{ANSWER_END}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def format_follow_up(messages: list[dict], reply: str) -> list[dict]:
    """The conversation continued after a rating-less `reply`: that reply, then FORMAT_REMINDER."""
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": FORMAT_REMINDER}]


_NUMBER = r"(\d+(?:\.\d+)?)"
_RATING_RE = re.compile(r"rating\W{0,3}(?:(?:of|is)\s*)?\**\s*\[*\s*" + _NUMBER, re.IGNORECASE)
_BRACKETS_RE = re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]")


def _rating_match(text: str):
    """The last 'Rating: N' match, else the last '[[N]]' match, else None."""
    for pattern in (_RATING_RE, _BRACKETS_RE):
        matches = list(pattern.finditer(text or ""))
        if matches:
            return matches[-1]
    return None


def parse_rating(text: str) -> int | None:
    """The judge's rating 1-10 from its reply: 'Rating: N' (last one wins), else '[[N]]'.

    Decimals are rounded half up (7.5 -> 8); anything else, or a value outside 1-10, is None.
    """
    match = _rating_match(text)
    if match is None:
        return None
    rating = math.floor(float(match.group(1)) + 0.5)
    return rating if 1 <= rating <= 10 else None


def explanation_of(text: str) -> str:
    """The reply without its rating: the text before the rating, or the whole reply."""
    match = _rating_match(text)
    before = text[: match.start()] if match else text
    before = re.sub(r"[\s*\[]*$", "", before).strip()
    return before or (text or "").strip()
