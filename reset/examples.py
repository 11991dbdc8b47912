"""Example generations (the paper's qualitative appendix): a few seeded examples of each
evaluation set with every variant's answer side by side and its scores.

The examples of a set are drawn without replacement from its sorted example ids with numpy's
PCG64 seeded by (report.seed, CRC-32 of the set's name), so adding or removing another set
leaves a set's examples unchanged. Answers come from one training seed of the run (the first).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from reset import tables as tab

TEXT_COLUMNS = ["instruction", "question", "context", "references", "prediction", "n_tokens"]
SCORE_COLUMNS = {"if": "if_score", "faithfulness": "faithfulness", "task": "task"}
COLUMNS = ["dataset", "seen", "kind", "example", "id", "instruction", "question", "context", "references",
           "variant", "seed", "prediction", "n_tokens", "if_score", "faithfulness", "task"]


def pick(ids, count, seed, dataset):
    """`count` ids of a set (all when it has fewer), seeded by (seed, the set's name)."""
    ids = sorted(str(i) for i in ids)
    rng = np.random.default_rng([int(seed), zlib.crc32(dataset.encode("utf-8"))])
    chosen = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
    return [ids[i] for i in chosen]


def _references(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    return " | ".join(str(v) for v in value)


def example_generations(eval_dir, variants, seed, seen, unseen, per_set, draw_seed):
    """Long frame (COLUMNS): one row per set × example × variant, from the scored parquets of `seed`."""
    import pandas as pd

    datasets = [*seen, *unseen]
    rows = tab.read_eval(eval_dir, variants, [seed], datasets, columns=[*TEXT_COLUMNS, *SCORE_COLUMNS.values()])
    rows["id"] = rows["id"].astype(str)
    out = []
    for dataset in datasets:
        sub = rows[rows["dataset"] == dataset]
        first = sub[sub["variant"] == variants[0]]
        for number, example_id in enumerate(pick(first["id"], per_set, draw_seed, dataset), start=1):
            for variant in variants:
                hit = sub[(sub["variant"] == variant) & (sub["id"] == example_id)]
                if hit.empty:
                    raise ValueError(f"{dataset}: example {example_id} is missing from {variant} seed {seed}")
                r = hit.iloc[0]
                out.append({"dataset": dataset, "seen": "seen" if dataset in seen else "unseen", "kind": r["kind"],
                            "example": number, "id": example_id, "instruction": r["instruction"] or "",
                            "question": r["question"] or "", "context": r["context"] or "",
                            "references": _references(r["references"]), "variant": variant, "seed": int(seed),
                            "prediction": r["prediction"], "n_tokens": int(r["n_tokens"]),
                            **{c: float(r[c]) for c in SCORE_COLUMNS.values()}})
    return pd.DataFrame(out, columns=COLUMNS)


def _clip(text, limit):
    text = str(text or "")
    return text if len(text) <= limit else text[:limit].rstrip() + f" … ({len(text)} characters in all)"


def to_html(frame, context_chars=600):
    """One block per example: the input, the references, then a table of every variant's answer."""
    import html

    esc = html.escape
    parts = []
    for dataset, by_set in frame.groupby("dataset", sort=False):
        seen = by_set["seen"].iloc[0]
        parts.append(f"<h3>{esc(dataset)} <small>({esc(seen)}, {esc(by_set['kind'].iloc[0])})</small></h3>")
        metrics = [m for m in tab.applicable(dataset, list(SCORE_COLUMNS))]
        for (_, example_id), rows in by_set.groupby(["example", "id"], sort=False):
            first = rows.iloc[0]
            lines = [f"<p><b>Example {int(first['example'])}</b> (id <code>{esc(example_id)}</code>)</p>",
                     f"<p><b>Instruction:</b> {esc(_clip(first['instruction'], context_chars))}</p>"]
            if first["question"]:
                lines.append(f"<p><b>Question:</b> {esc(_clip(first['question'], context_chars))}</p>")
            if first["context"]:
                lines.append(f"<p><b>Context:</b> {esc(_clip(first['context'], context_chars))}</p>")
            if first["references"]:
                lines.append(f"<p><b>Reference:</b> {esc(_clip(first['references'], context_chars))}</p>")
            header = ["variant", "answer", *[tab.METRIC_NAMES[m] for m in metrics], "tokens"]
            body = [[r.variant, _clip(r.prediction, 4 * context_chars),
                     *[tab.fmt(getattr(r, SCORE_COLUMNS[m]), None) for m in metrics], r.n_tokens]
                    for r in rows.itertuples()]
            table = tab.simple_html(header, body).replace('<table class="results">', '<table class="results examples">')
            parts.append("<div class=example>" + "\n".join(lines) + table + "</div>")
    return "\n".join(parts)
