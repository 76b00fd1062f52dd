"""Fast CPU backends for encoder models: ONNX Runtime and OpenVINO graphs, in fp32, bf16 and int8.

This module names the backends, judges parity and runs an exported graph (`ExportedEncoder`); `models.export`
writes the graphs.

A cross-encoder or bi-encoder is exported once per machine from its torch weights and cached under
`<cache>/exports/<key>/`, where the key hashes the model's fingerprint, the backend, the pair length and the versions
of torch, onnx, onnxruntime, openvino and nncf: a new library version exports again rather than loading a graph it
did not write. Each export folder is filled in a temp folder and renamed into place (`fsutil.atomic_dir`), so a killed
export leaves nothing that loads.

Backends:
- `torch`: the reference, the model as trained.
- `onnx`: the fp32 graph on ONNX Runtime. `onnx-int8`: the same graph with int8 weights and dynamically
  quantized activations (no calibration).
- `openvino`: the fp32 graph on OpenVINO at f32 precision. `openvino-bf16`: the same graph, run at bf16 precision
  (fast where the CPU has AVX512-BF16 or AMX). `openvino-int8`: static int8 by NNCF, calibrated on (query, document)
  pairs drawn from train splits.
- `auto`: `onnx-int8`, `openvino-bf16` and `openvino-int8` are exported and checked, and the fastest one that
  passes the parity check is used (torch if none passes or beats it).

Why not sentence-transformers' `backend="onnx"` or optimum: both go through optimum, whose ONNX exporter
(optimum-onnx 0.1) and OpenVINO integration (optimum-intel) require transformers < 4.58 or < 5.6, while routerank's
sentence-transformers 6 requires transformers 5. The graphs here come from the exporter inside torch
(`torch.onnx.export`), ONNX Runtime's quantizer, OpenVINO's converter and NNCF.

The parity check (`parity`) compares a backend with torch fp32 on the calibration groups: the mean per-query Spearman
correlation of the scores must be at least 0.99 and the mean top-10 overlap at least 0.9. It runs at export, and
its figures, with the measured speed, are kept in the export's `export.json`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from routerank.errors import MissingDependencyError, RouterankError, SpecError
from routerank.fsutil import cache_root

TORCH = "torch"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
AUTO = "auto"
# what `auto` tries: the fp32 graphs are left out, as they were never faster than their bf16 or int8 siblings
# (bench/cpu_backends.py) and each candidate costs an export and a parity check on the first start
CANDIDATES = ("onnx-int8", "openvino-bf16", "openvino-int8")
MIN_SPEARMAN, MIN_TOP10 = 0.99, 0.9
EXPORT_FILE = "export.json"
ONNX_FILE, OPENVINO_FILE = "model.onnx", "model.xml"
CROSS_ENCODER, BI_ENCODER = "cross-encoder", "bi-encoder"
VERSIONED = ("torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf")
INSTALL_FIX = "pip install 'routerank[cpu]' (onnx, onnxruntime, openvino, nncf)"


class BackendError(RouterankError):
    """An export or a fast backend that cannot be used (a missing library, a failed export or parity check)."""


def check_backend(name: str | None, allow_auto: bool = True) -> str:
    """The backend's canonical name; a SpecError naming the choices for an unknown one."""
    value = (name or TORCH).strip().lower().replace("_", "-")
    choices = BACKENDS + ((AUTO,) if allow_auto else ())
    if value not in choices:
        raise SpecError(f"unknown backend {name!r}", fix=f"one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class CalibrationGroup:
    """One query with its candidate documents: what parity is judged on and static int8 is calibrated on."""

    query: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class Parity:
    """A backend against torch fp32 on the calibration groups."""

    spearman: float
    top10: float
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        """Whether the backend may stand in for torch: Spearman at least 0.99 and top-10 overlap at least 0.9."""
        return self.spearman >= MIN_SPEARMAN and self.top10 >= MIN_TOP10

    def as_dict(self) -> dict[str, Any]:
        """The figures as they are written to export.json."""
        return {
            "spearman": round(self.spearman, 6),
            "top10": round(self.top10, 6),
            "max_abs_diff": round(self.max_abs_diff, 6),
            "passed": self.passed,
        }


def parity(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Parity:
    """Mean per-group Spearman correlation and top-10 overlap of `candidate`'s scores against `reference`'s."""
    if len(reference) != len(candidate) or not reference:
        raise BackendError("parity needs the same, non-empty list of score groups on both sides")
    rhos, overlaps, diff = [], [], 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        ref, cand = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
        diff = max(diff, float(np.abs(ref - cand).max())) if len(ref) else diff
        if len(ref) < 2:
            continue
        rho = spearmanr(ref, cand).statistic
        rhos.append(1.0 if np.isnan(rho) else float(rho))
        k = min(10, len(ref))
        top_ref, top_cand = set(np.argsort(-ref)[:k]), set(np.argsort(-cand)[:k])
        overlaps.append(len(top_ref & top_cand) / k)
    if not rhos:
        raise BackendError("parity needs groups of at least two documents")
    return Parity(float(np.mean(rhos)), float(np.mean(overlaps)), diff)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an export depends on ("-" for one not installed)."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def export_root() -> Path:
    """Where exports are cached: `<cache>/exports`."""
    return cache_root() / "exports"


def export_key(fingerprint: str, kind: str, backend: str, max_length: int) -> str:
    """The export folder's name: the model, what it is, the backend, the pair length and the library versions."""
    versions = json.dumps(library_versions(), sort_keys=True)
    digest = hashlib.sha256(f"{fingerprint}|{kind}|{backend}|{max_length}|{versions}".encode()).hexdigest()[:16]
    return f"{backend}-{digest}"


def tokenize(tokenizer, kind: str, items: Sequence, max_length: int) -> dict[str, np.ndarray]:
    """int64 features of (query, document) pairs (cross-encoder) or texts (bi-encoder), as the torch path builds
    them: padded to the longest, cut at `max_length` (longest part first for a pair)."""
    if kind == CROSS_ENCODER:
        first, second = [str(q) for q, _ in items], [str(d) for _, d in items]
        encoded = tokenizer(
            first, second, padding=True, truncation="longest_first", max_length=max_length, return_tensors="np"
        )
    else:
        encoded = tokenizer(
            [str(t) for t in items], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def batched(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    tokenizer,
    kind: str,
    items: Sequence,
    max_length: int,
    batch_size: int,
) -> np.ndarray:
    """`run` over `items` in batches, shortest first so each batch pads little; rows back in input order."""
    if not items:
        return np.zeros((0,), dtype=np.float32)
    lengths = [len(a) + len(b) for a, b in items] if kind == CROSS_ENCODER else [len(t) for t in items]
    order = sorted(range(len(items)), key=lengths.__getitem__)
    parts = []
    for start in range(0, len(order), batch_size):
        rows = [items[i] for i in order[start : start + batch_size]]
        parts.append(np.asarray(run(tokenize(tokenizer, kind, rows, max_length)), dtype=np.float32))
    out = np.concatenate(parts)
    result = np.empty_like(out)
    result[order] = out
    return result


def group_scores(embed: Callable[[Sequence], np.ndarray], kind: str, groups: Sequence[CalibrationGroup]):
    """Each group's document scores: the cross-encoder's logits, or the bi-encoder's cosine of query and document."""
    if kind == CROSS_ENCODER:
        pairs = [(g.query, d) for g in groups for d in g.documents]
        flat = np.asarray(embed(pairs), dtype=np.float64).reshape(len(pairs))
    else:
        queries = _normalised(embed([g.query for g in groups]))
        docs = _normalised(embed([d for g in groups for d in g.documents]))
        owner = np.repeat(np.arange(len(groups)), [len(g.documents) for g in groups])
        flat = (docs * queries[owner]).sum(1)
    out, start = [], 0
    for group in groups:
        out.append(flat[start : start + len(group.documents)])
        start += len(group.documents)
    return out


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def calibration_items(kind: str, groups: Sequence[CalibrationGroup]) -> list:
    """What a static quantizer sees: every (query, document) pair, or every query and document text."""
    if kind == CROSS_ENCODER:
        return [(g.query, d) for g in groups for d in g.documents]
    return list(dict.fromkeys([g.query for g in groups] + [d for g in groups for d in g.documents]))


class ExportedEncoder:
    """An exported graph loaded on its runtime; `embed(items)` gives logits (batch,) or embeddings (batch, dim).

    threads: intra-op threads for the runtime; None lets ONNX Runtime and OpenVINO use every core.
    """

    def __init__(self, folder: str | Path, threads: int | None = None, batch_size: int = 32):
        self.folder = Path(folder)
        manifest = self.folder / EXPORT_FILE
        if not manifest.is_file():
            raise BackendError("not an export folder (no export.json)", path=self.folder)
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        self.backend, self.kind = self.manifest["backend"], self.manifest["kind"]
        self.max_length, self.batch_size = int(self.manifest["max_length"]), batch_size
        self.tokenizer = load_tokenizer(self.folder)
        self._run = open_runtime(self.folder, self.backend, threads)

    def embed(self, items: Sequence) -> np.ndarray:
        """Scores (cross-encoder, shape (n,)) or embeddings (bi-encoder, shape (n, dim)) of `items`, in order."""
        out = batched(self._run, self.tokenizer, self.kind, list(items), self.max_length, self.batch_size)
        return out.reshape(len(items)) if self.kind == CROSS_ENCODER else out

    @property
    def parity(self) -> dict[str, Any]:
        """The parity figures recorded at export."""
        return dict(self.manifest.get("parity", {}))


def load_tokenizer(folder: Path):
    """The tokenizer saved in an export folder, read from local files only."""
    # heavy: transformers loads only when a model is used
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def open_runtime(folder: Path, backend: str, threads: int | None) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The folder's exported graph on ONNX Runtime or OpenVINO (CPU), as a function from int64 features to the
    graph's first output; `threads`: intra-op threads, None lets the runtime use every core."""
    if backend.startswith("onnx"):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda features: session.run(None, {n: features[n] for n in names})[0]
    ov = require("openvino")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if backend == "openvino":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    elif backend == "openvino-bf16":
        config["INFERENCE_PRECISION_HINT"] = "bf16"
    compiled = ov.Core().compile_model(str(folder / OPENVINO_FILE), "CPU", config)
    names = [port.get_any_name() for port in compiled.inputs]
    request = compiled.create_infer_request()
    return lambda features: request.infer({n: features[n] for n in names})[compiled.outputs[0]].copy()


def require(module: str):
    """The named runtime module, imported; a MissingDependencyError that names `routerank[cpu]` when it is missing."""
    try:
        # heavy: the runtimes load only when a fast backend is asked for
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"the {module} backend needs the {module} package", fix=INSTALL_FIX) from None
