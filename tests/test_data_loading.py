"""Loading sources through datasets.load_dataset, bad input, splits and the prepare CLI."""

import gzip
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from reset import data
from reset.data import DataError, carve, load_source, prepare_dataset
from reset.sources import hub_split, is_hub_id, is_local, local_files, source_map

SETTINGS = {"split_seed": 0, "dev_fraction": 0.1, "eval_fraction": 0.2, "dev_min": 2, "eval_cap": 4,
            "max_passages": 5, "lang": "en"}


def dolly_rows(n, start=0):
    return [{"instruction": f"Question number {i}?", "context": "", "response": f"Answer number {i}.",
             "category": "open_qa"} for i in range(start, start + n)]


def cnn_rows(n, start=0):
    return [{"article": f"Article {i} text.", "highlights": f"Highlight {i} .", "id": f"id{i:03d}"}
            for i in range(start, start + n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- source strings


def test_source_classification(tmp_path):
    assert is_hub_id("microsoft/ms_marco") and is_hub_id("d0rj/wikisum")
    assert is_local("raw/robustqa/nq.json")  # by extension, even before it exists
    assert is_local("raw/part-*.parquet") and is_local(str(tmp_path))
    assert not is_local("hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json")
    assert not is_hub_id("hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json")
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    assert local_files(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert local_files("raw/does/not/exist.json") == [] and local_files("microsoft/ms_marco") == []
    assert source_map("x.json") == {"all": "x.json"}
    assert source_map({"train": "a", "eval": "b"}) == {"train": "a", "eval": "b"}
    with pytest.raises(ValueError, match="unknown split key"):
        source_map({"test": "a"})
    assert hub_split(None, "all") == "train" and hub_split(None, "eval") == "test"
    assert hub_split({"eval": "validation"}, "eval") == "validation" and hub_split("train", "eval") == "train"


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl_gz", "json_list", "parquet", "csv"])
def test_every_file_format_loads_the_same_rows(tmp_path, fmt):
    rows = dolly_rows(3)
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", rows)
    elif fmt == "jsonl_gz":
        path = tmp_path / "d.jsonl.gz"
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    elif fmt == "json_list":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows, indent=2))
    elif fmt == "parquet":
        path = tmp_path / "d.parquet"
        pd.DataFrame(rows).to_parquet(path)
    else:
        path = tmp_path / "d.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
    ds = load_source(str(path))
    assert [r["instruction"] for r in ds] == [r["instruction"] for r in rows]


def test_explicit_format_for_a_file_without_extension(tmp_path):
    path = write_jsonl(tmp_path / "dolly_dump", dolly_rows(2))
    with pytest.raises(DataError, match="cannot tell the file format"):
        load_source(path)
    assert len(load_source(path, fmt="jsonl")) == 2


def test_glob_source_reads_every_file(tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", dolly_rows(2))
    write_jsonl(tmp_path / "part-2.jsonl", dolly_rows(3, start=2))
    assert len(load_source(str(tmp_path / "part-*.jsonl"))) == 5


# ---------------------------------------------------------------- bad input


def test_broken_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(r) for r in dolly_rows(3)]
    lines[1] = lines[1][:-1]  # drop the closing brace of line 2
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        load_source(str(path))


def test_broken_json_list_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    text = json.dumps(dolly_rows(3), indent=1).replace('"Answer number 1."', '"Answer number 1." oops')
    path.write_text(text)
    line = text[: text.index("oops")].count("\n") + 1
    with pytest.raises(DataError, match=rf"{path}:{line}: not valid JSON"):
        load_source(str(path))


def test_non_utf8_bytes_name_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = (json.dumps(dolly_rows(1)[0]) + "\n").encode()
    path.write_bytes(good + '{"instruction": "caf\u00e9", "response": "x"}\n'.encode("latin-1"))
    offset = len(good) + len('{"instruction": "caf')
    with pytest.raises(DataError, match=rf"{path}: not valid UTF-8 at byte offset {offset} \(line 2\)"):
        prepare_dataset("dolly", str(path), SETTINGS)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_source(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="nothing.json: no such file"):
        load_source(str(tmp_path / "nothing.json"))


def test_wrong_format_is_an_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", dolly_rows(2))
    with pytest.raises(DataError, match="rows.jsonl"):
        load_source(path, fmt="parquet")


def test_hub_id_failure_names_the_dataset(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hub dataset 'nobody-here/no-such-dataset' \(config 'x', split 'test'"):
        load_source("nobody-here/no-such-dataset", name="x", split="test")


def test_rows_of_the_wrong_type_are_counted_drops(tmp_path):
    rows = dolly_rows(6) + [{"instruction": ["a", "list"], "context": "", "response": "r", "category": "x"}]
    splits, report = prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", rows), SETTINGS)
    assert report["dropped"] == {"bad_instruction": 1}
    assert sum(len(r) for r in splits.values()) == 6


# ---------------------------------------------------------------- splits


def test_carve_is_seeded_and_independent_of_source_order():
    rows = [{"id": f"x-{i:02d}"} for i in range(20)]
    first = carve(rows, {"eval": 4, "dev": 2}, "train", seed=0)
    shuffled = carve(list(reversed(rows)), {"eval": 4, "dev": 2}, "train", seed=0)
    assert {s: {r["id"] for r in v} for s, v in first.items()} == {s: {r["id"] for r in v} for s, v in shuffled.items()}
    other = carve(rows, {"eval": 4, "dev": 2}, "train", seed=1)
    assert {r["id"] for r in other["eval"]} != {r["id"] for r in first["eval"]}
    assert [len(first[s]) for s in ("eval", "dev", "train")] == [4, 2, 14]
    assert first["train"] == sorted(first["train"], key=lambda r: r["id"])  # source order kept


def test_single_source_is_split_into_train_dev_eval_with_caps(tmp_path):
    splits, report = prepare_dataset("cnn_dailymail", write_jsonl(tmp_path / "c.jsonl", cnn_rows(40)), SETTINGS)
    # eval = min(cap 4, ceil(0.2 * 40)); dev = max(2, ceil(0.1 * 36)) = 4; train gets the rest
    assert report["splits"] == {"train": 32, "dev": 4, "eval": 4}
    ids = [r["id"] for s in splits.values() for r in s]
    assert len(set(ids)) == 40
    assert report["read"] == report["kept"] + sum(report["dropped"].values())


def test_if_train_split_uses_dev_min(tmp_path):
    _, report = prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", dolly_rows(10)), SETTINGS)
    assert report["splits"] == {"train": 8, "dev": 2}


def test_eval_only_sets_are_capped_and_count_the_rest(tmp_path):
    rows = [{"id": f"k{i}", "prompt": f"Prompt {i}"} for i in range(9)]
    splits, report = prepare_dataset("koala_eval", write_jsonl(tmp_path / "k.jsonl", rows), SETTINGS)
    assert len(splits["eval"]) == 4
    assert report["dropped"] == {"over_eval_cap": 5} and report["kept"] == 4 and report["read"] == 9
    uncapped, _ = prepare_dataset("koala_eval", str(tmp_path / "k.jsonl"), {**SETTINGS, "eval_cap": None})
    assert len(uncapped["eval"]) == 9


def test_mapping_source_takes_eval_from_its_own_source(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", cnn_rows(20))
    evals = write_jsonl(tmp_path / "test.jsonl", cnn_rows(6, start=100) + cnn_rows(1, start=0))  # one overlaps
    splits, report = prepare_dataset("cnn_dailymail", {"train": train, "eval": evals}, SETTINGS)
    assert report["splits"] == {"train": 17, "dev": 2, "eval": 4}
    assert report["dropped"] == {"duplicate": 1, "over_eval_cap": 3}
    # eval is read first, so the overlapping article stays in eval and is dropped from train
    eval_sources = {r["context"] for r in splits["eval"]}
    assert all(c.startswith(("Article 10", "Article 0 ")) for c in eval_sources)
    assert not {r["id"] for r in splits["train"]} & {r["id"] for r in splits["eval"]}


def test_mapping_errors_name_the_dataset(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [])
    with pytest.raises(DataError, match=r"datasets.bioasq.source: split\(s\) \['train'\] not used by bioasq"):
        prepare_dataset("bioasq", {"train": path, "eval": path}, SETTINGS)
    with pytest.raises(DataError, match=r"datasets.msmarco.source: mapping has no source for split\(s\) \['train'"):
        prepare_dataset("msmarco", {"eval": path}, SETTINGS)


def test_a_split_left_empty_is_an_error(tmp_path):
    with pytest.raises(DataError, match="dataset dolly: split 'train' is empty"):
        prepare_dataset("dolly", write_jsonl(tmp_path / "d.jsonl", dolly_rows(2)), SETTINGS)


# ---------------------------------------------------------------- CLI


def cli(*args):
    return data.main(["prepare", *map(str, args)])


def test_cli_writes_splits_and_report(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", cnn_rows(12))
    out = tmp_path / "out"
    assert cli("--dataset", "cnn_dailymail", "--source", source, "--eval-cap", 3, "--out-dir", out) == 0
    report = json.loads((out / "filter_report.json").read_text())
    assert report["read"] == 12 and report["kept"] == 12 and report["dropped"] == {}
    assert report["splits"] == {"train": 7, "dev": 2, "eval": 3}
    for split, n in report["splits"].items():
        assert pq.read_table(out / f"{split}.parquet").num_rows == n
    assert sorted(p.name for p in out.iterdir()) == ["dev.parquet", "eval.parquet", "filter_report.json",
                                                     "train.parquet"]


def test_cli_mapping_and_hub_split_flags(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", cnn_rows(10))
    evals = write_jsonl(tmp_path / "eval.jsonl", cnn_rows(3, start=50))
    out = tmp_path / "out"
    assert cli("--dataset", "cnn_dailymail", "--source", f"train={train}", f"eval={evals}",
               "--hub-split", "train=train", "eval=test", "--out-dir", out) == 0
    assert json.loads((out / "filter_report.json").read_text())["splits"] == {"train": 8, "dev": 2, "eval": 3}


def test_cli_failure_leaves_no_outputs(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\n{"instruction": \n')
    out = tmp_path / "out"
    assert cli("--dataset", "dolly", "--source", bad, "--out-dir", out) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    empty = write_jsonl(tmp_path / "ctx.jsonl", [{"instruction": "a", "context": "c", "response": "b"}] * 3)
    assert cli("--dataset", "dolly", "--source", empty, "--out-dir", out) == 2
    assert "no example left" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        data.main(["prepare", "--help"])
    assert exit_info.value.code == 0
    assert "--max-passages" in capsys.readouterr().out
