"""An LLM that picks one passage out of a labelled set, and the reranker base that sorts with it.

Setwise and pairwise reranking (see `setwise.py`, `pairwise.py`) are comparison sorts (`sorting.py`) whose
comparisons an LLM makes. The model reads the query and passages labelled A, B, C, ..., the prompt ends with the cue
`Passage`, and its pick is the argmax of the next-token logits over the label tokens " A", " B", ...: one forward
pass, no generation, as the setwise paper does for open models. So a comparison is cheap, deterministic and always
an answer, where listwise generation must parse and repair what the model writes.

Where the time goes, and what this module does about it:
- only the label rows of the LM head are computed, not the 49k-way vocabulary;
- sets the sort asks together (all pairs for all-pairs, both orders of a pair for PRP) are right-padded into
  batches under a token budget and read at each row's last real token; causal attention never looks at the pads on
  its right, so a batched answer equals an unbatched forward (tested against the plain model);
- each passage is truncated to `max_doc_tokens` once per query; the query is never cut.
No prefix KV reuse as in pointwise: the shared prefix (system + query) is a small part of a prompt holding 2-20
passages, and the sequential sorts run one prompt per forward pass anyway.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np

from routerank.data.types import Query, Ranking
from routerank.errors import RouterankError
from routerank.models.llm import DEFAULT_LLM, load_causal_lm, pad_batch, resolve_llm
from routerank.rerank.adapters import adapter_digest, apply_adapter, check_adapter, read_adapter_manifest
from routerank.rerank.base import BaseReranker, DocsLike, as_documents, as_query, split_arg
from routerank.rerank.sorting import CachedJudge, Judge
from routerank.rerank.templates import ChoiceTemplate, get_choice_template


class Chooser(Protocol):
    """Picks the most relevant passage of each set: what the comparison rerankers ask instead of an LLM itself."""

    def choose(self, query: str, sets: Sequence[Sequence[str]]) -> list[int]:
        """For each set of passages (in the order shown), the position of the one most relevant to `query`."""
        ...


def one_line(tokenizer, text: str, max_tokens: int) -> str:
    """`text` on one line, cut to at most `max_tokens` tokens: how every choice prompt shows a passage (and how the
    Rank-R1 trainer shows it, so training and inference read the same text)."""
    flat = " ".join(text.split())
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
    return (flat if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])).strip()


class LabelChooser:
    """A causal LM as a `Chooser`: argmax over the label tokens' next-token logits, batched by a token budget."""

    def __init__(
        self,
        model,
        tokenizer,
        template: ChoiceTemplate,
        *,
        max_doc_tokens: int = 128,
        token_budget: int | None = None,
        max_batch: int = 64,
    ):
        # heavy: torch loads only when a model runs
        import torch

        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_doc_tokens, self.max_batch = max_doc_tokens, max_batch
        self.device = next(model.parameters()).device
        self.token_budget = token_budget or (65536 if self.device.type == "cuda" else 4096)
        label_ids = []
        for token in template.answer_tokens(len(template.labels)):
            ids = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise RouterankError(
                    f"the tokenizer splits the answer label {token!r} into {len(ids)} tokens",
                    fix="use a model whose tokenizer has single-token labels, or a template with other labels",
                )
            label_ids.append(ids[0])
        head = model.get_output_embeddings().weight
        self.label_rows = head[label_ids].detach().clone().to(torch.float32)
        self.decoder = model.base_model
        self.prompts = 0
        self.forward_passes = 0
        self._query, self._truncated = "", {}

    def bind(self, query: str) -> None:
        """Start the truncated-passage memo afresh when the query changes."""
        if query != self._query:
            self._query, self._truncated = query, {}

    def truncate(self, text: str) -> str:
        """One line of at most `max_doc_tokens` tokens, remembered for the current query."""
        if text not in self._truncated:
            self._truncated[text] = one_line(self.tokenizer, text, self.max_doc_tokens)
        return self._truncated[text]

    def prompt(self, query: str, passages: Sequence[str], *, cue: bool = True) -> str:
        """The prompt for one set; `cue=False` leaves a reasoning template's answer cue off (to generate from)."""
        return self.template.render(query, [self.truncate(p) for p in passages], cue=cue)

    def label_logits(self, query: str, sets: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(sets), largest set]: each set's label logits, -inf past its own size."""
        self.bind(query)
        rows = [self.tokenizer(self.prompt(query, s), add_special_tokens=False)["input_ids"] for s in sets]
        out = np.full((len(sets), max(len(s) for s in sets)), -np.inf, dtype=np.float32)
        for batch in self._batches([len(r) for r in rows]):
            logits = self._forward([rows[i] for i in batch])
            for i, row in zip(batch, logits, strict=True):
                out[i, : len(sets[i])] = row[: len(sets[i])]
        self.prompts += len(sets)
        return out

    def choose(self, query: str, sets: Sequence[Sequence[str]]) -> list[int]:
        """The argmax label of each set; a tie goes to the earlier label."""
        return self.label_logits(query, sets).argmax(axis=1).tolist() if sets else []

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Longest first, so each batch pads little; a batch stays under the token budget and `max_batch` rows."""
        batches: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            fits = batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= self.token_budget
            if fits and len(batches[-1]) < self.max_batch:
                batches[-1].append(i)
                continue
            batches.append([i])
        return batches

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        # heavy: torch loads only when a model runs
        import torch

        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id or 0)
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        with torch.inference_mode():
            hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            self.forward_passes += 1
            picked = hidden[torch.arange(len(rows), device=self.device), last].to(torch.float32)
            return (picked @ self.label_rows.to(picked.device).T).cpu().numpy()


class BoundJudge:
    """A chooser fixed to one query and its candidates: the `Judge` the sorts talk to, in document indices."""

    def __init__(self, chooser: Chooser, query: str, passages: Sequence[str]):
        self.chooser, self.query, self.passages = chooser, query, passages

    def best(self, sets: Sequence[Sequence[int]]) -> list[int]:
        """For each set of document indices, the position within it of the passage the chooser picks."""
        return self.chooser.choose(self.query, [[self.passages[i] for i in s] for s in sets])


@dataclass(frozen=True)
class ComparisonStats:
    """What reranking cost. `prompts` are the LLM calls (one forward pass each when unbatched)."""

    queries: int = 0
    prompts: int = 0  # sets or ordered pairs the LLM judged
    cache_hits: int = 0  # comparisons a sort asked again, answered from the per-query memo
    forward_passes: int = 0  # decoder calls: prompts batched together share one
    seconds: float = 0.0

    def __add__(self, other: ComparisonStats) -> ComparisonStats:
        return ComparisonStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def per_query(self) -> dict[str, float]:
        """Every count and the seconds divided by the number of queries (at least 1), by field name."""
        n = max(self.queries, 1)
        return {f.name: getattr(self, f.name) / n for f in fields(self) if f.name != "queries"}


class ComparisonReranker(BaseReranker):
    """Shared by setwise and pairwise: load the LLM, bind it to a query, let `order` sort, count what it cost.

    `rerank` returns the sorted candidates with scores n, n-1, ...; `last_stats` holds the cost of the last query
    and `stats` the sum over all queries since construction."""

    kind = "comparison"
    defaults: dict[str, object] = {}

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        max_doc_tokens: int | None = None,
        template: str | None = None,
        token_budget: int | None = None,
        chooser: Chooser | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        adapter: str | None = None,
        progress: bool = True,
        _loaded=None,
    ):
        """The options setwise and pairwise share; a subclass stores its own options, then calls this with the
        rest, which checks them through `settings()` before the LLM is loaded.

        max_doc_tokens, template: passage length and prompt family; default the adapter's training settings, else
        128 and chatml. adapter: a trained LoRA folder (Rank-R1) merged into the weights (`rerank.adapters`)."""
        self.progress = progress  # a bar per query in rerank_run
        manifest = read_adapter_manifest(adapter) if adapter else {}
        self.adapter_manifest = manifest  # what trained the adapter, e.g. a reasoning budget; {} without one
        trained = manifest.get("template")
        if adapter and template is not None and trained is not None and template != trained:
            raise RouterankError(
                f"the adapter was trained with prompt template {trained!r}, not {template!r}",
                path=adapter,
                fix=f"leave template out or use template={trained}",
            )
        self.model_spec, self.template = model, get_choice_template(self.kind, template or trained or "chatml")
        settings = self.settings()
        if max_doc_tokens is None:
            max_doc_tokens = manifest.get("config", {}).get("max_doc_tokens", 128)
        if int(max_doc_tokens) < 1:
            raise RouterankError(
                f"max_doc_tokens must be positive, got {max_doc_tokens}", fix="e.g. max_doc_tokens=128"
            )
        shown = [f"{k}={v}" for k, v in settings.items() if self.defaults.get(k) != v]
        self.name = ",".join([self.kind + (f":{model}" if model != DEFAULT_LLM or shown else ""), *shown])
        if chooser is None:
            fingerprint = resolve_llm(model).fingerprint if _loaded is None else None
            if adapter:  # before the weights load: a wrong backbone or family fails fast
                check_adapter(manifest, adapter, kind=self.kind, fingerprint=fingerprint)
            if _loaded is None:
                _loaded = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            if adapter:
                merged, _ = apply_adapter(_loaded[0], adapter, kind=self.kind, fingerprint=fingerprint)
                _loaded = (merged, _loaded[1])
                self.name = f"{self.name}+{Path(adapter).name}@{adapter_digest(adapter)}"
            chooser = self.make_chooser(*_loaded, max_doc_tokens=int(max_doc_tokens), token_budget=token_budget)
        self.chooser = chooser
        self.last_stats = ComparisonStats()
        self.stats = ComparisonStats()

    @classmethod
    def from_spec(cls, arg: str, **options) -> ComparisonReranker:
        """`smollm2`, or with options of this stage alone: `smollm2,method=bubblesort,top=10`; options in the
        spec override the keywords."""
        model, inline = split_arg(arg)
        return cls(model, **{**options, **inline})

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "custom", **options) -> ComparisonReranker:
        """Wrap an already-loaded (model, tokenizer), e.g. a tiny test model."""
        return cls(name, _loaded=(model, tokenizer), **options)

    def make_chooser(self, model, tokenizer, *, max_doc_tokens: int, token_budget: int | None) -> Chooser:
        """The LLM chooser the sorts ask (a subclass may answer another way, e.g. by reasoning first)."""
        return LabelChooser(model, tokenizer, self.template, max_doc_tokens=max_doc_tokens, token_budget=token_budget)

    def settings(self) -> dict[str, object]:
        """The subclass's own options, checked (`self.template` is set, the LLM not yet loaded); those that differ
        from `defaults` go into the name."""
        return {}

    @property
    def forward_passes(self) -> int:
        """Decoder calls the chooser has made so far (0 for a chooser that does not count them)."""
        return getattr(self.chooser, "forward_passes", 0)

    @property
    def calls(self) -> int:
        """LLM calls (prompts judged) over all queries so far; `last_stats.prompts` is the last query's."""
        return self.stats.prompts

    def order(self, n: int, judge: Judge) -> list[int]:
        """A permutation of range(n) (first-stage ranks), best first."""
        raise NotImplementedError

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` in the order the sort (`order`) finds, best first, scored n, n-1, ...; `top_k` keeps the best
        k. Sets `last_stats` to this query's cost and adds it to `stats`."""
        query, documents = as_query(query), as_documents(docs)
        started, passes = time.perf_counter(), self.forward_passes
        judge = CachedJudge(BoundJudge(self.chooser, query.text, [d.full_text for d in documents]))
        order = self.order(len(documents), judge) if len(documents) > 1 else list(range(len(documents)))
        self.last_stats = ComparisonStats(
            1, judge.judged, judge.cache_hits, self.forward_passes - passes, time.perf_counter() - started
        )
        self.stats = self.stats + self.last_stats
        kept = order[:top_k] if top_k is not None else order
        return Ranking(tuple(documents[i].id for i in kept), tuple(float(len(order) - r) for r in range(len(kept))))
