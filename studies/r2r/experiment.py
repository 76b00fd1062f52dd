"""The R2R multi-domain experiment, staged and cached so it can be finished over several sittings.

    routerank experiment r2r --config configs/r2r-cpu.toml

Every trained adapter and every reranked run is a stage under the work dir (default
`<cache>/r2r/<profile>-<config hash>`); a stage that is present and was made by the same config is skipped,
training resumes from its last checkpoint after a kill, and pair scores sit in the on-disk score cache.
`--max-minutes` stops starting new stages after that long and still writes the report of what exists.

Systems, all reranking the same BM25 candidates of each domain's seeded test queries:
  (a) generalist: the bare backbone, zero-shot      (b) pooled: one LoRA on all domains' training data
  (c) experts without EAG, oracle-routed            (d) R2R: EAG experts, chosen per query by the latent router
  (e) R2R with oracle routing                       (f) the trained cross-encoder (an outside reference)
Plus the routing table (router and baselines, on every test query), the forgetting matrix (every EAG expert
on every domain), the cost of misrouting, and the EAG masking-granularity ablation.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from routerank.data.types import Query, Run, sample_queries
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write, cache_root, safe_name, without_later_defaults
from routerank.r2r.bank import GENERALIST
from routerank.stages import Stage, Step, read_toml_config, run_plan

# Settings added after work dirs had been made, at the value that reproduces the old behaviour: the digest leaves
# them out at that value, so a work dir made before they existed is still found.
ADDED_LATER = {"dev_from_backbone": False, "dtype": None, "forgetting": True}


@dataclass(frozen=True)
class R2RConfig:
    """One R2R experiment: its domains, the backbone, how the experts train, and how the systems are evaluated.
    Every field but `ray` goes into the work dir's digest (`<cache>/r2r/<profile>-<digest>`), a field added later
    only away from its old default (`ADDED_LATER`). In a TOML file (`load`), 0 means None for `train_queries` and
    `test_queries`.

    profile: the work dir's name prefix (cpu, gpu, ce-quick, ...).
    domains: dataset -> domain label; at least two, each label its own. Each dataset gets an EAG and a plain expert.
    backbone: the reranker every expert adapts: an LLM spec (`smollm2`, `hf:...`) or `ce:<folder>`.
    objective: the experts' loss, `contrastive` (InfoNCE) or `sft` (BCE); `ExpertConfig.objective`.
    train_queries: training queries per domain (`ExpertConfig.max_queries`); None = all.
    dev_queries: per domain, the experts' dev queries and the most dev queries an interpolation weight is chosen on.
    dev_from_backbone: `ExpertConfig.dev_from_backbone`: without a dev split, dev = the backbone's held-out queries.
    negatives: documents per training group below the positive (`ExpertConfig.negatives`).
    negative_skip: how many of the miner's top non-relevant documents are passed over before negatives
        (`ExpertConfig.negative_skip`).
    miner: the retriever (a pipeline spec) that mines the experts' negatives.
    max_doc_tokens: document tokens per pair on an LLM backbone, the pair length on a cross-encoder; in training
        and scoring alike.
    epochs, lr, grad_accum, eval_every: the experts' optimisation (`ExpertConfig`); its other fields keep their
        defaults.
    test_queries: test queries per domain, a seeded sample; None = all. The routing table uses every test query.
    depth: how many of each query's candidates are reranked (and the depth interpolation weights are chosen at).
    candidates: depth of each query's first-stage run, its order kept below `depth`; 100, so R@100 can be measured.
    ablation: extra EAG masking granularities, one more expert per ablation domain each; "none" (the plain experts,
        system c) and "ner+patterns" (the EAG experts) always run, so only "ner" can be added.
    ablation_domains: datasets the ablation runs on; empty = all domains.
    router_train_queries: train-split queries per domain, a seeded sample, that the latent router is fitted on.
    router_threshold: a query whose top router probability is below it goes to the generalist (the bare backbone);
        0 sends every query to an expert.
    cross_encoder: reranker spec of system (f), e.g. `ce:<folder>`; None leaves system (f) out.
    first_stage: the candidates' retriever (any pipeline spec without `>>`); plain BM25 stays the reference.
    interpolate: also mix each system with the first stage, its weight chosen on dev queries, and report that.
    seed: the test, dev and router query samples, and every expert's seed.
    dtype: "bf16" scores (never trains) a cross-encoder backbone under bf16 autocast (an LLM backbone refuses it);
        None or "fp32" is fp32.
    forgetting: score every EAG expert on every other domain (the forgetting matrix); off skips those runs.
    ray: "local" or a cluster address: experts train as Ray tasks and pairs are scored on Ray actors; None runs
        everything in this process.
    """

    profile: str
    domains: dict[str, str]  # dataset -> domain label
    backbone: str = "smollm2"
    objective: str = "contrastive"
    train_queries: int | None = 300
    dev_queries: int = 50
    dev_from_backbone: bool = False  # ExpertConfig.dev_from_backbone: dev = the backbone's held-out train queries
    negatives: int = 3
    negative_skip: int = 0  # miner's top non-relevant documents passed over before negatives (ExpertConfig)
    miner: str = "bm25"  # the retriever that mines the experts' negatives
    max_doc_tokens: int = 192
    epochs: int = 1
    lr: float = 2e-4
    grad_accum: int = 4
    eval_every: int = 25
    test_queries: int | None = 50  # per domain, seeded; None = all
    depth: int = 20
    candidates: int = 100  # BM25 depth kept below the reranked top (R@100)
    ablation: tuple[str, ...] = ("ner",)  # extra EAG granularities (none = system c, ner+patterns = system e)
    ablation_domains: tuple[str, ...] = ()  # datasets the ablation runs on; empty = all
    router_train_queries: int = 300  # per domain
    router_threshold: float = 0.0  # below it a query goes to the generalist
    cross_encoder: str | None = None  # reranker spec for system (f)
    first_stage: str = "bm25"  # the candidates' retriever (any pipeline spec without `>>`)
    interpolate: bool = False  # also report each system mixed with the first stage, alpha chosen on dev
    seed: int = 13
    dtype: str | None = None  # "bf16": score (not train) a cross-encoder backbone under bf16 autocast
    forgetting: bool = True  # score every EAG expert on every other domain (the forgetting matrix)
    ray: str | None = None  # "local" or a cluster address: train experts as Ray tasks, score pairs on Ray actors

    def __post_init__(self):
        if len(self.domains) < 2:
            raise SpecError("the R2R experiment needs at least two domains")
        if len(set(self.domains.values())) != len(self.domains):
            raise SpecError("two datasets share a domain label", fix="give each dataset its own label")
        unknown = [d for d in self.ablation_domains if d not in self.domains]
        if unknown:
            raise SpecError(f"ablation_domains {unknown} are not among the domains {list(self.domains)}")
        from routerank.r2r.eag import GRANULARITIES

        if self.dtype not in (None, "fp32", "bf16"):
            raise SpecError(f"unknown dtype {self.dtype!r}", fix="fp32 (default) or bf16 (cross-encoder scoring)")
        bad = [g for g in self.ablation if g not in GRANULARITIES or g in ("none", "ner+patterns")]
        if bad:
            raise SpecError(f"ablation granularities {bad}", fix="'none' and 'ner+patterns' always run; add 'ner'")

    @classmethod
    def load(cls, path: str | Path) -> R2RConfig:
        return read_toml_config(
            cls, path, tuples=("ablation", "ablation_domains"), none_if_zero=("train_queries", "test_queries")
        )

    def digest(self) -> str:
        # where it runs does not change results; a setting added later counts only away from its old behaviour
        keyed = without_later_defaults({k: v for k, v in asdict(self).items() if k != "ray"}, ADDED_LATER)
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]


LABEL_SHARD = 512  # (query, doc, expert) triples per Ray scoring shard
ALPHA_SYSTEMS = ("pooled", "plain", "oracle", "r2r")  # systems that choose their own interpolation weight


class R2RExperiment:
    """The staged R2R experiment. `ray` (or the config's `ray`): experts still to train run as parallel Ray
    tasks (one per adapter, a GPU each on a GPU cluster), and every scoring stage spreads its pairs over Ray
    actors that each load the expert bank once; finished shards are kept under the work dir."""

    def __init__(
        self,
        config: R2RConfig,
        work_dir: str | Path | None = None,
        *,
        progress: bool = True,
        loaded_factory=None,
        ray=None,
    ):
        self.config = config
        self.ray = ray if ray is not None else config.ray
        self._executor = None
        self.work = Path(work_dir) if work_dir else cache_root() / "r2r" / f"{config.profile}-{config.digest()}"
        self.progress = progress
        self._loaded_factory = loaded_factory  # () -> (model, tokenizer); tests pass a tiny model
        self._datasets: dict = {}
        self._bank = None
        self._generalist = None  # the bare-backbone scorer, used before any expert exists
        self._dev_first: dict = {}  # dataset -> the first-stage retriever that ranks its dev queries
        self.stages: list[Stage] = []

    # data ------------------------------------------------------------------------------------------------

    def dataset(self, name: str):
        from routerank.data.registry import load_dataset

        if name not in self._datasets:
            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def test_queries(self, name: str) -> list[Query]:
        return sample_queries(self.dataset(name).split_queries("test"), self.config.test_queries, self.config.seed)

    def candidates(self, name: str) -> Run:
        return self._test_run(self.config.first_stage, "candidates", name)

    def bm25_run(self, name: str) -> Run:
        """Plain BM25 over the test queries to the candidates' depth: the reference every claim is held to when
        the first stage is something else (a hybrid)."""
        if self.config.first_stage == "bm25":
            return self.candidates(name)
        return self._test_run("bm25", "bm25", name)

    def _test_run(self, spec: str, folder: str, name: str) -> Run:
        """Retriever `spec` over `name`'s test queries to the candidates' depth, written once under `folder`."""
        from routerank.data.trec import read_run, write_run
        from routerank.pipeline import build

        path = self.work / folder / f"{name}.trec"
        if path.exists():
            return read_run(path)
        run = build(spec, self.dataset(name).corpus).search(self.test_queries(name), self.config.candidates)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_run(run, path, tag=safe_name(spec, extra="="))
        return run

    # interpolation ---------------------------------------------------------------------------------------

    def alpha_path(self) -> Path:
        return self.work / "alpha.json"

    def dev_set(self, name: str, exclude: frozenset[str] = frozenset()):
        """(queries, qrels, first-stage run, split) for choosing a weight on `name`: the dev split, or the queries the
        backbone's training manifest held out, or for a set the backbone never trained on, the train queries no
        adapter of this run trains on; less any query in `exclude` (an adapter's training queries)."""
        from routerank.data.devsplit import dev_queries, trained_on
        from routerank.pipeline import build
        from routerank.rerank.backbones import folder_of

        c, ds = self.config, self.dataset(name)
        folders = [folder_of(c.backbone)]
        if "dev" in ds.qrels or trained_on(ds, folders):
            queries, split = dev_queries(ds, folders, c.dev_queries, c.seed, who=f"backbone {c.backbone}")
        else:  # a set the backbone never trained on: the train queries that no adapter of this run trains on
            every = self.trained_queries(list(self.expert_configs()), name)
            judged = ds.split_qrels("train")
            pool = [q for q in ds.split_queries("train") if q.id not in every and judged.relevant(q.id)]
            queries, split = sample_queries(pool, c.dev_queries, c.seed), "train"
        queries = [q for q in queries if q.id not in exclude]
        if not queries:
            raise RouterankError(
                f"no dev query of {name} is left to choose a weight on: the adapters trained on all of them",
                fix="raise dev_queries, or train the backbone with held-out queries",
            )
        if name not in self._dev_first:
            self._dev_first[name] = build(c.first_stage, ds.corpus)
        first = self._dev_first[name].search(queries, c.candidates)
        return queries, ds.split_qrels(split).subset(q.id for q in queries), first, split

    def choose_alpha(self) -> dict:
        """Per domain, the weight that mixes a reranker's scores with the first stage's (min-max per query,
        `routerank.rerank.interpolate`), chosen for the generalist on dev queries: the dev split, or the queries
        the backbone's training manifest held out. Test queries never choose. It is the fallback for every system
        whose own weight (`choose_system_alpha`) is not chosen yet."""
        from routerank.data.trec import write_run
        from routerank.rerank.interpolate import GRID

        c, record = self.config, {"chosen_on": "dev", "system": GENERALIST, "measure": "nDCG@10", "grid": list(GRID)}
        for name in c.domains:
            queries, qrels, first, split = self.dev_set(name)
            reranked = self._rerank(queries, first, self.dataset(name).corpus, GENERALIST, GENERALIST)[0]
            write_run(reranked, self.work / "dev" / f"{name}.trec", tag=GENERALIST)
            record[name] = self._alpha_entry(reranked, first, qrels, split, len(queries))
        with atomic_write(self.alpha_path()) as out:
            json.dump(record, out, indent=2)
        return record

    def _alpha_entry(self, reranked: Run, first: Run, qrels, split: str, queries: int) -> dict:
        """The best alpha for mixing `reranked` with `first` on these dev qrels, with its whole curve."""
        from routerank.rerank.interpolate import alpha_curve

        best, curve = alpha_curve(reranked, first, qrels, self.config.depth)
        return {"alpha": best, "dev_split": split, "dev_queries": queries, "curve": [round(v, 5) for v in curve]}

    def system_alpha_path(self, system: str, dataset: str) -> Path:
        return self.work / "alpha" / f"{system}-{dataset}.json"

    def system_adapters(self, system: str, dataset: str) -> list[str]:
        """The adapters `system` reranks `dataset` with: one, or for R2R every EAG expert it may route to."""
        if system == "r2r":
            return [f"eag-{name}" for name in self.config.domains]
        return [{"pooled": "pooled", "plain": f"plain-{dataset}", "oracle": f"eag-{dataset}"}[system]]

    def trained_queries(self, adapters: list[str], dataset: str) -> frozenset[str]:
        """Ids of `dataset`'s queries that any of `adapters` trained on (from their configs' seeded split)."""
        from routerank.r2r.trainer import split_train_dev

        configs, ids = self.expert_configs(), set()
        for adapter in adapters:
            config = configs[adapter]
            if dataset in [n.strip() for n in config.dataset.split(",")]:
                ids.update(q.id for q in split_train_dev(self.dataset(dataset), config)[0])
        return frozenset(ids)

    def choose_system_alpha(self, system: str, dataset: str) -> dict:
        """`system`'s own interpolation weight on `dataset`, chosen on the dev queries that neither the backbone
        nor any of the system's adapters trained on (the generalist's weight is `choose_alpha`)."""
        from routerank.rerank.interpolate import GRID

        c, corpus = self.config, self.dataset(dataset).corpus
        adapters = self.system_adapters(system, dataset)
        queries, qrels, first, split = self.dev_set(dataset, self.trained_queries(adapters, dataset))
        if system == "r2r":
            reranked = self._r2r_reranker().rerank_run(queries, first, corpus, c.depth)
        else:
            reranked = self._rerank(queries, first, corpus, adapters[0], system)[0]
        record = {"system": system, "dataset": dataset, "chosen_on": "dev", "measure": "nDCG@10", "grid": list(GRID)}
        record.update(self._alpha_entry(reranked, first, qrels, split, len(queries)))
        path = self.system_alpha_path(system, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            json.dump(record, out, indent=2)
        return record

    def alpha_for(self, system: str, dataset: str) -> dict | None:
        """{"alpha", "own"}: `system`'s own weight on `dataset` where chosen (the generalist's is alpha.json),
        else the generalist's with own False; None before the generalist's is chosen."""
        shared = json.loads(self.alpha_path().read_text()) if self.alpha_path().exists() else {}
        if dataset not in shared:
            return None
        path = self.system_alpha_path(system, dataset)
        if system in ALPHA_SYSTEMS and path.exists():
            return {"alpha": json.loads(path.read_text())["alpha"], "own": True}
        return {"alpha": shared[dataset]["alpha"], "own": system == GENERALIST}

    # experts ---------------------------------------------------------------------------------------------

    def expert_configs(self) -> dict[str, object]:
        """Adapter name -> ExpertConfig, in training order (the R2R experts first)."""
        from routerank.r2r.trainer import ExpertConfig

        c = self.config
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
                out[f"eag_{tag}-{name}"] = ExpertConfig(
                    name, c.domains[name], eag=True, granularity=granularity, **base
                )
        return out

    def expert_dir(self, adapter: str) -> Path:
        return self.work / "experts" / adapter

    def expert_ready(self, adapter: str, config) -> bool:
        from routerank.r2r.trainer import MANIFEST, config_json

        manifest = self.expert_dir(adapter) / MANIFEST
        if not manifest.exists():
            return False
        if json.loads(manifest.read_text()).get("config") != config_json(config):
            raise RouterankError(
                f"expert {adapter!r} in the work dir was trained with another config",
                path=self.expert_dir(adapter),
                fix="delete it, or use another --work-dir",
            )
        return True

    @property
    def executor(self):
        """The Ray executor when `ray` is set, else None (everything in this process)."""
        if self._executor is None and self.ray:
            if self._loaded_factory is not None:
                raise RouterankError(
                    "a test model factory cannot travel to Ray workers", fix="run with ray=None, or name a backbone"
                )
            from routerank.scale import executor_for

            self._executor = executor_for(self.ray, self.progress)
        return self._executor

    def train_on_ray(self, adapters: list[str] | None = None) -> list[str]:
        """Train every expert (or those named) not yet trained, as parallel Ray tasks; returns those trained."""
        from routerank.r2r.trainer import train_expert

        configs = self.expert_configs()
        pending = [a for a in adapters or configs if not self.expert_ready(a, configs[a])]
        if pending:
            self.executor.run_tasks(train_expert, [(configs[a], str(self.expert_dir(a))) for a in pending])
            self._bank = None
        return pending

    def _score_on_ray(self, pairs, adapters) -> np.ndarray:
        from functools import partial

        from routerank.r2r.bank import ExpertBank
        from routerank.scale import ShardStore

        ready = {a: str(self.expert_dir(a)) for a, cfg in self.expert_configs().items() if self.expert_ready(a, cfg)}
        adapters = list(adapters)
        digest = hashlib.sha256(json.dumps([pairs, adapters, ready], sort_keys=True).encode()).hexdigest()[:16]
        shards = [
            (pairs[i : i + LABEL_SHARD], adapters[i : i + LABEL_SHARD]) for i in range(0, len(pairs), LABEL_SHARD)
        ]
        factory = partial(
            ExpertBank,
            ready,
            self.config.backbone,
            max_doc_tokens=self.config.max_doc_tokens,
            progress=False,
            dtype=self.config.dtype,
        )
        store = ShardStore(self.work / "shards" / f"score-{digest}")
        parts = self.executor.map(factory, "score_labelled", shards, store=store, desc=f"score {len(pairs):,} pairs")
        return np.concatenate(parts) if parts else np.zeros(0)

    def _loaded(self):
        """A fresh (model, tokenizer) from the test factory, or None: the callee loads the configured backbone."""
        return self._loaded_factory() if self._loaded_factory else None

    def train(self, adapter: str) -> None:
        from routerank.r2r.trainer import train_expert

        train_expert(
            self.expert_configs()[adapter], self.expert_dir(adapter), loaded=self._loaded(), progress=self.progress
        )
        self._bank = None  # the bank must pick the new adapter up

    # scoring ---------------------------------------------------------------------------------------------

    def bank(self):
        from routerank.r2r.bank import ExpertBank

        ready = {a: self.expert_dir(a) for a, cfg in self.expert_configs().items() if self.expert_ready(a, cfg)}
        if self._bank is None or set(self._bank.domains) != set(ready):
            if not ready:
                raise RouterankError("no trained expert yet")
            self._bank = ExpertBank(
                ready,
                self.config.backbone,
                max_doc_tokens=self.config.max_doc_tokens,
                progress=self.progress,
                loaded=self._loaded(),
                dtype=self.config.dtype,
            )
        return self._bank

    def score_pairs(self, pairs, adapters):
        """Scores through the expert bank; before any expert exists, the generalist is the bare backbone (the
        same scorer and score-cache key as the bank's generalist)."""
        if set(adapters) <= {GENERALIST} and not any(
            self.expert_ready(a, cfg) for a, cfg in self.expert_configs().items()
        ):
            if self._generalist is None:
                from routerank.r2r.trainer import ExpertConfig
                from routerank.rerank.backbones import load_backbone

                backbone = load_backbone(
                    self.config.backbone,
                    template=ExpertConfig("-", "-").template,
                    max_doc_tokens=self.config.max_doc_tokens,
                    progress=self.progress,
                    loaded=self._loaded(),
                    dtype=self.config.dtype,
                )
                self._generalist = backbone.scorer(self.config.backbone, cache=True)
            return self._generalist.score_pairs(pairs)
        if self.executor is not None:
            return self._score_on_ray(pairs, adapters)
        return self.bank().score_pairs(pairs, adapters)

    def run_path(self, system: str, dataset: str) -> Path:
        return self.work / "runs" / system / f"{dataset}.trec"

    def score_run(self, system: str, dataset: str, experts: str | dict[str, str]) -> None:
        """Rerank `dataset`'s candidates with one adapter (or a query -> adapter map) and save the run."""
        from routerank.data.trec import write_run

        out, names, seconds = self._rerank(
            self.test_queries(dataset), self.candidates(dataset), self.dataset(dataset).corpus, experts, system
        )
        path = self.run_path(system, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_run(out, path, tag=system.replace(" ", "_"))
        self._write_meta(path, {"pairs": len(names), "seconds": seconds, "adapters": sorted(set(names))})

    def _rerank(self, queries, run: Run, corpus, experts: str | dict[str, str], name: str):
        """(`run`'s top `depth` of each query reranked by one adapter or a query -> adapter map, the adapter of
        every scored pair, the seconds scoring took)."""
        from routerank.rerank.base import assemble_run, candidates

        per_query = [(q, candidates(run, q.id, corpus, self.config.depth)) for q in queries]
        pairs, names = [], []
        for query, docs in per_query:
            adapter = experts if isinstance(experts, str) else experts[query.id]
            pairs += [(query.text, d.full_text) for d in docs]
            names += [adapter] * len(docs)
        start = time.perf_counter()
        scores = self.score_pairs(pairs, names).tolist()
        seconds = time.perf_counter() - start
        return assemble_run(per_query, scores, run, self.config.depth, name), names, seconds

    def _r2r_reranker(self):
        """`R2RReranker` over this experiment (so it scores on Ray when the experiment does): the saved bank's
        router, and the EAG expert of each domain label."""
        from routerank.r2r.reranker import R2RReranker
        from routerank.r2r.routers import SoftmaxRouter

        router = SoftmaxRouter.load(self.work / "bank" / "router", self.bank().hidden_state)
        experts = {label: f"eag-{name}" for name, label in self.config.domains.items()}
        return R2RReranker(self, router, name="r2r", experts=experts)

    def score_r2r(self, dataset: str) -> None:
        """System (d): the saved bank's router routes each test query, and `R2RReranker` reranks with the chosen
        EAG expert, scoring through this experiment (so on Ray when it runs there)."""
        from routerank.data.trec import write_run

        reranker = self._r2r_reranker()
        experts = reranker.experts
        queries, candidates = self.test_queries(dataset), self.candidates(dataset)  # the run file is read once
        run = reranker.rerank_run(queries, candidates, self.dataset(dataset).corpus, self.config.depth)
        path = self.run_path("r2r", dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_run(run, path, tag="r2r")
        meta = {
            "pairs": sum(min(self.config.depth, len(candidates[q.id])) for q in queries if q.id in candidates),
            "seconds": reranker.routing_seconds + reranker.scoring_seconds,
            "routing_seconds": reranker.routing_seconds,
            "adapters": sorted({experts.get(d.choice, d.choice) for d in reranker.last_decisions}),
        }
        self._write_meta(path, meta)

    def score_cross_encoder(self, dataset: str) -> None:
        from routerank.data.trec import write_run
        from routerank.rerank.registry import make_reranker

        ds = self.dataset(dataset)
        reranker = make_reranker(self.config.cross_encoder)
        start = time.perf_counter()
        out = reranker.rerank_run(self.test_queries(dataset), self.candidates(dataset), ds.corpus, self.config.depth)
        path = self.run_path("ce", dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_run(out, path, tag="ce")
        self._write_meta(path, {"seconds": time.perf_counter() - start, "reranker": self.config.cross_encoder})

    @staticmethod
    def _write_meta(path: Path, meta: dict) -> None:
        with atomic_write(path.with_suffix(".json")) as out:
            json.dump(meta, out, indent=2)

    # routing ---------------------------------------------------------------------------------------------

    def routing(self) -> dict:
        """Fit the latent router and its baselines on train queries; score them on every test query."""
        from studies.r2r.router_eval import cached_features, evaluate_routers

        path = self.work / "router" / "routing.json"
        if path.exists():
            return json.loads(path.read_text())
        c = self.config
        labels = list(c.domains.values())
        train, test = [], []
        for name, label in c.domains.items():
            pool = self.dataset(name).split_queries("train")
            pool = random.Random(c.seed).sample(pool, min(c.router_train_queries, len(pool)))
            train += [(q.text, label) for q in pool]
            test += [(f"{name}:{q.id}", q.text, label) for q in self.dataset(name).split_queries("test")]
        backbone = self.bank().hidden_state
        minilm = None

        def encode_minilm(texts):
            nonlocal minilm
            from routerank.retrieve.dense import DenseRetriever

            minilm = minilm or DenseRetriever(progress=False)
            return minilm.encode(texts, progress=False)

        feats = {}
        for enc, fn in (("backbone", backbone), ("minilm", encode_minilm)):
            for group, texts in (("train", [t for t, _ in train]), ("test", [t for _, t, _ in test])):
                name = f"r2r-{c.backbone if enc == 'backbone' else enc}-{group}"
                feats[enc, group] = cached_features(name.replace("/", "_").replace(":", "_"), texts, fn)
        # the latency of routing alone: the router's forward on fresh (uncached) query texts
        sample = [t for _, t, _ in test[:: max(1, len(test) // 50)]]
        start = time.perf_counter()
        backbone(sample)
        route_seconds_per_query = (time.perf_counter() - start) / max(len(sample), 1)

        rows, fitted = evaluate_routers(labels, train, test, feats, threshold=c.router_threshold, seed=c.seed)
        report = {
            "train_queries": len(train),
            "test_queries": len(test),
            "labels": labels,
            "route_seconds_per_query": route_seconds_per_query,
            "routers": rows,
            "decisions": {},
        }
        for title, (router, _, predicted) in fitted.items():
            if title.startswith("latent-linear"):
                report["decisions"] = {qid: p for (qid, _, _), p in zip(test, predicted, strict=True)}
                router.threshold = c.router_threshold
                router.features = backbone
                self._save_bank(router)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            json.dump(report, out, indent=2)
        return report

    def _save_bank(self, router) -> None:
        """A bank folder usable as `r2r:<work>/bank` in any pipeline: the EAG experts plus this router."""
        from routerank.r2r.reranker import save_bank

        experts = {label: self.expert_dir(f"eag-{name}") for name, label in self.config.domains.items()}
        # the bank names adapters by domain label; the router predicts labels
        save_bank(self.work / "bank", self.config.backbone, experts, router)

    # the plan --------------------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        """The stages in order; each is skipped when its output exists, and waits while its inputs do not."""
        c, steps = self.config, []
        names = list(c.domains)
        configs = self.expert_configs()

        def ready(*adapters):
            return lambda: all(a == GENERALIST or self.expert_ready(a, configs[a]) for a in adapters)

        def train(adapter):
            return Step(f"train {adapter}", "train", ready(adapter), lambda: self.train(adapter))

        def score(system, dataset, adapter):
            return Step(
                f"score {system} on {dataset}",
                "score",
                lambda: self.run_path(system, dataset).exists(),
                lambda: self.score_run(system, dataset, adapter),
                needs=ready(adapter),
            )

        eag = [f"eag-{name}" for name in names]
        routed = lambda: (self.work / "router" / "routing.json").exists()  # noqa: E731

        def r2r_score(dataset):
            return Step(
                f"score r2r on {dataset}",
                "score",
                lambda: self.run_path("r2r", dataset).exists(),
                lambda: self.score_r2r(dataset),
                needs=lambda: routed() and ready(*eag)(),
            )

        def alpha(system):  # a system's own interpolation weight per domain, once its inputs exist
            if not c.interpolate:
                return []
            out = []
            for name in names:
                needs = ready(*self.system_adapters(system, name))
                out.append(
                    Step(
                        f"alpha {system} on {name} (dev)",
                        "score",
                        self.system_alpha_path(system, name).exists,
                        (lambda s=system, n=name: self.choose_system_alpha(s, n)),
                        needs=(lambda r=needs: routed() and r()) if system == "r2r" else needs,
                    )
                )
            return out

        steps += [train(adapter) for adapter in eag]
        steps.append(Step("route (latent router + baselines)", "route", routed, self.routing, needs=ready(*eag)))
        if c.interpolate:
            steps.append(Step("alpha (generalist, dev queries)", "score", self.alpha_path().exists, self.choose_alpha))
        for name in names:
            steps += [score("generalist", name, GENERALIST), score(f"eag-{name}", name, f"eag-{name}"), r2r_score(name)]
        steps += alpha("oracle") + alpha("r2r")
        steps.append(train("pooled"))
        steps += [score("pooled", name, "pooled") for name in names] + alpha("pooled")
        for name in names:
            steps += [train(f"plain-{name}"), score(f"plain-{name}", name, f"plain-{name}")]
        steps += alpha("plain")
        if c.cross_encoder:
            steps += [
                Step(
                    f"score ce on {name}",
                    "score",
                    (lambda n=name: self.run_path("ce", n).exists()),
                    (lambda n=name: self.score_cross_encoder(n)),
                )
                for name in names
            ]
        if c.forgetting:
            for expert in names:  # the forgetting matrix, off the diagonal
                steps += [score(f"eag-{expert}", name, f"eag-{expert}") for name in names if name != expert]
        for adapter in configs:
            if adapter.startswith("eag_"):
                dataset = adapter.split("-", 1)[1]
                steps += [train(adapter), score(adapter, dataset, adapter)]
        return steps

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """One pass over the plan (see routerank.stages.run_plan): two processes, e.g. `--only train`
        and `--only route,score`, can share a work dir."""
        if self.executor is not None and (not only or "train" in only):
            self.train_on_ray()
        self.stages = run_plan(
            self.plan(), self.work / "locks", max_minutes=max_minutes, only=only, progress=self.progress, tag="r2r"
        )
        return self.stages


__all__ = ["R2RConfig", "R2RExperiment", "Stage", "Step"]
