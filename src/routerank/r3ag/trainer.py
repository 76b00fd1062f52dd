"""Training R3AG through the one GroupTrainer: two supervised-contrastive stages, and retrievers added later.

Groups come from label rows (`routerank.r3ag.labels`). For one query and one label dimension, the positives are
the members whose label reaches the `positives`-th best value (ties included) and beats the row's worst; the
negatives are the members more than `margin` below the worst positive (all of them, or only the `negatives`
worst). Each (query, positive) pair becomes one `RouteGroup`, the positive against those negatives; a row where
every member ties teaches nothing and gives no group. The logit row of a group holds the cosines of its stage's
space, padded with -inf where a query has fewer negatives than the widest group of its batch, and the trainer's
InfoNCE divides them by `TrainerConfig.temperature`: supervised contrastive learning, the temperature a setting.

    stage 1   quality labels, cos(q_Q, r_Q) in the quality space       (none in the quality=False ablation)
    stage 2   utility labels, the routing score cos(q_U, z_qr)

Both stages train every parameter; between them the trainer resets the optimizer, and the weights carry over.
`R3AGTrainer.add_retriever` freezes the network, appends a token for the new member and runs both stages on the
groups that involve it (as positive or negative), so only that token moves.

Why the shared GroupTrainer fits: a RouteGroup is a TrainGroup (query id and text, a positive, negatives) whose
"documents" are pool member names, plus the space its logits live in. Stages, warmup, clipping, checkpoints that
resume (in `state_dir`) and the step log come with it.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from routerank.errors import RouterankError
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolMember
from routerank.r3ag.router import R3AGRouter
from routerank.train.groups import TrainGroup
from routerank.train.loop import GroupTrainer, TrainerConfig, TrainSummary

SPACES = ("quality", "route")

R3AG_TRAINING = TrainerConfig(
    objective="infonce",
    temperature=0.1,
    lr=2e-3,
    weight_decay=0.01,
    warmup_ratio=0.1,
    epochs=30,
    batch_groups=64,
    max_grad_norm=1.0,
    eval_every=10**9,
    patience=0,
    save_every=200,
    seed=13,
)
"""Defaults for R3AG: cosine logits need a low temperature (0.1); the network is small, so lr 2e-3."""
TOKEN_LR_SCALE = 10
"""`add_retriever` trains one token alone; at the network's lr it barely moves in 30 epochs (routing share 0 on
its own cluster in tests/route), at 10x it wins its cluster and leaves the rest alone."""


@dataclass(frozen=True)
class RouteGroup(TrainGroup):
    """A TrainGroup over pool members: `positive` and `negatives` are member names; `space` is "quality" (stage 1)
    or "route" (stage 2, the routing score)."""

    space: str = "route"


@dataclass(frozen=True)
class LabelSelection:
    """How positives and negatives are drawn from one label row.

    positives: the top-k members are positives (ties at the k-th value included); 1 = the best.
    negatives: only the n worst members are negatives; 0 = every member below the positives.
    margin: a negative's label lies more than this below the worst positive's (0: strictly below).
    """

    positives: int = 1
    negatives: int = 0
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.positives < 1 or self.negatives < 0 or self.margin < 0:
            raise RouterankError(f"bad label selection {self}", fix="positives >= 1, negatives >= 0, margin >= 0")


def route_groups(
    labels: RoutingLabels,
    dimension: str,
    space: str,
    selection: LabelSelection | None = None,
    *,
    involving: str | None = None,
) -> list[RouteGroup]:
    """The contrastive groups of one label dimension; `involving` keeps only groups that name that member."""
    selection = selection or LabelSelection()
    if space not in SPACES:
        raise RouterankError(f"unknown space {space!r}", fix=f"one of {SPACES}")
    names = labels.retrievers
    groups = []
    for row, query_id, text in zip(labels.matrix(dimension), labels.query_ids, labels.queries, strict=True):
        ranked = np.lexsort((np.arange(len(row)), -row))
        cut = row[ranked[min(selection.positives, len(row)) - 1]]
        positives = [int(i) for i in ranked if row[i] >= cut and row[i] > row.min()]
        if not positives:
            continue
        floor = min(row[i] for i in positives) - selection.margin
        negatives = [int(i) for i in ranked[::-1] if row[i] < floor]
        if selection.negatives:
            negatives = negatives[: selection.negatives]
        if not negatives:
            continue
        for positive in positives:
            group = RouteGroup(query_id, text, names[positive], tuple(names[i] for i in negatives), space)
            if involving is None or involving == group.positive or involving in group.negatives:
                groups.append(group)
    return groups


class _RouterObjective:
    """The Trainable that GroupTrainer drives: the router's network over precomputed features, one logit row
    per group. `trainable` names the parameters that learn (None: all of them)."""

    def __init__(self, router: R3AGRouter, features: np.ndarray, query_ids: Sequence[str], trainable=None):
        # heavy: torch loads only when a model runs
        import torch

        self.net = router.net
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.rows = {q: i for i, q in enumerate(query_ids)}
        self.columns = {name: i for i, name in enumerate(router.retrievers)}
        named = dict(self.net.named_parameters())
        self.names = [n for n in named if trainable is None or n in trainable]

    def parameters(self) -> list:
        named = dict(self.net.named_parameters())
        return [named[n] for n in self.names]

    def trainable_state(self) -> dict:
        named = dict(self.net.named_parameters())
        return {n: named[n].detach() for n in self.names}

    def load_trainable_state(self, tensors: dict) -> None:
        # heavy: torch loads only when a model runs
        import torch

        named = dict(self.net.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                named[name].copy_(value)

    def train(self, mode: bool = True):
        self.net.train(mode)
        return self

    def group_logits(self, groups: Sequence[RouteGroup]):
        # heavy: torch loads only when a model runs
        import torch

        rows = sorted({self.rows[g.query_id] for g in groups})
        local = {row: i for i, row in enumerate(rows)}
        features = self.features[rows]
        scores = {}
        if any(g.space == "quality" for g in groups):
            scores["quality"] = self.net.quality_scores(features)
        if any(g.space == "route" for g in groups):
            scores["route"] = self.net.route_scores(features)
        width = 1 + max(len(g.negatives) for g in groups)
        out = []
        for group in groups:
            columns = [self.columns[group.positive], *(self.columns[n] for n in group.negatives)]
            row = scores[group.space][local[self.rows[group.query_id]], columns]
            out.append(torch.cat([row, row.new_full((width - len(columns),), float("-inf"))]))
        return torch.stack(out)


def _digest(labels: RoutingLabels) -> str:
    h = hashlib.sha256()
    for part in (labels.retrievers, labels.query_ids, labels.queries):
        h.update("\x1f".join(part).encode())
    h.update(labels.quality.tobytes())
    h.update(labels.utility.tobytes())
    return h.hexdigest()[:16]


class R3AGTrainer:
    """Trains an R3AGRouter on routing labels, then extends it with new retrievers.

    router: the router to train, in place; its retrievers must be the labels' retrievers, in order.
    labels: the training labels (query texts, quality and utility of every member).
    training: the GroupTrainer's settings (epochs are per stage; temperature is the contrastive temperature).
    selection: how each label row gives positives and negatives.
    state_dir: where checkpoints and the step log go, so an interrupted run resumes; None = a temporary folder.
    features: the labels' query features, precomputed ([queries, feature_dim]); None = router.encode(labels.queries).
    progress: show training bars.
    """

    def __init__(
        self,
        router: R3AGRouter,
        labels: RoutingLabels,
        *,
        training: TrainerConfig = R3AG_TRAINING,
        selection: LabelSelection | None = None,
        state_dir: str | Path | None = None,
        features: np.ndarray | None = None,
        progress: bool = False,
    ):
        if list(labels.retrievers) != router.retrievers:
            raise RouterankError(
                f"label columns {list(labels.retrievers)} differ from the router's retrievers {router.retrievers}",
                fix="reorder the labels with labels.select(router.retrievers)",
            )
        self.router, self.labels, self.training = router, labels, training
        self.selection = selection or LabelSelection()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.progress = progress
        self.features = router.encode(labels.queries) if features is None else np.asarray(features, np.float32)
        if self.features.shape != (len(labels), router.config.feature_dim):
            raise RouterankError(
                f"features have shape {self.features.shape}, expected ({len(labels)}, {router.config.feature_dim})"
            )

    def stages(self, involving: str | None = None) -> list[list[RouteGroup]]:
        """The groups of each stage that has any: quality (unless ablated), then utility."""
        stages = []
        if self.router.config.quality:
            stages.append(route_groups(self.labels, "quality", "quality", self.selection, involving=involving))
        stages.append(route_groups(self.labels, "utility", "route", self.selection, involving=involving))
        return [groups for groups in stages if groups]

    def fit(self) -> TrainSummary:
        """Both stages over every parameter."""
        return self._run("fit", self.stages())

    def add_retriever(
        self,
        name: str,
        quality: Sequence[float] | np.ndarray,
        utility: Sequence[float] | np.ndarray,
        *,
        spec: str = "",
        member: PoolMember | None = None,
        training: TrainerConfig | None = None,
    ) -> TrainSummary:
        """Add a pool member after training and learn only its token, from its labels on the training queries
        (`quality` and `utility`: one value per query, in the labels' row order). spec / member: how the pool
        builds it, recorded with the router (needed when the router records a pool). training: default, this
        trainer's settings with lr * TOKEN_LR_SCALE."""
        labels = self.labels.with_retriever(name, quality, utility)
        if member is None and spec:
            member = PoolMember(name, spec=spec)
        self.router.add_retriever(name, member)
        self.labels = labels
        token = f"tokens.{len(self.router.retrievers) - 1}"
        training = training or replace(self.training, lr=self.training.lr * TOKEN_LR_SCALE)
        return self._run(f"add:{name}", self.stages(involving=name), {token}, training)

    def _run(
        self,
        phase: str,
        stages: list[list[RouteGroup]],
        trainable: set[str] | None = None,
        training: TrainerConfig | None = None,
    ) -> TrainSummary:
        # heavy: torch loads only when a model runs
        import torch

        if not stages:
            raise RouterankError(
                "the labels give no training groups: every member ties on every query",
                fix="check the label builder's output, or lower LabelSelection.margin",
            )
        training = training or self.training
        objective = _RouterObjective(self.router, self.features, self.labels.query_ids, trainable)
        frozen = [p for n, p in self.router.net.named_parameters() if n not in objective.names]
        for parameter in frozen:
            parameter.requires_grad_(False)
        key = {
            "phase": phase,
            "labels": _digest(self.labels),
            "router": asdict(self.router.config),
            "retrievers": self.router.retrievers,
            "selection": asdict(self.selection),
        }
        try:
            with tempfile.TemporaryDirectory(prefix="r3ag-") as scratch:
                folder = (self.state_dir or Path(scratch)) / phase.replace(":", "-")
                trainer = GroupTrainer(objective, training, folder, key=key, progress=self.progress, desc="r3ag")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(training.seed)
                    summary = trainer.fit([lambda epoch, groups=groups: groups for groups in stages])
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
            self.router.net.eval()
        return summary
