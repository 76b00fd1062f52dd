"""Cross-encoder reranker: one transformer reads query and document together and returns a relevance logit.

Spec: `ce:<folder>`, a sentence-transformers CrossEncoder folder (e.g. one written by
`routerank train cross-encoder`). Scores are the raw logits, not sigmoid outputs: the order is the same,
and large logits do not collapse into ties at 1.0.

`backend=` runs the model as an exported graph instead of torch: `onnx`, `onnx-int8`, `openvino`, `openvino-bf16`,
`openvino-int8`, or `auto` (the fastest that passes the parity check on this machine; see
`routerank.models.backends`). In a spec: `ce:<folder>,backend=openvino-int8`.

`dtype="bf16"` runs inference under bfloat16 autocast: on CPUs with AVX512-BF16 (and on GPUs) it is faster,
and scores move by about 1e-4 (measured: rank correlation 0.9999 with fp32); it has its own cache key.

Pairs are scored in order of length, so a batch pads to similar lengths (on CPU padding is pure waste), and
with `cache=True` every score lands in the on-disk score cache, keyed by the weights' sha256 and max_length:
the BM25 and hybrid candidates of one query share most pairs, and a killed evaluation loses one chunk at most.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from routerank.errors import MissingDependencyError, SpecError
from routerank.fsutil import atomic_dir, cache_root, weights_digest
from routerank.models.backends import CROSS_ENCODER, TORCH, ExportedEncoder, check_backend
from routerank.models.export import Exportable, logits_module, prepare
from routerank.models.llm import DTYPES
from routerank.models.spec import resolve_model
from routerank.rerank.base import PairScoringReranker, split_arg
from routerank.rerank.score_cache import ScoreCache, pair_key
from routerank.retrieve.calibration import calibration_groups

log = logging.getLogger(__name__)

TRAIN_HINT = "train one with `routerank train cross-encoder --dataset scifact`"
SCORING_HEADS = ("ForSequenceClassification", "ForCausalLM")


def default_device() -> str:
    """`cuda` when torch sees a GPU, else `cpu`."""
    # heavy: torch loads only when a model runs
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def weights_key(folder: Path, max_length: int | None) -> str:
    """A model folder's identity for score caches and expert fingerprints: its weights' content and the pair length,
    read from the files alone (no model is loaded)."""
    return f"ce-{weights_digest(folder)}-len{max_length}"


def check_model_folder(folder: str | Path) -> Path:
    """The folder as a Path, if it holds a scoring model; otherwise a SpecError that says how to get one."""
    path = Path(folder).expanduser()
    if not path.exists() and str(folder).strip() and "/" not in str(folder):
        path = cache_root() / "models" / str(folder)  # a bare name: a model `routerank train` saved in the cache
    if not str(folder).strip():
        raise SpecError("ce needs a model folder, e.g. ce:/path/to/model", fix=TRAIN_HINT)
    if not path.is_dir():
        raise SpecError(f"cross-encoder folder {path} does not exist", path=path, fix=TRAIN_HINT)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SpecError("not a model folder: no config.json", path=path, fix=TRAIN_HINT)
    if not any(path.glob("*.safetensors")):
        pickled = any(path.glob("pytorch_model*.bin"))
        fix = (
            "routerank loads safetensors only (a .bin file is a pickle that can run code): load it once in a trusted "
            "session and save_pretrained(..., safe_serialization=True)"
            if pickled
            else f"the folder may be half-copied; {TRAIN_HINT}"
        )
        raise SpecError("model folder has no weights (*.safetensors)", path=path, fix=fix)
    try:
        architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"config.json is not valid JSON ({exc})", path=config_file, fix=TRAIN_HINT) from None
    if not any(arch.endswith(SCORING_HEADS) for arch in architectures):
        raise SpecError(
            f"model is a {'/'.join(architectures) or 'headless'} encoder, not a cross-encoder "
            "(an embedding model cannot score pairs)",
            path=path,
            fix=TRAIN_HINT,
        )
    return path


def load_cross_encoder(
    folder: str | Path, *, max_length: int | None = None, device: str | None = None, trust_remote_code: bool = False
):
    """The sentence-transformers CrossEncoder in `folder`, once `check_model_folder` has accepted it."""
    return _open_checked(
        check_model_folder(folder), max_length=max_length, device=device, trust_remote_code=trust_remote_code
    )


def _open_checked(path: Path, *, max_length: int | None, device: str | None, trust_remote_code: bool):
    try:
        # heavy: sentence-transformers loads only when a model is used
        from sentence_transformers import CrossEncoder
    except ImportError:
        raise MissingDependencyError(
            "the cross-encoder reranker needs sentence-transformers",
            fix="pip install torch==2.13.0 && pip install 'routerank[dense]'",
        ) from None
    model = CrossEncoder(
        str(path), device=device or default_device(), trust_remote_code=trust_remote_code, local_files_only=True
    )
    if max_length is not None:
        model.max_seq_length = max_length
    return model


def autocast_name(dtype: str | None) -> str | None:
    """A dtype name as the cross-encoder's autocast tag (and score-cache suffix): None for fp32, "bf16" or "fp16"."""
    if dtype is None:
        return None
    canonical = DTYPES.get(str(dtype).strip().lower())
    if canonical is None:
        raise SpecError(f"unknown dtype {dtype!r} for a cross-encoder", fix="fp32 (default), bf16 or fp16")
    return {"float32": None, "bfloat16": "bf16", "float16": "fp16"}[canonical]


class CrossEncoderReranker(PairScoringReranker):
    """`ce:<folder>`: a sentence-transformers CrossEncoder reads query and document together; scores are its raw
    logits, computed shortest pair first (module docstring).

    model: the model folder (config.json, weights, a scoring head); in a `ce:` spec a bare name is looked up under
        `<cache>/models`, where `routerank train` saves.
    max_length: tokens per (query, document) pair, the rest cut off; None keeps the model's own; at least 8.
        Part of the cache key.
    batch_size: pairs per forward pass; with the cache on, scores are committed every 16 batches (at least 256 pairs).
    device: where the model runs; default cuda when there is one, else cpu.
    progress: a progress bar, shown only for calls with at least `progress_min_pairs` pairs to score.
    progress_min_pairs: 256, so one query's candidates (100 at depth 100) score quietly and a whole run shows a bar.
    trust_remote_code: let transformers run code from the model's repository; off, since that code is not ours.
    cache: keep every score in the on-disk score cache, keyed by the weights' sha256, `max_length` and `dtype`; a
        model wrapped from memory can cache only under an explicit `cache_key`.
    cache_key: the score-cache file's name in place of `scorer_key` (the expert bank gives each LoRA expert its own).
    dtype: "bf16" scores under bfloat16 autocast (faster on AVX512-BF16 CPUs and GPUs, scores move by ~1e-4, its own
        cache key), "fp16" under float16 autocast (GPUs); None or "fp32" is plain fp32. Any name `models.llm.DTYPES`
        knows is accepted (`bfloat16`, `half`, ...).
    backend: "torch" (default), or a fast CPU graph: "onnx", "onnx-int8", "openvino", "openvino-bf16",
        "openvino-int8", or "auto" (the fastest one that passes the parity check here, else torch). The graph is
        exported on first use and cached; calibration and parity use train queries (`retrieve.calibration`).
        Part of the cache key.
    threads: intra-op threads of an exported graph's runtime; None uses every core.
    _loaded: an already-loaded CrossEncoder in place of loading `model` (`max_length` still applies); use
        `from_model`.
    _exported: an already-exported graph (`ExportedEncoder`) to score with in place of the torch model.
    """

    kind = "ce"

    def __init__(
        self,
        model: str | Path,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        progress: bool = True,
        progress_min_pairs: int = 256,
        trust_remote_code: bool = False,
        cache: bool = False,
        cache_key: str | None = None,
        dtype: str | None = None,
        backend: str = TORCH,
        threads: int | None = None,
        _loaded=None,
        _exported: ExportedEncoder | None = None,
    ):
        if max_length is not None and max_length < 8:
            raise SpecError(f"max_length must be at least 8 tokens, got {max_length}")
        if batch_size < 1:
            raise SpecError(f"batch_size must be at least 1, got {batch_size}")
        self.dtype = autocast_name(dtype)
        self.model_spec = str(model)
        self.batch_size, self.progress, self.progress_min_pairs = batch_size, progress, progress_min_pairs
        self.name = f"{self.kind}:{self.model_spec}"
        self.folder = check_model_folder(model) if _loaded is None else None
        self.model = (
            _loaded
            if self.folder is None
            else _open_checked(self.folder, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
        )
        if _loaded is not None and max_length is not None:
            self.model.max_seq_length = max_length
        self.exported = _exported
        requested = check_backend(backend)
        if self.exported is None and requested != TORCH:
            if self.folder is None:
                raise SpecError("a cross-encoder wrapped from memory runs on torch only: pass an exported graph")
            self.exported = self._export(requested, threads)
        self.backend = self.exported.backend if self.exported is not None else TORCH
        self._cache = None
        if cache:
            self._cache = ScoreCache(cache_key or self.scorer_key)

    @classmethod
    def from_spec(cls, arg: str, **options) -> CrossEncoderReranker:
        """`<folder>[,backend=...][,max_length=...]`: options in the spec join (and override) the keywords."""
        folder, inline = split_arg(arg) if "," in arg else (arg, {})
        return cls(check_model_folder(folder), **{**options, **inline})

    def exportable(self) -> Exportable:
        """The torch model as `models.export` exports it: its logits, tokenizer, pair length and fingerprint."""
        if self.folder is None:
            raise SpecError("a cross-encoder wrapped from memory has no stable identity to export under")
        length = self.max_length or 512
        module = logits_module(self.model.model)
        return Exportable(CROSS_ENCODER, module, self.model.tokenizer, length, weights_key(self.folder, length))

    def _export(self, backend: str, threads: int | None) -> ExportedEncoder | None:
        _chosen, folder = prepare(self.exportable(), backend, calibration_groups, log)
        return ExportedEncoder(folder, threads=threads, batch_size=self.batch_size) if folder is not None else None

    @classmethod
    def from_model(cls, model, *, name: str = "custom", **options) -> CrossEncoderReranker:
        """Wrap an already-loaded sentence-transformers CrossEncoder, e.g. one still in training."""
        return cls(name, _loaded=model, **options)

    @property
    def runtime(self) -> str:
        """What the model scores on: "torch" or the exported backend."""
        return self.backend

    @property
    def max_length(self) -> int | None:
        """The model's pair length in tokens (query and document together); longer pairs are cut."""
        return self.model.max_seq_length

    @property
    def scorer_key(self) -> str:
        """Names the score-cache file: the weights' content and the truncation length, not the folder path."""

        if self.folder is None:
            raise SpecError("a cross-encoder wrapped from memory has no stable identity to cache scores under")
        suffix = (f"-{self.dtype}" if self.dtype else "") + (f"-{self.backend}" if self.backend != TORCH else "")
        return weights_key(self.folder, self.max_length) + suffix

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The model's raw logit for each pair, in input order. With the cache on, known pairs are read back and the
        rest scored and committed in chunks, shortest first."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        if self._cache is None:
            return self._predict(list(pairs), progress=self.progress and len(pairs) >= self.progress_min_pairs)

        keys = [pair_key(q, d) for q, d in pairs]
        known = self._cache.get_many(keys)
        todo = {key: pair for key, pair in zip(keys, pairs, strict=True) if key not in known}
        if todo:
            items = sorted(todo.items(), key=lambda item: len(item[1][0]) + len(item[1][1]))
            chunk = max(self.batch_size * 16, 256)
            show = self.progress and len(items) >= self.progress_min_pairs
            with tqdm(total=len(items), desc=self.name, unit="pair", disable=not show) as bar:
                for start in range(0, len(items), chunk):
                    part = items[start : start + chunk]
                    scores = self._predict([pair for _, pair in part], progress=False)
                    fresh = {key: float(score) for (key, _), score in zip(part, scores, strict=True)}
                    self._cache.put_many(fresh)
                    known.update(fresh)
                    bar.update(len(part))
        return np.array([known[key] for key in keys], dtype=np.float64)

    def _predict(self, pairs: list[tuple[str, str]], progress: bool) -> np.ndarray:
        """Raw logits in input order, computed shortest pair first so each batch pads little."""

        if self.exported is not None:
            return np.asarray(self.exported.embed(pairs), dtype=np.float64)
        # heavy: torch loads only when a model runs
        import torch

        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        device = "cuda" if str(self.model.device).startswith("cuda") else "cpu"
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.dtype or "")
        precision = torch.autocast(device, dtype=autocast) if autocast else contextlib.nullcontext()
        with precision:
            scores = self.model.predict(
                [pairs[i] for i in order],
                batch_size=self.batch_size,
                show_progress_bar=progress,
                activation_fn=torch.nn.Identity(),
                convert_to_numpy=True,
            )
        out = np.empty(len(pairs), dtype=np.float64)
        out[order] = np.asarray(scores, dtype=np.float64).reshape(len(pairs))
        return out


def new_cross_encoder(base_model: str, max_length: int, device: str | None = None):
    """A CrossEncoder whose encoder is `base_model` and whose 1-logit head is freshly initialised (seed first)."""
    # heavy: sentence-transformers loads only when a model is used; transformers loads only when a model is built
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from transformers.utils import logging as hf_logging

    ref = resolve_model(base_model, default_kind="st")
    local = {"local_files_only": True} if ref.is_local else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report is expected here
    try:
        encoder = Transformer(
            ref.location,
            transformer_task="sequence-classification",
            config_kwargs={"num_labels": 1, **local},
            model_kwargs=dict(local),
            processor_kwargs=dict(local),
            max_seq_length=max_length,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return CrossEncoder(modules=[encoder], device=device or default_device())


def merge_lora_cross_encoder(adapter: str | Path, out: str | Path, base_model: str = "minilm", max_length: int = 128):
    """Write a plain cross-encoder folder at `out` (atomically): `base_model` with the LoRA adapter and 1-logit head
    saved in `adapter` (peft's adapter_config.json + adapter_model.safetensors) folded into its weights. The result
    loads as `ce:<out>` like any fine-tuned cross-encoder, and LoRA experts can be trained on it."""
    # heavy: peft loads only when adapters are used; torch only when a model runs
    import torch
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file() or not (adapter / "adapter_model.safetensors").is_file():
        raise SpecError("not a LoRA adapter folder (no adapter_config.json + adapter_model.safetensors)", path=adapter)
    model = new_cross_encoder(base_model, max_length, device="cpu")
    with warnings.catch_warnings():  # a transformers deprecation notice that peft triggers
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(model.model, str(adapter))
    with torch.no_grad():
        peft_model.merge_and_unload()
    model.model.eval()
    with atomic_dir(Path(out)) as tmp:
        model.save_pretrained(str(tmp), create_model_card=False)
    return Path(out)


PARTIAL_WEIGHTS = "weights.safetensors"
FROZEN_PREFIX = "embeddings."  # what a partial model leaves out: the base model's embeddings


def pack_partial_cross_encoder(model_folder: str | Path, out: str | Path) -> Path:
    """The weights of a cross-encoder fine-tuned with frozen embeddings, less those embeddings, in fp16, as one
    safetensors file in `out` (atomically): about half of MiniLM's size. `assemble_cross_encoder` rebuilds the
    model from it and the installed base model."""
    # heavy: torch loads only when a model runs
    import torch
    from safetensors.torch import load_file, save_file

    weights = sorted(Path(model_folder).glob("*.safetensors"))
    if len(weights) != 1:
        raise SpecError("expected one *.safetensors file in the model folder", path=model_folder)
    state = load_file(str(weights[0]))
    kept = {name: tensor.to(torch.float16).contiguous() for name, tensor in state.items() if FROZEN_PREFIX not in name}
    with atomic_dir(Path(out)) as tmp:
        save_file(kept, str(tmp / PARTIAL_WEIGHTS))
    return Path(out)


def assemble_cross_encoder(source: str | Path, out: str | Path, base_model: str = "minilm", max_length: int = 128):
    """A plain cross-encoder folder at `out` (atomically) from a compact one at `source`: a LoRA adapter and head
    (`merge_lora_cross_encoder`), or partial fp16 weights over the base model's own embeddings."""
    source = Path(source)
    if (source / "adapter_config.json").is_file():
        return merge_lora_cross_encoder(source, out, base_model, max_length)
    # heavy: torch loads only when a model runs
    import torch
    from safetensors.torch import load_file

    if not (source / PARTIAL_WEIGHTS).is_file():
        raise SpecError(f"not a compact model folder (no adapter_config.json or {PARTIAL_WEIGHTS})", path=source)
    model = new_cross_encoder(base_model, max_length, device="cpu")
    state = {name: tensor.to(torch.float32) for name, tensor in load_file(str(source / PARTIAL_WEIGHTS)).items()}
    result = model.model.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if FROZEN_PREFIX not in name]
    if missing or result.unexpected_keys:
        raise SpecError(
            f"the weights do not fit {base_model} (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})",
            path=source,
        )
    model.model.eval()
    with atomic_dir(Path(out)) as tmp:
        model.save_pretrained(str(tmp), create_model_card=False)
    return Path(out)
