"""The R2R interpolation weights: per domain, how much of a system's scores to mix with the first stage's (min-max
per query, `routerank.rerank.interpolate`), chosen on dev queries that neither the backbone nor that system's
adapters trained on. Test queries never choose. The generalist's weight (`choose_generalist_alpha`, alpha.json) is
the fallback for every system whose own (`choose_system_alpha`) is not chosen yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routerank.data.devsplit import dev_queries, trained_on
from routerank.data.trec import write_run
from routerank.data.types import Qrels, Query, Run, sample_queries
from routerank.errors import RouterankError
from routerank.r2r.bank import GENERALIST
from routerank.rerank.backbones import folder_of
from routerank.rerank.interpolate import GRID
from studies.r2r.config import ALPHA_SYSTEMS, R2RConfig

if TYPE_CHECKING:
    from studies.r2r.experiment import R2RExperiment

DevSet = tuple[list[Query], Qrels, Run, str]


def system_adapters(config: R2RConfig, system: str, dataset: str) -> list[str]:
    """The adapters `system` reranks `dataset` with: one, or for R2R every EAG expert it may route to."""
    if system == "r2r":
        return [f"eag-{name}" for name in config.domains]
    return [{"pooled": "pooled", "plain": f"plain-{dataset}", "oracle": f"eag-{dataset}"}[system]]


def dev_set(experiment: R2RExperiment, name: str, exclude: frozenset[str] = frozenset()) -> DevSet:
    """(queries, qrels, first-stage run, split) for choosing a weight on `name`: the dev split, or the queries the
    backbone's training manifest held out, or for a set the backbone never trained on, the train queries no
    adapter of this run trains on; less any query in `exclude` (an adapter's training queries)."""
    c, ds = experiment.config, experiment.dataset(name)
    folders = [folder_of(c.backbone)]
    if "dev" in ds.qrels or trained_on(ds, folders):
        queries, split = dev_queries(ds, folders, c.dev_queries, c.seed, who=f"backbone {c.backbone}")
    else:  # a set the backbone never trained on: the train queries that no adapter of this run trains on
        every = experiment.trained_queries(list(experiment.expert_configs()), name)
        judged = ds.split_qrels("train")
        pool = [q for q in ds.split_queries("train") if q.id not in every and judged.relevant(q.id)]
        queries, split = sample_queries(pool, c.dev_queries, c.seed), "train"
    queries = [q for q in queries if q.id not in exclude]
    if not queries:
        raise RouterankError(
            f"no dev query of {name} is left to choose a weight on: the adapters trained on all of them",
            fix="raise dev_queries, or train the backbone with held-out queries",
        )
    first = experiment.first_stage_retriever(name).search(queries, c.candidates)
    return queries, ds.split_qrels(split).subset(q.id for q in queries), first, split


def _entry(experiment: R2RExperiment, reranked: Run, dev: DevSet) -> dict[str, Any]:
    """The best alpha for mixing `reranked` with the dev set's first stage, with its whole curve."""
    queries, qrels, first, split = dev
    chosen = experiment.dev_alpha(reranked, first, qrels, experiment.config.depth)
    return {"alpha": chosen.alpha, "dev_split": split, "dev_queries": len(queries), "curve": chosen.rounded_curve()}


def choose_generalist_alpha(experiment: R2RExperiment) -> dict[str, Any]:
    """Per domain, the generalist's weight on dev queries (the dev split, or the queries the backbone's training
    manifest held out); written to alpha.json, with each domain's reranked dev run under dev/."""
    record: dict[str, Any] = {"chosen_on": "dev", "system": GENERALIST, "measure": "nDCG@10", "grid": list(GRID)}
    for name in experiment.config.domains:
        dev = dev_set(experiment, name)
        corpus = experiment.dataset(name).corpus
        reranked = experiment.scorer.rerank(dev[0], dev[2], corpus, GENERALIST, GENERALIST)[0]
        write_run(reranked, experiment.work / "dev" / f"{name}.trec", tag=GENERALIST)
        record[name] = _entry(experiment, reranked, dev)
    experiment.write_json(experiment.alpha_path(), record)
    return record


def choose_system_alpha(experiment: R2RExperiment, system: str, dataset: str) -> dict[str, Any]:
    """`system`'s own interpolation weight on `dataset`, chosen on the dev queries that neither the backbone
    nor any of the system's adapters trained on."""
    c, corpus = experiment.config, experiment.dataset(dataset).corpus
    adapters = system_adapters(c, system, dataset)
    dev = dev_set(experiment, dataset, experiment.trained_queries(adapters, dataset))
    queries, _, first, _ = dev
    if system == "r2r":
        reranked = experiment.r2r_reranker().rerank_run(queries, first, corpus, c.depth)
    else:
        reranked = experiment.scorer.rerank(queries, first, corpus, adapters[0], system)[0]
    record = {"system": system, "dataset": dataset, "chosen_on": "dev", "measure": "nDCG@10", "grid": list(GRID)}
    record.update(_entry(experiment, reranked, dev))
    path = experiment.system_alpha_path(system, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    experiment.write_json(path, record)
    return record


def alpha_for(experiment: R2RExperiment, system: str, dataset: str) -> dict[str, Any] | None:
    """{"alpha", "own"}: `system`'s own weight on `dataset` where chosen (the generalist's is alpha.json),
    else the generalist's with own False; None before the generalist's is chosen."""
    shared = experiment.read_json(experiment.alpha_path()) if experiment.alpha_path().exists() else {}
    if dataset not in shared:
        return None
    path = experiment.system_alpha_path(system, dataset)
    if system in ALPHA_SYSTEMS and path.exists():
        return {"alpha": experiment.read_json(path)["alpha"], "own": True}
    return {"alpha": shared[dataset]["alpha"], "own": system == GENERALIST}
