"""Dense retrieval: sentence-transformers embeddings in an exact FAISS inner-product index.

`backend=` encodes with an exported graph instead of torch (`routerank.models.backends`): `onnx`, `onnx-int8`,
`openvino`, `openvino-bf16`, `openvino-int8` or `auto`. A non-torch backend is part of the index's config, so an
index built with it is never mixed up with a torch one. In a pipeline: `rrf(bm25,dense:minilm,backend=openvino-int8)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import CorruptIndexError, MissingDependencyError, SpecError
from routerank.fsutil import weights_digest
from routerank.models.backends import BI_ENCODER, TORCH, ExportedEncoder, check_backend
from routerank.models.export import Exportable, embedding_module, prepare
from routerank.models.spec import ALIASES, resolve_model
from routerank.retrieve.base import IndexedRetriever, NotIndexedError, as_query_list
from routerank.retrieve.calibration import calibration_groups
from routerank.scale import Executor, InProcess, ShardStore, chunks

DEFAULT_MODEL = "minilm"
ENCODE_SHARD = 512  # documents per encoding shard, in-process and on Ray alike, so both give the same bytes


def load_sentence_transformer(spec: str, device: str | None = None, trust_remote_code: bool = False):
    """A SentenceTransformer for a model spec (a packaged alias, a local folder or a hub id; local ones load
    without network access); `MissingDependencyError` when sentence-transformers is not installed."""
    ref = resolve_model(spec, default_kind="st")
    try:
        # heavy: sentence-transformers loads only when a model is used
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingDependencyError(
            "dense retrieval needs sentence-transformers",
            fix="pip install torch==2.13.0 && pip install 'routerank[dense]'",
        ) from None
    return SentenceTransformer(
        ref.location, device=device, trust_remote_code=trust_remote_code, local_files_only=ref.is_local
    )


def _local_weights_digest(spec: str) -> str | None:
    """sha256 over a local model folder's safetensors; None for packaged aliases and hub ids (their content is
    pinned by the package version or the hub revision)."""

    if spec in ALIASES:
        return None
    ref = resolve_model(spec, default_kind="st")
    folder = Path(ref.location)
    if not ref.is_local or not folder.is_dir():
        return None
    return weights_digest(folder) if any(folder.glob("*.safetensors")) else None


def dense_options(arg: str) -> tuple[str, dict[str, Any]]:
    """`minilm,backend=openvino-int8` → ("minilm", {"backend": "openvino-int8"}); the model may be left out."""
    model, options = "", {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            if model:
                raise SpecError(f"two models in dense:{arg}", fix="e.g. dense:minilm,backend=openvino-int8")
            model = part
        elif key.strip() == "backend":
            options["backend"] = check_backend(value)
        elif key.strip() in ("max_length", "batch_size") and value.strip().isdigit():
            options[key.strip()] = int(value)
        else:
            raise SpecError(f"bad dense option {part!r}", fix="backend=..., max_length=<int> or batch_size=<int>")
    return model or DEFAULT_MODEL, options


def exact_ip_index(embeddings: np.ndarray):
    """An exact (flat) FAISS inner-product index holding the embeddings, one row per document."""
    try:
        # heavy: faiss loads only when an index is built
        import faiss
    except ImportError:
        raise MissingDependencyError("dense retrieval needs faiss", fix="pip install faiss-cpu") from None
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


class DenseRetriever(IndexedRetriever):
    """Exact inner-product search over normalised sentence-transformers embeddings.

    Indexing encodes the corpus in fixed shards of `ENCODE_SHARD` documents: sentence-transformers batches by
    length within one call, so a fixed cut is what makes an index built on Ray workers byte-identical to one
    built in this process.
    """

    kind = "dense"
    shardable = True
    # model, max_length, normalize, batch_size, device, progress as before; backend: "torch" or an exported graph
    # (module docstring); threads: the graph runtime's intra-op threads (None: every core)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        max_length: int | None = None,
        normalize: bool = True,
        batch_size: int = 64,
        device: str | None = None,
        progress: bool = True,
        backend: str = TORCH,
        threads: int | None = None,
    ):
        self.model_spec, self.max_length, self.normalize = model, max_length, normalize
        self.batch_size, self.device, self.progress = batch_size, device, progress
        self.backend, self.threads = check_backend(backend), threads
        self.name = "dense" if model == DEFAULT_MODEL else f"dense:{model}"
        if self.backend != TORCH:
            self.name += f",backend={self.backend}"
        self._encoder = None
        self._graph: ExportedEncoder | None = None
        self.runtime = self.backend  # what `auto` resolved to, once it has
        self._faiss = None
        self._doc_ids: list[str] = []
        self.embeddings: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        """What identifies the index: model, max_length and normalize, plus the backend when not torch and, for a
        local model folder, a digest of its weights (so a folder retrained in place is not served an old index)."""
        config = {"model": self.model_spec, "max_length": self.max_length, "normalize": self.normalize}
        if self.backend != TORCH:  # absent for torch, so indexes built before backends existed still load
            config["backend"] = self.backend
        weights = _local_weights_digest(self.model_spec)
        if weights is not None:  # a folder retrained in place must not reuse the old index
            config["weights"] = weights
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DenseRetriever:
        """A retriever from its manifest config; the weights digest there identifies the index and is not an option."""
        return cls(**{k: v for k, v in config.items() if k != "weights"})  # weights identify, they do not configure

    @property
    def folder(self) -> Path | None:
        """The local model folder this retriever encodes with (a fine-tuned one has its training manifest there);
        None for packaged aliases and hub ids."""
        if self.model_spec in ALIASES:
            return None
        ref = resolve_model(self.model_spec, default_kind="st")
        return Path(ref.location) if ref.is_local and Path(ref.location).is_dir() else None

    @property
    def encoder(self):
        """The SentenceTransformer, loaded on first use (with `max_length` applied)."""
        if self._encoder is None:
            self._encoder = load_sentence_transformer(self.model_spec, self.device)
            if self.max_length is not None:
                self._encoder.max_seq_length = self.max_length
        return self._encoder

    @property
    def graph(self) -> ExportedEncoder | None:
        """The exported graph this retriever encodes with; None on torch (or when `auto` kept torch)."""
        if self.backend != TORCH and self._graph is None:
            encoder = self.encoder
            length = encoder.max_seq_length or 256
            location = resolve_model(self.model_spec, default_kind="st").location
            fingerprint = f"{location}|{weights_digest(location)}"
            model = Exportable(BI_ENCODER, embedding_module(encoder), encoder.tokenizer, length, fingerprint)
            self.runtime, folder = prepare(model, self.backend, calibration_groups)
            if folder is None:
                self.backend = TORCH  # auto kept torch: nothing to export again
                return None
            self._graph = ExportedEncoder(folder, threads=self.threads, batch_size=self.batch_size)
            self.runtime = self._graph.backend
        return self._graph

    def encode(self, texts: list[str], progress: bool | None = None) -> np.ndarray:
        """Embeddings of the texts as float32 rows, normalised when `normalize` is on; `progress` None follows the
        retriever's setting."""
        if self.graph is not None:
            if not texts:
                return np.zeros((0, self.encoder.get_sentence_embedding_dimension()), dtype=np.float32)
            vectors = self.graph.embed(list(texts))
            if self.normalize and len(vectors):
                vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            return np.asarray(vectors, dtype=np.float32)
        vectors = self.encoder.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=self.progress if progress is None else progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_shard(self, texts: list[str]) -> np.ndarray:
        """Embeddings of one shard of texts, without a progress bar: the call each indexing worker makes."""
        return self.encode(list(texts), progress=False)

    def worker_factory(self):
        """A picklable recipe for this retriever's encoder, built once per Ray actor."""

        return partial(
            DenseRetriever,
            model=self.model_spec,
            max_length=self.max_length,
            normalize=self.normalize,
            batch_size=self.batch_size,
            device=self.device,
            progress=False,
            backend=self.backend,
            threads=self.threads,
        )

    def index(self, corpus: Corpus, executor: Executor | None = None, store: ShardStore | None = None) -> None:
        """Encode the corpus's documents in shards of `ENCODE_SHARD` on `executor` (this process by default) and build
        the exact index; a `store` keeps finished shards so an interrupted build resumes."""
        texts = [doc.full_text for doc in corpus.documents]
        executor = executor if executor is not None else InProcess(self.progress)
        parts = executor.map(
            self.worker_factory(),
            "encode_shard",
            chunks(texts, ENCODE_SHARD),
            store=store,
            local=self,
            desc=f"encode {len(texts):,} docs",
        )
        self.embeddings = np.concatenate(parts) if parts else self.encode([], progress=False)
        self._doc_ids, self._fingerprint = corpus.ids, corpus.fingerprint
        self._faiss = exact_ip_index(self.embeddings)

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents by inner product (cosine when normalised), best first."""
        if self._faiss is None:
            raise NotIndexedError("DenseRetriever.search() before index() or load()")
        query_list = as_query_list(queries)
        k = min(k, len(self._doc_ids))
        rankings: dict[str, Ranking] = {}
        if query_list and k > 0:
            vectors = self.encode([q.text for q in query_list], progress=False)
            scores, docs = self._faiss.search(vectors, k)
            ids = self._doc_ids
            for row, query in enumerate(query_list):
                valid = docs[row] >= 0
                rankings[query.id] = Ranking(
                    tuple(ids[j] for j in docs[row][valid].tolist()), tuple(scores[row][valid].tolist())
                )
        for query in query_list:
            rankings.setdefault(query.id, Ranking())
        return Run(MappingProxyType(rankings), self.name)

    def _write_files(self, folder: Path) -> None:

        save_file({"embeddings": self.embeddings}, str(folder / "embeddings.safetensors"))
        (folder / "doc_ids.json").write_text(json.dumps(self._doc_ids))

    def _read_files(self, folder: Path, manifest: dict[str, Any]) -> None:

        self.embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
        self._doc_ids = json.loads((folder / "doc_ids.json").read_text())
        if len(self._doc_ids) != self.embeddings.shape[0]:
            raise CorruptIndexError(f"{len(self._doc_ids)} doc ids but {self.embeddings.shape[0]} vectors", path=folder)
        self._faiss = exact_ip_index(self.embeddings)
