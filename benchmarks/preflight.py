"""Preflight of the paper configuration on local mirrors of every hub repository, all checks.

Builds, under a scratch directory, what a cluster user without internet would have:
dataset repositories downloaded with `huggingface-cli download --local-dir` (laid out
like the real ones: a plain data file, parquet splits, a README whose YAML lists
configs and splits, each with the download's `.cache/huggingface/download/*.metadata`
naming its commit), the files the paper reads from disk (ShareGPT as one JSON array,
DPR retrieval results per split, ...), model repositories whose tokenizer is only a
sentencepiece model (LLaMA's tokenizer.model, ALBERT's spiece.model, both trained here
with sentencepiece) with safetensors or pickled weights, and a loopback
OpenAI-compatible server for the judges. The paper config with its hub ids replaced by
these mirrors must pass; the figure is the wall time of `python -m reset.preflight`
(a fresh process, imports included). Target: at most 60 s on 2 cores.

Usage: python -m benchmarks.preflight [--repeats N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO, emit, log

DEMO_RAW = REPO / "resources" / "demo" / "raw"
SPM_TEXT = [f"the quick brown fox number {i} jumps over the lazy dog and says hello to the world" for i in range(200)]


def fake_commit(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


def mark_download(directory: Path, commit: str) -> None:
    """What `huggingface-cli download --local-dir` leaves beside the files: one .metadata per file."""
    meta = directory / ".cache" / "huggingface" / "download"
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts):
        target = meta / (str(path.relative_to(directory)) + ".metadata")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{commit}\n\"etag-{path.name}\"\n{time.time()}\n")


def demo_rows(name: str) -> list[dict]:
    """The shipped demo rows of a dataset that a parquet file can hold (the demo's deliberately broken rows go)."""
    import pyarrow as pa

    path = next(p for p in (DEMO_RAW / f"{name}.jsonl", DEMO_RAW / f"{name}.json") if p.exists())
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    rows = [r for r in rows if isinstance(r, dict)]
    keys = {k for r in rows for k in r}
    kept = []
    for row in rows:
        try:
            pa.Table.from_pylist(kept + [row])
            kept.append(row)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
    return [{k: r.get(k) for k in sorted(keys)} for r in kept]


def write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def readme_with_configs(configs: dict[str, list[str]]) -> str:
    """A dataset card whose YAML lists configs and their splits, as hub cards of parquet repositories do."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    return "\n".join(lines + ["---", "", "# mirror", ""])


# ---------------------------------------------------------------- dataset repositories


def dolly_repo(root: Path, drop_field: str | None = None) -> Path:
    """databricks/databricks-dolly-15k: one JSON Lines file and a README."""
    repo = root / "databricks" / "databricks-dolly-15k"
    rows = demo_rows("dolly")
    if drop_field:
        rows = [{k: v for k, v in r.items() if k != drop_field} for r in rows]
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "databricks-dolly-15k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (repo / "README.md").write_text("---\nlicense: cc-by-sa-3.0\n---\n# dolly\n")
    return repo


def split_repo(root: Path, repo_id: str, name: str, splits=("train", "validation", "test")) -> Path:
    """A repository of data/{split}-00000-of-00001.parquet files and no config list."""
    repo = root / repo_id
    rows = demo_rows(name)
    for split in splits:
        write_parquet(rows, repo / "data" / f"{split}-00000-of-00001.parquet")
    return repo


def config_repo(root: Path, repo_id: str, name: str, configs: dict[str, list[str]]) -> Path:
    """Parquet files per config and split, and a README whose YAML lists them."""
    repo = root / repo_id
    rows = demo_rows(name)
    for config, splits in configs.items():
        for split in splits:
            write_parquet(rows, repo / config / f"{split}-00000-of-00001.parquet")
    (repo / "README.md").write_text(readme_with_configs(configs))
    return repo


def script_only_repo(root: Path) -> Path:
    """yizhongw/self_instruct on the hub: a README and a loading script, no data file."""
    repo = root / "yizhongw" / "self_instruct"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "README.md").write_text("# Self-Instruct\n")
    (repo / "self_instruct.py").write_text("import datasets  # a loading script\n")
    return repo


def convert_parquet_repo(root: Path) -> Path:
    """The refs/convert/parquet branch of yizhongw/self_instruct: a folder per config, no README."""
    repo = root / "yizhongw" / "self_instruct@convert"
    write_parquet(demo_rows("self_instruct"), repo / "self_instruct" / "train" / "0000.parquet")
    write_parquet([{"inputs": "a", "targets": "b"}], repo / "p3" / "train" / "0000.parquet")
    write_parquet([{"instruction": "a", "instances": "b"}], repo / "human_eval" / "train" / "0000.parquet")
    return repo


# ---------------------------------------------------------------- model repositories


def train_sentencepiece(path: Path, style: str) -> None:
    """A tiny sentencepiece model: LLaMA-style (BPE, byte fallback) or ALBERT-style (unigram, [CLS]/[SEP])."""
    import sentencepiece as spm

    buf = io.BytesIO()
    if style == "llama":
        options = dict(vocab_size=300, model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    else:
        options = dict(vocab_size=60, model_type="unigram", pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                       user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"])
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SPM_TEXT), model_writer=buf, character_coverage=1.0,
                                   minloglevel=2, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def save_weights(model, directory: Path, pickled: bool) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if pickled:
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def llama_repo(directory: Path, pickled: bool = False, tokenizer: bool = True) -> Path:
    """A LLaMA repository like huggyllama/llama-7b or lmsys/vicuna-7b-v1.3: tokenizer.model, no tokenizer.json."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer:
        train_sentencepiece(directory / "tokenizer.model", "llama")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    config = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                         architectures=["LlamaForCausalLM"], dtype="float16")
    config.save_pretrained(directory)
    torch.manual_seed(0)
    save_weights(LlamaForCausalLM(config), directory, pickled)
    return directory


def albert_nli_repo(directory: Path, id2label: dict | None = None) -> Path:
    """tals/albert-xlarge-vitaminc-mnli in small: spiece.model only, pickled weights, VitaminC labels."""
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(directory / "spiece.model", "albert")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "AlbertTokenizer",
                                                                  "do_lower_case": True}))
    id2label = id2label or {0: "SUPPORTS", 1: "REFUTES", 2: "NOT ENOUGH INFO"}
    config = AlbertConfig(vocab_size=60, embedding_size=8, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, architectures=["AlbertForSequenceClassification"],
                          id2label=id2label, label2id={v: k for k, v in id2label.items()})
    config.save_pretrained(directory)
    torch.manual_seed(0)
    save_weights(AlbertForSequenceClassification(config), directory, pickled=True)
    return directory


# ---------------------------------------------------------------- the paper on mirrors


def build_paper_mirrors(root: Path, judge_url: str) -> dict:
    """Mirrors and files for every source of experiments/paper.yaml; returns the config overlay that uses them."""
    root = Path(root)
    hub, raw, models = root / "hub", root / "raw", root / "models"
    commits = {}

    def mirrored(repo: Path, repo_id: str) -> str:
        commits[repo_id] = fake_commit(repo_id)
        mark_download(repo, commits[repo_id])
        return str(repo)

    dolly = mirrored(dolly_repo(hub), "databricks/databricks-dolly-15k")
    oasst1 = mirrored(split_repo(hub, "OpenAssistant/oasst1", "oasst1", ("train", "validation")), "OpenAssistant/oasst1")
    msmarco = mirrored(config_repo(hub, "microsoft/ms_marco", "msmarco",
                                   {"v1.1": ["train", "validation", "test"], "v2.1": ["train", "validation", "test"]}),
                       "microsoft/ms_marco")
    cnn = mirrored(config_repo(hub, "abisee/cnn_dailymail", "cnn_dailymail",
                               {"1.0.0": ["train", "test"], "3.0.0": ["train", "validation", "test"]}),
                   "abisee/cnn_dailymail")
    wikisum = mirrored(split_repo(hub, "d0rj/wikisum", "wikisum"), "d0rj/wikisum")
    # files the paper reads from disk (and the two remote files, downloaded)
    raw.mkdir(parents=True, exist_ok=True)
    files = {
        "sharegpt": ("sharegpt.json", "sharegpt/ShareGPT_V3_unfiltered_cleaned_split.json"),
        "self_instruct": ("self_instruct.jsonl", "self_instruct/gpt3_finetuning_data.jsonl"),
        "alpaca_eval": ("alpaca_eval.json", "alpaca_eval/alpaca_eval.json"),
        "vicuna_eval": ("vicuna_eval.jsonl", "vicuna_eval/question.jsonl"),
        "koala_eval": ("koala_eval.jsonl", "koala_eval/koala_test_set.jsonl"),
        "nq_train": ("nq.json", "dpr/nq-train.json"),
        "nq_eval": ("nq.json", "dpr/nq-test.json"),
        "bioasq": ("bioasq.json", "robustqa/bioasq.json"),
        "searchqa": ("searchqa.json", "robustqa/searchqa.json"),
    }
    local = {}
    for key, (demo, target) in files.items():
        (raw / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_RAW / demo, raw / target)
        local[key] = str(raw / target)
    base = llama_repo(models / "huggyllama" / "llama-7b")
    instruct = llama_repo(models / "lmsys" / "vicuna-7b-v1.3", pickled=True)
    nli = albert_nli_repo(models / "tals" / "albert-xlarge-vitaminc-mnli")
    for repo, repo_id in ((base, "huggyllama/llama-7b"), (instruct, "lmsys/vicuna-7b-v1.3"),
                          (nli, "tals/albert-xlarge-vitaminc-mnli")):
        mirrored(repo, repo_id)
    return {
        "models": {
            "base": {"source": str(base), "revision": commits["huggyllama/llama-7b"]},
            "instruct": {"source": str(instruct), "revision": commits["lmsys/vicuna-7b-v1.3"]},
        },
        "judges": {
            "if": {"base_url": judge_url},
            "if_supercharged": {"base_url": judge_url},
            "nli": {"model": str(nli), "revision": commits["tals/albert-xlarge-vitaminc-mnli"]},
        },
        "datasets": {
            "dolly": {"source": dolly, "revision": commits["databricks/databricks-dolly-15k"]},
            "sharegpt": {"source": local["sharegpt"]},
            "self_instruct": {"source": local["self_instruct"]},
            "oasst1": {"source": oasst1, "revision": commits["OpenAssistant/oasst1"]},
            "alpaca_eval": {"source": local["alpaca_eval"], "revision": None},
            "vicuna_eval": {"source": local["vicuna_eval"]},
            "koala_eval": {"source": local["koala_eval"]},
            "nq": {"source": {"train": local["nq_train"], "eval": local["nq_eval"]}},
            "bioasq": {"source": local["bioasq"]},
            "searchqa": {"source": local["searchqa"]},
            "msmarco": {"source": {"train": msmarco, "eval": msmarco}, "revision": commits["microsoft/ms_marco"]},
            "cnn_dailymail": {"source": {"train": cnn, "eval": cnn}, "revision": commits["abisee/cnn_dailymail"]},
            "wikisum": {"source": wikisum, "revision": commits["d0rj/wikisum"]},
        },
    }


PAPER_JUDGES = ["gpt-6.1-sol", "gpt-6.1-terra"]


def run(repeats: int = 1, scratch: str | None = None) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import yaml
    from chat_server import ChatServer

    work = Path(scratch or tempfile.mkdtemp(prefix="preflight-bench-"))
    seconds, report = [], None
    with ChatServer(models=PAPER_JUDGES) as server:
        start = time.monotonic()
        overlay = build_paper_mirrors(work, server.url)
        log(f"mirrors built in {time.monotonic() - start:.1f} s under {work}")
        (work / "mirrors.yaml").write_text(yaml.safe_dump(overlay))
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-bench-not-a-real-key",
               "HF_HUB_OFFLINE": "1"}
        for _ in range(repeats):
            out = work / "report.json"
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "reset.preflight", "--configfile", "config.yaml",
                                   "experiments/paper.yaml", str(work / "mirrors.yaml"), "--out", str(out),
                                   "--results-dir", str(work / "results")],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            seconds.append(time.monotonic() - start)
            if proc.returncode != 0:
                raise RuntimeError(f"preflight of the paper config on mirrors failed:\n{proc.stderr[-4000:]}")
            report = json.loads(out.read_text())
    if scratch is None:
        shutil.rmtree(work, ignore_errors=True)
    kinds = {}
    for check in report["checks"]:
        kinds[check["kind"]] = kinds.get(check["kind"], 0) + 1
    best = round(min(seconds), 2)
    return {"name": "preflight_paper", "seconds": best, "seconds_all": [round(s, 2) for s in seconds],
            "target": "<= 60 s", "checks": len(report["checks"]), "checks_by_kind": kinds,
            "all_checks_passed": report["ok"], "ok": report["ok"] and best <= 60}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    emit(run(args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
