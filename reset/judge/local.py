"""The local judge: an in-process causal LM; rating = probability-weighted mean of " 1" ... " 10"."""

from __future__ import annotations

import math
import re

from reset.judge.base import Judge
from reset.judge.prompt import judge_prompt
from reset.judge.settings import cache_key


class LocalJudge(Judge):
    """An in-process causal LM: rating = probability-weighted mean of " 1" ... " 10" after "Rating:"."""

    def __init__(self, cfg: dict, model_dir, cache_path=None, trust_remote_code: bool = False):
        super().__init__(cfg, cache_path)
        import torch

        from reset.inference import load_for_inference

        self.torch = torch
        self.model, self.tokenizer, self.device = load_for_inference(model_dir, trust_remote_code=trust_remote_code)
        self.stats.update({"truncated": 0, "rating_mass": 0.0})
        self.continuations = {k: tuple(self.tokenizer(f" {k}", add_special_tokens=False).input_ids)
                              for k in range(1, 11)}
        self.chains = _internal_chains(list(self.continuations.values()))
        max_positions = getattr(self.model.config, "max_position_embeddings", None) or 2048
        longest = max(len(c) for c in self.continuations.values())
        self.max_input = min(int(cfg["max_input_tokens"]), max_positions) - int(cfg["explain_tokens"]) - longest - 8
        self.overhead = len(self._encode(self._chat_text("", "")))
        self.shared = None   # KV cache of the system prompt every judge prompt starts with

    # ---------------------------------------------------------------- prompt text
    def _chat_text(self, question: str, answer: str) -> str:
        messages = judge_prompt(question, answer)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\nJudge: "

    def _encode(self, text: str) -> list[int]:
        # a chat template writes its own special tokens; plain text gets the tokenizer's (e.g. BOS)
        special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def _fit(self, question: str, answer: str) -> tuple[str, str]:
        """Shorten question and answer (from their ends) so the prompt fits the model."""
        budget = self.max_input - self.overhead
        q_ids = self.tokenizer(question, add_special_tokens=False).input_ids
        a_ids = self.tokenizer(answer, add_special_tokens=False).input_ids
        if len(q_ids) + len(a_ids) <= budget:
            return question, answer
        self._count("truncated")
        q_keep = min(len(q_ids), max(budget // 2, budget - len(a_ids)))
        a_keep = max(0, budget - q_keep)
        return self.tokenizer.decode(q_ids[:q_keep]), self.tokenizer.decode(a_ids[:a_keep])

    # ---------------------------------------------------------------- judging
    def _from_cache(self, value):
        return value["rating"], value["explanation"], None

    def _judge_pairs(self, pairs):
        from tqdm import tqdm

        keys = list(pairs)
        prompts = {k: self._chat_text(*self._fit(*pairs[k])) for k in keys}
        keys.sort(key=lambda k: len(prompts[k]))  # similar lengths batch together
        size = int(self.cfg["batch_size"])
        verdicts = {}
        for start in tqdm(range(0, len(keys), size), desc="IF judge (local)", unit="batch", mininterval=2.0):
            batch = keys[start:start + size]
            explanations = self._explain([prompts[k] for k in batch])
            prefixes = [prompts[k] + (e + "\n" if e else "") + "Rating:" for k, e in zip(batch, explanations, strict=True)]
            for key, explanation, probs in zip(batch, explanations, self._rating_probs(prefixes), strict=True):
                verdicts[key] = self._verdict(key, pairs[key], explanation, probs)
        return verdicts

    def _verdict(self, key, pair, explanation, probs) -> tuple:
        self._count("requests")
        mass = sum(probs.values())
        self._count("rating_mass", mass)
        if not mass > 0:
            self._count("failures", cause="no_rating_mass")
            return None, explanation, "no_rating_mass: the model puts no probability on ' 1' ... ' 10'"
        rating = round(sum(k * p for k, p in probs.items()) / mass, 4)
        if self.cache is not None:
            self.cache.put(cache_key(self.cfg, judge_prompt(*pair)), self.cfg["model"],
                           {"rating": rating, "explanation": explanation})
        return rating, explanation, None

    def _explain(self, prompts: list[str]) -> list[str]:
        """Greedy short explanations (explain_tokens > 0), cut before any 'Rating'."""
        n = int(self.cfg["explain_tokens"])
        if n <= 0:
            return [""] * len(prompts)
        torch = self.torch
        special = not getattr(self.tokenizer, "chat_template", None)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=n, do_sample=False, top_p=None, top_k=None,
                                      temperature=None, pad_token_id=self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [re.split(r"rating", t, maxsplit=1, flags=re.IGNORECASE)[0].strip() for t in texts]

    def _rating_probs(self, prefixes: list[str]) -> list[dict[int, float]]:
        """P(rating = k | prefix) for k = 1..10, from exact sequence log-probabilities.

        A continuation that is a prefix of another (" 1" of " 10") has the longer one's
        probability subtracted, so the ten events are disjoint.
        """
        torch = self.torch
        encoded = [self._encode(p) for p in prefixes]
        shared = self._shared_prefix()
        node_logprobs = [{} for _ in prefixes]  # per item: continuation prefix -> log-probs of the next token
        for chain in self.chains:
            rows = [ids + list(chain) for ids in encoded]
            keep = len(chain) + 1
            with torch.inference_mode():   # only question and answer run on the system prompt's cache
                logits = shared.last_logits(rows, self.tokenizer.pad_token_id, keep)
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for i in range(len(rows)):
                for j in range(keep):
                    node_logprobs[i].setdefault(chain[:j], logprobs[i, j])
        return [self._disjoint_probs(nodes) for nodes in node_logprobs]

    def _shared_prefix(self):
        """Token ids every judge prompt starts with (chat frame and system prompt), as a KV cache."""
        if self.shared is None:
            from reset.inference import SharedPrefix

            marker = "\x00QUESTION\x00"
            head = self._chat_text(marker, "").split(marker)[0]
            # the last tokens before the question may merge with its first word
            self.shared = SharedPrefix(self.model, self._encode(head)[:-2], self.device)
        return self.shared

    def _disjoint_probs(self, nodes) -> dict[int, float]:
        seq = {}
        for k, cont in self.continuations.items():
            seq[k] = math.exp(sum(float(nodes[cont[:j]][cont[j]]) for j in range(len(cont))))
        probs = {}
        for k, cont in self.continuations.items():
            longer = sum(seq[m] for m, other in self.continuations.items()
                         if len(other) > len(cont) and other[: len(cont)] == cont)
            probs[k] = max(0.0, seq[k] - longer)
        return probs

    def summary(self) -> dict:
        out = super().summary()
        scored = max(1, out["requests"])
        out["mean_rating_mass"] = round(out.pop("rating_mass") / scored, 4)
        return out


def _internal_chains(continuations: list[tuple]) -> list[tuple]:
    """Token paths whose next-token distributions cover every step of every continuation.

    The internal nodes of the continuations' trie are their proper prefixes; a chain is an
    internal node that is not itself a prefix of another internal node, and one forward
    pass over prefix + chain yields the distributions after every node along it.
    """
    internal = {cont[:j] for cont in continuations for j in range(len(cont))}
    return sorted(node for node in internal
                  if not any(len(other) > len(node) and other[: len(node)] == node for other in internal))


