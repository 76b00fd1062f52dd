"""The R2R experts: every adapter's `ExpertConfig`, its folder under the work dir, whether it is trained (and by the
same config), and training, here or as parallel Ray tasks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from routerank.data.types import Dataset
from routerank.errors import RouterankError
from routerank.r2r.trainer import MANIFEST, ExpertConfig, config_json, split_train_dev, train_expert
from routerank.scale.executor import Executor
from studies.r2r.config import R2RConfig


def expert_configs(config: R2RConfig) -> dict[str, ExpertConfig]:
    """Adapter name -> ExpertConfig, in training order (the R2R experts first): an EAG expert per domain, the pooled
    LoRA, a plain expert per domain, and the ablation's experts."""
    c = config
    base = dict(
        backbone=c.backbone,
        objective=c.objective,
        negatives=c.negatives,
        negative_skip=c.negative_skip,
        miner=c.miner,
        max_queries=c.train_queries,
        dev_queries=c.dev_queries,
        dev_from_backbone=c.dev_from_backbone,
        max_doc_tokens=c.max_doc_tokens,
        epochs=c.epochs,
        lr=c.lr,
        grad_accum=c.grad_accum,
        eval_every=c.eval_every,
        seed=c.seed,
    )
    out = {}
    for name, label in c.domains.items():
        out[f"eag-{name}"] = ExpertConfig(name, label, eag=True, granularity="ner+patterns", **base)
    out["pooled"] = ExpertConfig(",".join(c.domains), "pooled", **base)
    for name, label in c.domains.items():
        out[f"plain-{name}"] = ExpertConfig(name, label, **base)
    for granularity in c.ablation:
        for name in c.ablation_domains or c.domains:
            tag = granularity.replace("+", "_")
            out[f"eag_{tag}-{name}"] = ExpertConfig(name, c.domains[name], eag=True, granularity=granularity, **base)
    return out


class Experts:
    """The experiment's adapters under `<work>/experts/<adapter>`. `loaded` () -> (model, tokenizer) or None stands
    in for the configured backbone (tests pass a tiny model)."""

    def __init__(
        self,
        config: R2RConfig,
        work: Path,
        *,
        progress: bool = True,
        loaded: Callable[[], tuple | None] = lambda: None,
    ):
        self.configs = expert_configs(config)
        self.work = work
        self.progress = progress
        self.loaded = loaded

    def dir(self, adapter: str) -> Path:
        """Where `adapter` is trained to."""
        return self.work / "experts" / adapter

    def ready(self, adapter: str) -> bool:
        """Whether `adapter` is trained; one trained with another config is an error, never silently reused."""
        manifest = self.dir(adapter) / MANIFEST
        if not manifest.exists():
            return False
        if json.loads(manifest.read_text()).get("config") != config_json(self.configs[adapter]):
            raise RouterankError(
                f"expert {adapter!r} in the work dir was trained with another config",
                path=self.dir(adapter),
                fix="delete it, or use another --work-dir",
            )
        return True

    def all_ready(self, adapters: Iterable[str], generalist: str) -> bool:
        """Whether every one of `adapters` is trained (the generalist, the bare backbone, always is)."""
        return all(a == generalist or self.ready(a) for a in adapters)

    def ready_dirs(self) -> dict[str, Path]:
        """Adapter -> folder, for every trained adapter."""
        return {a: self.dir(a) for a in self.configs if self.ready(a)}

    def trained_queries(self, adapters: Iterable[str], name: str, dataset: Dataset) -> frozenset[str]:
        """Ids of the queries of `dataset` (named `name` in the config) that any of `adapters` trained on (from
        their configs' seeded split)."""
        ids: set[str] = set()
        for adapter in adapters:
            config = self.configs[adapter]
            if name in [n.strip() for n in config.dataset.split(",")]:
                ids.update(q.id for q in split_train_dev(dataset, config)[0])
        return frozenset(ids)

    def train(self, adapter: str) -> None:
        """Train `adapter` here (resuming from its last checkpoint)."""
        train_expert(self.configs[adapter], self.dir(adapter), loaded=self.loaded(), progress=self.progress)

    def train_on_ray(self, executor: Executor, adapters: Iterable[str] | None = None) -> list[str]:
        """Train every expert (or those named) not yet trained, as parallel Ray tasks; returns those trained."""
        pending = [a for a in adapters or self.configs if not self.ready(a)]
        if pending:
            executor.run_tasks(train_expert, [(self.configs[a], str(self.dir(a))) for a in pending])
        return pending
