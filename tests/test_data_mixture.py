"""Training mixtures: IF pooled and de-duplicated, components up-sampled to the largest, seeded shuffle."""

import json
from collections import Counter

import pytest

from reset import data
from reset.data import DataError, build_mixture, stable_id, write_rows
from reset.prompts import render_prompt, task_instruction
from reset.variants import MIXTURES


def if_row(dataset, i, instruction=None, response=None):
    instruction = instruction or f"{dataset} instruction {i}"
    return {"id": stable_id(dataset, f"{instruction}{i}"), "dataset": dataset, "kind": "if",
            "instruction": instruction, "context": "", "question": "", "references": [response or f"response {i}"],
            "prompt": render_prompt("if", instruction)}


def cd_row(dataset, i):
    kind = {"nq": "extractive_qa", "msmarco": "abstractive_qa", "cnn_dailymail": "summarization"}[dataset]
    question = f"question {i}" if kind.endswith("_qa") else ""
    return {"id": stable_id(dataset, str(i)), "dataset": dataset, "kind": kind,
            "instruction": task_instruction(kind), "context": f"context {i}", "question": question,
            "references": [f"answer {i}"], "prompt": render_prompt(kind, "", f"context {i}", question)}


SIZES = {"dolly": 5, "sharegpt": 4, "self_instruct": 3, "oasst1": 2, "nq": 6, "msmarco": 3, "cnn_dailymail": 4}


@pytest.fixture
def splits(tmp_path):
    """Prepared train/dev splits of the seven training sets, with one IF pair shared by dolly and oasst1."""
    paths = {}
    for dataset, n in SIZES.items():
        make = if_row if dataset in MIXTURES["if"] else cd_row
        train = [make(dataset, i) for i in range(n)]
        dev = [make(dataset, 100 + i) for i in range(2)]
        if dataset == "oasst1":
            train[0] = if_row("oasst1", 0, "Dolly Instruction 0!", "response 0")  # same as dolly's first pair
            dev[0] = if_row("oasst1", 100, "dolly instruction 1", "response 1")  # same as a dolly train pair
        for split, rows in (("train", train), ("dev", dev)):
            paths[(dataset, split)] = tmp_path / dataset / f"{split}.parquet"
            write_rows(rows, paths[(dataset, split)])
    return paths


def inputs(splits, name, split):
    return [splits[(d, split)] for d in MIXTURES[name]]


def test_if_mixture_pools_and_deduplicates_without_upsampling(splits):
    train, dev, report = build_mixture("if", inputs(splits, "if", "train"), inputs(splits, "if", "dev"), seed=0)
    assert len(train) == 5 + 4 + 3 + 2 - 1
    assert Counter(r["dataset"] for r in train) == {"dolly": 5, "sharegpt": 4, "self_instruct": 3, "oasst1": 1}
    assert len({r["id"] for r in train}) == len(train)
    assert report["dropped_if_duplicates"] == {"train": 1, "dev": 1}
    assert len(dev) == 4 * 2 - 1
    assert report["components"] == {"if_mix": {"rows": 13, "upsampled_to": 13, "factor": 1.0}}


def test_mtl_mixture_upsamples_every_component_to_the_largest(splits):
    train, dev, report = build_mixture("mtl", inputs(splits, "mtl", "train"), inputs(splits, "mtl", "dev"), seed=0)
    per_component = Counter("if_mix" if r["kind"] == "if" else r["dataset"] for r in train)
    assert per_component == {"if_mix": 13, "nq": 13, "msmarco": 13, "cnn_dailymail": 13}
    msmarco = Counter(r["id"] for r in train if r["dataset"] == "msmarco")
    assert sorted(msmarco.values()) == [4, 4, 5]  # 13 = 4 whole copies of 3 rows + 1 sampled row
    assert len(dev) == 7 * 2 - 1  # dev: concatenated, not up-sampled
    assert report["train"] == 52


def test_cd_mixture_and_seeded_shuffle(splits):
    args = (inputs(splits, "cd", "train"), inputs(splits, "cd", "dev"))
    first, dev_first, _ = build_mixture("cd", *args, seed=0)
    again, dev_again, _ = build_mixture("cd", *args, seed=0)
    other, _, _ = build_mixture("cd", *args, seed=1)
    assert [r["id"] for r in first] == [r["id"] for r in again]
    assert [r["id"] for r in dev_first] == [r["id"] for r in dev_again]
    assert [r["id"] for r in first] != [r["id"] for r in other]
    assert len(first) == 18 and {r["dataset"] for r in first} == set(MIXTURES["cd"])
    # shuffled: the datasets are interleaved, not in blocks
    assert [r["dataset"] for r in first[:6]] != ["cnn_dailymail"] * 6


def test_mixture_refuses_wrong_inputs(splits):
    with pytest.raises(DataError, match=r"mixture cd: train inputs hold datasets \['dolly', 'nq'\]"):
        build_mixture("cd", [splits[("nq", "train")], splits[("dolly", "train")]], inputs(splits, "cd", "dev"), 0)


def test_mixture_cli(splits, tmp_path):
    out = tmp_path / "mix"
    argv = ["mixture", "--name", "mtl", "--train", *map(str, inputs(splits, "mtl", "train")),
            "--dev", *map(str, inputs(splits, "mtl", "dev")), "--seed", "3", "--out-dir", str(out)]
    assert data.main(argv) == 0
    assert len(data.read_rows(out / "train.parquet")) == 52
    assert len(data.read_rows(out / "dev.parquet")) == 13
    assert json.loads((out / "report.json").read_text())["mixture"] == "mtl"
