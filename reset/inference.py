"""Inference with transformers: the device a job runs on, batched generation and the
shared-prefix KV cache. Sampling, evaluation, the local judge and the LM NLI scorer
all come through here, so they pick the device and drive the model the same way.

`generate` is the one generation function of the pipeline: rows are batched across
prompts and decoding settings with left padding and a KV cache, finished rows leave
the batch, and every row samples from its own seeded random stream, so a row's
output does not depend on what else is in its batch. That is what makes sharding
and re-runs reproducible.

`SharedPrefix` runs the ids that many prompts start with (a judge's or NLI's fixed
instructions) through the model once and each prompt's own tail on top of it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def pick_device(device=None):
    """The torch device a job computes on: `device` if given, else the GPU when there is one, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_for_inference(model_dir, trust_remote_code: bool = False, device=None, dtype=None):
    """(model on the job's device, left-padding tokenizer, device) of a local model directory."""
    from reset.models import load_causal_lm, load_tokenizer

    device = pick_device(device)
    model = load_causal_lm(model_dir, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    return model, tokenizer, device


# ---------------------------------------------------------------- generation


def generate(model, tokenizer, prompts, settings, seeds, max_new_tokens, batch_size):
    """Generate one completion per (prompt, setting, seed) row.

    A setting is {"do_sample": False} (greedy) or
    {"do_sample": True, "temperature": t, "top_k": k} with k = 0 for no top-k.
    Returns, in input order, dicts {text, n_tokens, finish_reason, prompt_truncated}, where
    finish_reason is "eos" (the model stopped) or "length" (max_new_tokens hit),
    n_tokens counts generated tokens without the EOS token, and prompt_truncated
    says the prompt did not fit the model's positions and lost its middle (logged).
    """
    import torch
    from tqdm.auto import tqdm

    n = len(prompts)
    if not (len(settings) == len(seeds) == n):
        raise ValueError(f"generate: {n} prompts, {len(settings)} settings and {len(seeds)} seeds must match")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("generate: max_new_tokens and batch_size must be >= 1")
    settings = [_check_setting(s, i) for i, s in enumerate(settings)]
    if n == 0:
        return []
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    encoded, cut = fit_context(encoded, context_limit(model, max_new_tokens))
    if cut:
        log.warning("%d of %d prompts are longer than the model's context window allows with %d new tokens; "
                    "their middle was cut out (head and tail kept)", len(cut), n, max_new_tokens)
    # similar lengths together keeps padding small; equal prompts end up side by side
    order = sorted(range(n), key=lambda i: (len(encoded[i]), prompts[i]))
    eos_ids = _eos_ids(model, tokenizer)
    results = [None] * n
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="generate", unit="batch", mininterval=5):
            tokens = _generate_batch(
                model, [encoded[i] for i in batch], [settings[i] for i in batch],
                [seeds[i] for i in batch], max_new_tokens, eos_ids, tokenizer.pad_token_id,
            )
            for i, (ids, hit_eos) in zip(batch, tokens, strict=True):
                results[i] = {
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "n_tokens": len(ids),
                    "finish_reason": "eos" if hit_eos else "length",
                    "prompt_truncated": i in cut,
                }
    return results


def context_limit(model, max_new_tokens):
    """The longest prompt that leaves room for max_new_tokens in the model's positions (None: no limit known)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if not positions:
        return None
    if positions - max_new_tokens < 16:
        raise ValueError(f"generate: max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                         f"model's {positions} positions")
    return positions - max_new_tokens


def fit_context(encoded, limit):
    """Cut the middle out of prompts longer than `limit` tokens, keeping the first quarter and the end.

    The start holds the template header and the instruction, the end the question and
    "### Response:"; a long context loses its middle. Returns (prompts, indices cut).
    """
    if limit is None:
        return encoded, set()
    out, cut = [], set()
    for i, ids in enumerate(encoded):
        if len(ids) > limit:
            head = limit // 4
            ids = ids[:head] + ids[len(ids) - (limit - head):]
            cut.add(i)
        out.append(ids)
    return out, cut


def _check_setting(setting, index):
    if not isinstance(setting, dict) or "do_sample" not in setting:
        raise ValueError(f"generate: setting {index} must be a dict with 'do_sample', got {setting!r}")
    if not setting["do_sample"]:
        return {"do_sample": False, "temperature": 1.0, "top_k": 0}
    temperature = float(setting.get("temperature", 1.0))
    top_k = int(setting.get("top_k", 0) or 0)
    if temperature <= 0:
        raise ValueError(f"generate: setting {index} samples at temperature {temperature}; use do_sample=False for greedy")
    if top_k < 0:
        raise ValueError(f"generate: setting {index} has top_k {top_k} < 0")
    return {"do_sample": True, "temperature": temperature, "top_k": top_k}


def _eos_ids(model, tokenizer):
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    if not ids:
        raise ValueError("generate: the tokenizer and model define no EOS token")
    return sorted(ids)


def _generate_batch(model, encoded, settings, seeds, max_new_tokens, eos_ids, pad_id):
    """Decode one batch; returns [(token ids without EOS, stopped at EOS?)] in batch order."""
    import torch

    device = model.device
    rows = len(encoded)
    logits, cache, mask, positions = _prefill(model, encoded, pad_id, device)
    sampler = _RowSampler(settings, seeds, device)
    eos = torch.tensor(eos_ids, device=device)
    out = [[] for _ in range(rows)]
    stopped = [False] * rows
    alive = list(range(rows))  # batch rows still decoding, in cache order
    for step in range(max_new_tokens):
        next_tokens = sampler.pick(logits, alive)
        is_eos = torch.isin(next_tokens, eos).tolist()
        for row, token, done in zip(alive, next_tokens.tolist(), is_eos, strict=True):
            if done:
                stopped[row] = True
            else:
                out[row].append(token)
        keep = [k for k, done in enumerate(is_eos) if not done]
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions, next_tokens = mask[index], positions[index], next_tokens[index]
            alive = [alive[k] for k in keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        positions = positions + 1
        logits = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    return list(zip(out, stopped, strict=True))


def _prefill(model, encoded, pad_id, device):
    """Run the prompts once (each distinct prompt once) and expand the cache to the batch rows."""
    import torch
    from transformers import DynamicCache

    unique = {}
    row_to_unique = [unique.setdefault(tuple(ids), len(unique)) for ids in encoded]
    prompts = list(unique)
    width = max(len(p) for p in prompts)
    if pad_id is None:
        raise ValueError("generate: the tokenizer has no pad token (load it with reset.models.load_tokenizer)")
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, ids in enumerate(prompts):
        if ids:
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            mask[r, width - len(ids):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    index = torch.tensor(row_to_unique, device=device)
    if len(prompts) < len(encoded) or row_to_unique != list(range(len(encoded))):
        cache.batch_select_indices(index)
        logits, mask, positions = logits[index], mask[index], positions[index]
    return logits, cache, mask, positions[:, -1]


class _RowSampler:
    """Turns next-token logits into tokens, each row with its own setting and random stream.

    Sampling rows draw one uniform number per step from a CPU torch.Generator
    seeded with the row's seed and invert the CDF of their own distribution, so
    the draw sequence of a row is fixed by its seed alone.
    """

    def __init__(self, settings, seeds, device):
        import torch

        self.device = device
        self.sample = [s["do_sample"] for s in settings]
        self.temperature = torch.tensor([s["temperature"] for s in settings], dtype=torch.float64, device=device)
        self.top_k = torch.tensor([s["top_k"] for s in settings], dtype=torch.long, device=device)
        self.generators = [
            torch.Generator().manual_seed(int(seed) % (2 ** 63)) if s["do_sample"] else None
            for s, seed in zip(settings, seeds, strict=True)
        ]

    def pick(self, logits, alive):
        import torch

        logits = logits.double()
        tokens = logits.argmax(dim=-1)
        rows = [k for k, row in enumerate(alive) if self.sample[row]]
        if not rows:
            return tokens
        batch_rows = [alive[k] for k in rows]
        index = torch.tensor(rows, device=logits.device)
        which = torch.tensor(batch_rows, device=logits.device)
        chosen = logits[index] / self.temperature[which, None]
        chosen = _apply_top_k(chosen, self.top_k[which])
        probs = torch.softmax(chosen, dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=self.generators[row], dtype=torch.float64) for row in batch_rows])
        u = u.to(logits.device)[:, None] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
        tokens[index] = picked
        return tokens


def _apply_top_k(logits, top_k):
    """Keep each row's k highest logits (ties at the k-th value kept); k = 0 keeps all."""
    import torch

    k_max = int(top_k.max())
    if k_max == 0:
        return logits
    k_max = min(k_max, logits.shape[-1])
    top = torch.topk(logits, k_max, dim=-1).values
    kth = top.gather(1, (top_k.clamp(min=1, max=k_max) - 1)[:, None])
    kth = torch.where(top_k[:, None] > 0, kth, torch.full_like(kth, float("-inf")))
    return logits.masked_fill(logits < kth, float("-inf"))



# ---------------------------------------------------------------- shared prefix


def length_batches(lengths, max_rows: int, waste: float = 0.1) -> list[list[int]]:
    """Indices of `lengths` in batches of at most max_rows rows, longest first, where padding
    to the batch's longest row costs at most `waste` of the batch's compute."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, batch, total = [], [], 0
    for i in order:
        if batch:
            width = lengths[batch[0]]
            rows = len(batch) + 1
            if rows > max_rows or rows * width - (total + lengths[i]) > waste * rows * width:
                batches.append(batch)
                batch, total = [], 0
        batch.append(i)
        total += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def _right_pad(rows, pad_id: int, width: int):
    """(ids [rows, width] right-padded with pad_id, mask of the real ids)."""
    import torch

    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


class SharedPrefix:
    """Last-position logits of many prompts that mostly start with the same token ids (a
    judge's or NLI's fixed instructions): the shared ids run through the model once, as a
    KV cache, and each prompt that starts with them runs only its own tail on top of it.
    Prompts that do not (a truncated one) run whole; both give the same logits.
    """

    def __init__(self, model, shared_ids, device="cpu"):
        self.model, self.ids, self.device = model, list(shared_ids), device
        self._cache = None

    def covers(self, ids, keep: int = 1) -> bool:
        """Whether `ids` starts with the shared ids and its tail holds the `keep` last positions."""
        n = len(self.ids)
        return n > 0 and len(ids) - n >= keep and list(ids[:n]) == self.ids

    def last_logits(self, rows, pad_id: int, keep: int = 1):
        """Logits [len(rows), keep, vocab] at the last `keep` positions of each prompt in `rows`."""
        tails = [i for i, ids in enumerate(rows) if self.covers(ids, keep)]
        if len(tails) == len(rows):
            return self._tail_logits(rows, pad_id, keep)
        whole = [i for i in range(len(rows)) if i not in set(tails)]
        out = self.whole_logits([rows[i] for i in whole], pad_id, keep)
        if not tails:
            return out
        part = self._tail_logits([rows[i] for i in tails], pad_id, keep)
        logits = out.new_empty((len(rows), *out.shape[1:]))
        logits[whole], logits[tails] = out, part
        return logits

    def whole_logits(self, rows, pad_id: int, keep: int = 1):
        """The same logits without the cache: every prompt runs whole, left-padded."""
        import torch

        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                          logits_to_keep=keep).logits[:, -keep:, :]

    def _shared_cache(self, copies: int):
        """A fresh copy of the shared ids' KV cache, repeated `copies` times along the batch."""
        import copy

        import torch

        if self._cache is None:
            self._cache = self.model(input_ids=torch.tensor([self.ids], device=self.device),
                                     use_cache=True).past_key_values
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(copies)
        return cache

    def branched_last_logits(self, stems, tails, stem_of, pad_id: int, max_rows: int):
        """Last-position logits [len(tails), vocab] of prompts shared ids + stems[stem_of[i]] + tails[i].

        A second level of sharing: several prompts continue the shared ids with the same
        stem (an NLI premise that every sentence of an answer is checked against), so each
        stem runs once on the shared cache and each tail only on its stem's keys and
        values. Stems, then tails, run in batches of at most `max_rows` rows of similar
        length (length_batches), so little compute goes to padding. The padding inside a
        prompt is masked out and positions continue from each row's real length: every
        prompt gets the logits it gets when run whole. Every tail must hold at least one id.
        """
        import torch
        from transformers import DynamicCache

        if not tails or any(len(t) == 0 for t in tails):
            raise ValueError("branched_last_logits: every tail needs at least one id")
        n = len(self.ids)
        stem_len = torch.tensor([len(s) for s in stems], dtype=torch.long)
        width = int(stem_len.max()) if len(stems) else 0
        shared = self._shared_cache(1)
        stem_kv = None   # per layer [keys, values] of every stem, [stems, heads, width, dim]
        for idx in length_batches(stem_len.tolist(), max_rows):
            w = int(stem_len[idx].max())
            if w == 0:
                continue
            cache = self._shared_cache(len(idx))
            ids, mask = _right_pad([stems[i] for i in idx], pad_id, w)
            attention = torch.cat([torch.ones((len(idx), n), dtype=torch.long), mask], dim=1)
            self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device),
                       position_ids=(n + torch.arange(w)).expand(len(idx), w).to(self.device),
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
            if stem_kv is None:
                stem_kv = [[layer.keys.new_zeros((len(stems), *layer.keys.shape[1:2], width, layer.keys.shape[-1]))
                            for _ in range(2)] for layer in cache.layers]
            rows = torch.tensor(idx, device=self.device)
            for layer, (keys, values) in zip(cache.layers, stem_kv, strict=True):
                keys[rows, :, :w] = layer.keys[:, :, n:]
                values[rows, :, :w] = layer.values[:, :, n:]
        stem_mask = (torch.arange(width)[None, :] < stem_len[:, None]).long()
        tail_len = torch.tensor([len(t) for t in tails], dtype=torch.long)
        logits = None
        for idx in length_batches(tail_len.tolist(), max_rows):
            index = torch.tensor([stem_of[i] for i in idx], dtype=torch.long)
            rows = index.to(self.device)
            cache = DynamicCache(config=self.model.config)
            for k, layer in enumerate(shared.layers):
                parts = [(layer.keys.expand(len(idx), -1, -1, -1), layer.values.expand(len(idx), -1, -1, -1))]
                if stem_kv is not None:
                    parts.append((stem_kv[k][0][rows], stem_kv[k][1][rows]))
                cache.update(torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2), k)
            w = int(tail_len[idx].max())
            ids, mask = _right_pad([tails[i] for i in idx], pad_id, w)
            stem_part = stem_mask[index] if stem_kv is not None else stem_mask[index][:, :0]
            attention = torch.cat([torch.ones((len(idx), n), dtype=torch.long), stem_part, mask], dim=1)
            positions = n + stem_len[index][:, None] + torch.arange(w)[None, :]
            last = tail_len[idx] - 1
            needed = torch.unique(last)
            out = self.model(input_ids=ids.to(self.device), attention_mask=attention.to(self.device),
                             position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                             logits_to_keep=needed.to(self.device)).logits
            picked = out[torch.arange(len(idx), device=self.device), torch.searchsorted(needed, last).to(self.device)]
            if logits is None:
                logits = picked.new_empty((len(tails), picked.shape[-1]))
            logits[torch.tensor(idx, device=self.device)] = picked
        return logits

    def _tail_logits(self, rows, pad_id: int, keep: int):
        import torch

        n = len(self.ids)
        cache = self._shared_cache(len(rows))
        tails = [list(r[n:]) for r in rows]
        width = max(len(t) for t in tails)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for i, tail in enumerate(tails):   # right padding: a pad after the tail changes nothing before it
            input_ids[i, :len(tail)] = torch.tensor(tail, dtype=torch.long)
        lengths = torch.tensor([len(t) for t in tails])
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        attention = torch.cat([torch.ones((len(rows), n), dtype=torch.long), mask], dim=1)
        positions = (n + torch.arange(width)).expand(len(rows), width)
        wanted = lengths[:, None] - keep + torch.arange(keep)[None, :]
        needed = torch.unique(wanted)   # sorted: only these positions get logits
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=needed.to(self.device))
        columns = torch.searchsorted(needed, wanted).to(self.device)
        return out.logits[torch.arange(len(rows), device=self.device)[:, None], columns]
