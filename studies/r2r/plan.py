"""The R2R experiment's stages in order (`build_plan`); each is skipped when its output exists, and waits while its
inputs do not."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from routerank.r2r.bank import GENERALIST
from routerank.stages import Step

if TYPE_CHECKING:
    from studies.r2r.experiment import R2RExperiment


class PlanSteps:
    """Step makers over one experiment: training, scoring, routing and the interpolation weights."""

    def __init__(self, experiment: R2RExperiment):
        self.x = experiment
        self.names = list(experiment.config.domains)
        self.eag = [f"eag-{name}" for name in self.names]

    def ready(self, *adapters: str) -> Callable[[], bool]:
        """A check that every adapter named is trained."""
        return lambda: self.x.experts.all_ready(adapters, GENERALIST)

    def routed(self) -> bool:
        """Whether the routing stage has run."""
        return (self.x.work / "router" / "routing.json").exists()

    def train(self, adapter: str) -> Step:
        """Train one adapter."""
        return Step(f"train {adapter}", "train", self.ready(adapter), lambda: self.x.train(adapter))

    def score(self, system: str, dataset: str, adapter: str) -> Step:
        """Rerank `dataset`'s test candidates with one adapter, once it is trained."""
        return Step(
            f"score {system} on {dataset}",
            "score",
            lambda: self.x.run_path(system, dataset).exists(),
            lambda: self.x.score_run(system, dataset, adapter),
            needs=self.ready(adapter),
        )

    def r2r(self, dataset: str) -> Step:
        """System (d) on `dataset`, once the router and every EAG expert exist."""
        return Step(
            f"score r2r on {dataset}",
            "score",
            lambda: self.x.run_path("r2r", dataset).exists(),
            lambda: self.x.score_r2r(dataset),
            needs=lambda: self.routed() and self.ready(*self.eag)(),
        )

    def cross_encoder(self, dataset: str) -> Step:
        """System (f) on `dataset`."""
        return Step(
            f"score ce on {dataset}",
            "score",
            lambda: self.x.run_path("ce", dataset).exists(),
            lambda: self.x.score_cross_encoder(dataset),
        )

    def alpha(self, system: str) -> list[Step]:
        """A system's own interpolation weight per domain, once its inputs exist (none without `interpolate`)."""
        if not self.x.config.interpolate:
            return []
        out = []
        for name in self.names:
            needs = self.ready(*self.x.system_adapters(system, name))
            out.append(
                Step(
                    f"alpha {system} on {name} (dev)",
                    "score",
                    self.x.system_alpha_path(system, name).exists,
                    (lambda s=system, n=name: self.x.choose_system_alpha(s, n)),
                    needs=(lambda r=needs: self.routed() and r()) if system == "r2r" else needs,
                )
            )
        return out


def build_plan(experiment: R2RExperiment) -> list[Step]:
    """The stages in order: EAG experts, routing, the generalist's weight, every system's scoring (each followed by
    its weights), the cross-encoder, the forgetting matrix and the ablation."""
    c, p = experiment.config, PlanSteps(experiment)
    names = p.names
    steps = [p.train(adapter) for adapter in p.eag]
    route = Step("route (latent router + baselines)", "route", p.routed, experiment.routing, needs=p.ready(*p.eag))
    steps.append(route)
    if c.interpolate:
        steps.append(
            Step("alpha (generalist, dev queries)", "score", experiment.alpha_path().exists, experiment.choose_alpha)
        )
    for name in names:
        steps += [p.score("generalist", name, GENERALIST), p.score(f"eag-{name}", name, f"eag-{name}"), p.r2r(name)]
    steps += p.alpha("oracle") + p.alpha("r2r")
    steps.append(p.train("pooled"))
    steps += [p.score("pooled", name, "pooled") for name in names] + p.alpha("pooled")
    for name in names:
        steps += [p.train(f"plain-{name}"), p.score(f"plain-{name}", name, f"plain-{name}")]
    steps += p.alpha("plain")
    if c.cross_encoder:
        steps += [p.cross_encoder(name) for name in names]
    if c.forgetting:
        for expert in names:  # the forgetting matrix, off the diagonal
            steps += [p.score(f"eag-{expert}", name, f"eag-{expert}") for name in names if name != expert]
    for adapter in experiment.expert_configs():
        if adapter.startswith("eag_"):
            dataset = adapter.split("-", 1)[1]
            steps += [p.train(adapter), p.score(adapter, dataset, adapter)]
    return steps
