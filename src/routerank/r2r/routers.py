"""Expert routers for R2R: which domain expert should judge this query?

The Latent Semantic Router reads the frozen reranker backbone's last-token hidden state of the query,
h_q, and predicts p(d|q) = softmax(W h_q + b). `hidden > 0` gives the MLP variant. Baselines share the
interface: the same softmax head on MiniLM embeddings, the nearest domain centroid, random, and an oracle.
Below `threshold` confidence a query goes to the generalist (the bare backbone).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from routerank.errors import RouterankError
from routerank.fsutil import atomic_dir
from routerank.retrieve.base import as_query_list
from routerank.route import GENERALIST, RouteDecision

Features = Callable[[list[str]], np.ndarray]


def _texts_and_ids(queries) -> tuple[list[str], list[str]]:
    query_list = as_query_list(queries)
    return [q.text for q in query_list], [q.id for q in query_list]


class _ProbabilisticRouter:
    name = "router"
    labels: list[str]
    threshold: float = 0.0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def route(self, queries) -> list[RouteDecision]:
        texts, ids = _texts_and_ids(queries)
        probs = self.predict_proba(texts) if texts else np.zeros((0, len(self.labels)))
        out = []
        for qid, row in zip(ids, probs, strict=True):
            best = int(row.argmax())
            choice = self.labels[best] if row[best] >= self.threshold else GENERALIST
            out.append(RouteDecision(qid, choice, float(row[best]), dict(zip(self.labels, row.tolist(), strict=True))))
        return out


class SoftmaxRouter(_ProbabilisticRouter):
    """p(d|q) = softmax(W f(q) + b) over standardized features f; an MLP when `hidden` > 0."""

    def __init__(
        self,
        labels: Sequence[str],
        features: Features,
        *,
        hidden: int = 0,
        threshold: float = 0.0,
        name: str = "latent",
    ):
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise RouterankError(f"a router needs at least two distinct labels, got {list(labels)}")
        self.labels, self.features, self.hidden = list(labels), features, hidden
        self.threshold, self.name = threshold, name
        self._net = None
        self._mean = self._std = None

    def _build(self, dim: int):
        # heavy: torch loads only when a model runs
        import torch

        if self.hidden:
            return torch.nn.Sequential(
                torch.nn.Linear(dim, self.hidden), torch.nn.GELU(), torch.nn.Linear(self.hidden, len(self.labels))
            )
        return torch.nn.Linear(dim, len(self.labels))

    def fit(
        self,
        texts: list[str],
        labels: Sequence[str],
        *,
        epochs: int = 300,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        seed: int = 0,
        features: np.ndarray | None = None,
    ) -> SoftmaxRouter:
        """Train a fresh head on standardized features with full-batch AdamW on cross-entropy (`features`: precomputed
        rows for `texts`). Returns the router."""
        # heavy: torch loads only when a model runs
        import torch

        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise RouterankError(f"training labels {unknown} are not router labels {self.labels}")
        x = self.features(texts) if features is None else features
        self._mean, self._std = x.mean(0), x.std(0) + 1e-6
        torch.manual_seed(seed)
        self._net = self._build(x.shape[1])
        inputs = torch.tensor((x - self._mean) / self._std, dtype=torch.float32)
        targets = torch.tensor([self.labels.index(label) for label in labels])
        optimizer = torch.optim.AdamW(self._net.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self._net(inputs), targets)
            loss.backward()
            optimizer.step()
        self._net.eval()
        return self

    def predict_proba(self, texts: list[str], features: np.ndarray | None = None) -> np.ndarray:
        """p(d|q) per text, one row per text in label order; `features`: precomputed rows for `texts`."""
        # heavy: torch loads only when a model runs
        import torch

        if self._net is None:
            raise RouterankError("router is not trained: call fit() or load()")
        x = self.features(texts) if features is None else features
        with torch.inference_mode():
            logits = self._net(torch.tensor((x - self._mean) / self._std, dtype=torch.float32))
        return torch.softmax(logits, -1).numpy()

    def save(self, path: str | Path) -> None:
        """Write the trained head, its standardization, labels and settings to a folder, replacing it in one swap."""
        # heavy: safetensors.torch imports torch
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in self._net.state_dict().items()}
        with atomic_dir(path) as tmp:
            save_file(state, str(tmp / "router.safetensors"))
            np.save(tmp / "standardize.npy", np.stack([self._mean, self._std]), allow_pickle=False)
            (tmp / "router.json").write_text(
                json.dumps(
                    {"labels": self.labels, "hidden": self.hidden, "threshold": self.threshold, "name": self.name},
                    indent=2,
                )
            )

    @classmethod
    def load(cls, path: str | Path, features: Features) -> SoftmaxRouter:
        """A router saved by `save`, reading queries with `features` (the function it was trained on)."""
        # heavy: safetensors.torch imports torch
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "router.json").exists():
            raise RouterankError("not a router folder (no router.json)", path=path)
        meta = json.loads((path / "router.json").read_text())
        router = cls(meta["labels"], features, hidden=meta["hidden"], threshold=meta["threshold"], name=meta["name"])
        router._mean, router._std = np.load(path / "standardize.npy", allow_pickle=False)
        router._net = router._build(router._mean.shape[0])
        router._net.load_state_dict(load_file(str(path / "router.safetensors")))
        router._net.eval()
        return router


class CentroidRouter(_ProbabilisticRouter):
    """Nearest domain centroid by cosine; probabilities are a softmax over cosines / temperature."""

    def __init__(
        self,
        labels: Sequence[str],
        features: Features,
        *,
        temperature: float = 0.05,
        threshold: float = 0.0,
        name: str = "centroid",
    ):
        self.labels, self.features, self.temperature = list(labels), features, temperature
        self.threshold, self.name = threshold, name
        self._centroids = self._seen = None

    def fit(self, texts: list[str], labels: Sequence[str], features: np.ndarray | None = None) -> CentroidRouter:
        """Each label's centroid of its texts' unit-length features (`features`: precomputed rows for `texts`); a label
        without texts is never chosen. Returns the router."""
        x = self.features(texts) if features is None else features
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)
        labels = np.asarray(labels)
        self._seen = np.array([bool((labels == label).any()) for label in self.labels])  # unseen: never chosen
        self._centroids = np.stack(
            [x[labels == label].mean(0) if (labels == label).any() else np.zeros(x.shape[1]) for label in self.labels]
        )
        self._centroids /= np.linalg.norm(self._centroids, axis=1, keepdims=True) + 1e-9
        return self

    def predict_proba(self, texts: list[str], features: np.ndarray | None = None) -> np.ndarray:
        """Per text, a softmax over its cosine to each centroid divided by the temperature (0 for labels unseen in
        training); `features`: precomputed rows for `texts`."""
        x = self.features(texts) if features is None else features
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)
        logits = x @ self._centroids.T / self.temperature
        logits[:, ~self._seen] = -np.inf
        logits -= logits.max(1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(1, keepdims=True)


class RandomRouter(_ProbabilisticRouter):
    """A seeded random domain per query: the floor for routing."""

    def __init__(self, labels: Sequence[str], seed: int = 0):
        self.labels, self.name, self._rng = list(labels), "random", np.random.default_rng(seed)

    def predict_proba(self, texts: list[str], features=None) -> np.ndarray:
        """Per text, almost all probability on one domain drawn at random; `features` is ignored."""
        probs = np.full((len(texts), len(self.labels)), 1e-3)
        probs[np.arange(len(texts)), self._rng.integers(0, len(self.labels), len(texts))] = 1.0
        return probs / probs.sum(1, keepdims=True)


class OracleRouter(_ProbabilisticRouter):
    """Knows each query's true domain: the upper bound for routing."""

    def __init__(self, labels: Sequence[str], truth: Mapping[str, str]):
        self.labels, self.truth, self.name = list(labels), dict(truth), "oracle"

    def route(self, queries) -> list[RouteDecision]:
        """Each query's true domain with confidence 1; a query without one is refused."""
        _, ids = _texts_and_ids(queries)
        missing = [q for q in ids if q not in self.truth]
        if missing:
            raise RouterankError(f"oracle has no domain for {len(missing)} queries, e.g. {missing[:3]}")
        return [
            RouteDecision(q, self.truth[q], 1.0, {label: float(label == self.truth[q]) for label in self.labels})
            for q in ids
        ]


def calibrate_threshold(in_domain: np.ndarray, out_of_domain: np.ndarray) -> float:
    """The confidence cut that best separates in-domain queries (kept) from out-of-domain ones (to the
    generalist), by balanced accuracy over the max-probabilities of each set. Choose it on dev data."""
    top_in, top_out = in_domain.max(1), out_of_domain.max(1)
    candidates = np.unique(np.concatenate([top_in, top_out, [0.0]]))
    best, best_score = 0.0, -1.0
    for cut in candidates:
        score = 0.5 * ((top_in >= cut).mean() + (top_out < cut).mean())
        if score > best_score:
            best, best_score = float(cut), score
    return best
