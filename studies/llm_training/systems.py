"""The rows of issue 12's experiment and what each one is: its training config, where its adapter is trained to,
whether it is finished, and the reranker spec it scores with."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from routerank.r2r.trainer import MANIFEST as EXPERT_MANIFEST
from routerank.r2r.trainer import ExpertConfig
from routerank.r2r.trainer import config_json as expert_json
from routerank.rerank.adapters import MANIFEST as ADAPTER_MANIFEST
from routerank.rerank.adapters import WEIGHTS, read_adapter_manifest
from routerank.train.dear import TERMS, DeARConfig, stage_done
from routerank.train.distill import check_alpha_setting
from routerank.train.grpo import config_json, finished
from routerank.train.prorank import stage1_key, stage1_task
from routerank.train.rank_r1 import rank_r1_task
from studies.base import short_hash
from studies.llm_training.config import INFERENCE_VARIANTS, UNTRAINED, LLMTrainingConfig, MethodConfigs

STAGE_BEFORE = {"dear": "dear-stage1", "prorank": "prorank-stage1"}  # a second stage trains on top of the first


class Systems:
    """Every row of the report over one work dir: the untrained ones (`UNTRAINED`), one per trained method and
    DeAR ablation, and the inference variants (`INFERENCE_VARIANTS`) that rerank with another row's adapter."""

    def __init__(self, config: LLMTrainingConfig, methods: MethodConfigs, work: Path):
        self.config = config
        self.methods = methods
        self.work = work
        self._dear: tuple[dict[str, DeARConfig], dict[str, str]] | None = None

    def names(self) -> list[str]:
        """Every row of the report, in its order; the trained ones only where the profile runs their method."""
        out = ["bm25", "zero-shot"]
        methods = self.config.methods
        out += [m for m in ("sft", "contrastive") if m in methods]
        if "dear" in methods:
            out += ["dear-stage1", "dear", "shuffled-dear", *[s for s in self.dear_configs() if s != "dear-stage1"]]
        if "prorank" in methods:
            out += ["prorank-stage1", "prorank"]
        if "rank-r1" in methods:
            out.append("rank-r1")
        return [*out, "teacher"]

    def expert_config(self, system: str) -> ExpertConfig:
        """The ExpertConfig of `sft` (BCE) or `contrastive` (InfoNCE): both datasets' train splits, pooled."""
        c = self.config
        settings = {"seed": c.seed, **{k: tuple(v) if isinstance(v, list) else v for k, v in c.expert.items()}}
        if settings.get("max_queries") == 0:  # as at the top level: 0 means every training query
            settings["max_queries"] = None
        return ExpertConfig(
            ",".join(c.datasets),
            system,
            backbone=c.backbone,
            template=c.template,
            objective="bce" if system == "sft" else "infonce",
            max_doc_tokens=c.max_doc_tokens,
            **settings,
        )

    def dear_configs(self) -> dict[str, DeARConfig]:
        """DeAR system name -> its config: `dear-stage1` (the DeAR config) and one per ablation, named by its
        terms (`dear-ce`); an ablation equal to the DeAR config is `dear-stage1` itself."""
        return self._dear_plan()[0]

    def ablations(self) -> dict[str, str]:
        """Each configured ablation (its terms, e.g. "ce") -> the system that trains it."""
        return self._dear_plan()[1]

    def _dear_plan(self) -> tuple[dict[str, DeARConfig], dict[str, str]]:
        if self._dear is None:
            main = self.methods.dear
            configs, ablations = {"dear-stage1": main}, {}
            for terms in self.config.dear_ablations:
                on = set(terms.split("+"))
                weights = {f"w_{t}": (getattr(main, f"w_{t}") or 1.0) if t in on else 0.0 for t in TERMS}
                ablation = replace(main, **weights)
                system = "dear-stage1" if ablation == main else ablation.name
                configs.setdefault(system, ablation)
                ablations[terms] = system
            self._dear = configs, ablations
        return self._dear

    def dear_config(self, system: str) -> DeARConfig:
        """The stage-1 config a DeAR row trains (or, for `dear`, trains stage 2 on)."""
        return self.dear_configs()["dear-stage1" if system == "dear" else system]

    def train_dir(self, system: str) -> Path:
        """The training folder of a trained system, named by its config's hash (a changed config trains anew)."""
        if system in ("sft", "contrastive"):
            return self.work / "train" / f"{system}-{short_hash(expert_json(self.expert_config(system)))}"
        if system.startswith("dear"):
            cfg = self.dear_config(system)
            return self.work / "train" / "dear" / f"{cfg.name}-{short_hash(asdict(cfg))}"
        if system.startswith("prorank"):
            return self.work / "train" / f"prorank-{short_hash(stage1_key(self.methods.prorank))}"
        return self.work / "train" / f"rank-r1-{short_hash(config_json(self.methods.rank_r1))}"

    def adapter_dir(self, system: str) -> Path:
        """The adapter folder a trained system reranks with."""
        system = INFERENCE_VARIANTS.get(system, system)
        folder = self.train_dir(system)
        if system in ("dear", "prorank"):
            return folder / "stage2"
        if system.startswith("dear") or system == "prorank-stage1":
            return folder / "stage1"
        return folder

    def trained(self, system: str) -> bool:
        """Whether the adapter this system reranks with is finished (true for the untrained rows)."""
        if system in UNTRAINED:
            return True
        if system in INFERENCE_VARIANTS:
            return self.trained(INFERENCE_VARIANTS[system])
        folder = self.adapter_dir(system)
        if system in ("sft", "contrastive"):
            return (folder / EXPERT_MANIFEST).exists()
        if system.startswith("dear"):
            return stage_done(folder, self.dear_config(system))
        if system == "prorank-stage1":
            return finished(folder, stage1_task(self.methods.prorank).key)
        if system == "prorank":
            if not (folder / ADAPTER_MANIFEST).exists() or not (folder / WEIGHTS).exists():
                return False
            manifest = json.loads((folder / ADAPTER_MANIFEST).read_text())
            return manifest.get("config") == config_json(self.methods.prorank)
        return finished(folder, rank_r1_task(self.methods.rank_r1).key)

    def manifest(self, system: str) -> dict | None:
        """The manifest of a trained system's adapter (None: an untrained row, or not trained yet)."""
        if system in UNTRAINED or system in INFERENCE_VARIANTS or not self.trained(system):
            return None
        return read_adapter_manifest(self.adapter_dir(system))

    def teacher_setting(self) -> tuple[str, float | str | None]:
        """(the teacher row's reranker spec, its mix with BM25): the config's, else the DeAR config's."""
        dear = self.methods.dear
        spec = self.config.teacher or dear.teacher
        alpha = check_alpha_setting(self.config.teacher_alpha if self.config.teacher_alpha != "" else dear.alpha)
        return spec, alpha

    def spec(self, system: str) -> str | None:
        """The reranker spec a system scores with; None while its adapter is not trained."""
        c = self.config
        if system == "bm25":
            return "bm25"
        if system == "zero-shot":
            return f"pointwise:{c.backbone},template={c.template},max_doc_tokens={c.max_doc_tokens}"
        if system == "teacher":
            spec, alpha = self.teacher_setting()
            return spec if alpha is None else f"{spec}~{alpha}"
        if not self.trained(system):
            return None
        return self._trained_spec(system)

    def _trained_spec(self, system: str) -> str:
        c = self.config
        if system == "shuffled-dear":
            return f"{self.spec('dear')},shuffle={c.seed}"
        folder = self.adapter_dir(system)
        if system in ("sft", "contrastive"):
            return f"pointwise:{c.backbone},adapter={folder},template={c.template},max_doc_tokens={c.max_doc_tokens}"
        if system.startswith("dear"):
            manifest: Any = self.manifest(system)
            return manifest["reranker_spec"]
        if system.startswith("prorank"):
            pr = self.methods.prorank
            return f"pointwise:{c.backbone},template={pr.template},adapter={folder},max_doc_tokens={pr.max_doc_tokens}"
        extra = f",{c.rank_r1_options}" if c.rank_r1_options else ""
        return f"setwise:{c.backbone},adapter={folder},k={self.methods.rank_r1.k}{extra}"
