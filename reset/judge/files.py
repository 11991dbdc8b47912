"""Judge input and output files: JSONL or parquet."""

from __future__ import annotations

from pathlib import Path

from reset.judge.base import result_row


def read_items(path) -> list[dict]:
    """Items from JSONL (one {id, question, answer} per line) or parquet with those columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        from reset.io import read_table

        return read_table(path, ["id", "question", "answer"], "judge input").to_dict("records")
    from reset.io import read_jsonl

    return read_jsonl(path)


def write_results(items: list, results: list[dict], path) -> None:
    """Results (JSONL or parquet by extension); extra input fields besides question/answer are kept."""
    rows = []
    for item, result in zip(items, results, strict=True):
        extra = {k: v for k, v in item.items() if k not in ("question", "answer")} if isinstance(item, dict) else {}
        rows.append({**extra, **result})
    if Path(path).suffix == ".parquet":
        import pandas as pd

        from reset.io import write_parquet

        write_parquet(pd.DataFrame(rows, columns=list(rows[0]) if rows else list(result_row(None))), path)
    else:
        from reset.io import write_jsonl

        write_jsonl(rows, path)


