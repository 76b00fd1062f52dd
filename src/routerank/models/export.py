"""Exporting an encoder for a fast backend: the ONNX graph from torch's own exporter, ONNX Runtime's dynamic int8,
OpenVINO's converter and NNCF's static int8; the parity check and timing at export; and `auto`'s choice.

See `routerank.models.backends` for the backends, the cache layout and the parity rule.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routerank.errors import RouterankError
from routerank.fsutil import atomic_dir
from routerank.models.backends import (
    AUTO,
    BI_ENCODER,
    CANDIDATES,
    CROSS_ENCODER,
    EXPORT_FILE,
    ONNX_FILE,
    OPENVINO_FILE,
    TORCH,
    BackendError,
    CalibrationGroup,
    batched,
    calibration_items,
    check_backend,
    export_key,
    export_root,
    group_scores,
    library_versions,
    open_runtime,
    parity,
    require,
    tokenize,
)

FFN_DOWN = r".*layer\.\d+/output/dense/MatMul.*"  # BERT-style names, as torch.onnx.export writes them


@dataclass
class Exportable:
    """A torch encoder ready to export: `module(input_ids, attention_mask[, token_type_ids])` returns a cross-encoder's
    logits (batch, 1) or a bi-encoder's pooled embeddings (batch, dim); `tokenizer` is its HF tokenizer."""

    kind: str
    module: Any
    tokenizer: Any
    max_length: int
    fingerprint: str


def export_folder(model: Exportable, backend: str) -> Path:
    """Where `model`'s graph for `backend` is cached (`models.backends.export_key`)."""
    return export_root() / export_key(model.fingerprint, model.kind, backend, model.max_length)


def torch_runner(module) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The torch module (fp32) as a features → outputs function: the reference every backend is checked against."""
    # heavy: torch loads only when a model runs
    import torch

    def run(features: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(**{k: torch.from_numpy(v) for k, v in features.items()}).float().numpy()

    return run


def export(
    model: Exportable,
    backend: str,
    calibration: Sequence[CalibrationGroup],
    *,
    calibration_source: str = "",
    reference: Sequence[np.ndarray] | None = None,
    reference_speed: float | None = None,
    folder: Path | None = None,
) -> Path:
    """Export `model` for `backend` into its cache folder (atomically) unless it is there already; check parity
    against torch fp32 on `calibration` and time both, and record it all in export.json. Returns the folder."""
    backend = check_backend(backend, allow_auto=False)
    if backend == TORCH:
        raise BackendError("torch is the model itself: there is nothing to export")
    folder = folder or export_folder(model, backend)
    if (folder / EXPORT_FILE).is_file():
        return folder
    if not calibration:
        raise BackendError(f"exporting for {backend} needs calibration groups (query, documents) from a train split")
    torch_run = torch_runner(model.module)
    if reference is None:
        reference, reference_speed = _timed_scores(torch_run, model, calibration)
    with atomic_dir(folder) as tmp:
        _write_graph(model, backend, calibration, tmp)
        model.tokenizer.save_pretrained(str(tmp))
        run = open_runtime(tmp, backend, None)
        scores, speed = _timed_scores(run, model, calibration)
        check = parity(reference, scores)
        record = {
            "backend": backend,
            "kind": model.kind,
            "max_length": model.max_length,
            "fingerprint": model.fingerprint,
            "versions": library_versions(),
            "calibration": {
                "source": calibration_source,
                "groups": len(calibration),
                "items": len(calibration_items(model.kind, calibration)),
            },
            "parity": check.as_dict(),
            "speed": {"items_per_s": round(speed, 2), "torch_items_per_s": round(reference_speed or 0.0, 2)},
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return folder


def _timed_scores(run, model: Exportable, groups: Sequence[CalibrationGroup]) -> tuple[list[np.ndarray], float]:
    def embed(items):
        out = batched(run, model.tokenizer, model.kind, list(items), model.max_length, 32)
        return out.reshape(len(items)) if model.kind == CROSS_ENCODER else out

    embed(calibration_items(model.kind, groups)[:32])  # warm-up: first calls allocate
    start = time.perf_counter()
    scores = group_scores(embed, model.kind, groups)
    seconds = time.perf_counter() - start
    count = sum(len(g.documents) for g in groups) + (len(groups) if model.kind == BI_ENCODER else 0)
    return scores, count / max(seconds, 1e-9)


def _write_graph(model: Exportable, backend: str, calibration: Sequence[CalibrationGroup], folder: Path) -> None:
    onnx_path = folder / ONNX_FILE
    _export_onnx(model, onnx_path)
    if backend == "onnx":
        return
    if backend == "onnx-int8":
        quantization = require("onnxruntime.quantization")
        fp32 = folder / "fp32.onnx"
        onnx_path.rename(fp32)
        quantization.quantize_dynamic(
            str(fp32), str(onnx_path), weight_type=quantization.QuantType.QInt8, per_channel=True
        )
        fp32.unlink()
        return
    ov = require("openvino")
    graph = ov.convert_model(str(onnx_path))
    if backend == "openvino-int8":
        graph = _quantize_openvino(graph, model, calibration)
    ov.save_model(graph, str(folder / OPENVINO_FILE), compress_to_fp16=False)
    onnx_path.unlink()


def _quantize_openvino(graph, model: Exportable, calibration: Sequence[CalibrationGroup]):
    """NNCF's static int8 with the transformer preset. The feed-forward down-projections stay in float: their
    inputs (after GELU) carry the outliers that int8 clips, and on the starter's cross-encoder keeping them lifted
    the per-query Spearman against fp32 from 0.976 to 0.985 for 8% of the speed."""
    nncf = require("nncf")
    nncf.set_log_level(logging.WARNING)  # its INFO lines list every layer left in float
    items = calibration_items(model.kind, calibration)
    batches = [
        tokenize(model.tokenizer, model.kind, items[i : i + 8], model.max_length) for i in range(0, len(items), 8)
    ]
    return nncf.quantize(
        graph,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=nncf.IgnoredScope(patterns=[FFN_DOWN], validate=False),
    )


def _export_onnx(model: Exportable, path: Path) -> None:
    # heavy: torch loads only when a model runs
    import torch

    sample = tokenize(model.tokenizer, model.kind, _sample_items(model.kind), model.max_length)
    names = list(sample)
    output = "logits" if model.kind == CROSS_ENCODER else "embedding"
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {output: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            positional_module(model.module, names),
            tuple(torch.from_numpy(sample[n]) for n in names),
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def positional_module(module, names: list[str]):
    """`module` called with positional tensors in the order of `names`, as the ONNX exporter feeds them."""
    # heavy: torch loads only when a model runs
    import torch

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors, strict=True)))

    return Positional().eval()  # a module in training mode would be put back in it, dropout on, after the export


def output_module(model, pick: Callable):
    """`model` as a module whose forward returns `pick(model, features)`: the one tensor an exported graph outputs."""
    # heavy: torch loads only when a model runs
    import torch

    class Output(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, **features):
            return pick(self.inner, features)

    return Output().eval()


def logits_module(model):
    """A sequence-classification model (HF) as a module that returns its logits tensor."""
    return output_module(model, lambda inner, features: inner(**features).logits)


def embedding_module(model):
    """A sentence-transformers model as a module that returns its pooled embeddings (before normalisation)."""
    return output_module(model, lambda inner, features: inner(dict(features))["sentence_embedding"])


def _sample_items(kind: str) -> list:
    if kind == CROSS_ENCODER:
        return [("a short query", "a document of a few more words"), ("another query", "text")]
    return ["a short text", "another text of a few more words"]


def choose(
    model: Exportable,
    calibration: Sequence[CalibrationGroup],
    *,
    calibration_source: str = "",
    candidates: Sequence[str] = CANDIDATES,
    log: Callable[[str], None] | None = None,
) -> tuple[str, Path | None, dict[str, dict[str, Any]]]:
    """`auto`: export every candidate, keep those that pass parity, and pick the fastest if it beats torch.
    Returns (backend, its export folder or None for torch, the figures of every candidate)."""
    torch_run = torch_runner(model.module)
    reference, torch_speed = None, None
    figures: dict[str, dict[str, Any]] = {}
    best, best_folder, best_speed = TORCH, None, 0.0
    for backend in candidates:
        folder = export_folder(model, backend)
        try:
            if not (folder / EXPORT_FILE).is_file() and reference is None:
                reference, torch_speed = _timed_scores(torch_run, model, calibration)
            export(
                model,
                backend,
                calibration,
                calibration_source=calibration_source,
                reference=reference,
                reference_speed=torch_speed,
                folder=folder,
            )
        except (RouterankError, RuntimeError, OSError, ValueError) as exc:
            figures[backend] = {"error": str(exc).splitlines()[0][:200]}
            if log:
                log(f"backend {backend}: export failed ({figures[backend]['error']})")
            continue
        record = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
        figures[backend] = {**record["parity"], **record["speed"]}
        speed, base = record["speed"]["items_per_s"], record["speed"]["torch_items_per_s"] or 0.0
        if record["parity"]["passed"] and speed > max(best_speed, base):
            best, best_folder, best_speed = backend, folder, speed
    return best, best_folder, figures


Calibrate = Callable[[], tuple[Sequence[CalibrationGroup], str]]


def prepare(
    model: Exportable, backend: str, calibrate: Calibrate, log: logging.Logger | None = None
) -> tuple[str, Path | None]:
    """The backend `model` will score on and its export folder (None for torch): `auto` resolved by `choose`, any
    other backend exported if it is not cached yet. `calibrate()` returns (groups, source) and is called only when
    a graph must be made, so a start whose graphs are all cached draws no calibration sample."""
    wanted = CANDIDATES if backend == AUTO else (check_backend(backend, allow_auto=False),)
    cached = all((export_folder(model, b) / EXPORT_FILE).is_file() for b in wanted)
    groups, source = ((), "") if cached else calibrate()
    if backend != AUTO:
        return backend, export(model, backend, groups, calibration_source=source)
    chosen, folder, figures = choose(model, groups, calibration_source=source, log=log.warning if log else None)
    if log:
        log.info("backend auto chose %s (%s)", chosen, figures)
    return chosen, folder
