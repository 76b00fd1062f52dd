"""Attention pooling of passage vectors into one document vector, and its contrastive training.

`AttentionPooling` is a softmax over a document's passages (a one-layer scorer `v · tanh(W p + b)`) added to their
mean and L2-normalised. It starts with v = 0, that is exactly mean pooling, so training can only move away from
mean pooling where the train queries reward it. `train_attention_pooling` fits it with InfoNCE over every document
of the map at once, on frozen query and passage vectors, so it takes seconds on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from routerank.data.documents import DocumentMap
from routerank.data.types import Qrels, Query
from routerank.errors import RouterankError, UnknownIdError
from routerank.fsutil import atomic_dir

POOLING_WEIGHTS, POOLING_META = "pooling.safetensors", "pooling.json"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit L2 norm, as float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


@dataclass(frozen=True, eq=False)
class AttentionPooling:
    """A document vector from its passage vectors P (n x d): normalise(mean(P) + sum_i a_i P_i), where
    a = softmax(tanh(P W + b) v). With v = 0 the weights are uniform and the result is mean pooling, which is where
    `initial` starts, so training can only move away from mean pooling where the loss pays for it."""

    weight: np.ndarray  # d x h
    bias: np.ndarray  # h
    vector: np.ndarray  # h

    @classmethod
    def initial(cls, dim: int, hidden: int = 64, seed: int = 0) -> AttentionPooling:
        """Mean pooling in this form: W seeded at scale 1/sqrt(d) (so v gets a useful gradient), b = 0, v = 0."""
        rng = np.random.default_rng(seed)
        weight = rng.normal(0.0, 1.0 / np.sqrt(dim), size=(dim, hidden)).astype(np.float32)
        return cls(weight, np.zeros(hidden, np.float32), np.zeros(hidden, np.float32))

    @property
    def dim(self) -> int:
        """The passage vector size d."""
        return int(self.weight.shape[0])

    @property
    def digest(self) -> str:
        """16 hex digits of a sha256 over the weights' shapes and float32 bytes: part of an index's cache key."""
        h = hashlib.sha256()
        for array in (self.weight, self.bias, self.vector):
            array = np.ascontiguousarray(array, dtype=np.float32)
            h.update(repr(array.shape).encode())
            h.update(array.tobytes())
        return h.hexdigest()[:16]

    def attention(self, passages: np.ndarray) -> np.ndarray:
        """The softmax weight of each passage (n rows of P), summing to 1."""
        logits = np.tanh(passages @ self.weight + self.bias) @ self.vector
        logits = np.exp(logits - logits.max())
        return (logits / logits.sum()).astype(np.float32)

    def pool(self, passages: np.ndarray) -> np.ndarray:
        """The normalised document vector of one document's passage vectors (n x d)."""
        passages = np.asarray(passages, dtype=np.float32)
        return normalise(passages.mean(axis=0) + self.attention(passages) @ passages)

    def write(self, folder: Path) -> None:
        """Write the weights and their description into an existing folder (inside an atomic write)."""
        arrays = {"weight": self.weight, "bias": self.bias, "vector": self.vector}
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(folder / POOLING_WEIGHTS)
        )
        meta = {"dim": self.dim, "hidden": int(self.weight.shape[1]), "digest": self.digest}
        (folder / POOLING_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    def save(self, folder: str | Path) -> Path:
        """Save to `folder` atomically (safetensors weights and a small json); the folder."""
        with atomic_dir(folder) as tmp:
            self.write(tmp)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> AttentionPooling:
        """The pooling saved in `folder`; files that are missing or disagree with their recorded digest raise."""
        folder = Path(folder)
        if not (folder / POOLING_WEIGHTS).exists() or not (folder / POOLING_META).exists():
            raise RouterankError(
                f"no attention pooling here (needs {POOLING_WEIGHTS} and {POOLING_META})",
                path=folder,
                fix="save one with AttentionPooling.save() or train_attention_pooling(state_dir=...)",
            )
        arrays = load_file(str(folder / POOLING_WEIGHTS))
        pooling = cls(arrays["weight"], arrays["bias"], arrays["vector"])
        if json.loads((folder / POOLING_META).read_text()).get("digest") != pooling.digest:
            raise RouterankError("pooling weights do not match their recorded digest", path=folder, fix="retrain it")
        return pooling


@dataclass(frozen=True, eq=False)
class FrozenVectors:
    """What pooling training reads: normalised passage vectors (one row per id) and query vectors by query id."""

    passage_ids: tuple[str, ...]
    passages: np.ndarray
    queries: Mapping[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class _Problem:
    """The training set as arrays: padded passages per document, and a positives mask per query."""

    passages: np.ndarray  # documents x longest x d, zero-padded
    mask: np.ndarray  # documents x longest, True where a passage is
    queries: np.ndarray  # queries x d
    positives: np.ndarray  # queries x documents, True where relevant


def _problem(vectors: FrozenVectors, documents: DocumentMap, queries: Sequence[Query], qrels: Qrels) -> _Problem:
    rows = {pid: i for i, pid in enumerate(vectors.passage_ids)}
    doc_ids = sorted(documents.document_ids)
    column = {doc: j for j, doc in enumerate(doc_ids)}
    longest = max(len(documents.passages(doc)) for doc in doc_ids)
    padded = np.zeros((len(doc_ids), longest, vectors.passages.shape[1]), dtype=np.float32)
    mask = np.zeros((len(doc_ids), longest), dtype=bool)
    for j, doc in enumerate(doc_ids):
        group = [rows[p] for p in documents.passages(doc)]
        padded[j, : len(group)], mask[j, : len(group)] = vectors.passages[group], True
    kept = [q for q in queries if q.id in vectors.queries and any(d in column for d in qrels.relevant(q.id))]
    positives = np.zeros((len(kept), len(doc_ids)), dtype=bool)
    for i, query in enumerate(kept):
        positives[i, [column[d] for d in qrels.relevant(query.id) if d in column]] = True
    stacked = np.stack([vectors.queries[q.id] for q in kept]) if kept else np.zeros((0, padded.shape[2]), np.float32)
    return _Problem(padded, mask, normalise(stacked), positives)


def train_attention_pooling(
    retriever_or_vectors: Any,
    documents: DocumentMap,
    queries: Sequence[Query],
    qrels: Qrels,
    dev_queries: Sequence[Query] | None = None,
    dev_qrels: Qrels | None = None,
    epochs: int = 20,
    lr: float = 5e-3,
    temperature: float = 0.05,
    seed: int = 0,
    hidden: int = 64,
    batch_size: int = 64,
    state_dir: str | Path | None = None,
) -> tuple[AttentionPooling, dict[str, Any]]:
    """Fit `AttentionPooling` by InfoNCE over ALL documents of the map: each step pools every document and each
    query in the batch takes a softmax over all of them, its relevant documents (document-level `qrels`) the
    positives. Query and passage vectors are frozen (a `DocumentRetriever`'s, or given as `FrozenVectors`).

    epochs: passes over the train queries in seeded order, `batch_size` queries a step, Adam at `lr`.
    temperature: the softmax temperature of the cosines (0.05, the usual contrastive one). Epoch 0 is the
    initial (mean) pooling; with dev queries the epoch of lowest dev loss is kept, else the last. The metrics hold
    train and dev loss per epoch, the best epoch and the time taken. `state_dir`: where the pooling and
    metrics.json are written atomically."""
    # heavy: torch loads only when a pooling is trained
    import torch

    started = time.perf_counter()
    if not isinstance(retriever_or_vectors, FrozenVectors):  # a DocumentRetriever: its frozen vectors
        retriever_or_vectors = retriever_or_vectors.frozen_vectors([*queries, *(dev_queries or ())])
    train = _problem(retriever_or_vectors, documents, queries, qrels)
    if len(train.queries) == 0:
        raise UnknownIdError("no train query has a relevant document in the map", fix="pass document-level qrels")
    dev = _problem(retriever_or_vectors, documents, dev_queries, dev_qrels) if dev_queries and dev_qrels else None
    initial = AttentionPooling.initial(train.passages.shape[2], hidden, seed)
    weight, bias, vector = (
        torch.nn.Parameter(torch.from_numpy(a.copy())) for a in (initial.weight, initial.bias, initial.vector)
    )
    passages, mask = torch.from_numpy(train.passages), torch.from_numpy(train.mask)
    mean = passages.sum(1) / mask.sum(1, keepdim=True)

    def pooled() -> torch.Tensor:
        logits = (torch.tanh(passages @ weight + bias) @ vector).masked_fill(~mask, float("-inf"))
        return torch.nn.functional.normalize(mean + (logits.softmax(1).unsqueeze(2) * passages).sum(1), dim=1)

    def loss(problem: _Problem, rows: np.ndarray | slice = slice(None)) -> torch.Tensor:
        logits = torch.from_numpy(problem.queries[rows]) @ pooled().T / temperature
        positive = logits.masked_fill(~torch.from_numpy(problem.positives[rows]), float("-inf"))
        return (logits.logsumexp(1) - positive.logsumexp(1)).mean()

    def snapshot() -> AttentionPooling:
        return AttentionPooling(*(p.detach().numpy().copy() for p in (weight, bias, vector)))

    def measure() -> None:
        with torch.no_grad():
            history["train_loss"].append(float(loss(train)))
            if dev is not None:
                history["dev_loss"].append(float(loss(dev)))

    history: dict[str, list[float]] = {"train_loss": [], "dev_loss": []}
    optimiser = torch.optim.Adam([weight, bias, vector], lr=lr)
    rng = np.random.default_rng(seed)
    measure()
    best, best_epoch = snapshot(), 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train.queries))
        for start in range(0, len(order), batch_size):
            optimiser.zero_grad()
            loss(train, order[start : start + batch_size]).backward()
            optimiser.step()
        measure()
        if dev is None or history["dev_loss"][epoch] < history["dev_loss"][best_epoch]:
            best, best_epoch = snapshot(), epoch
    metrics = {
        "train_loss": history["train_loss"],
        "dev_loss": history["dev_loss"] if dev is not None else None,
        "best_epoch": best_epoch,
        "train_queries": len(train.queries),
        "dev_queries": 0 if dev is None else len(dev.queries),
        "documents": int(train.passages.shape[0]),
        "seconds": round(time.perf_counter() - started, 3),
        "digest": best.digest,
    }
    if state_dir is not None:
        with atomic_dir(state_dir) as tmp:
            best.write(tmp)
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return best, metrics
