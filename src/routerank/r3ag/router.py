"""R3AG: per query, route to the retriever of a pool that serves it best, or to none (R0).

The router learns two capability spaces from routing labels (`routerank.r3ag.labels`): retrieval *quality* and
generation *utility*.

    f(q)       frozen query features (MiniLM, 384-d), computed once and never trained
    h(q)       head(f(q)): a small trainable MLP ending in LayerNorm, `dim` wide
    t_r        one learned token per retriever, in the same `dim` space as h(q)
    E_Q, E_U   two shared encoders (MLPs to `space_dim`), each mapping queries and retriever tokens alike:
               q_Q = E_Q(h(q)), r_Q = E_Q(t_r) span the quality space; q_U = E_U(h(q)), r_U = E_U(t_r) the utility one
    fusion     per query and retriever, torch MultiheadAttention with q_U as the attention query over the two
               keys/values [r_Q, r_U]: z_qr weighs the retriever's two capabilities by what this query needs
    routing    argmax_r cos(q_U, z_qr); a decision's probabilities are softmax(cos / temperature). With an
               `abstain_margin` m > 0, an abstaining member (R0) wins only when its cosine beats every retrieving
               member's by more than m, otherwise the best retrieving member serves: abstention made harder on
               purpose (a calibration knob chosen on held-out train queries; 0 is the plain argmax)

Training lives in `routerank.r3ag.trainer` (two supervised-contrastive stages through the shared GroupTrainer). A
retriever added after training gets a fresh token here (`add_retriever`) and the trainer learns that token alone,
so the encoders, the other tokens and every decision that the new member does not win stay as they were.

Ablations (`R3AGConfig`): quality=False drops the quality space (z = r_U, no stage 1); utility=False drops the
utility space (routing by cos(q_Q, r_Q); stage 2 still trains on utility labels, in that space); fusion="mean"
uses (r_Q + r_U) / 2 instead of attention.

A saved router is a folder: `model.safetensors` and `r3ag.json` (retriever names, config, and the pool config the
router was trained for, so `r3ag:<folder>` in a pipeline rebuilds the same pool). Features are pluggable (training
precomputes them; tests may pass their own); by default the encoder that `config.features` names loads on first use.
torch loads when a router is built, not when this module is imported, so the `r3ag:` pipeline spec, the CLI and
`import routerank` stay light. `R3AGNet` (an `nn.Module`) is therefore defined on first use (`net_class()`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir
from routerank.r3ag.pool import PoolConfig, PoolMember
from routerank.retrieve.base import as_query_list
from routerank.retrieve.dense import DenseRetriever
from routerank.route import RouteDecision

if TYPE_CHECKING:
    import torch
    from torch import nn

Features = Callable[[list[str]], np.ndarray]
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "r3ag.json", "model.safetensors"
FUSIONS = ("attention", "mean")


@dataclass(frozen=True)
class R3AGConfig:
    """The router's shape; how it trains is a `TrainerConfig` (routerank.r3ag.trainer).

    features: model spec of the frozen query encoder ("minilm"). feature_dim: its width (384 for MiniLM).
    hidden: width of the trainable head's hidden layer. dim: width of the head's output and of retriever tokens.
    space_dim: width of the quality and utility spaces. heads: attention heads of the fusion (divides space_dim).
    dropout: in the head, while training (few label queries overfit easily).
    quality / utility: keep that space; False is the ablation without it. fusion: "attention", or "mean" (ablation).
    temperature: of the softmax over cosines that gives a decision's probabilities (not used in training).
    abstain_margin: how far an abstaining member's cosine must lie above the best retrieving member's for the router
        to abstain (0: plain argmax). A decision setting, not used in training; needs the router's `abstain` names.
    default_member / switch_margin: a retrieving member (e.g. the best one on the training labels) that serves every
        query unless another retrieving member's cosine beats it by more than `switch_margin` (0: plain argmax;
        2: always the default, bar abstention). A decision setting too: where labels mostly tie, the router leaves
        the strong default only when it is sure.
    seed: initialises the weights.
    """

    features: str = "minilm"
    feature_dim: int = 384
    hidden: int = 256
    dim: int = 128
    space_dim: int = 64
    heads: int = 4
    dropout: float = 0.1
    quality: bool = True
    utility: bool = True
    fusion: str = "attention"
    temperature: float = 0.1
    abstain_margin: float = 0.0
    default_member: str = ""
    switch_margin: float = 0.0
    seed: int = 13

    def __post_init__(self) -> None:
        if not (self.quality or self.utility):
            raise SpecError("R3AG needs the quality space, the utility space, or both")
        if self.fusion not in FUSIONS:
            raise SpecError(f"unknown fusion {self.fusion!r}", fix=f"one of {FUSIONS}")
        if self.space_dim % self.heads:
            raise SpecError(f"space_dim {self.space_dim} is not a multiple of heads {self.heads}")
        if min(self.feature_dim, self.hidden, self.dim, self.space_dim) < 1 or self.temperature <= 0:
            raise SpecError("R3AG widths and the temperature must be positive")
        if not 0 <= self.abstain_margin <= 2:
            raise SpecError(
                f"abstain_margin {self.abstain_margin} is outside [0, 2]", fix="cosines differ by at most 2; 0 = argmax"
            )
        if not 0 <= self.switch_margin <= 2:
            raise SpecError(
                f"switch_margin {self.switch_margin} is outside [0, 2]", fix="cosines differ by at most 2; 0 = argmax"
            )
        if self.switch_margin > 0 and not self.default_member:
            raise SpecError("switch_margin needs a default_member to switch from", fix="e.g. default_member='bm25'")


def encoder_features(spec: str) -> Features:
    """Frozen, normalised sentence-transformers embeddings of query texts; the model loads on the first call."""
    encoder = DenseRetriever(model=spec, progress=False)
    return lambda texts: encoder.encode(list(texts), progress=False)


def _encoder(config: R3AGConfig) -> nn.Sequential:
    from torch import nn  # heavy: torch loads only when a router is built

    return nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, config.space_dim))


def _cosine(queries: torch.Tensor, retrievers: torch.Tensor) -> torch.Tensor:
    """[Q, e] x [R, e] -> [Q, R], or [Q, e] x [Q, R, e] -> [Q, R]."""
    from torch import nn  # heavy: torch loads only when a router is built

    if retrievers.dim() == 2:
        return nn.functional.normalize(queries, dim=-1) @ nn.functional.normalize(retrievers, dim=-1).T
    return nn.functional.cosine_similarity(queries[:, None, :], retrievers, dim=-1)


@functools.cache
def net_class() -> type[nn.Module]:
    """The `R3AGNet` class. It subclasses torch's `nn.Module`, so it is defined here, on first use, and torch loads
    only when a router is built; `routerank.r3ag.router.R3AGNet` is this class (and pickles as that name)."""
    import torch  # heavy: torch loads only when a router is built
    from torch import nn

    class R3AGNet(nn.Module):
        """The trainable part of R3AG (see the module docstring). config: the shape; retrievers: how many tokens."""

        def __init__(self, config: R3AGConfig, retrievers: int):
            super().__init__()
            self.config = config
            self.head = nn.Sequential(
                nn.Linear(config.feature_dim, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.dim),
                nn.LayerNorm(config.dim),
            )
            self.tokens = nn.ParameterList([nn.Parameter(torch.randn(config.dim)) for _ in range(retrievers)])
            self.quality = _encoder(config) if config.quality else None
            self.utility = _encoder(config) if config.utility else None
            both = config.quality and config.utility
            self.attention = (
                nn.MultiheadAttention(config.space_dim, config.heads, batch_first=True)
                if both and config.fusion == "attention"
                else None
            )

        def _spaces(self) -> dict[str, nn.Module]:
            return {
                name: enc for name, enc in (("quality", self.quality), ("utility", self.utility)) if enc is not None
            }

        def embed_queries(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
            hidden = self.head(features)
            return {name: enc(hidden) for name, enc in self._spaces().items()}

        def embed_retrievers(self) -> dict[str, torch.Tensor]:
            tokens = torch.stack(list(self.tokens))
            return {name: enc(tokens) for name, enc in self._spaces().items()}

        def quality_scores(self, features: torch.Tensor) -> torch.Tensor:
            """[Q, R] cosines in the quality space (what stage 1 trains)."""
            if self.quality is None:
                raise RouterankError("this router has no quality space (the quality=False ablation)")
            return _cosine(self.embed_queries(features)["quality"], self.embed_retrievers()["quality"])

        def fuse(self, anchor: torch.Tensor, retrievers: dict[str, torch.Tensor]) -> torch.Tensor:
            """[Q, R, e]: each retriever's fused embedding for each query (attention, mean, or the one space)."""
            n_queries = anchor.shape[0]
            if len(retrievers) == 1:
                [only] = retrievers.values()
                return only.unsqueeze(0).expand(n_queries, *only.shape)
            quality, utility = retrievers["quality"], retrievers["utility"]
            if self.attention is None:
                return ((quality + utility) / 2).unsqueeze(0).expand(n_queries, *quality.shape)
            n_retrievers, width = quality.shape
            keys = torch.stack([quality, utility], dim=1)  # [R, 2, e]
            keys = keys.unsqueeze(0).expand(n_queries, -1, -1, -1).reshape(n_queries * n_retrievers, 2, width)
            query = anchor.unsqueeze(1).expand(-1, n_retrievers, -1).reshape(n_queries * n_retrievers, 1, width)
            fused, _ = self.attention(query, keys, keys, need_weights=False)
            return fused.reshape(n_queries, n_retrievers, width)

        def route_scores(self, features: torch.Tensor) -> torch.Tensor:
            """[Q, R] routing cosines: cos(q_U, z_qr) (cos(q_Q, r_Q) without the utility space)."""
            queries, retrievers = self.embed_queries(features), self.embed_retrievers()
            anchor = queries["utility"] if self.utility is not None else queries["quality"]
            return _cosine(anchor, self.fuse(anchor, retrievers))

    R3AGNet.__module__, R3AGNet.__qualname__ = __name__, "R3AGNet"
    return R3AGNet


def __getattr__(name: str) -> Any:
    if name == "R3AGNet":
        return net_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class R3AGRouter:
    """Routes each query to one member of a retriever pool (R0 included) with an `R3AGNet`.

    retrievers: the pool's member names, one learned token each, in the labels' column order.
    config: the network's shape (R3AGConfig). features: texts -> [n, config.feature_dim] frozen features; None
    loads the encoder `config.features` names on first use. pool: the PoolConfig these retrievers come from,
    recorded in the saved folder so `r3ag:<folder>` can rebuild it. name: shown in runs and reports.
    abstain: the members that retrieve nothing (R0), which `config.abstain_margin` holds back; default: the pool's.
    """

    def __init__(
        self,
        retrievers: Sequence[str],
        config: R3AGConfig | None = None,
        *,
        features: Features | None = None,
        pool: PoolConfig | None = None,
        name: str = "r3ag",
        abstain: Sequence[str] | None = None,
    ):
        retrievers = list(retrievers)
        if len(retrievers) < 2 or len(set(retrievers)) != len(retrievers):
            raise RouterankError(f"a router needs at least two distinct retrievers, got {retrievers}")
        if pool is not None and pool.names != retrievers:
            raise RouterankError(f"router retrievers {retrievers} differ from its pool's members {pool.names}")
        self.retrievers, self.config, self.pool, self.name = retrievers, config or R3AGConfig(), pool, name
        self.abstain = list(abstain if abstain is not None else (pool.abstain if pool is not None else ()))
        unknown = [a for a in self.abstain if a not in retrievers]
        if unknown:
            raise RouterankError(f"abstaining members {unknown} are not among the retrievers {retrievers}")
        default = self.config.default_member
        if default and (default not in retrievers or default in self.abstain):
            raise RouterankError(
                f"default_member {default!r} is not a retrieving member of {retrievers}",
                fix="name a member that retrieves (not R0), or leave default_member empty",
            )
        self._features = features
        import torch  # heavy: torch loads only when a router is built

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.net = net_class()(self.config, len(retrievers))
        self.net.eval()

    @property
    def labels(self) -> list[str]:
        """The names this router may choose (the Router protocol)."""
        return list(self.retrievers)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The frozen features of query texts, checked against the network's input width."""
        if self._features is None:
            self._features = encoder_features(self.config.features)
        features = np.asarray(self._features(list(texts)), dtype=np.float32)
        if features.ndim != 2 or features.shape != (len(texts), self.config.feature_dim):
            raise RouterankError(
                f"query features have shape {features.shape}, expected ({len(texts)}, {self.config.feature_dim})",
                fix="set R3AGConfig.feature_dim to the encoder's width",
            )
        return features

    def scores(self, texts: Sequence[str] = (), features: np.ndarray | None = None, batch: int = 1024) -> np.ndarray:
        """[Q, R] routing cosines for query texts (or their precomputed features)."""
        import torch  # heavy: torch loads only when a router is built

        features = self.encode(texts) if features is None else np.asarray(features, dtype=np.float32)
        self.net.eval()
        parts = []
        with torch.inference_mode():
            for start in range(0, len(features), batch):
                parts.append(self.net.route_scores(torch.from_numpy(features[start : start + batch])).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.retrievers)), dtype=np.float32)

    def route(self, queries, features: np.ndarray | None = None) -> list[RouteDecision]:
        """One decision per query: the member with the highest routing cosine, with softmax probabilities."""
        query_list = as_query_list(queries)
        cosines = self.scores([q.text for q in query_list], features)
        logits = cosines / self.config.temperature
        probs = np.exp(logits - logits.max(1, keepdims=True)) if len(logits) else logits
        probs = probs / probs.sum(1, keepdims=True) if len(probs) else probs
        out = []
        for query, row, best in zip(query_list, probs, self.choose(cosines), strict=True):
            out.append(
                RouteDecision(
                    query.id,
                    self.retrievers[best],
                    float(row[best]),
                    dict(zip(self.retrievers, row.tolist(), strict=True)),
                )
            )
        return out

    def choose(self, cosines: np.ndarray, margin: float | None = None, switch: float | None = None) -> np.ndarray:
        """Each row's chosen column: the argmax, except that an abstaining member needs `margin` (default
        `config.abstain_margin`) over the best retrieving member, and a retrieving member other than
        `config.default_member` needs `switch` (default `config.switch_margin`) over the default (ties go to the
        earlier column, as argmax does)."""
        cosines = np.asarray(cosines)
        best = cosines.argmax(1) if len(cosines) else np.zeros(0, dtype=int)
        margin = self.config.abstain_margin if margin is None else margin
        switch = self.config.switch_margin if switch is None else switch
        if margin > 0 and not self.abstain:
            raise RouterankError(
                f"abstain_margin {margin} needs to know which members abstain; this router names none",
                fix="R3AGRouter(..., abstain=['R0']), or build it with the pool",
            )
        if switch > 0 and not self.config.default_member:
            raise RouterankError(f"switch margin {switch} needs config.default_member", fix="set default_member")
        retrieving = [i for i, name in enumerate(self.retrievers) if name not in self.abstain]
        if not retrieving or not len(cosines):
            return best
        rows = np.arange(len(cosines))
        fallback = np.asarray(retrieving)[cosines[:, retrieving].argmax(1)]
        if margin > 0:
            lead = cosines[rows, best] - cosines[rows, fallback]
            held_back = np.isin(best, [self.retrievers.index(a) for a in self.abstain]) & (lead <= margin)
            best = np.where(held_back, fallback, best)
        if switch > 0:
            default = self.retrievers.index(self.config.default_member)
            switching = np.isin(best, retrieving) & (best != default)
            stay = switching & (cosines[rows, best] - cosines[rows, default] <= switch)
            best = np.where(stay, default, best)
        return best

    def add_retriever(self, name: str, member: PoolMember | None = None) -> nn.Parameter:
        """Make room for a new pool member: a fresh token (the mean of the others), nothing else changes. The token
        is untrained; `routerank.r3ag.trainer.R3AGTrainer.add_retriever` learns it from the member's labels.
        member: how the pool builds it (required to use the router in a pipeline when the router has a pool)."""
        if name in self.retrievers:
            raise RouterankError(f"the router already routes to {name!r}")
        if member is not None and member.name != name:
            raise RouterankError(f"pool member {member.name!r} is not named {name!r}")
        if self.pool is not None:
            if member is None:
                raise RouterankError(
                    f"this router records a pool; say how to build {name!r}",
                    fix=f'add_retriever({name!r}, PoolMember({name!r}, spec="bm25:k1=0.9"))',
                )
            self.pool = self.pool.with_member(member)
        import torch  # heavy: torch loads only when a router is built
        from torch import nn

        with torch.no_grad():
            token = nn.Parameter(torch.stack(list(self.net.tokens)).mean(0).clone())
        self.net.tokens.append(token)
        self.retrievers.append(name)
        return token

    def save(self, path: str | Path) -> Path:
        """Write the router folder (weights, and `r3ag.json` with the retriever names, config, pool config and
        abstaining members), replacing any there in one swap; returns the path."""
        from safetensors.torch import save_file  # heavy: imports torch

        path = Path(path)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_dir(path) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE))
            record = {
                "format": FORMAT_VERSION,
                "name": self.name,
                "retrievers": self.retrievers,
                "config": asdict(self.config),
                "pool": self.pool.to_json() if self.pool is not None else None,
                "pool_source": self.pool.source if self.pool is not None else "",
                "abstain": self.abstain,
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, features: Features | None = None) -> R3AGRouter:
        """A router that `save` wrote; `features` as in the constructor (None: the encoder its config names, loaded
        on first use)."""
        from safetensors.torch import load_file  # heavy: imports torch

        path = Path(path).expanduser()
        if not (path / CONFIG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
            raise SpecError(
                f"{path} is not an R3AG router folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})",
                fix="train one with routerank.r3ag.trainer.R3AGTrainer, then router.save(folder)",
            )
        record = json.loads((path / CONFIG_FILE).read_text())
        if record.get("format") != FORMAT_VERSION:
            raise SpecError(f"router format {record.get('format')} != {FORMAT_VERSION}", path=path)
        pool = PoolConfig.from_json(record["pool"], record.get("pool_source", "")) if record.get("pool") else None
        router = cls(
            record["retrievers"],
            R3AGConfig(**record["config"]),
            features=features,
            pool=pool,
            name=record["name"],
            abstain=record.get("abstain"),
        )
        router.net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        router.net.eval()
        return router
