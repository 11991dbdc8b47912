"""Captions of every table and figure, from one source: the reStructuredText files in report/.

Snakemake's report (`snakemake --report`) shows report/{name}.rst beside each output; the
Markdown / LaTeX tables and the HTML report (reset.report) read the same files through this
module, so a caption is worded once. Only plain text and ``literal`` markup are used there.
"""

from __future__ import annotations

import html as _html
import re
from functools import cache
from pathlib import Path

CAPTIONS_DIR = Path(__file__).resolve().parent.parent / "report"
_LITERAL = re.compile(r"``(.+?)``")


@cache
def rst(name: str) -> str:
    """The caption file report/{name}.rst, whitespace collapsed to single spaces."""
    path = CAPTIONS_DIR / f"{name}.rst"
    if not path.exists():
        raise FileNotFoundError(f"no caption {path} (captions live in report/*.rst)")
    text = " ".join(path.read_text(encoding="utf-8").split())
    if "{{" in text or "{%" in text:
        raise ValueError(f"{path}: a caption shared with reset.report must not use Jinja templating")
    return text


def text(name: str) -> str:
    """Plain text (``literal`` markers dropped): Markdown tables and figure alt text."""
    return _LITERAL.sub(r"\1", rst(name))


def html(name: str) -> str:
    """HTML with ``literal`` as <code>."""
    parts = _LITERAL.split(rst(name))
    return "".join(_html.escape(p) if i % 2 == 0 else f"<code>{_html.escape(p)}</code>"
                   for i, p in enumerate(parts))


def latex(name: str) -> str:
    from reset.tables import latex_escape

    parts = _LITERAL.split(rst(name))
    out = "".join(latex_escape(p) if i % 2 == 0 else rf"\texttt{{{latex_escape(p)}}}" for i, p in enumerate(parts))
    return out.replace("±", r"$\pm$").replace("→", r"$\rightarrow$").replace("−", "-")
