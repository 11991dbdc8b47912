"""reset.inference.generate and reset.sample: generation, seeds, the decoding sweep, sharding and the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from reset.inference import _apply_top_k, generate
from reset.prompts import render_prompt
from reset.sample import (
    derive_seed,
    draw_subset,
    main,
    plan_rows,
    round_param,
    sweep_settings,
)

TEMPS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
TOPKS = [5, 10, 20, 50, 70, 90, 100]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    import torch

    from reset.models import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_llama_dir, dtype=torch.float32), load_tokenizer(tiny_llama_dir)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    import torch

    from reset.models import load_causal_lm, load_tokenizer

    return load_causal_lm(smollm2_dir, dtype=torch.float32), load_tokenizer(smollm2_dir)


def _example(dataset, kind, n, **extra):
    context = extra.get("context", "")
    question = extra.get("question", "")
    instruction = extra.get("instruction", f"Write item {n} of {dataset}.")
    return {"id": f"{dataset}-{n:04d}", "dataset": dataset, "kind": kind, "instruction": instruction,
            "context": context, "question": question, "references": [f"reference {n}"],
            "prompt": render_prompt(kind, instruction if kind == "if" else "", context, question)}


def _unified(dataset, kind, count, start=0):
    rows = []
    for n in range(start, start + count):
        if kind == "extractive_qa":
            rows.append(_example(dataset, kind, n, context=f"Paris is the capital of France {n}.",
                                 question="What is the capital of France?"))
        else:
            rows.append(_example(dataset, kind, n))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- seeds and the sweep


def test_derive_seed_is_deterministic_distinct_and_fits_int64():
    a = derive_seed(0, "nq-abc", 1, "top_k", 3)
    assert a == derive_seed(0, "nq-abc", 1, "top_k", 3)
    others = {derive_seed(0, "nq-abc", r, p, i) for r in (1, 2) for p in ("temperature", "top_k") for i in range(7)}
    assert len(others) == 28
    assert derive_seed(1, "nq-abc", 1, "top_k", 3) != a
    assert all(0 <= s < 2 ** 63 for s in others)


def test_sweep_enumerates_seven_values_with_the_right_pairing():
    temps = sweep_settings("temperature", TEMPS, TOPKS, 1.0)
    assert [v for v, _ in temps] == TEMPS
    assert all(s == {"do_sample": True, "temperature": v, "top_k": 0} for v, s in temps)
    topks = sweep_settings("top_k", TEMPS, TOPKS, 0.9)
    assert [v for v, _ in topks] == TOPKS
    assert all(s == {"do_sample": True, "temperature": 0.9, "top_k": v} for v, s in topks)
    with pytest.raises(ValueError, match="unknown sweep parameter"):
        sweep_settings("top_p", TEMPS, TOPKS, 1.0)


def test_plan_rows_one_param_per_round_seven_settings_and_stable_seeds():
    subset = pd.concat([_unified("dolly", "if", 30).assign(pool="if_mix"),
                        _unified("nq", "extractive_qa", 30).assign(pool="nq")], ignore_index=True)
    rows = pd.DataFrame(plan_rows(subset, 2, TEMPS, TOPKS, 1.0))
    assert len(rows) == 60 * 2 * 7
    for (ex_id, round_no), group in rows.groupby(["id", "round"]):
        assert group["param"].nunique() == 1
        assert sorted(group["setting_index"]) == list(range(7))
        expected = TEMPS if group["param"].iloc[0] == "temperature" else TOPKS
        assert sorted(group["value"]) == [float(v) for v in expected]
        assert group["param"].iloc[0] == round_param(ex_id, round_no)
        for setting, param, value in zip(group["setting"], group["param"], group["value"], strict=True):
            if param == "temperature":
                assert setting["top_k"] == 0 and setting["temperature"] == value
            else:
                assert setting["temperature"] == 1.0 and setting["top_k"] == value
    # the parameter is drawn at random: both show up over 120 (example, round) pairs
    assert set(rows["param"]) == {"temperature", "top_k"}
    assert rows["seed"].is_unique
    again = pd.DataFrame(plan_rows(subset, 2, TEMPS, TOPKS, 1.0))
    assert again["seed"].tolist() == rows["seed"].tolist()
    assert again["param"].tolist() == rows["param"].tolist()


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_cover_every_candidate_exactly_once(shards):
    subset = pd.concat([_unified("dolly", "if", 5).assign(pool="if_mix"),
                        _unified("nq", "extractive_qa", 6).assign(pool="nq")], ignore_index=True)
    full = plan_rows(subset, 2, TEMPS, TOPKS, 1.0)
    key = lambda r: (r["id"], r["round"], r["setting_index"], r["seed"])  # noqa: E731
    seen = []
    for shard in range(shards):
        part = plan_rows(subset, 2, TEMPS, TOPKS, 1.0, shard=shard, shards=shards)
        # an example never straddles shards
        ids = {r["id"] for r in part}
        assert all(sum(r["id"] == i for r in part) == 14 for i in ids)
        seen.extend(key(r) for r in part)
    assert sorted(seen) == sorted(key(r) for r in full)
    assert len(seen) == len(set(seen))


def test_draw_subset_is_seeded_and_takes_all_of_a_small_pool():
    pools = {"if_mix": _unified("dolly", "if", 20), "nq": _unified("nq", "extractive_qa", 3)}
    first, report = draw_subset(pools, 5, seed=0)
    again, _ = draw_subset(pools, 5, seed=0)
    other, _ = draw_subset(pools, 5, seed=1)
    assert first["id"].tolist() == again["id"].tolist()
    assert first["id"].tolist() != other["id"].tolist()
    assert report == {"if_mix": {"available": 20, "drawn": 5}, "nq": {"available": 3, "drawn": 3}}
    assert first.groupby("pool").size().to_dict() == {"if_mix": 5, "nq": 3}


# ---------------------------------------------------------------- generate


def test_top_k_keeps_the_k_best_per_row_and_zero_keeps_all():
    import torch

    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [1.0, 5.0, 3.0, 4.0], [0.0, 2.0, 2.0, 1.0]], dtype=torch.float64)
    out = _apply_top_k(logits, torch.tensor([2, 0, 1]))
    assert torch.isfinite(out[0]).tolist() == [False, True, False, True]
    assert torch.isfinite(out[1]).all()
    assert torch.isfinite(out[2]).tolist() == [False, True, True, False]  # ties at the k-th value stay


def test_a_rows_output_does_not_depend_on_its_batch(tiny):
    model, tokenizer = tiny
    prompts = [render_prompt("if", f"Tell me about topic number {i}." + " more" * (3 * i)) for i in range(6)]
    settings = [{"do_sample": True, "temperature": 0.7, "top_k": 0},
                {"do_sample": True, "temperature": 1.0, "top_k": 20},
                {"do_sample": False},
                {"do_sample": True, "temperature": 0.3, "top_k": 0},
                {"do_sample": True, "temperature": 1.0, "top_k": 5},
                {"do_sample": True, "temperature": 1.0, "top_k": 0}]
    seeds = [derive_seed("row", i) for i in range(6)]
    together = generate(model, tokenizer, prompts, settings, seeds, 12, 6)
    in_pairs = generate(model, tokenizer, prompts, settings, seeds, 12, 2)
    alone = [generate(model, tokenizer, [p], [s], [seed], 12, 1)[0] for p, s, seed in zip(prompts, settings, seeds, strict=True)]
    # the same rows in reverse order, with an extra companion in every batch
    shuffled = generate(model, tokenizer, prompts[::-1] + prompts[:1], settings[::-1] + settings[:1],
                        seeds[::-1] + [123], 12, 3)
    assert together == in_pairs == alone == shuffled[:6][::-1]
    assert all(r["n_tokens"] <= 12 and r["finish_reason"] in ("eos", "length") for r in together)


def test_seeds_drive_sampling_and_top_k_1_is_greedy(tiny):
    model, tokenizer = tiny
    prompt = render_prompt("if", "Write a short poem.")
    hot = {"do_sample": True, "temperature": 1.5, "top_k": 0}
    outs = generate(model, tokenizer, [prompt] * 4, [hot] * 4, [1, 1, 2, 3], 16, 4)
    assert outs[0] == outs[1]
    assert len({o["text"] for o in outs[1:]}) == 3  # a random 2-layer model at T=1.5 never repeats itself
    greedy = generate(model, tokenizer, [prompt, prompt], [{"do_sample": False},
                                                          {"do_sample": True, "temperature": 1.0, "top_k": 1}],
                      [0, 99], 16, 2)
    assert greedy[0] == greedy[1]


def test_generate_rejects_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="must match"):
        generate(model, tokenizer, ["a", "b"], [{"do_sample": False}], [0, 1], 4, 2)
    with pytest.raises(ValueError, match="use do_sample=False"):
        generate(model, tokenizer, ["a"], [{"do_sample": True, "temperature": 0}], [0], 4, 2)
    assert generate(model, tokenizer, [], [], [], 4, 2) == []


def test_greedy_matches_transformers_generate_on_smollm2(smollm2):
    """The real model: our batched loop reproduces HF greedy decoding, EOS stop and length cut."""
    model, tokenizer = smollm2
    prompts = [render_prompt("if", "Name three colors."),
               render_prompt("if", "Write a long story about a dragon who learns to bake bread.")]
    ours = generate(model, tokenizer, prompts, [{"do_sample": False}] * 2, [0] * 2, 24, 2)
    for prompt, out in zip(prompts, ours, strict=True):
        enc = tokenizer(prompt, return_tensors="pt")
        ref = model.generate(**enc, do_sample=False, max_new_tokens=24, pad_token_id=tokenizer.pad_token_id)
        new = ref[0, enc["input_ids"].shape[1]:].tolist()
        stopped = new[-1] == tokenizer.eos_token_id
        assert out["text"] == tokenizer.decode(new, skip_special_tokens=True)
        assert out["finish_reason"] == ("eos" if stopped else "length")
        assert out["n_tokens"] == len(new) - int(stopped)
    assert {o["finish_reason"] for o in ours} == {"eos", "length"}


# ---------------------------------------------------------------- CLI


def test_cli_subset_and_sweep_shards(tmp_path, tiny_llama_dir):
    if_parts = []
    for i, name in enumerate(["dolly", "sharegpt", "self_instruct", "oasst1"]):
        path = tmp_path / f"{name}.parquet"
        _unified(name, "if", 2, start=10 * i).to_parquet(path)
        if_parts.append(str(path))
    nq = tmp_path / "nq.parquet"
    _unified("nq", "extractive_qa", 6).to_parquet(nq)
    subset = tmp_path / "sampling" / "subset.parquet"
    report = tmp_path / "sampling" / "subset_report.json"
    assert main(["subset", "--pool", "if_mix", *if_parts, "--pool", "nq", str(nq),
                 "--per-pool", "3", "--seed", "0", "--out", str(subset), "--report", str(report)]) == 0
    drawn = pd.read_parquet(subset)
    assert drawn.groupby("pool").size().to_dict() == {"if_mix": 3, "nq": 3}
    assert drawn["id"].is_unique

    frames = []
    for shard in range(2):
        out = tmp_path / "sampling" / f"shard{shard}.parquet"
        assert main(["sweep", "--subset", str(subset), "--model", str(tiny_llama_dir), "--shard", str(shard),
                     "--shards", "2", "--rounds", "2", "--temperatures", *map(str, TEMPS),
                     "--top-ks", *map(str, TOPKS), "--topk-temperature", "1.0", "--max-new-tokens", "6",
                     "--batch-size", "16", "--out", str(out)]) == 0
        frames.append(pd.read_parquet(out))
    cands = pd.concat(frames, ignore_index=True)
    assert list(frames[0].columns) == ["id", "dataset", "kind", "pool", "round", "param", "value",
                                       "setting_index", "seed", "text", "n_tokens", "finish_reason",
                                       "prompt_truncated"]
    assert len(cands) == 6 * 2 * 7
    assert set(frames[0]["id"]).isdisjoint(frames[1]["id"])
    assert (cands.groupby(["id", "round"]).size() == 7).all()
    assert cands["n_tokens"].between(0, 6).all()
    assert set(cands["finish_reason"]) <= {"eos", "length"}
    # the shard files are a pure function of their inputs
    again = tmp_path / "again.parquet"
    main(["sweep", "--subset", str(subset), "--model", str(tiny_llama_dir), "--shard", "1", "--shards", "2",
          "--rounds", "2", "--temperatures", *map(str, TEMPS), "--top-ks", *map(str, TOPKS),
          "--max-new-tokens", "6", "--batch-size", "5", "--out", str(again)])
    pd.testing.assert_frame_equal(pd.read_parquet(again), frames[1])
