"""The interleaved study's stages: each writes one JSON file in the work dir and is skipped when that file exists.

1. `linearisation`: each table style, measured on train (where the style used by every later stage is chosen) and
   on test: flat passage retrieval (BM25, dense) and document retrieval with mean-merged passage vectors.
2. `attention`: the attention pooling, trained contrastively on train queries, the best epoch by dev loss.
3. `documents`: document-level nDCG@10 and R@10 of every representation and of BM25 over whole documents, on dev
   (where the best merge and the best representation are chosen) and on test, with paired tests on test.
4. `depth`: for each family (dense, BM25) and fine stage, the coarse depth (documents) chosen on dev among those
   that score fewer passages per query than the flat baseline.
5. `passages`: passage-level nDCG@10 on test, coarse to fine against flat passage retrieval of the same family
   reranked by the same fine stage, with the passages each scores per query. Dense: the dense document
   representation chosen on dev against dense passages; BM25: BM25 over whole documents against BM25 passages.
6. `localisation`: inside each test query's gold document, whether each fine stage ranks a relevant passage first.
7. `long`: the document-level comparison on long documents cut into passages (aila-cases).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routerank.data.documents import DocumentMap, chunk_corpus, load_documents
from routerank.data.registry import load_dataset
from routerank.data.types import Corpus, Dataset
from routerank.errors import RouterankError
from routerank.evaluate.measures import evaluate
from routerank.evaluate.significance import paired_test
from routerank.rerank.passage_select import SelectorFineStage, make_selector
from routerank.rerank.registry import make_reranker
from routerank.retrieve.bm25 import BM25Retriever
from routerank.retrieve.coarse import CoarseToFine, VectorFine, WholeDocuments
from routerank.retrieve.dense import DenseRetriever
from routerank.retrieve.documents import DocumentRetriever
from routerank.retrieve.pooling import AttentionPooling, train_attention_pooling
from routerank.retrieve.store import cached_index
from routerank.stages import Stage, Step, run_plan
from routerank.starter import resolve_spec
from studies.base import Study
from studies.interleaved.config import InterleavedConfig

MEASURES = "nDCG@10 R@10"
POOLED = ("mean", "max", "attention")
KINDS = ("measure", "train", "tune")
SELECTOR = "idcm-selector:"  # a fine stage spec: an IDCM passage selector, e.g. idcm-selector:bm25
FAMILIES = ("dense", "bm25")  # coarse and flat stages compared with the same models


def scores(evaluation, measure: str = "nDCG@10") -> dict[str, float]:
    """Per-query values of one measure."""
    return dict(evaluation.per_query[measure])


def summary(evaluation) -> dict[str, Any]:
    """Means of every measure, and the per-query nDCG@10 kept for paired tests."""
    return {"means": {m: round(v, 4) for m, v in evaluation.means.items()}, "per_query": scores(evaluation)}


def test_pair(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """b against a: delta of the means, paired t-test and randomisation p."""
    result = paired_test(a, b)
    return {"delta": round(result.delta, 4), "p": result.t_pvalue, "p_perm": result.randomization_pvalue}


class InterleavedStudy(Study):
    """The stages over one dataset with a documents.tsv, and the long-document comparison."""

    FOLDER = "interleaved"

    def __init__(self, config: InterleavedConfig, work_dir: Path | None = None):
        super().__init__(config, work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.source: Dataset = load_dataset(config.dataset)  # the dataset with a documents.tsv
        documents = load_documents(self.source)
        if documents is None:
            raise RouterankError(
                f"dataset {config.dataset!r} has no documents.tsv", fix="give a BEIR folder with a documents.tsv"
            )
        self.documents: DocumentMap = documents
        self.queries = {split: self.source.split_queries(split) for split in ("train", "dev", "test")}
        self.qrels = {split: self.source.split_qrels(split) for split in ("train", "dev", "test")}
        self.doc_qrels = {split: documents.lift_qrels(q) for split, q in self.qrels.items()}

    # files -----------------------------------------------------------------------------------------------------
    # building blocks -----------------------------------------------------------------------------------------
    @property
    def style(self) -> str:
        """The table style chosen on train queries."""
        return self.read_json(self.stage_file("linearisation"))["chosen"]

    def passages(self, style: str) -> Corpus:
        """The passage corpus with tables in `style`."""
        return self.documents.passage_corpus(self.source.corpus, style)

    def pooling(self) -> AttentionPooling:
        """The trained attention pooling."""
        return AttentionPooling.load(self.work / "attention")

    def document_retriever(self, merge: str, style: str):
        """A cached document index of one representation."""
        retriever = DocumentRetriever(
            self.documents,
            model=self.config.model,
            merge=merge,
            pooling=self.pooling() if merge == "attention" else None,
            table_style=style,
            backend=self.config.backend,
            progress=True,
        )
        return cached_index(retriever, self.source.corpus)

    def dense_passages(self, style: str):
        """Flat dense retrieval over the passages."""
        retriever = DenseRetriever(self.config.model, backend=self.config.backend, progress=True)
        return cached_index(retriever, self.passages(style))

    def bm25(self, corpus: Corpus):
        """BM25 over `corpus` (passages or whole documents)."""
        return cached_index(BM25Retriever(), corpus)

    def fine_stage(self, spec: str, index):
        """A fine stage: the passage vectors of `index`, or a reranker spec."""
        if spec == "passage-vectors":
            return VectorFine(index)
        if spec.startswith(SELECTOR):
            return SelectorFineStage(make_selector(spec.removeprefix(SELECTOR)), self.documents)
        return make_reranker(resolve_spec(spec))

    # stages --------------------------------------------------------------------------------------------------
    def linearisation(self) -> None:
        """Every table style on train and test; the style with the best train nDCG@10 of flat dense passages wins."""
        rows = {}
        for style in self.config.table_styles:
            passages = self.passages(style)
            bm25, dense = self.bm25(passages), self.dense_passages(style)
            mean_docs = self.document_retriever("mean", style)
            row = {}
            for split in ("train", "test"):
                queries, qrels = self.queries[split], self.qrels[split]
                row[split] = {
                    "bm25 passages": evaluate(bm25.search(queries, 100), qrels, MEASURES).means,
                    "dense passages": evaluate(dense.search(queries, 100), qrels, MEASURES).means,
                    "dense documents (mean)": evaluate(
                        mean_docs.search(queries, 100), self.doc_qrels[split], MEASURES
                    ).means,
                }
            rows[style] = row
        chosen = max(rows, key=lambda s: rows[s]["train"]["dense passages"]["nDCG@10"])
        self.write_json(
            self.stage_file("linearisation"), indent=1, record={"chosen": chosen, "chosen_on": "train", "styles": rows}
        )

    def attention(self) -> None:
        """Train the attention pooling on train queries, the best epoch by dev loss."""
        mean_docs = self.document_retriever("mean", self.style)
        pooling, metrics = train_attention_pooling(
            mean_docs,
            self.documents,
            self.queries["train"],
            self.doc_qrels["train"],
            dev_queries=self.queries["dev"],
            dev_qrels=self.doc_qrels["dev"],
            epochs=self.config.attention_epochs,
            lr=self.config.attention_lr,
            temperature=self.config.attention_temperature,
            seed=self.config.seed,
        )
        pooling.save(self.work / "attention")
        self.write_json(self.stage_file("attention-metrics"), indent=1, record=metrics)

    def documents_stage(self) -> None:
        """Document-level measures of every representation on dev and test."""
        style = self.style
        systems: dict[str, Any] = {}
        for merge in self.config.merges:
            retriever = self.document_retriever(merge, style)
            systems[merge] = {s: summary(self._eval_docs(retriever, s)) for s in ("dev", "test")}
        whole = self.bm25(self.documents.document_corpus(self.source.corpus, style))
        systems["bm25 (whole documents)"] = {s: summary(self._eval_docs(whole, s)) for s in ("dev", "test")}
        pooled = [m for m in POOLED if m in systems]
        best_merge = max(pooled, key=lambda m: systems[m]["dev"]["means"]["nDCG@10"])
        dense = [m for m in self.config.merges if m in systems]
        best = max(dense, key=lambda m: systems[m]["dev"]["means"]["nDCG@10"])
        tests = {
            f"{best_merge} vs {other}": test_pair(
                systems[other]["test"]["per_query"], systems[best_merge]["test"]["per_query"]
            )
            for other in ("first", "concat", "maxp", "bm25 (whole documents)")
            if other in systems
        }
        self.write_json(
            self.stage_file("documents"),
            indent=1,
            record={
                "style": style,
                "best_merge": best_merge,
                "best": best,
                "chosen_on": "dev",
                "systems": systems,
                "tests": tests,
            },
        )

    def _eval_docs(self, retriever, split: str):
        return evaluate(retriever.search(self.queries[split], 100), self.doc_qrels[split], MEASURES)

    def coarse(self, fine_spec: str | None, depth: int, family: str = "dense") -> CoarseToFine:
        """Coarse to fine with one fine stage (None: document order). The coarse stage of the `dense` family is the
        dense representation chosen on dev; of the `bm25` family, BM25 over whole documents. A passage-vectors
        fine stage reads the dense document index's passage vectors in either family."""
        dense = self.document_retriever(self.read_json(self.stage_file("documents"))["best"], self.style)
        if family == "dense":
            retriever = dense
        else:
            retriever = WholeDocuments(BM25Retriever(), self.documents, self.style)
            retriever.index(self.source.corpus)
        fine = None if fine_spec is None else self.fine_stage(fine_spec, dense)
        return CoarseToFine(retriever, self.documents, self.passages(self.style), fine=fine, depth=depth)

    def flat(self, family: str):
        """The flat passage retriever of a family: dense or BM25 over the passages."""
        return self.dense_passages(self.style) if family == "dense" else self.bm25(self.passages(self.style))

    def depth(self) -> None:
        """Per family and fine stage, the depth with the best dev nDCG@10 among those that score fewer passages per
        query than flat."""
        chosen: dict[str, dict[str, int]] = {}
        tried: dict[str, dict[str, Any]] = {}
        for family in FAMILIES:
            chosen[family], tried[family] = {}, {}
            for spec in self.config.fine:
                rows = tried[family][spec] = {}
                for depth in self.config.depths:
                    system = self.coarse(spec, depth, family)
                    run = system.search(self.queries["dev"], 100)
                    scored = statistics.fmean(system.last_scored.values())
                    ndcg = evaluate(run, self.qrels["dev"], MEASURES).means["nDCG@10"]
                    rows[str(depth)] = {"nDCG@10": round(ndcg, 4), "passages_scored": round(scored, 2)}
                cheaper = {d: r for d, r in rows.items() if r["passages_scored"] < self.config.flat_depth}
                pool = cheaper or rows
                chosen[family][spec] = int(max(pool, key=lambda d: pool[d]["nDCG@10"]))
        self.write_json(
            self.stage_file("depth"), indent=1, record={"chosen": chosen, "chosen_on": "dev", "tried": tried}
        )

    def passages_stage(self) -> None:
        """Passage-level nDCG@10 on test: per family, coarse to fine against flat passages of the same family
        reranked by the same fine stage."""
        style, flat_depth, test, qrels = self.style, self.config.flat_depth, self.queries["test"], self.qrels["test"]
        rows: dict[str, Any] = {}
        tests = {}
        for family in FAMILIES:
            flat_run = self.flat(family).search(test, 100)
            rows[f"{family} passages"] = summary(evaluate(flat_run, qrels, MEASURES))
            for spec in self.config.fine:
                depth = self.read_json(self.stage_file("depth"))["chosen"][family][spec]
                system = self.coarse(spec, depth, family)
                coarse_run = system.search(test, 100)
                flat = system.fine.rerank_run(test, flat_run, self.passages(style), flat_depth)
                flat_eval, coarse_eval = (evaluate(r, qrels, MEASURES) for r in (flat, coarse_run))
                rows[f"{family} passages@{flat_depth}>>{spec}"] = {**summary(flat_eval), "passages_scored": flat_depth}
                rows[f"{family} documents@{depth}>>{spec}"] = {
                    **summary(coarse_eval),
                    "passages_scored": round(statistics.fmean(system.last_scored.values()), 2),
                }
                tests[f"{family}, {spec}"] = test_pair(scores(flat_eval), scores(coarse_eval))
        self.write_json(self.stage_file("passages"), indent=1, record={"style": style, "systems": rows, "tests": tests})

    def localisation(self) -> None:
        """Inside the gold document of each test query: is the fine stage's first passage relevant?"""
        gold = {}
        for query in self.queries["test"]:
            relevant = self.qrels["test"].relevant(query.id)
            by_doc: dict[str, int] = {}
            for passage in relevant:
                doc = self.documents.document_of(passage)
                by_doc[doc] = by_doc.get(doc, 0) + 1
            if by_doc:
                gold[query.id] = max(sorted(by_doc), key=by_doc.get)
        results = {}
        qrels = self.qrels["test"]
        passages = [len(self.documents.passages(gold[q])) for q in gold]
        for spec in ("document-order", *self.config.fine):
            run = self.coarse(None if spec == "document-order" else spec, 1).locate(self.queries["test"], gold)
            first = [1.0 if run[q].doc_ids and qrels[q].get(run[q].doc_ids[0], 0) > 0 else 0.0 for q in gold]
            results[spec] = {
                "first_is_relevant": round(statistics.fmean(first), 4),
                "queries": len(first),
                "passages_per_gold_document": round(statistics.fmean(passages), 2),
            }
        self.write_json(self.stage_file("localisation"), indent=1, record=results)

    def long(self) -> None:
        """Document-level comparison on long documents cut into passages (no train queries choose anything here)."""
        dataset = load_dataset(self.config.long_dataset)
        chunks, documents = chunk_corpus(dataset.corpus, self.config.chunk_words, self.config.max_chunks)
        split = "test"
        queries, qrels = dataset.split_queries(split), dataset.split_qrels(split)
        systems = {}
        for merge in [m for m in self.config.merges if m != "attention"]:
            retriever = cached_index(
                DocumentRetriever(
                    documents, model=self.config.model, merge=merge, backend=self.config.backend, progress=True
                ),
                chunks,
            )
            systems[merge] = summary(evaluate(retriever.search(queries, 100), qrels, MEASURES))
        systems["bm25 (whole documents)"] = summary(
            evaluate(self.bm25(dataset.corpus).search(queries, 100), qrels, MEASURES)
        )
        self.write_json(
            self.stage_file("long"),
            indent=1,
            record={
                "dataset": self.config.long_dataset,
                "split": split,
                "queries": len(queries),
                "chunk_words": self.config.chunk_words,
                "max_chunks": self.config.max_chunks,
                "systems": systems,
            },
        )

    # plan ----------------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """The plan, in order."""

        def step(name: str, kind: str, action: Callable[[], None], needs: tuple[str, ...] = ()) -> Step:
            return Step(
                name,
                kind,
                done=lambda: self.stage_file(name).exists(),
                action=action,
                needs=lambda: all(self.stage_file(n).exists() for n in needs),
            )

        return [
            step("linearisation", "measure", self.linearisation),
            step("attention-metrics", "train", self.attention, ("linearisation",)),
            step("documents", "measure", self.documents_stage, ("attention-metrics",)),
            step("depth", "tune", self.depth, ("documents",)),
            step("passages", "measure", self.passages_stage, ("depth",)),
            step("localisation", "measure", self.localisation, ("documents",)),
            step("long", "measure", self.long),
        ]

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """Run every stage not yet done."""
        return run_plan(self.steps(), self.work, max_minutes=max_minutes, only=only, tag="interleaved")

    def results(self) -> dict[str, Any]:
        """Every finished stage's result, per-query values left out."""

        def strip(data: Any) -> Any:
            if isinstance(data, dict):
                return {k: strip(v) for k, v in data.items() if k != "per_query"}
            return data

        names = ("linearisation", "attention-metrics", "documents", "depth", "passages", "localisation", "long")
        return {n: strip(self.read_json(self.stage_file(n))) for n in names if self.stage_file(n).exists()}
