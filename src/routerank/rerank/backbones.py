"""Reranker backbones that carry LoRA domain experts: a yes/no LLM or a cross-encoder, behind one interface.

R2R needs four things of a backbone, whatever its architecture:
- `module`: the torch module peft wraps (adapters are injected in place, so every view below sees them);
- `scorer(name, cache)`: a PairScoringReranker over that module, with its own score-cache namespace per expert;
- `hidden_state(texts)`: the backbone's own representation of a query alone, which the latent router reads
  (an LLM's last-token state; a cross-encoder's mean-pooled final layer over the query's tokens);
- `fingerprint` and `default_targets`: what an expert records to refuse another backbone, and the LoRA targets.

Spec strings: an LLM spec (`smollm2`, `hf:...`, `gguf:...`) or `ce:<folder>` for a cross-encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routerank.errors import SpecError
from routerank.fsutil import safe_name
from routerank.models.llm import load_causal_lm, resolve_llm
from routerank.rerank.cross_encoder import CrossEncoderReranker, check_model_folder
from routerank.rerank.pointwise import PointwiseLLMReranker

LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ENCODER_TARGETS = ("query", "key", "value", "dense")  # BERT-style attention and feed-forward layers


def is_encoder(backbone: str) -> bool:
    """Whether a backbone spec names a cross-encoder (`ce:<folder>`) rather than an LLM."""
    return backbone.strip().startswith("ce:")


class LLMBackbone:
    """A causal LM scored pointwise (yes/no)."""

    default_targets = LLM_TARGETS

    def __init__(
        self,
        spec: str,
        *,
        template: str = "chatml",
        max_doc_tokens: int = 256,
        progress: bool = False,
        loaded=None,
        dtype: str | None = None,
    ):
        if dtype not in (None, "fp32"):
            raise SpecError(f"dtype {dtype!r} is a cross-encoder backbone option", fix="leave dtype unset on an LLM")

        self.spec, self.template, self.max_doc_tokens, self.progress = spec, template, max_doc_tokens, progress
        self.module, self.tokenizer = loaded if loaded is not None else load_causal_lm(spec)
        self._base = self.scorer(spec, cache=False)

    @property
    def fingerprint(self) -> str:
        """The LLM's weights fingerprint (`LLMSource.fingerprint`): what an expert records to refuse another
        backbone."""
        return resolve_llm(self.spec).fingerprint

    def scorer(self, name: str, cache: bool = True):
        """A yes/no PointwiseLLMReranker over the backbone's module, named `name`; with `cache`, its scores go to a
        score cache of its own (keyed by `name`)."""
        return PointwiseLLMReranker.from_model(
            self.module,
            self.tokenizer,
            name=name,
            template=self.template,
            max_doc_tokens=self.max_doc_tokens,
            progress=self.progress,
            cache=cache,
        )

    def hidden_state(self, texts: Sequence[str]) -> np.ndarray:
        """The last-token, final-layer hidden state of each text read on its own: float32 [len(texts), hidden]."""
        return self._base.hidden_state(texts)

    def relevance_logits(self, pairs: Sequence[tuple[str, str]]):
        """Differentiable relevance logits (training)."""
        return self._base.relevance_logits(pairs)


class EncoderBackbone:
    """A sentence-transformers cross-encoder; `max_doc_tokens` is its pair length (query + document)."""

    default_targets = ENCODER_TARGETS

    def __init__(
        self,
        spec: str,
        *,
        max_doc_tokens: int | None = None,
        progress: bool = False,
        loaded=None,
        template: str | None = None,
        dtype: str | None = None,
    ):
        self.spec, self.progress = spec, progress
        folder = spec.strip()[3:] if is_encoder(spec) else spec
        options = dict(max_length=max_doc_tokens, progress=progress, dtype=dtype)  # dtype: scoring only (bf16)
        if loaded is not None:
            self.ce = CrossEncoderReranker.from_model(loaded, name=spec, **options)
            self.folder = None
        else:
            self.folder = check_model_folder(folder)
            self.ce = CrossEncoderReranker(self.folder, **options)
        self.module = self.ce.model.model  # the HF model inside the CrossEncoder; peft injects into it in place

    @property
    def fingerprint(self) -> str:
        """The weights and pair length an adapter was trained on; the scoring dtype is not part of it."""
        if self.folder is None:
            return f"in-memory:{id(self.module)}"
        return self.ce.scorer_key.removesuffix(f"-{self.ce.dtype}" if self.ce.dtype else "")

    def scorer(self, name: str, cache: bool = True, exported=None):
        """A scorer view of the backbone under `name` (its own score-cache file); `exported`: score with that
        exported graph (`models.backends.ExportedEncoder`) instead of the torch weights."""
        keep = cache and self.folder is not None
        key = f"{self.ce.scorer_key}-{safe_name(name)[-60:]}" if keep else None
        return CrossEncoderReranker.from_model(
            self.ce.model,
            name=name,
            progress=self.progress,
            cache=keep,
            cache_key=key,
            dtype=self.ce.dtype,
            _exported=exported,
        )

    def hidden_state(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Mean over the query's own tokens of the encoder's final layer (the query encoded by itself)."""
        # heavy: torch loads only when a model runs
        import torch

        tokenizer, encoder = self.ce.model.tokenizer, self.module.base_model
        device = next(self.module.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.module.config.hidden_size), dtype=np.float32)

    def relevance_logits(self, pairs: Sequence[tuple[str, str]]):
        """Differentiable logits for (query, document) pairs (training)."""
        # heavy: sentence-transformers loads only when a model is used
        from sentence_transformers.util import batch_to_device

        model = self.ce.model
        features = batch_to_device(model.preprocess(list(pairs)), model.device)
        return model(features)["scores"].view(-1)


def load_backbone(spec: str, **options) -> LLMBackbone | EncoderBackbone:
    """An EncoderBackbone for a `ce:` spec, else an LLMBackbone; `options` go to its constructor."""
    return EncoderBackbone(spec, **options) if is_encoder(spec) else LLMBackbone(spec, **options)


def folder_of(spec: str) -> Path | None:
    """The model folder of a `ce:` spec (`~` expanded); None for an LLM spec."""
    return Path(spec.strip()[3:]).expanduser() if is_encoder(spec) else None
