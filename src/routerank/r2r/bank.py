"""A bank of LoRA domain experts over one frozen reranker backbone: a yes/no LLM or a cross-encoder.

Adapters are named by domain and switched with peft's `set_adapter`, so a batch whose queries go to
different experts is scored group by group without reloading any weights. While a group scores, its adapter is
folded into the base weights (one matmul per layer instead of three: about 2x faster on a CPU), and the base
weights are restored bit for bit afterwards. `GENERALIST` scores with the adapters disabled, which is exactly the
bare backbone.

`backend=` (cross-encoder backbones only) scores every expert with an exported graph of its own: the expert's LoRA
is folded into the backbone and that merged model is exported for the backend (`routerank.models.backends`), once
per machine. `auto` picks the backend on the generalist and uses it for every expert whose export passes the parity
check; an expert that fails it stays on torch, with a warning. The router still reads the torch backbone's query
state: one small forward per query, cheaper than a second export.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import sha256_file
from routerank.models.backends import AUTO, CROSS_ENCODER, TORCH, ExportedEncoder, check_backend
from routerank.models.export import Exportable, logits_module, prepare
from routerank.rerank.backbones import is_encoder, load_backbone
from routerank.retrieve.calibration import calibration_groups
from routerank.route import GENERALIST

log = logging.getLogger(__name__)

MANIFEST = "routerank_expert.json"


class ExpertMismatchError(RouterankError):
    """An expert trained on another backbone (or template) than the bank's."""


def read_manifest(folder: Path) -> dict:
    """An expert folder's manifest; a folder without it or without the adapter weights is refused."""
    path = folder / MANIFEST
    if not path.exists() or not (folder / "adapter_model.safetensors").exists():
        raise RouterankError(
            "not an expert folder (needs adapter_model.safetensors and routerank_expert.json)",
            path=folder,
            fix="train one with `routerank train expert`",
        )
    return json.loads(path.read_text())


class ExpertBank:
    """Named LoRA experts on one backbone (`routerank.rerank.backbones`), switched in place.

    experts: domain -> expert folder (adapter + routerank_expert.json). backbone: the spec every expert was
    trained on (an LLM spec, or `ce:<folder>`); a different one is refused. max_doc_tokens: document tokens
    per pair for an LLM, the pair length for a cross-encoder. cache: keep every score on disk, per expert.
    loaded: an already-loaded backbone model (tests: a tiny model). dtype: the torch scoring dtype (bf16 autocast).
    backend: "torch", or an exported graph per expert for a cross-encoder backbone ("onnx", "onnx-int8", "openvino",
    "openvino-bf16", "openvino-int8", "auto"; module docstring). threads: the graph runtime's intra-op threads.
    """

    def __init__(
        self,
        experts: Mapping[str, str | Path],
        backbone: str = "smollm2",
        *,
        max_doc_tokens: int = 256,
        cache: bool = True,
        progress: bool = False,
        loaded=None,
        dtype: str | None = None,
        backend: str = TORCH,
        threads: int | None = None,
    ):
        # heavy: peft loads only when adapters are used
        from peft import PeftModel

        if not experts:
            raise RouterankError("an expert bank needs at least one expert")
        if GENERALIST in experts:
            raise RouterankError(f"{GENERALIST!r} is reserved for the bare backbone")
        self.folders = {domain: Path(folder) for domain, folder in experts.items()}
        self.manifests = {domain: read_manifest(folder) for domain, folder in self.folders.items()}
        templates = {manifest.get("template", "chatml") for manifest in self.manifests.values()}
        if len(templates) != 1:
            raise ExpertMismatchError(f"experts use different prompt templates {sorted(templates)}")
        self.base = load_backbone(
            backbone,
            template=templates.pop(),
            max_doc_tokens=max_doc_tokens,
            progress=progress,
            loaded=loaded,
            dtype=dtype,
        )
        fingerprint = self.base.fingerprint
        for domain, manifest in self.manifests.items():
            if manifest.get("backbone_fingerprint") != fingerprint:
                raise ExpertMismatchError(
                    f"expert {domain!r} was trained on backbone {manifest.get('backbone')!r} "
                    f"({manifest.get('backbone_fingerprint')}), not {backbone!r} ({fingerprint})",
                    path=self.folders[domain],
                    fix="load it onto the backbone it was trained on",
                )
        self.backbone, self.domains = backbone, list(self.folders)
        first, *rest = self.domains
        with warnings.catch_warnings():  # a transformers deprecation notice that peft triggers
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            self.peft = PeftModel.from_pretrained(self.base.module, str(self.folders[first]), adapter_name=first)
        for domain in rest:
            self.peft.load_adapter(str(self.folders[domain]), adapter_name=domain)
        self.peft.eval()
        # one scorer view per expert: same weights, its own score-cache namespace
        self.labels = {GENERALIST: backbone}
        for domain in self.domains:
            digest = sha256_file(self.folders[domain] / "adapter_model.safetensors")[:12]
            # "+m": merged-weight scores (within 1e-5 of unmerged in fp32) never share a cache with unmerged ones
            self.labels[domain] = f"{backbone}+{domain}@{digest}+m"
        self.scorers = {name: self.base.scorer(label, cache=cache) for name, label in self.labels.items()}
        self.backend = TORCH
        requested = check_backend(backend)
        if requested != TORCH:
            if not is_encoder(backbone) or loaded is not None:
                raise SpecError("backend= applies to experts over a cross-encoder backbone loaded from a folder")
            self._export_experts(requested, threads, cache)

    def _exportable(self, expert: str) -> Exportable:
        """The backbone with `expert` active (its LoRA merged, or none for the generalist), ready to export."""
        ce = self.base.ce
        length = ce.max_length or 512
        key = self.base.fingerprint if expert == GENERALIST else f"{self.base.fingerprint}|{self.labels[expert]}"
        return Exportable(CROSS_ENCODER, logits_module(self.peft), ce.model.tokenizer, length, key)

    def _export_experts(self, requested: str, threads: int | None, cache: bool) -> None:
        with self.active(GENERALIST):
            backend, folder = prepare(self._exportable(GENERALIST), requested, calibration_groups, log)
        if folder is None:
            return
        folders = {GENERALIST: folder}
        for domain in self.domains:
            with self.active(domain):
                folders[domain] = prepare(self._exportable(domain), backend, calibration_groups)[1]
        for name, folder in folders.items():
            graph = ExportedEncoder(folder, threads=threads)
            if requested == AUTO and not graph.parity.get("passed"):
                log.warning(
                    "expert %s stays on torch: its %s graph fails the parity check %s", name, backend, graph.parity
                )
                continue
            self.scorers[name] = self.base.scorer(f"{self.labels[name]}+{backend}", cache=cache, exported=graph)
        self.backend = backend

    @contextmanager
    def active(self, expert: str):
        """A context in which `expert` scores: its adapter active and merged into the base weights, or every adapter
        off for `GENERALIST`; yields that expert's scorer."""
        if expert == GENERALIST:
            with self.peft.disable_adapter():
                yield self.scorers[GENERALIST]
            return
        if expert not in self.scorers:
            raise RouterankError(f"no expert {expert!r} in this bank", fix=f"one of {self.domains} or {GENERALIST}")
        self.peft.set_adapter(expert)
        with self._merged(expert):
            yield self.scorers[expert]

    @contextmanager
    def _merged(self, expert: str):
        """`expert`'s LoRA folded into the base weights; on exit the saved base weights are copied back, so no
        rounding from merging and unmerging accumulates over many switches."""
        # heavy: torch loads only when a model runs; peft loads only when adapters are used
        import torch
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.peft.modules() if isinstance(m, LoraLayer) and expert in m.lora_A]
        saved = [m.get_base_layer().weight.detach().clone() for m in layers]
        with torch.no_grad():
            self.peft.base_model.merge_adapter([expert])
        try:
            yield
        finally:
            with torch.no_grad():
                self.peft.base_model.unmerge_adapter()
                for layer, weight in zip(layers, saved, strict=True):
                    layer.get_base_layer().weight.copy_(weight)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], experts: Sequence[str]) -> np.ndarray:
        """Score each pair with its own expert; pairs are grouped by expert, adapters switched in place."""
        if len(pairs) != len(experts):
            raise RouterankError(f"{len(pairs)} pairs but {len(experts)} expert names")
        scores = np.zeros(len(pairs), dtype=np.float64)
        for expert in dict.fromkeys(experts):
            rows = [i for i, e in enumerate(experts) if e == expert]
            graph_scorer = self.scorers.get(expert)
            if getattr(graph_scorer, "exported", None) is not None:  # its own graph: no merge needed
                scores[rows] = graph_scorer.score_pairs([pairs[i] for i in rows])
                continue
            with self.active(expert) as scorer:
                scores[rows] = scorer.score_pairs([pairs[i] for i in rows])
        return scores

    def score_labelled(self, shard: tuple[Sequence[tuple[str, str]], Sequence[str]]) -> np.ndarray:
        """`score_pairs` on one (pairs, experts) shard: the method a Ray actor holding this bank is called with."""
        pairs, experts = shard
        return self.score_pairs(pairs, experts)

    def hidden_state(self, texts: Sequence[str]) -> np.ndarray:
        """The frozen backbone's own representation of each query (adapters off): what the router reads."""
        with self.active(GENERALIST):
            return self.base.hidden_state(texts)
