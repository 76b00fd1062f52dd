"""Build the starter bundle, resumably: generalist, merge, experts, router, staged bundle, dev alphas, test figures,
reference scores, then the shipped copy with its manifest.

Every stage writes its output atomically under the work dir (`<cache>/starter-build/<profile>-<digest>/`), so a
killed build loses only the stage in flight; the two training stages also resume inside themselves from their
checkpoints (`<out>.state/`).
"""

from __future__ import annotations

import json
import platform
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import routerank
from routerank.data.registry import load_dataset
from routerank.data.types import Run
from routerank.errors import RouterankError
from routerank.evaluate import evaluate
from routerank.fsutil import atomic_dir
from routerank.pipeline import build, canonical
from routerank.r2r.reranker import R2RReranker
from routerank.r2r.routers import OracleRouter, SoftmaxRouter, calibrate_threshold
from routerank.r2r.trainer import ExpertConfig, train_expert
from routerank.rerank.backbones import EncoderBackbone
from routerank.rerank.cross_encoder import (
    PARTIAL_WEIGHTS,
    CrossEncoderReranker,
    assemble_cross_encoder,
    pack_partial_cross_encoder,
)
from routerank.rerank.interpolate import interpolate_runs, saved_alpha
from routerank.route import count_choices
from routerank.stages import Step, run_plan
from routerank.starter import MANIFEST, REBUILD, TRAIN_RECORD, checksums, materialize
from routerank.train.cross_encoder import CrossEncoderTrainConfig, train_cross_encoder
from routerank.tune import tune_alpha
from studies.base import Study
from studies.starter.config import StarterConfig
from studies.starter.report import results_table

KEY = "nDCG@10"
LIMIT_MB = 30.0


class StarterBuild(Study):
    """The staged build of one `StarterConfig` (see the module docstring)."""

    FOLDER = "starter-build"

    def __init__(self, config: StarterConfig, work_dir: str | Path | None = None, *, progress: bool = True):
        super().__init__(config, work_dir, progress=progress)
        self.trained = self.work / "generalist-model"  # the full fine-tune, as trained
        self.packed = self.work / "generalist-packed"  # what ships: its weights less the embeddings, fp16
        self.merged = self.work / "generalist"  # what ships, unpacked: the backbone of the experts
        self.bundle = self.work / "bundle"
        self.unpacked = self.work / "unpacked"

    # plan ------------------------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        """The stages in order; each is skipped when its output exists."""
        c = self.config
        steps = [
            Step("generalist", "train", self.trained.is_dir, self.train_generalist),
            Step("merge", "train", lambda: (self.merged / TRAIN_RECORD).is_file(), self.merge, self.trained.is_dir),
        ]
        for name in c.datasets:
            folder = self.expert_dir(name)
            steps.append(
                Step(f"expert:{name}", "train", folder.is_dir, lambda n=name: self.train_expert(n), self.merged.is_dir)
            )
        steps += [
            Step("router", "route", lambda: (self.work / "router.json").is_file(), self.fit_router, self._trained),
            Step("alpha", "tune", lambda: (self.bundle / "interpolation").is_dir(), self.tune_alphas, self._routed),
        ]
        for name in c.datasets:
            path = self.work / "test" / f"{name}.json"
            steps.append(Step(f"test:{name}", "test", path.is_file, lambda n=name: self.test(n), self._tuned))
        steps.append(
            Step("reference", "test", lambda: (self.work / "reference.json").is_file(), self.reference, self._tuned)
        )
        compared = self.work / "lora-vs-full.json"
        steps.append(Step("lora-vs-full", "compare", compared.is_file, self.compare_lora, self._tuned))
        return steps

    def _trained(self) -> bool:
        return all(self.expert_dir(name).is_dir() for name in self.config.datasets)

    def _routed(self) -> bool:
        return (self.work / "router.json").is_file()

    def _tuned(self) -> bool:
        return (self.bundle / "interpolation").is_dir()

    def run(self, max_minutes: float | None = None, only: set[str] | None = None):
        """One pass over the plan (`routerank.stages.run_plan`)."""
        return run_plan(
            self.plan(), self.work / "locks", max_minutes=max_minutes, only=only, progress=self.progress, tag="starter"
        )

    # training --------------------------------------------------------------------------------------------

    def train_queries(self) -> int | None:
        return self.config.train_queries or None

    def generalist_config(self) -> CrossEncoderTrainConfig:
        c = self.config
        return CrossEncoderTrainConfig(
            ",".join(c.datasets),
            base_model=c.base_model,
            miner="hybrid",
            negatives=c.negatives,
            max_queries=self.train_queries(),
            positives_per_query=1,
            dev_queries=c.dev_queries,
            epochs=c.generalist_epochs,
            max_length=c.max_length,
            lr=c.generalist_lr,
            eval_every=c.eval_every,
            patience=c.patience,
            seed=c.seed,
            autocast=c.autocast,
            freeze_embeddings=True,
        )

    def train_generalist(self) -> None:
        train_cross_encoder(self.generalist_config(), self.trained, progress=self.progress)

    def merge(self) -> None:
        """The generalist packed as it ships (fp16, no embeddings), then unpacked by the same code the installed
        bundle uses: the experts train on exactly the model users get."""
        pack_partial_cross_encoder(self.trained, self.packed)
        shutil.copy(self.trained / TRAIN_RECORD, self.packed / TRAIN_RECORD)
        assemble_cross_encoder(self.packed, self.merged, self.config.base_model, self.config.max_length)
        shutil.copy(self.trained / TRAIN_RECORD, self.merged / TRAIN_RECORD)  # the held-out dev queries

    def expert_dir(self, name: str) -> Path:
        return self.work / "experts" / name

    def expert_config(self, name: str) -> ExpertConfig:
        c = self.config
        return ExpertConfig(
            dataset=name,
            domain=name,
            backbone=f"ce:{self.merged}",
            miner="hybrid",
            negatives=c.expert_negatives,
            max_queries=self.train_queries(),
            dev_queries=c.dev_queries,
            dev_from_backbone=True,
            max_doc_tokens=c.max_length,
            epochs=c.expert_epochs,
            eval_every=c.eval_every,
            patience=c.patience,
            seed=c.seed,
            autocast=c.autocast,
            lora_r=c.expert_lora_r,
            lora_alpha=2 * c.expert_lora_r,
            lr=c.expert_lr,
        )

    def train_expert(self, name: str) -> None:
        train_expert(self.expert_config(name), self.expert_dir(name), progress=self.progress)

    # routing ---------------------------------------------------------------------------------------------

    def fit_router(self) -> None:
        """The latent router on the generalist's query state, its threshold against out-of-domain dev queries,
        and the staged bundle (generalist, experts, router)."""
        c = self.config
        state = EncoderBackbone(f"ce:{self.merged}", max_doc_tokens=c.max_length).hidden_state
        texts, labels, dev_texts, dev_labels, test_texts, test_labels = [], [], [], [], [], []
        held = json.loads((self.merged / TRAIN_RECORD).read_text())["sources"]
        for name in c.datasets:
            ds = self.dataset(name)
            dev_ids = set(held[name]["dev_queries"])
            pool = [q for q in ds.split_queries("train") if q.id not in dev_ids]
            for q in random.Random(c.seed).sample(pool, min(c.router_queries, len(pool))):
                texts.append(q.text)
                labels.append(name)
            dev = [q for q in ds.split_queries(held[name]["dev_split"]) if q.id in dev_ids]
            dev_texts += [q.text for q in dev]
            dev_labels += [name] * len(dev)
            test = ds.split_queries("test")
            test_texts += [q.text for q in test]
            test_labels += [name] * len(test)
        ood = []
        for name in c.ood_datasets:
            ds = load_dataset(name)
            split = "train" if "train" in ds.qrels else "test"
            pool = ds.split_queries(split)
            ood += [q.text for q in random.Random(c.seed).sample(pool, min(100, len(pool)))]
        router = SoftmaxRouter(list(c.datasets), state).fit(texts, labels, seed=c.seed)
        dev_probs, ood_probs = router.predict_proba(dev_texts), router.predict_proba(ood)
        router.threshold = calibrate_threshold(dev_probs, ood_probs)
        test_probs = router.predict_proba(test_texts)
        kept = test_probs.max(1) >= router.threshold
        record = {
            "train_queries": len(texts),
            "threshold": router.threshold,
            "dev_accuracy": _accuracy(dev_probs, dev_labels, c.datasets),
            "dev_in_domain_kept": float((dev_probs.max(1) >= router.threshold).mean()),
            "ood_queries": len(ood),
            "ood_to_generalist": float((ood_probs.max(1) < router.threshold).mean()),
            "test_accuracy": _accuracy(test_probs, test_labels, c.datasets),
            "test_to_generalist": float((~kept).mean()),
        }
        self.stage_bundle(router)
        self.write_json(self.work / "router.json", record)

    def stage_bundle(self, router: SoftmaxRouter) -> None:
        """The bundle's model files: the packed generalist with its training record, each expert, the router."""
        with atomic_dir(self.bundle) as tmp:
            (tmp / "generalist").mkdir()
            for name in (PARTIAL_WEIGHTS, TRAIN_RECORD):
                shutil.copy(self.packed / name, tmp / "generalist" / name)
            for name in self.config.datasets:
                out = tmp / "experts" / name
                out.mkdir(parents=True)
                for file in ("adapter_config.json", "adapter_model.safetensors", "routerank_expert.json"):
                    shutil.copy(self.expert_dir(name) / file, out / file)
            router.save(tmp / "router")
            self.write_json(tmp / MANIFEST, self.manifest_core())

    def compare_lora(self) -> None:
        """The choice the bundle rests on: the shipped generalist against a LoRA adapter plus head over the frozen
        base model, trained with the same data, groups, epochs and precision (its own learning rate), compared on
        the dev queries by nDCG@10 over the first stage, plain and at each one's dev-chosen alpha."""
        c = self.config
        adapter, merged = self.work / "generalist-lora", self.work / "generalist-lora-merged"
        if not adapter.is_dir():
            lora = dict(lora_r=c.lora_r, lora_alpha=2 * c.lora_r, lr=c.lora_lr, freeze_embeddings=False)
            train_cross_encoder(replace(self.generalist_config(), **lora), adapter, progress=self.progress)
        if not merged.is_dir():
            assemble_cross_encoder(adapter, merged, c.base_model, c.max_length)
            shutil.copy(adapter / TRAIN_RECORD, merged / TRAIN_RECORD)
        common = dict(depth=c.depth, dev_queries=c.dev_queries, seed=c.seed, work_dir=self.work / "tune")
        rows = {}
        for label, folder, shipped in (
            ("full", self.bank() / "generalist", self.packed / PARTIAL_WEIGHTS),
            ("lora", merged, adapter / "adapter_model.safetensors"),
        ):
            record = tune_alpha(c.datasets, f"ce:{folder}", c.first_stage, **common, options=self.options())
            curves = {entry["dataset"]: entry["curve"] for entry in record["by_corpus"].values()}
            rows[label] = {
                "plain": {name: curve[-1] for name, curve in curves.items()},
                "interpolated": {name: max(curve) for name, curve in curves.items()},
                "size_mb": round(shipped.stat().st_size / 2**20, 2),
            }
        for label in ("full", "lora"):
            for kind in ("plain", "interpolated"):
                values = rows[label][kind]
                values["mean"] = round(sum(values.values()) / len(values), 5)
        rows["lora_minus_full"] = {
            kind: round(rows["lora"][kind]["mean"] - rows["full"][kind]["mean"], 5)
            for kind in ("plain", "interpolated")
        }
        self.write_json(self.work / "lora-vs-full.json", rows)

    # measuring -------------------------------------------------------------------------------------------

    def bank(self) -> Path:
        """The staged bundle, unpacked as an installed one is (keyed by its model files)."""
        if not (self.bundle / MANIFEST).is_file():
            self.write_json(self.bundle / MANIFEST, self.manifest_core())
        return materialize(self.bundle, self.unpacked)

    def options(self) -> dict[str, Any]:
        return {"dtype": "bf16"} if self.config.autocast == "bf16" else {}

    def tune_alphas(self) -> None:
        """alpha per dataset (and pooled) on dev queries, for the generalist and the routed system."""
        c = self.config
        bank = self.bank()
        common = dict(depth=c.depth, dev_queries=c.dev_queries, seed=c.seed, work_dir=self.work / "tune")
        common["options"] = self.options()
        records: dict[str, dict] = {"generalist": {}, "routed": {}}
        for first in (c.first_stage, *c.also_tune):
            key = canonical(first)
            records["generalist"][key] = tune_alpha(c.datasets, f"ce:{bank / 'generalist'}", first, **common)
            records["routed"][key] = tune_alpha(c.datasets, f"r2r:{bank}", first, **common)
        with atomic_dir(self.bundle / "interpolation") as tmp:
            for label, record in records.items():
                self.write_json(tmp / f"{label}.json", record)

    def test(self, name: str) -> None:
        """Every system on `name`'s test queries: per-query nDCG@10, and the routed system's expert counts."""
        c = self.config
        bank = self.bank()
        ds = self.dataset(name)
        queries = self.test_queries(name)
        qrels = ds.split_qrels("test").subset(q.id for q in queries)
        first_spec = canonical(c.first_stage)
        runs: dict[str, Run] = {
            "bm25": build("bm25", ds.corpus).search(queries, 100),
            "first": build(c.first_stage, ds.corpus).search(queries, 100),
        }
        generalist = CrossEncoderReranker(bank / "generalist", cache=True, progress=self.progress, **self.options())
        routed = R2RReranker.from_spec(str(bank), **self.options())
        oracle = R2RReranker(routed.bank, OracleRouter(routed.router.labels, {q.id: name for q in queries}))
        counts: dict[str, int] = {}
        for label, reranker, alpha_of in (
            ("generalist", generalist, generalist),
            ("expert", oracle, routed),
            ("routed", routed, routed),
        ):
            plain = reranker.rerank_run(queries, runs["first"], ds.corpus, c.depth)
            runs[f"{label}-plain"] = plain
            alpha = saved_alpha(alpha_of, first_spec, ds.corpus)
            runs[label] = interpolate_runs(plain, runs["first"], c.depth, alpha, label)
            if label == "routed":
                counts = count_choices(routed.last_decisions)
        per_query = {label: evaluate(run, qrels, KEY).per_query[KEY] for label, run in runs.items()}
        self.write_json(
            self.work / "test" / f"{name}.json",
            {"dataset": name, "queries": len(queries), "depth": c.depth, "per_query": per_query, "routed_to": counts},
        )

    def reference(self) -> None:
        """Scores of fixed (query, document) pairs in fp32, by the generalist and by the routed system: the test
        suite checks the installed bundle reproduces them."""
        c = self.config
        bank = self.bank()
        generalist = CrossEncoderReranker(bank / "generalist", progress=False)
        routed = R2RReranker.from_spec(str(bank), dtype=None)
        rows = []
        for name in c.datasets:
            ds = self.dataset(name)
            qrels = ds.split_qrels("test")
            for q in ds.split_queries("test")[: c.reference_pairs]:
                doc = next(iter(qrels.relevant(q.id)))
                rows.append({"dataset": name, "query": q.text, "document": ds.corpus[doc].full_text})
        pairs = [(r["query"], r["document"]) for r in rows]
        general = generalist.score_pairs(pairs)
        decisions = routed.route([r["query"] for r in rows])
        chosen = [d.choice for d in decisions]
        scores = routed.score_pairs(pairs, chosen)
        for row, g, s, e in zip(rows, general, scores, chosen, strict=True):
            row.update(generalist=round(float(g), 6), routed=round(float(s), 6), expert=e)
        self.write_json(self.work / "reference.json", rows)

    # the manifest ----------------------------------------------------------------------------------------

    def manifest_core(self) -> dict[str, Any]:
        """What the bundle is, before figures: the model shape, training record and the rebuild command."""
        c = self.config
        experts = {
            name: json.loads((self.expert_dir(name) / "routerank_expert.json").read_text()) for name in c.datasets
        }
        trained = json.loads((self.trained / TRAIN_RECORD).read_text())
        return {
            "name": "starter",
            "routerank": routerank.__version__,
            "model": {"base_model": c.base_model, "max_length": c.max_length, "scoring_dtype": "fp32"},
            "domains": list(c.datasets),
            "rebuild": REBUILD,
            "build_config": {k: list(v) if isinstance(v, tuple) else v for k, v in c.__dict__.items()},
            "training": {
                "generalist": {
                    "queries": trained["queries"],
                    "groups": trained["groups"],
                    "steps": trained["steps"],
                    "seconds": trained["seconds"],
                    "dev": trained["dev"],
                    "sources": {
                        n: {k: v for k, v in s.items() if k != "dev_queries"} for n, s in trained["sources"].items()
                    },
                },
                "experts": {
                    name: {"data": record.get("training_data"), "metrics": record.get("metrics")}
                    for name, record in experts.items()
                },
                "machine": {"python": platform.python_version(), "cpu_threads": _threads()},
            },
        }

    def ship(self, target: Path) -> dict[str, Any]:
        """The manifest with checksums and figures, written into the staged bundle, then the bundle copied to
        `target` (the package's `routerank/starter/bundle`) in one rename. Refuses a bundle over 30 MB."""
        manifest = self.manifest_core()
        manifest["figures"] = self.figures()
        manifest["reference"] = self.read_json(self.work / "reference.json")
        manifest["files"] = checksums(self.bundle)
        size = sum((self.bundle / f).stat().st_size for f in manifest["files"]) / 2**20
        if size > LIMIT_MB:
            raise RouterankError(f"the bundle is {size:.1f} MB, over the {LIMIT_MB:g} MB limit")
        manifest["size_mb"] = round(size, 2)
        self.write_json(self.bundle / MANIFEST, manifest)
        with atomic_dir(target) as tmp:
            shutil.copytree(self.bundle, tmp, dirs_exist_ok=True)
        return manifest

    def figures(self) -> dict[str, Any]:
        """The test table (nDCG@10 per system and dataset, with paired tests) and the router's accuracy."""
        tests = {
            n: self.read_json(p) for n in self.config.datasets if (p := self.work / "test" / f"{n}.json").is_file()
        }
        return {
            "router": self.read_json(self.work / "router.json"),
            "lora_vs_full": self.read_json(compared)
            if (compared := self.work / "lora-vs-full.json").is_file()
            else None,
            "alphas": {
                label: self.read_json(self.bundle / "interpolation" / f"{label}.json")
                for label in ("generalist", "routed")
            },
            "test": results_table(tests),
        }


def _accuracy(probs: np.ndarray, truth: list[str], labels: tuple[str, ...]) -> float:
    """The share of rows whose most probable label is the true one."""
    return float(np.mean([labels[i] == t for i, t in zip(probs.argmax(1), truth, strict=True)]))


def _threads() -> int:
    # heavy: torch loads only when a model runs
    import torch

    return torch.get_num_threads()


def file_sizes(folder: Path) -> dict[str, int]:
    """Bytes per file under `folder` (the bundle's size table)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


__all__ = ["StarterBuild", "file_sizes"]
